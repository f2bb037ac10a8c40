"""The LoRA file's metadata, as sd-scripts' `train_network.py` writes it (SD 1.x, `networks.lora`),
so AUTOMATIC1111, ComfyUI, Forge and Civitai show what they show for a Kohya LoRA.

Every value is `str()` of a Python value, as sd-scripts does (`"True"`, `"None"`, `"0.0001"`).
sd-scripts writes `ss_datasets` when trained from a dataset_config.toml and the top-level
dataset keys (`ss_resolution`, `ss_bucket_info`...) otherwise; both are written here (readers
take what they know), `ss_bucket_info` being what A1111 shows as the Resolution row. Keys of
lora_assets's own start with `lora_assets_`. Reference: sd-scripts 48d368fa (v0.10.1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_assets.dataset.kohya_zip import DatasetOptions
    from lora_assets.settings import TrainingSettings
    from lora_assets.training.config import TrainConfig
    from lora_assets.training.data import TrainImage
    from lora_assets.training.trainer import TrainResult

ARCHITECTURE = "stable-diffusion-v1/lora"
MODELSPEC_VERSION = "1.0.1"
IMPLEMENTATION_VERSION = "lora_assets/0.1.0"
# sd-scripts writes these arguments with their defaults; lora_assets has no such option.
SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "ss_num_validation_images": 0,
    "ss_num_reg_images": 0,
    "ss_network_dropout": None,
    "ss_full_fp16": False,
    "ss_v2": False,
    "ss_base_model_version": "sd_v1",
    "ss_max_token_length": None,
    "ss_cache_latents": True,
    "ss_lowram": False,
    "ss_multires_noise_iterations": None,
    "ss_multires_noise_discount": 0.3,
    "ss_adaptive_noise_scale": None,
    "ss_zero_terminal_snr": False,
    "ss_max_grad_norm": 1.0,
    "ss_caption_dropout_rate": 0.0,
    "ss_caption_dropout_every_n_epochs": 0,
    "ss_caption_tag_dropout_rate": 0.0,
    "ss_face_crop_aug_range": None,
    "ss_prior_loss_weight": 1.0,
    "ss_scale_weight_norms": None,
    "ss_ip_noise_gamma": None,
    "ss_debiased_estimation": False,
    "ss_noise_offset_random_strength": False,
    "ss_ip_noise_gamma_random_strength": False,
    "ss_loss_type": "l2",
    "ss_huber_schedule": "snr",
    "ss_huber_scale": 1.0,
    "ss_huber_c": 0.1,
    "ss_fp8_base": False,
    "ss_fp8_base_unet": False,
    "ss_validation_seed": None,
    "ss_validation_split": 0.0,
    "ss_max_validation_steps": None,
    "ss_validate_every_n_epochs": None,
    "ss_validate_every_n_steps": None,
    "ss_resize_interpolation": None,
    "ss_color_aug": False,
    "ss_random_crop": False,
    "ss_sd_scripts_commit_hash": "(unknown)",
}


def training_metadata(
    config: TrainConfig, options: DatasetOptions, images: list[TrainImage], result: TrainResult
) -> dict[str, str]:
    """Every key sd-scripts writes for this run, plus lora_assets's own, as strings."""
    values: dict[str, Any] = {
        **SD_SCRIPTS_DEFAULTS,
        **session_values(config, result),
        **model_values(config),
        **network_values(config.training),
        **optimisation_values(config.training, result),
        **dataset_values(options, images, config.training.batch_size),
        **modelspec_values(config, options),
        "lora_assets_training_key": config.training_key,
        **config.extra_metadata,
    }
    return {key: str(value) for key, value in values.items()}


