"""How much *real* detail an image holds: effective resolution and sharpness.

Effective resolution: take the most textured tiles at native resolution, downscale each by f
and upscale back, and measure what was lost. A photo with detail up to its pixel grid loses
something at any f < 1; an upscale from a 1/3-size source loses almost nothing until f nears
its source scale, a blurred copy likewise. The effective scale is where the loss first exceeds
5 % of what a 1/8 reduction loses; effective megapixels = native megapixels x scale². (At 5 %
the interpolation leakage of an upscale stays below the bar, so a 2x upscale measures half
its source's scale; at 1 % it measured 70 %.)

JPEG block edges are not detail: both measures ignore the two pixels on either side of the
8-pixel block grid (its phase is found from the image itself, so rotations and PNG copies of
JPEGs are handled), so a q30 re-save does not look sharper than its source.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from lora_assets.images.decode import Decoded, decode_oriented

# Scales at which the resampling loss is measured: 1 down to 1/8, about 11 % apart.
SCALES = tuple(float(f) for f in np.round(np.geomspace(1.0, 0.125, 20), 4))
REFERENCE_SCALE = 0.125
LOSS_FRACTION = 0.05
TILE = 128
TILES = 16
REDUCE = 8  # tiles are chosen on a map reduced this much
COMMON_SIDE = 1024
# Larger photos are analysed on a DCT-reduced decode (1/2, 1/4): a 24 MP JPEG then costs 60 %.
ANALYSIS_PIXELS = 12_000_000
SATURATION_START, SATURATION_END = 0.75, 0.95
DETAIL_VERSION = 14
# The central box (this share of each side, but at least MIN_WINDOW pixels or the whole side) is
# kept at native resolution for the interpolation test. Its 81-tap filter fitted on a 640 px
# photo's 20 % box (a 73 px square against a third) read a lossless third's band as boosted 1.5x,
# as a sharpening would.
WINDOW_SHARE = 0.2
MIN_WINDOW = 256


def no_steps() -> tuple[np.ndarray, np.ndarray]:
    """`DetailMeasure.steps` when they were not measured."""
    return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class DetailMeasure:
    """Native size, the resampling-loss curve over SCALES measured on an analysis image (the
    photo itself, or a DCT-reduced decode of one larger than ANALYSIS_PIXELS), and a grey copy
    (long side <= 1024) for common-scale sharpness."""

    width: int
    height: int
    analysis_scale: float
    losses: np.ndarray
    gray: np.ndarray
    window: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint8))
    window_origin: tuple[int, int] = (0, 0)  # (x, y) of `window` in the native image
    # Mean |step| between neighbouring native pixels across the whole frame: per column
    # boundary (x) and per row boundary (y). Measured with the window (see `block_steps`).
    steps: tuple[np.ndarray, np.ndarray] = field(default_factory=no_steps)

    @property
    def native_measured(self) -> bool:
        """Whether the native window and steps are there (the interpolation test needs both)."""
        return self.window.size > 0 and self.steps[0].size > 0

    @property
    def native_mp(self) -> float:
        return self.width * self.height / 1e6

    def scale_at(self, reference: float = REFERENCE_SCALE) -> float:
        """Effective scale relative to the native pixels, judged against `reference` (a fraction
        of the native Nyquist frequency).

        When the analysis image was reduced and still shows detail up to its own pixel grid, the
        photo's detail is assumed to go on towards its native grid (ramping from the measured
        a x f at f <= 0.75 to f at f >= 0.95), so a large sharp original is not mistaken for an
        upscale of its half-size copy."""
        a = self.analysis_scale
        f = effective_scale_from(self.losses, min(0.5, reference / a))
        if a >= 1.0:
            return f
        ramp = min(1.0, max(0.0, (f - SATURATION_START) / (SATURATION_END - SATURATION_START)))
        return a * f + (f - a * f) * ramp

    @property
    def effective_scale(self) -> float:
        """Effective scale with the standard reference (a 1/8 reduction)."""
        return self.scale_at(REFERENCE_SCALE)

    @property
    def effective_mp(self) -> float:
        return self.native_mp * self.effective_scale**2

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        size = np.array([self.width, self.height, self.analysis_scale, *self.window_origin])
        np.savez(
            buffer,
            size=size,
            losses=self.losses,
            gray=self.gray,
            window=self.window,
            steps_x=self.steps[0],
            steps_y=self.steps[1],
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DetailMeasure:
        with np.load(io.BytesIO(data)) as stored:
            width, height, analysis_scale, x, y = stored["size"]
            window = stored["window"]
            return cls(
                int(width),
                int(height),
                float(analysis_scale),
                stored["losses"],
                stored["gray"],
                window,
                (int(x), int(y)),
                (stored["steps_x"], stored["steps_y"]),
            )


def measure_detail(
    path: Path, max_pixels: int, window: bool = True, native_gray: Image.Image | None = None
) -> DetailMeasure:
    """Decode `path` in grey (EXIF-oriented; DCT-reduced above ANALYSIS_PIXELS) and measure it.

    The central window is cut from a native decode: the interpolation test needs the larger
    copy's own pixels, and large photos are where upscales hide. A photo above ANALYSIS_PIXELS
    pays a second decode for it, so `window=False` leaves it out there (copies of one grid);
    the frame's `block_steps`, which that test also reads, are only measured with `window`.
    `native_gray` is the photo's oriented grey decode when one is already in hand (a PNG decoded
    in full for hashing): the file is then not decoded again."""
    if native_gray is None:
        with Image.open(path) as probe:
            pixels = probe.width * probe.height
    else:
        pixels = native_gray.width * native_gray.height
    reduce = next((k for k in (1, 2, 4, 8) if pixels / (k * k) <= ANALYSIS_PIXELS), 8)
    no_window = np.zeros((0, 0), dtype=np.uint8)
    if reduce > 1 and not window and native_gray is not None:
        return _measured(native_gray.reduce(reduce), native_gray.size, no_window, (0, 0))
    if reduce > 1 and not window:
        decoded = decode_oriented(path, max_pixels, gray=True, reduce=reduce)
        return _measured(decoded.image, decoded.native_size, no_window, (0, 0))
    if native_gray is None:
        decoded = decode_oriented(path, max_pixels, gray=True)
    else:  # not a JPEG: reduced by boxes below
        decoded = Decoded(native_gray, native_gray.size, None, None)
    width, height = decoded.native_size
    box_width, box_height = (
        min(side, max(round(side * WINDOW_SHARE), MIN_WINDOW)) for side in (width, height)
    )
    x, y = (width - box_width) // 2, (height - box_height) // 2
    cut = np.asarray(decoded.image.crop((x, y, x + box_width, y + box_height)), dtype=np.uint8)
    steps = block_steps(decoded.image) if window else no_steps()
    gray = decoded.image
    if reduce > 1 and decoded.format == "JPEG":  # reduced in the DCT, as the analysis was calibrated
        gray = decode_oriented(path, max_pixels, gray=True, reduce=reduce).image
    elif reduce > 1:
        gray = gray.reduce(reduce)
    return _measured(gray, decoded.native_size, cut, (x, y), steps)


def _measured(
    gray: Image.Image,
    native_size: tuple[int, int],
    window: np.ndarray,
    origin: tuple[int, int],
    steps: tuple[np.ndarray, np.ndarray] | None = None,
) -> DetailMeasure:
    """The measure of `gray`, an analysis decode of a photo of `native_size`."""
    width, height = native_size
    factor = max(1, max(gray.size) // COMMON_SIDE)
    small = gray.reduce(factor) if factor > 1 else gray.copy()  # box-reduce first: 10x cheaper
    small.thumbnail((COMMON_SIDE, COMMON_SIDE), Image.Resampling.LANCZOS)
    return DetailMeasure(
        width,
        height,
        gray.width / width,
        loss_curve(gray),
        np.asarray(small, dtype=np.uint8),
        window,
        origin,
        no_steps() if steps is None else steps,
    )


def block_steps(gray: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Mean |difference| of neighbouring pixels across each column boundary (x) and each row
    boundary (y) of a native grey frame: where a JPEG's 8-pixel blocks meet, these stand out,
    and a copy made from that JPEG carries them on its own grid (see interpolation)."""
    width, height = gray.size
    if width < 2 or height < 2:
        return no_steps()
    across_x = np.asarray(
        ImageChops.difference(gray.crop((1, 0, width, height)), gray.crop((0, 0, width - 1, height)))
    )
    across_y = np.asarray(
        ImageChops.difference(gray.crop((0, 1, width, height)), gray.crop((0, 0, width, height - 1)))
    )
    return (
        (across_x.sum(axis=0, dtype=np.uint32) / max(1, height)).astype(np.float32),
        (across_y.sum(axis=1, dtype=np.uint32) / max(1, width)).astype(np.float32),
    )


