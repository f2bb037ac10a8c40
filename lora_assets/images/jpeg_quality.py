"""Estimate a JPEG's encoder quality from its quantisation tables (IJG scaling model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Annex K luminance table of the JPEG standard, which libjpeg scales by quality.
_STD_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def estimate_jpeg_quality(quantization: Mapping[int, Sequence[int]] | None) -> int | None:
    """Quality 1-100 that libjpeg would have used to produce the luminance table, or None.

    libjpeg scales the standard table by S = 5000/q (q < 50) or 200 - 2q; the ratio of sums is
    independent of the table's coefficient order, so the coefficient order
    matters little (the standard tables are close to symmetric).
    Tables from other encoders (cameras, Photoshop) map to the libjpeg quality of similar strength.
    """
    if not quantization or 0 not in quantization:
        return None
    table = list(quantization[0])
    if len(table) != 64:
        return None
    if max(table) <= 1:
        return 100
    # Coefficients clamped at 255 (very low qualities) carry no scale information.
    pairs = [(q, std) for q, std in zip(table, _STD_LUMA, strict=True) if q < 255] or [(255, 1)]
    scale = 100.0 * sum(q for q, _ in pairs) / sum(std for _, std in pairs)
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))
