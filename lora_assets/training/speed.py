"""How a run uses the accelerator: small pure decisions from the settings, the device and the
run's planned length, so they can be tested without a GPU and read in one place.

- Precision: `auto` is bf16 on a card that has it (Ampere and newer: no loss scaling, fp16's
  range problems gone), else fp16; a CPU trains in fp32. The LoRA weights stay fp32 either way.
- Compilation: `torch.compile` of the whole UNet runs fastest but costs minutes per bucket shape
  before the first step, more than a typical run of 20 photos x 10 repeats x 10 epochs saves.
  Regional compilation compiles the UNet's repeated transformer block once and reuses it for
  all of them, in a fraction of that time; `auto` uses it when the run is long enough to earn
  it back (`REGIONAL_MIN_STEPS`), never on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Below this many optimizer steps the compile time is not earned back. An estimate, not yet a
# measurement: benchmarks/gpu_pipeline_bench.py measures compile time and step time where a GPU
# is lent, and this threshold should be set from its figures.
REGIONAL_MIN_STEPS = 300


@dataclass(frozen=True)
class CompilePlan:
    """What to compile: the whole UNet or its repeated blocks, and in which torch.compile mode."""

    scope: str  # "full" or "regional"
    mode: str

    @property
    def cuda_graphs(self) -> bool:
        """reduce-overhead replays CUDA graphs: each step must mark where the last one ended."""
        return self.mode == "reduce-overhead"


def compile_plan(setting: bool | str, mode: str, device_type: str, planned_steps: int) -> CompilePlan | None:
    """The compilation for `[training] compile_unet` (true, false, "regional" or "auto")."""
    if device_type != "cuda" or setting is False:
        return None
    if setting is True:
        return CompilePlan("full", mode)
    if setting == "regional" or planned_steps >= REGIONAL_MIN_STEPS:
        return CompilePlan("regional", mode)
    return None


def compiled(unet: Any, plan: CompilePlan | None, module: Any = None) -> Any:
    """What the step calls: `unet` compiled whole, or with its repeated blocks compiled in place
    (`module` is the bare UNet when `unet` is a wrapper, e.g. accelerate's), or `unet` as it is."""
    import torch

    if plan is None:
        return unet
    if plan.scope == "regional":
        (module if module is not None else unet).compile_repeated_blocks(mode=plan.mode)
        return unet
    return torch.compile(unet, mode=plan.mode)


def precision_for(mixed_precision: str, device_type: str, bf16_supported: bool = False) -> str:
    """The autocast precision: `auto` picks bf16 where the card has it; a CPU trains in fp32."""
    if device_type != "cuda":
        return "no"
    if mixed_precision == "auto":
        return "bf16" if bf16_supported else "fp16"
    return mixed_precision


def optimizer_for(optimizer: str, device_type: str) -> str:
    """AdamW8bit (bitsandbytes) runs on CUDA only; elsewhere AdamW."""
    return optimizer if device_type == "cuda" else "AdamW"