def loss_curve(gray: Image.Image) -> np.ndarray:
    """Resampling loss of the most textured tiles at every scale in SCALES (off the block grid)."""
    boxes = _textured_tiles(gray)
    stack = np.stack([np.asarray(gray.crop((x, y, x + w, y + h)), dtype=np.float32) for y, x, h, w in boxes])
    row_phase = _grid_phase(list(np.abs(np.diff(stack, axis=1)).mean(axis=2)), [y for y, *_ in boxes])
    col_phase = _grid_phase(list(np.abs(np.diff(stack, axis=2)).mean(axis=1)), [x for _, x, *_ in boxes])
    weights = np.stack(
        [
            np.outer(_off_phase(y, h, row_phase), _off_phase(x, w, col_phase)).astype(np.float32)
            for y, x, h, w in boxes
        ]
    )
    return np.array([_resample_loss(stack, weights, f) for f in SCALES])


def effective_scale_from(losses: np.ndarray, reference_scale: float = REFERENCE_SCALE) -> float:
    """Largest scale at which the loss stays below LOSS_FRACTION of the loss at `reference_scale`.

    The reference is a *content* frequency: within a duplicate group every member is judged
    against the same content scale (see keep_best), which is what makes a 2x upscale measure
    half its source's scale, so that it collapses to its source's effective megapixels."""
    log_scales = np.log(np.array(SCALES))
    reference = float(np.interp(np.log(reference_scale), log_scales[::-1], losses[::-1]))
    if reference < 1e-6:
        return 1.0  # a flat image: nothing to judge
    relative = losses / reference
    previous_scale, previous_loss = SCALES[0], float(relative[0])
    for scale, loss in zip(SCALES[1:], relative[1:], strict=True):
        if scale < reference_scale:
            break
        if loss > LOSS_FRACTION:
            t = (LOSS_FRACTION - previous_loss) / (float(loss) - previous_loss)
            return previous_scale + (scale - previous_scale) * t
        previous_scale, previous_loss = scale, float(loss)
    return previous_scale


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian off the JPEG block grid (blur lowers it); compare only images
    resized to one scale."""
    g = gray.astype(np.float32)  # float32 halves the memory traffic; the variance is summed pairwise
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    laplacian = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    keep_rows, keep_cols = off_grid_masks(g)
    return float(laplacian[np.ix_(keep_rows[1:-1], keep_cols[1:-1])].var())


def off_grid_masks(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean row and column masks that are False on the two pixels either side of the
    strongest 8-pixel grid (where JPEG blocks meet)."""
    row_phase = _grid_phase([np.abs(np.diff(gray, axis=0)).mean(axis=1)], [0])
    col_phase = _grid_phase([np.abs(np.diff(gray, axis=1)).mean(axis=0)], [0])
    return _off_phase(0, gray.shape[0], row_phase), _off_phase(0, gray.shape[1], col_phase)


