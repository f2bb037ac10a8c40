"""Everything one training run needs, as plain JSON-able data (it crosses the Pipes boundary)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainConfig:
    """One LoRA run. Paths are absolute strings; defaults follow the user's Kohya notebook."""

    dataset_zip: str
    work_dir: str
    output_file: str
    base_model: str
    output_name: str
    trigger: str
    class_token: str
    vae: str | None = None
    base_config: str | None = None
    revision: str = "main"
    resolution: int = 512
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = True
    network_dim: int = 32
    network_alpha: float = 16.0
    train_text_encoder: bool = True
    text_encoder_dim: int | None = None
    text_encoder_alpha: float | None = None
    unet_lr: float = 1e-4
    text_encoder_lr: float = 5e-5
    optimizer: str = "AdamW8bit"
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    epochs: int = 10
    batch_size: int = 6
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "fp16"
    seed: int = 42
    clip_skip: int = 1
    min_snr_gamma: float | None = None
    noise_offset: float = 0.0
    gradient_checkpointing: bool = False
    shuffle_caption: bool = False
    keep_tokens: int = 1
    flip_aug: bool = False
    save_every_n_epochs: int = 1
    keep_last_checkpoints: int = 2
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 20
    sample_resolution: int | None = None
    compile_unet: bool = False
    compile_mode: str = "reduce-overhead"
    export_diffusers: bool = False
    training_key: str = ""
    extra_metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        return cls(**values)
