"""Which photos are good enough to train on (before any copy is made)."""

from __future__ import annotations

from lora_assets.settings import FilterSettings


def rejection_reason(width: int, height: int, effective_mp: float, settings: FilterSettings) -> str | None:
    """Why a photo (oriented size, effective megapixels) is not used, or None when it is."""
    short = min(width, height)
    if short < settings.min_short_side:
        return f"short side {short} px < min_short_side {settings.min_short_side} px"
    if effective_mp < settings.min_effective_mp:
        return (
            f"effective resolution {effective_mp:.2f} MP < min_effective_mp {settings.min_effective_mp} MP "
            f"(native {width * height / 1e6:.2f} MP: an upscale or a blurred copy)"
        )
    return None