def _grid_phase(steps: list[np.ndarray], origins: list[int]) -> int | None:
    """Position mod 8 of the strongest steps (step k is between pixels k and k+1), pooled over
    arrays whose first pixel is at `origins` in the image; None when there is too little data."""
    totals, counts = np.zeros(8), np.zeros(8)
    for step, origin in zip(steps, origins, strict=True):
        phases = (origin + np.arange(len(step))) % 8
        np.add.at(totals, phases, step)
        np.add.at(counts, phases, 1)
    if counts.min() < 2:
        return None
    return int(np.argmax(totals / counts))


def _off_phase(origin: int, length: int, phase: int | None) -> np.ndarray:
    """Mask of `length` positions starting at `origin`: False at phase and phase+1 (mod 8)."""
    keep = np.ones(length, dtype=bool)
    if phase is not None:
        positions = (origin + np.arange(length)) % 8
        keep[(positions == phase) | (positions == (phase + 1) % 8)] = False
    return keep


def resize_gray(gray: np.ndarray, width: int) -> np.ndarray:
    """An 8-bit grey array resized to `width` (aspect kept), high-quality filter."""
    height = max(1, round(gray.shape[0] * width / gray.shape[1]))
    image = Image.fromarray(gray.astype(np.uint8))
    return np.asarray(image.resize((max(1, width), height), Image.Resampling.LANCZOS), dtype=np.uint8)