def session_values(config: TrainConfig, result: TrainResult) -> dict[str, Any]:
    finished = time.time()
    return {
        # sd-scripts draws a random int; the training key makes it the same for the same run.
        "ss_session_id": int(hashlib.sha256(config.training_key.encode()).hexdigest()[:8], 16),
        "ss_output_name": config.output_name,
        "ss_training_started_at": finished - result.seconds,
        "ss_training_finished_at": finished,
        "ss_training_comment": None,
        "ss_steps": result.steps,
        "ss_epoch": config.training.epochs,
    }


def model_values(config: TrainConfig) -> dict[str, Any]:
    """Names and A1111 hashes (legacy 8-hex and full sha256) of the base model and VAE files."""
    models = config.models
    values = {
        "ss_sd_model_name": Path(models.base_model).name
        if Path(models.base_model).exists()
        else models.base_model,
        "ss_sd_model_hash": legacy_model_hash(models.base_model),
        "ss_new_sd_model_hash": file_sha256(models.base_model),
    }
    if models.vae:
        values |= {
            "ss_vae_name": Path(models.vae).name,
            "ss_vae_hash": legacy_model_hash(models.vae),
            "ss_new_vae_hash": file_sha256(models.vae),
        }
    return values


def network_values(s: TrainingSettings) -> dict[str, Any]:
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": s.network_dim,
        "ss_network_alpha": s.network_alpha,
        "ss_network_args": json.dumps(
            {
                "text_encoder_dim": str(s.text_encoder_dim or s.network_dim),
                "text_encoder_alpha": str(s.text_encoder_alpha or s.network_alpha),
                "dropout": None,
            }
        ),
        "lora_assets_train_text_encoder": s.train_text_encoder,
    }


def optimisation_values(s: TrainingSettings, result: TrainResult) -> dict[str, Any]:
    return {
        "ss_learning_rate": s.unet_lr,
        "ss_unet_lr": s.unet_lr,
        "ss_text_encoder_lr": s.text_encoder_lr if s.train_text_encoder else None,
        "ss_optimizer": result.optimizer,
        "ss_lr_scheduler": s.lr_scheduler,
        "ss_lr_warmup_steps": s.lr_warmup_steps,
        "ss_num_epochs": s.epochs,
        "ss_num_batches_per_epoch": result.batches_per_epoch,
        "ss_max_train_steps": result.planned_steps,
        "ss_gradient_accumulation_steps": s.gradient_accumulation_steps,
        "ss_gradient_checkpointing": s.gradient_checkpointing,
        "ss_mixed_precision": result.precision,
        "lora_assets_device": result.device,
        "ss_seed": s.seed,
        "ss_clip_skip": s.clip_skip,
        "ss_noise_offset": s.noise_offset or None,
        "ss_min_snr_gamma": s.min_snr_gamma,
    }


def dataset_values(options: DatasetOptions, images: list[TrainImage], batch_size: int) -> dict[str, Any]:
    """Both of sd-scripts' dataset layouts: `ss_datasets` and the top-level keys."""
    folders = Counter(image.folder for image in images)
    repeats = {image.folder: image.repeats for image in images}
    dirs = {folder: {"n_repeats": repeats[folder], "img_count": count} for folder, count in folders.items()}
    tags = tag_frequency({folder: [i.caption for i in images if i.folder == folder] for folder in folders})
    buckets = bucket_info(images)
    subsets = [
        {
            "img_count": count,
            "num_repeats": repeats[folder],
            "color_aug": False,
            "flip_aug": options.flip_aug,
            "random_crop": False,
            "shuffle_caption": options.shuffle_caption,
            "keep_tokens": options.keep_tokens,
            "keep_tokens_separator": "",
            "secondary_separator": None,
            "enable_wildcard": False,
            "caption_prefix": None,
            "caption_suffix": None,
            "resize_interpolation": None,
            "image_dir": folder,
            "class_tokens": folder.split("_", 1)[1] if "_" in folder else None,
            "is_reg": False,
        }
        for folder, count in folders.items()
    ]
    num_images = sum(image.repeats for image in images)
    dataset = {
        "is_dreambooth": True,
        "batch_size_per_device": batch_size,
        "num_train_images": num_images,
        "num_reg_images": 0,
        "resolution": [options.resolution, options.resolution],
        "enable_bucket": True,
        "min_bucket_reso": options.min_bucket_reso,
        "max_bucket_reso": options.max_bucket_reso,
        "tag_frequency": json.loads(tags),
        "bucket_info": buckets,
        "resize_interpolation": None,
        "subsets": subsets,
    }
    return {
        "ss_num_train_images": num_images,
        "ss_datasets": json.dumps([dataset]),
        "ss_dataset_dirs": json.dumps(dirs),
        "ss_tag_frequency": tags,
        "ss_bucket_info": json.dumps(buckets),
        "ss_resolution": (options.resolution, options.resolution),
        "ss_batch_size_per_device": batch_size,
        "ss_total_batch_size": batch_size,
        "ss_enable_bucket": True,
        "ss_bucket_no_upscale": options.bucket_no_upscale,
        "ss_min_bucket_reso": options.min_bucket_reso,
        "ss_max_bucket_reso": options.max_bucket_reso,
        "ss_shuffle_caption": options.shuffle_caption,
        "ss_keep_tokens": options.keep_tokens,
        "ss_flip_aug": options.flip_aug,
    }


