"""The LoRA network (peft adapters on the UNet and text encoder) and its kohya-format export.

Kohya's SD 1.5 LoRA wraps, in every transformer block of the UNet, the attention projections,
`proj_in`/`proj_out` and the feed-forward, and in the text encoder the attention and MLP
projections. The kohya file names each wrapped module `lora_unet_<path>` / `lora_te_<path>`
(dots become underscores; `lora_te_` not SDXL's `lora_te1_`; the text encoder path starts at
`text_model.`), with `.lora_down.weight`, `.lora_up.weight` and `.alpha` (the trained alpha,
so the file reloads with the scale it was trained with).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
UNET_PREFIX, TEXT_ENCODER_PREFIX = "lora_unet_", "lora_te_"
ADAPTER = "default"


def lora_config(rank: int, alpha: float, targets: tuple[str, ...]) -> Any:
    """A peft LoraConfig; peft's default init (Kaiming A, zero B) is kohya's, so step 0 is the base."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True)


def add_adapters(
    unet: Any,
    text_encoder: Any | None,
    rank: int,
    alpha: float,
    te_rank: int | None = None,
    te_alpha: float | None = None,
) -> None:
    """Wrap the kohya target modules with trainable LoRA adapters (seed the RNG first: the init draws)."""
    unet.add_adapter(lora_config(rank, alpha, UNET_TARGETS))
    if text_encoder is not None:
        text_encoder.add_adapter(lora_config(te_rank or rank, te_alpha or alpha, TEXT_ENCODER_TARGETS))


def adapter_state_dict(model: Any) -> dict[str, Any]:
    """The LoRA weights of a model, peft-named (`...to_q.lora_A.weight`)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def load_adapter_state_dict(model: Any, state: Mapping[str, Any]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, dict(state), adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"checkpoint has LoRA weights this network does not: {unexpected[:3]}")


def to_kohya(
    peft_state: Mapping[str, Any], prefix: str, alpha: float, module_prefix: str = ""
) -> dict[str, Any]:
    """peft names -> kohya names: `a.b.lora_A.weight` -> `<prefix>a_b.lora_down.weight` (+ `.alpha`)."""
    import torch

    converted: dict[str, Any] = {}
    for key, tensor in peft_state.items():
        module, _, kind = key.rpartition(".lora_")
        name = prefix + (module_prefix + module).replace(".", "_")
        if kind == "A.weight":
            converted[f"{name}.lora_down.weight"] = tensor.detach().contiguous()
        elif kind == "B.weight":
            converted[f"{name}.lora_up.weight"] = tensor.detach().contiguous()
        else:
            raise ValueError(f"unexpected LoRA tensor {key!r}")
        converted[f"{name}.alpha"] = torch.tensor(float(alpha))
    return converted


def kohya_state_dict(
    unet: Any, text_encoder: Any | None, alpha: float, te_alpha: float | None = None
) -> dict[str, Any]:
    """The whole network in kohya naming, fp32 tensors, sorted keys."""
    state = to_kohya(adapter_state_dict(unet), UNET_PREFIX, alpha)
    if text_encoder is not None and getattr(text_encoder, "peft_config", None):
        # transformers >= 5.6 flattened CLIPTextModel; kohya/A1111/ComfyUI name from `text_model.`
        te_state = adapter_state_dict(text_encoder)
        needs_prefix = not any(k.startswith("text_model.") for k in te_state)
        state.update(
            to_kohya(te_state, TEXT_ENCODER_PREFIX, te_alpha or alpha, "text_model." if needs_prefix else "")
        )
    return {k: state[k].float() for k in sorted(state)}


def safetensors_hashes(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as sd-webui-additional-networks computes them: the
    sha256 of the tensor data of the file saved with only its `ss_*` metadata, and the first 8
    hex digits of the sha256 of that file's bytes 0x100000..0x110000."""
    from safetensors.torch import save

    data = save(dict(tensors), {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header :]).hexdigest()
    legacy = hashlib.sha256(io.BytesIO(data).getbuffer()[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy
