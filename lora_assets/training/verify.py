"""Checks of a finished LoRA file, as the UIs that will load it see it (no Dagster)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_assets.training.export import REQUIRED_METADATA
from lora_assets.training.kohya_metadata import ARCHITECTURE

KEY = re.compile(r"^(lora_unet|lora_te)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")
PARTS = ("lora_down.weight", "lora_up.weight", "alpha")


def read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        return {key: handle.get_tensor(key) for key in keys}, dict(handle.metadata() or {})


def key_problems(tensors: dict[str, Any], metadata: dict[str, str]) -> list[str]:
    """Kohya naming, a down/up/alpha triple per module, ranks that agree, the metadata UIs read."""
    problems = [f"badly named key {k!r}" for k in tensors if not KEY.match(k)]
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    for module in sorted(modules):
        missing = [part for part in PARTS if f"{module}.{part}" not in tensors]
        if missing:
            problems.append(f"{module}: missing {', '.join(missing)}")
            continue
        down, up = tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"]
        if down.shape[0] != up.shape[1]:
            problems.append(f"{module}: lora_down rank {down.shape[0]} != lora_up rank {up.shape[1]}")
    if not any(m.startswith("lora_unet_") for m in modules):
        problems.append("no UNet modules")
    problems += [f"metadata {name} missing" for name in REQUIRED_METADATA if name not in metadata]
    if metadata.get("modelspec.architecture", ARCHITECTURE) != ARCHITECTURE:
        problems.append(f"modelspec.architecture is {metadata['modelspec.architecture']!r}")
    return problems


def non_finite(tensors: dict[str, Any]) -> list[str]:
    import torch

    return sorted(k for k, v in tensors.items() if not torch.isfinite(v).all())


@dataclass(frozen=True)
class OutputChange:
    max_difference: float
    changed: bool


def lora_changes_output(
    path: Path,
    base_model: str,
    vae: str | None,
    config: str | None,
    prompt: str,
    side: int = 64,
    steps: int = 2,
) -> OutputChange:
    """Load the base pipeline, render with and without `load_lora_weights(path)` (same seed), compare."""
    import numpy as np
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from lora_assets.training.base_model import load_base_model

    base = load_base_model(base_model, vae, config)
    pipeline = StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=base.unet,
        scheduler=DDIMScheduler.from_config(base.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if torch.cuda.is_available():
        pipeline.to("cuda")
    pipeline.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        images = pipeline(
            prompt, height=side, width=side, num_inference_steps=steps, generator=generator, output_type="np"
        )
        return np.asarray(images.images[0], dtype=np.float64)

    before = render()
    pipeline.load_lora_weights(str(path.parent), weight_name=path.name)
    after = render()
    difference = float(np.abs(after - before).max())
    return OutputChange(difference, bool(difference > 0.0 and np.isfinite(after).all()))