def modelspec_values(config: TrainConfig, options: DatasetOptions) -> dict[str, Any]:
    values: dict[str, Any] = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": ARCHITECTURE,
        "modelspec.implementation": "diffusers",
        "modelspec.implementation_version": IMPLEMENTATION_VERSION,
        "modelspec.title": config.output_name,
        "modelspec.trigger_phrase": config.trigger,
        "modelspec.resolution": f"{options.resolution}x{options.resolution}",
        "modelspec.prediction_type": "epsilon",
        "modelspec.date": dt.datetime.fromtimestamp(int(time.time())).isoformat(),
    }
    if config.training.clip_skip > 1:
        values["modelspec.encoder_layer"] = config.training.clip_skip
    return values


def bucket_info(images: list[TrainImage]) -> dict[str, Any]:
    """`{"buckets": {"0": {"resolution": [w, h], "count": n}}, "mean_img_ar_error": e}`: counts
    with repeats, buckets sorted by (w, h), aspect error averaged over images."""
    counts: Counter[tuple[int, int]] = Counter()
    for image in images:
        counts[image.bucket] += image.repeats
    errors = [abs(i.bucket[0] / i.bucket[1] - i.size[0] / i.size[1]) for i in images]
    return {
        "buckets": {
            str(n): {"resolution": list(reso), "count": count}
            for n, (reso, count) in enumerate(sorted(counts.items()))
        },
        "mean_img_ar_error": sum(errors) / len(errors) if errors else 0,
    }


def tag_frequency(captions: Mapping[str, list[str]]) -> str:
    """`ss_tag_frequency`: {dataset folder: {tag: count}}, tags lower-cased, in first-seen order."""
    frequency: dict[str, dict[str, int]] = {}
    for folder, texts in captions.items():
        counts: dict[str, int] = {}
        for text in texts:
            for tag in (part.strip().lower() for part in text.split(",")):
                if tag:
                    counts[tag] = counts.get(tag, 0) + 1
        frequency[folder] = counts
    return json.dumps(frequency)


def legacy_model_hash(path: str) -> str:
    """A1111's old checkpoint hash: sha256 of 64 KiB at 1 MiB, first 8 hex digits."""
    file = Path(path)
    if file.is_dir():
        return "IsADirectory"
    if not file.is_file():
        return "NOFILE"
    with open(file, "rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def file_sha256(path: str) -> str:
    """A1111's "new" model hash: sha256 of the whole file."""
    from lora_assets.digests import sha256_file

    file = Path(path)
    if file.is_dir():
        return "IsADirectory"
    return sha256_file(file) if file.is_file() else "NOFILE"
