"""Is the larger of two copies an interpolated upscale of the smaller one?

An upscale, plain or sharpened afterwards, holds nothing its source does not: a linear filter
over the smaller copy's bicubic upscale predicts the larger copy up to its JPEG noise. A real
larger original holds detail above the smaller copy's Nyquist frequency that no such filter
predicts. `compare_grids` fits that filter on the most textured square of the central box both
copies keep at native resolution (`DetailMeasure.window`) and reports two things:
- the share: what the filter leaves unexplained over that fine detail (what a round trip through
  the smaller grid removes from the larger copy). A very soft original holds no fine detail to
  judge: then there is no share;
- the amplification: the filter's gain in the upper half of the band the smaller copy holds over
  its gain at low frequencies. Downscaling attenuates that band a little (a real original needs a
  gain of at most ~1.3 to come back from its half or third); an unsharp mask after upscaling
  multiplies it by 1.5-2.5, which no downscale explains. It needs no fine detail, so it catches
  the sharpened upscales of soft photos that the share cannot judge;
- the carried grid: whether the larger copy shows the smaller copy's JPEG block grid, mapped
  onto its own pixels by the size ratio. Block edges are the smaller file's own, made when it
  was saved: a copy made from it carries them (faintly: enlarged, sharpened, saved again), a real
  original never can. It is read off the whole frame's `DetailMeasure.steps`, and used only where
  the share does not show real detail beyond the smaller copy: when the source is too soft for
  the share or the mask's threshold, its flat areas are where its blocks show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lora_assets.images.detail import DetailMeasure

SQUARE = 192  # side of the square tested, in the larger copy's pixels
MIN_SQUARE = 48
FILTER = 9  # side of the fitted linear filter: covers a radius-2 unsharp mask
MIN_FINE = 1.0  # grey levels (RMS) of fine detail below which the share cannot be judged
# Unexplained / fine detail (RMS) below UPSCALE_SHARE: an upscale; above SOURCE_SHARE: the larger
# copy holds real detail beyond the smaller one. On the dedup benchmark, originals against their
# half and third measured 0.77-1.8 (all but 6 of 76 above 0.9), sharpened upscales 0.30-1.22
# (19 of 31 below 0.7) and plain 2x upscales 0.06-0.53.
UPSCALE_SHARE = 0.7
SOURCE_SHARE = 0.9
# Gain at 0.3 and 0.5 of the smaller copy's Nyquist frequency over the gain at 0.1: originals
# against their half, third and thumbnail measured at most 1.26 on the dedup benchmark, sharpened
# upscales 1.38-1.85 (but 1.05 and 1.11 for the two whose source is too soft for the mask's
# threshold to act).
AMPLIFIED = 1.33
BANDS = (0.1, 0.3, 0.5)  # fractions of the smaller copy's Nyquist frequency
MIN_RATIO = 1.2
# The carried grid, as a z-score of the larger copy's steps next to the smaller copy's block edges
# against its steps elsewhere, the lesser of the two axes. On 81 originals at 40 unrelated size
# ratios each (3240 draws) it exceeded 3.0 in 0.12 % of draws; the dedup benchmark's originals
# against their own JPEG half, third and thumbnail (126 pairs) measured at most 2.2, its
# sharpened upscales 60 % above 3.0 (the two soft ones that nothing else shows: 3.2 and 4.3).
CARRIED = 3.0
# The smaller copy's own grid must stand out (z-score of its steps at the strongest of the 8
# positions against the other 7): where it does not, the position found is noise, and a test at
# a wrong position read up to 5.0 on the benchmark's originals.
GRID_VISIBLE = 3.0
CARRIED_BINS = 16  # bins over one block of the smaller copy (8 of its pixels)


@dataclass(frozen=True)
class GridEvidence:
    """What the larger copy holds beyond the smaller one (see the module docstring)."""

    share: float | None
    amplification: float
    carried: float = 0.0

    @property
    def verdict(self) -> str:
        """'upscale', 'source', 'doubtful' (neither shown: keep-best takes it as no evidence), or ''
        when nothing can be said."""
        if self.shown_by in ("prediction", "sharpening"):
            return "upscale"
        if self.share is not None and self.share >= SOURCE_SHARE:
            return "source"
        if self.shown_by == "block grid":
            return "upscale"
        return "" if self.share is None else "doubtful"

    @property
    def shown_by(self) -> str:
        """What would show an upscale: 'prediction' (the share), 'sharpening' (the amplification),
        'block grid' (the carried grid; `verdict` lets real detail beyond overrule it), or ''."""
        if self.share is not None and self.share < UPSCALE_SHARE:
            return "prediction"
        if self.amplification >= AMPLIFIED:
            return "sharpening"
        return "block grid" if self.carried >= CARRIED else ""

    @property
    def sharpened_gain(self) -> float:
        """The amplification when it, not the share, shows an upscale (a sharpened one); else 0."""
        return self.amplification if self.shown_by == "sharpening" else 0.0


def compare_grids(large: DetailMeasure, small: DetailMeasure, mirrored: bool = False) -> GridEvidence | None:
    """The share and amplification of `large` over `small` (module docstring); None when the
    pair cannot be judged (close pixel grids, a window too small, too much clipping)."""
    aligned = _aligned_square(large, small, mirrored)
    if aligned is None:
        return None
    target, predicted, (ratio_x, ratio_y) = aligned
    pad = FILTER // 2
    inner = target[pad:-pad, pad:-pad]
    usable = ((inner > 3) & (inner < 252)).ravel()  # clipped halos are not linear in the source
    if usable.mean() < 0.5:
        return None
    fitted, weights = _fit_filter(predicted, target, usable)
    residual = (inner - fitted).ravel()[usable]
    fine = (inner - _round_trip(target, ratio_x, ratio_y)[pad:-pad, pad:-pad]).ravel()[usable]
    fine_rms = float(np.sqrt((fine**2).mean()))
    share = float(np.sqrt((residual**2).mean())) / fine_rms if fine_rms >= MIN_FINE else None
    return GridEvidence(
        share, _amplification(weights, ratio_x, ratio_y), carried_grid(large, small, mirrored)
    )


def carried_grid(large: DetailMeasure, small: DetailMeasure, mirrored: bool = False) -> float:
    """How clearly `large` shows `small`'s JPEG block grid (module docstring): the lesser over
    the two axes of a z-score; 0 when either has no steps measured, or `small` no visible grid."""
    if large.steps[0].size == 0 or small.steps[0].size == 0:
        return 0.0
    scores = []
    for axis in (0, 1):
        own = small.steps[axis]
        phase, visible = _block_phase(own)
        if visible < GRID_VISIBLE:  # no grid of its own to carry (lossless, or a very fine JPEG)
            return 0.0
        edge = (phase + 1) % 8  # block edges sit before pixels edge, edge + 8, ...
        if axis == 0 and mirrored:
            edge = (len(own) + 1 - edge) % 8
        ratio = (small.width / large.width, small.height / large.height)[axis]
        scores.append(_edge_contrast(large.steps[axis], ratio, edge))
    return min(scores)


def _block_phase(steps: np.ndarray) -> tuple[int, float]:
    """Position mod 8 of the strongest steps of a frame (step k lies between pixels k and k+1),
    and how clearly they stand out: a z-score against the other seven positions."""
    means = _phase_means(steps)
    phase = int(np.argmax(means))
    others = np.delete(means, phase)
    spread = float(others.std())
    return phase, float((means[phase] - others.mean()) / spread) if spread > 0 else 0.0


def _phase_means(steps: np.ndarray) -> np.ndarray:
    """Mean of `steps` at each position mod 8."""
    positions = np.arange(len(steps)) % 8
    return np.bincount(positions, steps, 8) / np.maximum(np.bincount(positions, minlength=8), 1)


def _edge_contrast(steps: np.ndarray, ratio: float, edge: int) -> float:
    """z-score of `steps` (one copy's, its own 8-pixel grid taken out) within half a pixel of the
    other copy's block edges, mapped through `ratio` (other / this size), against the steps a
    pixel or more away from them."""
    positions = np.arange(len(steps))
    residual = steps - _phase_means(steps)[positions % 8]
    # Step k is the edge before pixel k + 1: at k + 1 on this grid, (k + 1) x ratio on the other.
    offset = np.mod((positions + 1) * ratio - edge + 4.0, 8.0) - 4.0  # other's pixels to its nearest edge
    width = 8.0 / CARRIED_BINS
    bins = np.minimum((offset + 4.0) // width, CARRIED_BINS - 1).astype(int)
    counts = np.bincount(bins, minlength=CARRIED_BINS)
    if counts.min() < 3:
        return 0.0
    means = np.bincount(bins, residual, CARRIED_BINS) / counts
    centres = (np.arange(CARRIED_BINS) + 0.5) * width - 4.0
    near, far = means[np.abs(centres) < 0.5], means[np.abs(centres) >= 1.0]
    spread = float(far.std())
    return float((near.mean() - far.mean()) / (spread / np.sqrt(len(near)))) if spread > 0 else 0.0


def _aligned_square(
    large: DetailMeasure, small: DetailMeasure, mirrored: bool
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]] | None:
    """The most textured square of `large`'s window, `small`'s bicubic upscale over the same
    content, and the size ratios; None when the grids are too close or the windows too small."""
    if large.window.size == 0 or small.window.size == 0:
        return None
    ratio_x, ratio_y = large.width / small.width, large.height / small.height
    if min(ratio_x, ratio_y) < MIN_RATIO:
        return None
    big = large.window.astype(np.float64)
    source = small.window[:, ::-1] if mirrored else small.window
    source_x, source_y = small.window_origin
    if mirrored:
        source_x = small.width - source_x - small.window.shape[1]
    # Search away from the window's edges, so that the square maps inside the smaller window too.
    inset = int(np.ceil(4 * max(ratio_x, ratio_y))) + 2
    inner_window = big[inset:-inset, inset:-inset]
    size = min(SQUARE, *inner_window.shape) if inner_window.size else 0
    if size < MIN_SQUARE:
        return None
    x, y = _textured_square(inner_window, size)
    x, y = x + inset, y + inset
    left, top = large.window_origin[0] + x, large.window_origin[1] + y
    box = (  # the square in the smaller copy's window coordinates
        left / ratio_x - source_x,
        top / ratio_y - source_y,
        (left + size) / ratio_x - source_x,
        (top + size) / ratio_y - source_y,
    )
    margin = 3.0
    if min(box[0], box[1]) < margin or box[2] > source.shape[1] - margin or box[3] > source.shape[0] - margin:
        return None
    predicted = np.asarray(
        Image.fromarray(np.ascontiguousarray(source, dtype=np.float32), mode="F").resize(
            (size, size), Image.Resampling.BICUBIC, box=box
        ),
        dtype=np.float64,
    )
    return big[y : y + size, x : x + size], predicted, (ratio_x, ratio_y)


def _amplification(weights: np.ndarray, ratio_x: float, ratio_y: float) -> float:
    """Mean gain of the fitted filter at BANDS[1:] over its gain at BANDS[0] (fractions of the
    smaller copy's Nyquist frequency, in the larger copy's pixels), over both axes."""
    taps = np.arange(FILTER) - FILTER // 2
    gains = []
    for kernel, ratio in ((weights.sum(axis=0), ratio_x), (weights.sum(axis=1), ratio_y)):
        response = [abs(np.sum(kernel * np.exp(-1j * np.pi * band / ratio * taps))) for band in BANDS]
        gains.append(float(np.mean(response[1:])) / max(response[0], 0.1))
    return float(np.mean(gains))


def _round_trip(target: np.ndarray, ratio_x: float, ratio_y: float) -> np.ndarray:
    """`target` down to the smaller copy's grid (Lanczos) and back (bicubic)."""
    height, width = target.shape
    image = Image.fromarray(target.astype(np.float32), mode="F")
    small = image.resize(
        (max(2, round(width / ratio_x)), max(2, round(height / ratio_y))), Image.Resampling.LANCZOS
    )
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)


