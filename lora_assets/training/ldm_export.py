"""Export diffusers SD 1.x components to the original LDM single-file layout.

Kohya, A1111 and ComfyUI users hold one `.safetensors` file in the CompVis/LDM key layout; diffusers
can read that layout but cannot write it. Tests need such files (built from tiny models) to prove the
single-file loading path, and users can export a merged model in the format their tools expect.

The mapping is built from each model's config (block counts, `layers_per_block`), so it works for the
real SD 1.5 widths and for tiny test models with the same topology. Every key must map: an unknown
key (for example an injected LoRA layer) raises instead of being silently dropped.
"""

from __future__ import annotations

from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

_UNET_RESNET_PARTS = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_RESNET_PARTS = {
    "norm1.": "norm1.",
    "conv1.": "conv1.",
    "norm2.": "norm2.",
    "conv2.": "conv2.",
    "conv_shortcut.": "nin_shortcut.",
}
_VAE_ATTENTION_PARTS = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


class _Renamer:
    """Longest-prefix renaming, with an optional table for the part of the key after the prefix."""

    def __init__(self) -> None:
        self._rules: list[tuple[str, str, dict[str, str] | None, bool]] = []

    def add(
        self, source: str, target: str, parts: dict[str, str] | None = None, to_conv: bool = False
    ) -> None:
        """`to_conv`: linear weights under this prefix are stored as 1x1 conv weights (VAE attention)."""
        self._rules.append((source, target, parts, to_conv))

    def rename(self, key: str) -> tuple[str, bool]:
        """The LDM name of a diffusers key, and whether a linear weight must become a 1x1 conv weight."""
        matches = [rule for rule in self._rules if key.startswith(rule[0])]
        if not matches:
            raise KeyError(f"no LDM name for {key!r}")
        source, target, parts, to_conv = max(matches, key=lambda rule: len(rule[0]))
        rest = key[len(source) :]
        if parts is not None:
            part = next((p for p in parts if rest.startswith(p)), None)
            if part is None:
                raise KeyError(f"no LDM name for {key!r}")
            rest = parts[part] + rest[len(part) :]
        return target + rest, to_conv


def _layers_per_block(config: Any) -> int:
    layers = config.layers_per_block
    if not isinstance(layers, int):
        raise ValueError(f"only a single int layers_per_block can be exported, not {layers!r}")
    return layers


def _unet_renamer(config: Any) -> _Renamer:
    """LDM UNet layout: input_blocks = conv_in, then per level `layers` (resnet, attention) pairs and a
    downsampler; output_blocks = per level `layers + 1` (resnet, attention, upsampler) triples."""
    layers = _layers_per_block(config)
    levels = len(config.down_block_types)
    r = _Renamer()
    r.add("conv_in.", "input_blocks.0.0.")
    r.add("time_embedding.linear_1.", "time_embed.0.")
    r.add("time_embedding.linear_2.", "time_embed.2.")
    r.add("conv_norm_out.", "out.0.")
    r.add("conv_out.", "out.2.")
    for level in range(levels):
        first = 1 + level * (layers + 1)
        for j in range(layers):
            r.add(f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{first + j}.0.", _UNET_RESNET_PARTS)
            r.add(f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{first + j}.1.")
        r.add(f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{first + layers}.0.op.")
    r.add("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET_PARTS)
    r.add("mid_block.attentions.0.", "middle_block.1.")
    r.add("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET_PARTS)
    for level, block_type in enumerate(config.up_block_types):
        first = level * (layers + 1)
        for j in range(layers + 1):
            r.add(f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{first + j}.0.", _UNET_RESNET_PARTS)
            r.add(f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{first + j}.1.")
        upsampler_slot = 2 if "CrossAttn" in block_type else 1
        r.add(
            f"up_blocks.{level}.upsamplers.0.conv.", f"output_blocks.{first + layers}.{upsampler_slot}.conv."
        )
    return r


def _vae_renamer(config: Any) -> _Renamer:
    """LDM VAE layout: encoder.down.N.block.M / decoder.up.N.block.M (decoder levels numbered in reverse),
    mid.block_1 / mid.attn_1 / mid.block_2, norm_out."""
    layers = _layers_per_block(config)
    levels = len(config.down_block_types)
    r = _Renamer()
    for side in ("encoder", "decoder"):
        r.add(f"{side}.conv_in.", f"{side}.conv_in.")
        r.add(f"{side}.conv_out.", f"{side}.conv_out.")
        r.add(f"{side}.conv_norm_out.", f"{side}.norm_out.")
        r.add(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", _VAE_RESNET_PARTS)
        r.add(f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", _VAE_RESNET_PARTS)
        r.add(f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", _VAE_ATTENTION_PARTS, to_conv=True)
    for level in range(levels):
        for j in range(layers):
            r.add(
                f"encoder.down_blocks.{level}.resnets.{j}.",
                f"encoder.down.{level}.block.{j}.",
                _VAE_RESNET_PARTS,
            )
        r.add(f"encoder.down_blocks.{level}.downsamplers.0.conv.", f"encoder.down.{level}.downsample.conv.")
        ldm_level = levels - 1 - level
        for j in range(layers + 1):
            r.add(
                f"decoder.up_blocks.{level}.resnets.{j}.",
                f"decoder.up.{ldm_level}.block.{j}.",
                _VAE_RESNET_PARTS,
            )
        r.add(f"decoder.up_blocks.{level}.upsamplers.0.conv.", f"decoder.up.{ldm_level}.upsample.conv.")
    r.add("quant_conv.", "quant_conv.")
    r.add("post_quant_conv.", "post_quant_conv.")
    return r


def _export(module: Any, renamer: _Renamer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, tensor in module.state_dict().items():
        name, to_conv = renamer.rename(key)
        value = tensor.detach()
        if to_conv and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[name] = value.contiguous()
    return out


def unet_state_dict(unet: Any) -> dict[str, Any]:
    """The UNet's weights under LDM names, without the `model.diffusion_model.` prefix."""
    return _export(unet, _unet_renamer(unet.config))


def vae_state_dict(vae: Any) -> dict[str, Any]:
    """The VAE alone in the layout of `vae-ft-mse-840000-ema-pruned`: bare `encoder.*`, `decoder.*`,
    `quant_conv.*`, `post_quant_conv.*`; attention projections as 1x1 conv weights."""
    return _export(vae, _vae_renamer(vae.config))


def text_encoder_state_dict(text_encoder: Any) -> dict[str, Any]:
    """CLIP text weights under `text_model.*`; transformers >= 5.6 dropped that level from CLIPTextModel,
    while LDM checkpoints (and every tool reading them) keep it."""
    out: dict[str, Any] = {}
    for key, tensor in text_encoder.state_dict().items():
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        out[name] = tensor.detach().contiguous()
    return out


def checkpoint_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """One SD 1.x checkpoint in the original LDM layout (UNet, VAE and CLIP text encoder)."""
    out: dict[str, Any] = {}
    for prefix, part in (
        (UNET_PREFIX, unet_state_dict(unet)),
        (VAE_PREFIX, vae_state_dict(vae)),
        (TEXT_ENCODER_PREFIX, text_encoder_state_dict(text_encoder)),
    ):
        out.update({prefix + key: value for key, value in part.items()})
    return out