def _textured_tiles(gray: Image.Image) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) of the TILES most textured tiles (gradient energy on a reduced map);
    origins are multiples of 8, so tiles share the image's JPEG block grid."""
    width, height = gray.size
    if height < TILE or width < TILE:
        return [(0, 0, height, width)]
    reduced = np.asarray(gray.reduce(REDUCE), dtype=np.float32)
    gy, gx = np.gradient(reduced)
    energy = np.zeros((reduced.shape[0] + 1, reduced.shape[1] + 1))
    energy[1:, 1:] = (gx * gx + gy * gy).cumsum(0, dtype=np.float64).cumsum(1)
    span = TILE // REDUCE
    step = span // 2  # half-tile stride, in reduced pixels
    ys = np.arange(0, reduced.shape[0] - span + 1, step)[:, None]
    xs = np.arange(0, reduced.shape[1] - span + 1, step)[None, :]
    sums = energy[ys + span, xs + span] - energy[ys, xs + span] - energy[ys + span, xs] + energy[ys, xs]
    order = np.argsort(-sums, axis=None)
    rows, cols = np.unravel_index(order, sums.shape)
    chosen: list[tuple[int, int]] = []
    for y, x in zip(ys[rows, 0] * REDUCE, xs[0, cols] * REDUCE, strict=True):
        if all(abs(y - cy) >= TILE or abs(x - cx) >= TILE for cy, cx in chosen):
            chosen.append((y, x))
        if len(chosen) == TILES:
            break
    return [(y, x, TILE, TILE) for y, x in chosen]


def _resample_loss(stack: np.ndarray, weights: np.ndarray, factor: float) -> float:
    """Mean squared difference (weighted off the block grid) between same-sized tiles and their
    down-by-`factor`-and-back-up copies (Lanczos down, bicubic up, as PIL resizes, as matrices)."""
    if factor >= 1.0:
        return 0.0
    _, h, w = stack.shape
    down_rows, up_rows = _resampling_matrices(h, factor)
    down_cols, up_cols = _resampling_matrices(w, factor)
    back = up_rows @ (down_rows @ stack @ down_cols.T) @ up_cols.T
    per_tile = (((stack - back) ** 2) * weights).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
    return float(per_tile.mean())


@functools.cache
def _resampling_matrices(length: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """(down, up): the linear maps PIL applies along one axis when resizing `length` pixels to
    round(length x factor) with LANCZOS and back with BICUBIC, read off by resizing an identity."""
    small = max(2, round(length * factor))
    identity = Image.fromarray(np.eye(length, dtype=np.float32), mode="F")
    down = np.asarray(identity.resize((small, length), Image.Resampling.LANCZOS), dtype=np.float32).T
    identity_small = Image.fromarray(np.eye(small, dtype=np.float32), mode="F")
    up = np.asarray(identity_small.resize((length, small), Image.Resampling.BICUBIC), dtype=np.float32).T
    return down, up