def _fit_filter(source: np.ndarray, target: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares FILTER x FILTER linear filter (with offset) from `source` to `target`,
    fitted over `usable` pixels: `source` filtered (valid region), and the filter's taps."""
    pad = FILTER // 2
    height, width = source.shape
    inner_height, inner_width = height - 2 * pad, width - 2 * pad
    # Fitted on every third usable pixel (81 weights need far fewer than 30 000 samples), by the
    # normal equations: 10x cheaper than a full least-squares solve, the same residual. Only the
    # fitted pixels' neighbourhoods are gathered; the filter is then applied by shifted sums.
    fit = np.flatnonzero(usable)[::3]
    rows, cols = np.divmod(fit, inner_width)
    windows = np.lib.stride_tricks.sliding_window_view(source, (FILTER, FILTER))[rows, cols]
    design = np.concatenate([windows.reshape(len(fit), -1), np.ones((len(fit), 1))], axis=1)
    goal = target[pad : height - pad, pad : width - pad].ravel()[fit]
    normal = design.T @ design
    ridge = 1e-6 * np.trace(normal) / len(normal) * np.eye(len(normal))
    weights = np.linalg.solve(normal + ridge, design.T @ goal)
    taps = weights[:-1].reshape(FILTER, FILTER)
    fitted = np.full((inner_height, inner_width), weights[-1])
    for dy in range(FILTER):
        for dx in range(FILTER):
            fitted += taps[dy, dx] * source[dy : dy + inner_height, dx : dx + inner_width]
    return fitted, taps


def _textured_square(gray: np.ndarray, size: int) -> tuple[int, int]:
    """(x, y) of the size x size square with the most gradient energy (on a coarse grid)."""
    height, width = gray.shape
    gy, gx = np.gradient(gray)
    energy = np.zeros((height + 1, width + 1))
    energy[1:, 1:] = (gx * gx + gy * gy).cumsum(0).cumsum(1)
    step = max(1, size // 8)
    ys = np.arange(0, height - size + 1, step)[:, None]
    xs = np.arange(0, width - size + 1, step)[None, :]
    sums = energy[ys + size, xs + size] - energy[ys, xs + size] - energy[ys + size, xs] + energy[ys, xs]
    row, col = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(xs[0, col]), int(ys[row, 0])
