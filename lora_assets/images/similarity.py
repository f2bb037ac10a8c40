"""Pairwise verification of candidate pairs: is B a copy of A, a similar shot, or unrelated?

A copy of one photo (re-save, rescale, thumbnail, upscale, blur, trim) has the same structure
*and* the same colours once aligned. A burst or bracketed shot of one scene has the same
structure but different colours (exposure) or slightly different structure (viewpoint, moment).
So a pair is scored on three aligned measures:

- `colour`: 1 - mean |ΔRGB| / 255 over a 32x32 colour grid of the aligned overlap; with no crop
  this is the classic viewer "grid" score (its 0.85/0.90/0.95 presets mean the same here);
- `structure`: normalised cross-correlation of the aligned grey thumbnails (coarse layout);
- `detail`: the same on band-passed thumbnails (edges, texture), which a shifted viewpoint breaks.

With `crop_tolerant`, the smaller view is searched inside the larger one over scales that trim
up to 10 % a side (20 % of each dimension), by FFT cross-correlation at 64 px, then refined at
the thumbnail's 128 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lora_assets.images.features import ImageFeatures

SEARCH_SIDE = 64
COMPARE_SIDE = 96
MIN_COVER = 0.8
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class PairScore:
    """Aligned similarity of two images (`grid` is the unaligned viewer score, for reference)."""

    grid: float
    colour: float
    structure: float
    detail: float
    cropped: bool
    scale: float = 1.0  # pixels per unit of shared content in B relative to A (for common-scale sharpness)

    def relation(self, threshold: float) -> str | None:
        """'duplicate', 'similar' or None at a similarity threshold (0.90 = the 'medium' preset).

        A duplicate must look the same to within half the preset's tolerance (colour >= 0.95 at
        medium) with matching structure and detail; a similar shot needs the preset's colour
        score or near-identical structure (exposure brackets), but not matching detail too.
        """
        structure_ok = self.structure >= threshold and self.detail >= threshold - 0.2
        if structure_ok and self.colour >= 1.0 - (1.0 - threshold) / 2:
            return "duplicate"
        if (self.structure >= threshold - 0.1 and self.colour >= threshold) or (
            structure_ok and self.colour >= threshold - 0.15
        ):
            return "similar"
        return None


def grid_score(a: np.ndarray, b: np.ndarray) -> float:
    """The viewer-style score of two 32x32 RGB grids: 1 - mean absolute difference / 255."""
    return 1.0 - float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean()) / 255.0


def compare(a: ImageFeatures, b: ImageFeatures, crop_tolerant: bool = True) -> PairScore:
    """Score a candidate pair; tries the whole frames first, then (optionally) crops both ways."""
    grid = grid_score(a.grid, b.grid)
    best = _score_aligned(a.thumb, b.thumb, (0.0, 0.0, 1.0, 1.0), grid, False, b.width / a.width)
    if not crop_tolerant or best.relation(0.95) == "duplicate":
        return best
    for container, template, a_is_container in ((a.thumb, b.thumb, True), (b.thumb, a.thumb, False)):
        box = _locate(container, template)
        if box is not None and box != (0.0, 0.0, 1.0, 1.0):
            # Pixels per unit of shared content in B relative to A, from the trimmed view's width.
            width = box[2]
            scale = b.width / (width * a.width) if a_is_container else width * b.width / a.width
            scored = _score_aligned(container, template, box, grid, True, scale)
            if (scored.structure + scored.detail + scored.colour) > (
                best.structure + best.detail + best.colour
            ):
                best = scored
    return best


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ _LUMA


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.ndim == 2:
        image = Image.fromarray(array.astype(np.float32), mode="F")
    else:
        image = Image.fromarray(array.astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def _crop(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    height, width = rgb.shape[:2]
    x, y, w, h = box
    left, top = round(x * width), round(y * height)
    right, bottom = max(left + 2, round((x + w) * width)), max(top + 2, round((y + h) * height))
    return rgb[top:bottom, left:right]


def _ncc_map(container: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of `template` at every offset inside `container`
    (numerator by FFT, window sums by integral images)."""
    th, tw = template.shape
    centred = template - template.mean()
    norm = np.sqrt((centred * centred).sum()) + 1e-9
    numerator = _correlate_valid(container, centred)
    sums = _window_sums(container, th, tw)
    squares = _window_sums(container * container, th, tw)
    variance = np.maximum(squares - sums * sums / (th * tw), 1e-9)
    return numerator / (np.sqrt(variance) * norm)


