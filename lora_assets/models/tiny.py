"""Tiny, randomly initialised models of the real classes, saved exactly as real ones are.

No model hub is reachable from the build machines; tests and the offline demo build these and
load them through the same `from_pretrained` code as the real models. Their outputs are noise:
captions are random real words and a LoRA trained on them is not useful.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

BERT_VOCAB = "bert-base-uncased-vocab.txt"


def blip_processor() -> Any:
    """BLIP-large's processor, built offline: 384 px images, bert-base-uncased + [DEC]/[ENC]."""
    from transformers import BertTokenizer, BlipImageProcessor, BlipProcessor

    vocab = resources.files("lora_assets.models") / "assets" / BERT_VOCAB
    with resources.as_file(vocab) as vocab_path:
        tokenizer = BertTokenizer(str(vocab_path), do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return BlipProcessor(
        BlipImageProcessor(size={"height": 384, "width": 384}, do_convert_rgb=True), tokenizer
    )


def build_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A BLIP captioner (BlipForConditionalGeneration + BlipProcessor) with tiny widths but the
    real image size (384), patch size (16) and BLIP-large's tokenizer; saved to `folder`."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    processor = blip_processor()
    tokenizer = processor.tokenizer
    config = BlipConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 384, "patch_size": 16,
        },
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 512,
            "encoder_hidden_size": 32,
        },
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """A Stable Diffusion 1.5 pipeline with tiny widths but SD 1.5's topology, key names, 8x VAE
    downscaling, noise schedule and real CLIP tokenizer; saved to `folder` as a diffusers folder and
    also as single LDM-layout files (`tiny-sd.safetensors`, `tiny-vae.safetensors`), as users hold them."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lora_assets.training.base_model import bundled_sd15_config
    from lora_assets.training.ldm_export import checkpoint_state_dict, vae_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer.from_pretrained(bundled_sd15_config() / "tokenizer", model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64), attention_head_dim=8, cross_attention_dim=32, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        block_out_channels=(32, 32, 32, 32), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
            bos_token_id=0, eos_token_id=2, pad_token_id=1,
        )
    )  # fmt: skip
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, steps_offset=1, prediction_type="epsilon",
    )  # fmt: skip
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipeline.save_pretrained(folder)
    save_file(checkpoint_state_dict(unet, vae, text_encoder), str(folder / "tiny-sd.safetensors"))
    save_file(vae_state_dict(vae), str(folder / "tiny-vae.safetensors"))
    return folder
