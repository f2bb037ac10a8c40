"""Writing the trained LoRA: a kohya-format .safetensors with sd-scripts' `ss_*` and the model
spec's `modelspec.*` metadata (what AUTOMATIC1111, ComfyUI and Civitai read), and, on request,
a diffusers/PEFT-format copy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_assets.record_store import write_atomic
from lora_assets.training.kohya_metadata import training_metadata
from lora_assets.training.network import kohya_state_dict, safetensors_hashes

if TYPE_CHECKING:
    from lora_assets.dataset.kohya_zip import DatasetOptions
    from lora_assets.training.config import TrainConfig
    from lora_assets.training.data import TrainImage
    from lora_assets.training.trainer import TrainResult

REQUIRED_METADATA = (
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_base_model_version",
    "ss_tag_frequency",
    "ss_num_train_images",
    "ss_seed",
    "ss_clip_skip",
    "ss_learning_rate",
    "ss_unet_lr",
    "ss_text_encoder_lr",
    "ss_num_epochs",
    "ss_epoch",
    "ss_max_train_steps",
    "ss_resolution",
    "ss_mixed_precision",
    "ss_optimizer",
    "ss_steps",
    "ss_datasets",
    "ss_bucket_info",
    "ss_sd_model_hash",
    "ss_new_sd_model_hash",
    "modelspec.sai_model_spec",
    "modelspec.implementation_version",
    "modelspec.architecture",
    "modelspec.title",
    "modelspec.trigger_phrase",
    "modelspec.resolution",
    "modelspec.date",
    "sshs_model_hash",
    "sshs_legacy_hash",
)


def export_kohya(
    config: TrainConfig,
    options: DatasetOptions,
    unet: Any,
    text_encoder: Any | None,
    images: list[TrainImage],
    result: TrainResult,
    base_identity: str,
) -> Path:
    """Write `config.output_file` atomically (and the diffusers copy when asked)."""
    from safetensors.torch import save

    s = config.training
    te_alpha = s.text_encoder_alpha or s.network_alpha
    tensors = {k: v.cpu() for k, v in kohya_state_dict(unet, text_encoder, s.network_alpha, te_alpha).items()}
    metadata = training_metadata(config, options, images, result)
    metadata["lora_assets_base_identity"] = base_identity
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = safetensors_hashes(tensors, metadata)
    output = Path(config.output_file)
    write_atomic(output, save(tensors, metadata))
    if s.export_diffusers:
        export_diffusers(Path(config.diffusers_dir), unet, text_encoder)
    return output


def export_diffusers(folder: Path, unet: Any, text_encoder: Any | None) -> Path:
    """`pytorch_lora_weights.safetensors` as `StableDiffusionPipeline.save_lora_weights` writes it,
    with the adapter configs (rank and alpha) so that `load_lora_weights` restores the scale
    (diffusers >= 0.42, the version tested; 0.32 cannot write or read that metadata)."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    te_layers = None
    if text_encoder is not None:
        # transformers >= 5.6 dropped CLIPTextModel's `text_model.`; the diffusers format (and
        # transformers 4) name it, and diffusers maps it back for transformers 5.
        te_layers = {
            key if key.startswith("text_model.") else f"text_model.{key}": value
            for key, value in get_peft_model_state_dict(text_encoder).items()
        }
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=te_layers,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=text_encoder.peft_config["default"].to_dict()
        if te_layers
        else None,
    )
    return folder
