"""Writing the trained LoRA: a kohya-format .safetensors with sd-scripts' `ss_*` and the model
spec's `modelspec.*` metadata (what AUTOMATIC1111, ComfyUI and Civitai read), and, on request,
a diffusers/PEFT-format copy."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_assets.record_store import write_atomic
from lora_assets.training.network import kohya_state_dict, safetensors_hashes, tag_frequency

if TYPE_CHECKING:
    from lora_assets.dataset.kohya_zip import DatasetOptions
    from lora_assets.settings import TrainingSettings
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
    "modelspec.sai_model_spec",
    "modelspec.architecture",
    "modelspec.title",
    "modelspec.trigger_phrase",
    "modelspec.resolution",
    "modelspec.date",
    "sshs_model_hash",
    "sshs_legacy_hash",
)
ARCHITECTURE = "stable-diffusion-v1/lora"


def training_metadata(
    config: TrainConfig,
    options: DatasetOptions,
    images: list[TrainImage],
    result: TrainResult,
    base_identity: str,
) -> dict[str, str]:
    """Every metadata value as a string (safetensors metadata is str -> str); unset values are left out."""
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        **_session_values(config, result, base_identity, now),
        **_network_values(config.training),
        **_optimisation_values(config.training, result),
        **_dataset_values(options, images),
        **_modelspec_values(config, options, now),
        "lora_assets_training_key": config.training_key,
        **config.extra_metadata,
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def _session_values(
    config: TrainConfig, result: TrainResult, base_identity: str, now: dt.datetime
) -> dict[str, Any]:
    models = config.models
    return {
        "ss_session_id": config.training_key[:16],
        "ss_output_name": config.output_name,
        "ss_training_started_at": round(now.timestamp() - result.seconds, 2),
        "ss_training_finished_at": round(now.timestamp(), 2),
        "ss_training_comment": f"lora_assets; base {base_identity}",
        "ss_sd_model_name": Path(models.base_model).name,
        "ss_vae_name": Path(models.vae).name if models.vae else None,
        "ss_base_model_version": "sd_v1",
        "ss_v2": False,
    }


def _network_values(s: TrainingSettings) -> dict[str, Any]:
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": s.network_dim,
        "ss_network_alpha": s.network_alpha,
        "ss_network_args": json.dumps(
            {
                "text_encoder_dim": s.text_encoder_dim or s.network_dim,
                "text_encoder_alpha": s.text_encoder_alpha or s.network_alpha,
            }
        ),
        "ss_network_train_unet_only": not s.train_text_encoder,
    }


def _optimisation_values(s: TrainingSettings, result: TrainResult) -> dict[str, Any]:
    return {
        "ss_learning_rate": s.unet_lr,
        "ss_unet_lr": s.unet_lr,
        "ss_text_encoder_lr": s.text_encoder_lr if s.train_text_encoder else 0.0,
        "ss_optimizer": s.optimizer,
        "ss_lr_scheduler": s.lr_scheduler,
        "ss_lr_warmup_steps": s.lr_warmup_steps,
        "ss_num_epochs": s.epochs,
        "ss_epoch": s.epochs,
        "ss_max_train_steps": result.steps,
        "ss_batch_size_per_device": s.batch_size,
        "ss_total_batch_size": s.batch_size * s.gradient_accumulation_steps,
        "ss_gradient_accumulation_steps": s.gradient_accumulation_steps,
        "ss_gradient_checkpointing": s.gradient_checkpointing,
        "ss_mixed_precision": s.mixed_precision if result.device.startswith("cuda") else "no",
        "ss_full_fp16": False,
        "ss_seed": s.seed,
        "ss_clip_skip": s.clip_skip,
        "ss_noise_offset": s.noise_offset,
        "ss_min_snr_gamma": s.min_snr_gamma,
    }


def _dataset_values(options: DatasetOptions, images: list[TrainImage]) -> dict[str, Any]:
    folders = Counter(image.folder for image in images)
    repeats = {image.folder: image.repeats for image in images}
    return {
        "ss_num_train_images": sum(image.repeats for image in images),
        "ss_num_reg_images": 0,
        "ss_resolution": f"({options.resolution}, {options.resolution})",
        "ss_enable_bucket": True,
        "ss_min_bucket_reso": options.min_bucket_reso,
        "ss_max_bucket_reso": options.max_bucket_reso,
        "ss_bucket_no_upscale": options.bucket_no_upscale,
        "ss_cache_latents": True,
        "ss_shuffle_caption": options.shuffle_caption,
        "ss_keep_tokens": options.keep_tokens,
        "ss_flip_aug": options.flip_aug,
        "ss_caption_dropout_rate": 0.0,
        "ss_dataset_dirs": json.dumps(
            {
                folder: {"n_repeats": repeats[folder], "img_count": count}
                for folder, count in sorted(folders.items())
            }
        ),
        "ss_tag_frequency": tag_frequency(
            {folder: [i.caption for i in images if i.folder == folder] for folder in sorted(folders)}
        ),
    }


def _modelspec_values(config: TrainConfig, options: DatasetOptions, now: dt.datetime) -> dict[str, Any]:
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE,
        "modelspec.implementation": "diffusers",
        "modelspec.title": config.output_name,
        "modelspec.trigger_phrase": config.trigger,
        "modelspec.resolution": f"{options.resolution}x{options.resolution}",
        "modelspec.prediction_type": "epsilon",
        "modelspec.encoder_layer": config.training.clip_skip,
        "modelspec.date": now.replace(microsecond=0).isoformat(),
    }


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
    metadata = training_metadata(config, options, images, result, base_identity)
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = safetensors_hashes(tensors, metadata)
    output = Path(config.output_file)
    write_atomic(output, save(tensors, metadata))
    if s.export_diffusers:
        export_diffusers(Path(config.diffusers_dir), unet, text_encoder)
    return output


def export_diffusers(folder: Path, unet: Any, text_encoder: Any | None) -> Path:
    """`pytorch_lora_weights.safetensors` as `StableDiffusionPipeline.save_lora_weights` writes it,
    with the adapter configs (rank and alpha) so that `load_lora_weights` restores the scale."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    te_layers = get_peft_model_state_dict(text_encoder) if text_encoder is not None else None
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