def _correlate_valid(container: np.ndarray, template: np.ndarray) -> np.ndarray:
    """sum(container[y:y+h, x:x+w] * template) for every valid (y, x), by FFT (no wrap-around
    reaches the valid region of a circular correlation)."""
    height, width = container.shape
    th, tw = template.shape
    spectrum = np.fft.rfft2(container) * np.conj(np.fft.rfft2(template, s=(height, width)))
    return np.fft.irfft2(spectrum, s=(height, width))[: height - th + 1, : width - tw + 1]


def _window_sums(array: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Sum of every th x tw window (the 'valid' positions), from an integral image."""
    integral = np.zeros((array.shape[0] + 1, array.shape[1] + 1))
    integral[1:, 1:] = array.cumsum(0).cumsum(1)
    return integral[th:, tw:] - integral[:-th, tw:] - integral[th:, :-tw] + integral[:-th, :-tw]


def _locate(container: np.ndarray, template: np.ndarray) -> tuple[float, float, float, float] | None:
    """Where `template` (a possibly trimmed, rescaled copy) best fits inside `container`, as a
    fractional box covering at least MIN_COVER of each dimension; None when no such box exists.

    Coarse search over scales at 64 px, then a local refinement at the thumbnail's resolution."""
    gray_c, gray_t = _gray(container), _gray(template)
    aspect = gray_t.shape[0] / gray_t.shape[1]
    coarse = _search(gray_c, gray_t, aspect, SEARCH_SIDE, np.linspace(MIN_COVER, 1.0, 9), None)
    if coarse is None:
        return None
    x, y, w, _ = coarse
    covers = np.clip(np.linspace(w - 0.03, w + 0.03, 5), MIN_COVER, 1.0)
    return _search(gray_c, gray_t, aspect, max(gray_c.shape), np.unique(covers), (x, y, 0.04)) or coarse


def _search(
    gray_c: np.ndarray,
    gray_t: np.ndarray,
    aspect: float,
    side: int,
    covers: np.ndarray,
    near: tuple[float, float, float] | None,
) -> tuple[float, float, float, float] | None:
    """Best NCC box over `covers` (template width / container width) at `side` px, optionally only
    within `near` = (x, y, margin) fractions of a previous estimate."""
    ch, cw = gray_c.shape
    scale = side / max(ch, cw)
    width, height = max(8, round(cw * scale)), max(8, round(ch * scale))
    search = gray_c if (width, height) == (cw, ch) else _resize(gray_c, width, height)
    best, best_box = -2.0, None
    for cover in covers:
        tw = round(cover * width)
        th = round(tw * aspect)
        if th > height or th < MIN_COVER * height - 1 or tw < 4 or th < 4:
            continue
        x0, y0, x1, y1 = 0, 0, width - tw, height - th
        if near is not None:
            nx, ny, margin = near
            x0, x1 = max(0, round((nx - margin) * width)), min(width - tw, round((nx + margin) * width))
            y0, y1 = max(0, round((ny - margin) * height)), min(height - th, round((ny + margin) * height))
            if x1 < x0 or y1 < y0:
                continue
        window = search[y0 : y1 + th, x0 : x1 + tw]
        scores = _ncc_map(window, _resize(gray_t, tw, th))
        y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if scores[y, x] > best:
            best = float(scores[y, x])
            best_box = ((x + x0) / width, (y + y0) / height, tw / width, th / height)
    return best_box


def _score_aligned(
    container: np.ndarray,
    template: np.ndarray,
    box: tuple[float, float, float, float],
    grid: float,
    cropped: bool,
    scale: float,
) -> PairScore:
    region = _crop(container, box)
    th, tw = template.shape[:2]
    factor = COMPARE_SIDE / max(th, tw)
    size = (max(8, round(tw * factor)), max(8, round(th * factor)))
    a_rgb, b_rgb = _resize(region, *size), _resize(template, *size)
    colour = 1.0 - float(np.abs(_resize(a_rgb, 32, 32) - _resize(b_rgb, 32, 32)).mean()) / 255.0
    a, b = _gray(a_rgb), _gray(b_rgb)
    structure = _correlation(a, b)
    detail = _correlation(_band_pass(a), _band_pass(b))
    return PairScore(grid, colour, structure, detail, cropped, scale)


def _band_pass(gray: np.ndarray) -> np.ndarray:
    return _gaussian(gray - _gaussian(gray, 3.0), 0.7)


def _gaussian(array: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with mirrored edges (numpy only: scipy.ndimage costs 0.2 s to import)."""
    radius = max(1, round(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(array, radius, mode="reflect")
    rows = sum(taps[k] * padded[:, k : k + array.shape[1]] for k in range(2 * radius + 1))
    return sum(taps[k] * rows[k : k + array.shape[0], :] for k in range(2 * radius + 1))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 1e-9 else 1.0
