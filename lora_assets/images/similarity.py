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

The web's copies change more than pixels, so before scoring:
- a mirrored copy is flipped back (its mirrored pHash is the closer one);
- a caption strip added above or below the photo is left out of the frame;
- tones are matched: one copy's grey levels are mapped onto the other's by a monotone curve, so
  a colour grade or a black-and-white conversion agrees (`tone`); colour only breaks ties;
- an exposure bracket is told apart from a grade: it is one constant gain in linear light
  (`gain`, in stops), which no grade or conversion is, so it stays "similar";
- an overlay (text banner, watermark, logo: one box up to 20 % of the frame) is left out when
  it holds most of the disagreement, and the copy that carries it is named (`overlay_on`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from lora_assets.images.features import ImageFeatures

SEARCH_SIDE = 64
COMPARE_SIDE = 96
MIN_COVER = 0.8
# Exposure brackets are at least this far apart (median gain, stops), and three quarters of the
# pixels gain at least BRACKET_CONSISTENT; a grade's gains vary with level and colour.
BRACKET_STOPS = 0.6
BRACKET_CONSISTENT = 0.5
# Overlays: pixels that disagree by more than this (grey levels, after tone matching) ...
OVERLAY_DIFFERENCE = 24
# ... inside one box of at most this share of the frame, holding at least this share of the
# disagreement, make a copy with an overlay.
OVERLAY_MAX_AREA = 0.2
OVERLAY_SHARE = 0.4
OVERLAY_CLEAR = 1.3  # the overlaid copy's box edge must stand out this much more
MIRROR_MARGIN = 4  # bits by which the mirrored hash must be closer
_LUMA = np.array([0.299, 0.587, 0.114])
# An overlay box: the mask of the pixels outside it, the copy carrying it ("a"/"b", "?" when only
# its edge leans that way), and its kind.
Box = tuple[np.ndarray, str, str]
_SWAP = {"a": "b", "b": "a", "": ""}  # a pair's "a"/"b" labels, scored the other way round


@dataclass(frozen=True)
class PairScore:
    """Aligned similarity of two images (`grid` is the unaligned viewer score, for reference)."""

    grid: float
    colour: float
    structure: float
    detail: float
    cropped: bool
    scale: float = 1.0  # pixels per unit of shared content in B relative to A (for common-scale sharpness)
    tone: float = -1.0  # 1 - mean |Δ grey| / 255 after matching tones; -1: use colour
    gain: float = 0.0  # B's exposure relative to A in stops, when one constant gain explains it
    mirrored: bool = False
    overlay: float = 0.0  # share of the frame covered by an overlay on one copy
    overlay_on: str = ""  # "a" or "b"; "" with an overlay: the copy carrying it is not known ...
    overlay_lean: str = ""  # ... but its edge leans this way
    overlay_kind: str = ""  # "text banner", "caption strip", "watermark or logo"

    def relation(self, threshold: float) -> str | None:
        """'duplicate', 'similar' or None at a similarity threshold (0.90 = the 'medium' preset).

        A duplicate must look the same to within half the preset's tolerance (tone-matched grey
        >= 0.95 at medium) with matching structure and detail, and not be an exposure bracket; a
        similar shot needs the preset's colour score or near-identical structure (brackets).
        """
        structure_ok = self.structure >= threshold and self.detail >= threshold - 0.2
        agreement = self.tone if self.tone >= 0 else self.colour
        bracket = abs(self.gain) >= BRACKET_STOPS
        if structure_ok and not bracket and agreement >= 1.0 - (1.0 - threshold) / 2:
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
    mirrored = _popcount(a.phash ^ b.phash_mirror) + MIRROR_MARGIN < _popcount(a.phash ^ b.phash)
    a_thumb, a_strip = _without_strip(a, b)
    b_thumb, b_strip = _without_strip(b, a)
    if mirrored:
        b_thumb = b_thumb[:, ::-1]
    grid = grid_score(a.grid, b.grid[:, ::-1] if mirrored else b.grid)
    best = _score_aligned(a_thumb, b_thumb, (0.0, 0.0, 1.0, 1.0), grid, False, b.width / a.width)
    # A crop is searched unless the whole frames already match without an overlay. When they
    # match once an overlay is left out, only a closer match of a trim with no overlay replaces
    # that (a banner along an edge would otherwise pass for a trim that cuts it off, and a trim's
    # lost edge for a banner).
    overlaid = bool(best.overlay_on) and best.relation(0.9) == "duplicate"
    if crop_tolerant and (best.relation(0.95) != "duplicate" or best.overlay):
        for container, template, a_is_container in ((a_thumb, b_thumb, True), (b_thumb, a_thumb, False)):
            box = _locate(container, template)
            if box is not None and box != (0.0, 0.0, 1.0, 1.0):
                # Pixels per unit of shared content in B relative to A, from the trimmed view's width.
                width = box[2]
                scale = b.width / (width * a.width) if a_is_container else width * b.width / a.width
                scored = _score_aligned(container, template, box, grid, True, scale)
                if not a_is_container:  # scored as (B, A): turn it back to (A, B)
                    scored = replace(
                        scored,
                        overlay_on=_SWAP[scored.overlay_on],
                        overlay_lean=_SWAP[scored.overlay_lean],
                        gain=-scored.gain,
                    )
                clean = not scored.overlay and scored.relation(0.95) == "duplicate"
                if (clean or not overlaid) and _total(scored) > _total(best):
                    best, overlaid = scored, False
    best = replace(best, mirrored=mirrored)
    if (a_strip or b_strip) and not best.overlay_on:
        on, share = ("a", a_strip) if a_strip > b_strip else ("b", b_strip)
        if abs(a_strip - b_strip) >= 0.03:
            best = replace(best, overlay=share, overlay_on=on, overlay_kind="caption strip")
    return best


def _total(score: PairScore) -> float:
    agreement = score.tone if score.tone >= 0 else score.colour
    return score.structure + score.detail + agreement


def _popcount(value: int) -> int:
    return int(value).bit_count()


def _without_strip(image: ImageFeatures, other: ImageFeatures) -> tuple[np.ndarray, float]:
    """`image`'s thumbnail without its caption strip, and the strip's share of the frame, when
    leaving the strip out gives `other`'s aspect ratio (a strip adds height; a crop does not).
    A plain band found at the other edge may be the photo's own sky: each edge is tried alone too."""
    top, bottom = image.strip
    aspect, other_aspect = image.height / image.width, other.height / other.width
    if not top + bottom or abs(aspect - other_aspect) < 0.03 * other_aspect:
        return image.thumb, 0.0
    for cut_top, cut_bottom in ((top, bottom), (top, 0.0), (0.0, bottom)):
        share = cut_top + cut_bottom
        if share and abs(aspect * (1 - share) - other_aspect) < 0.03 * other_aspect:
            height = image.thumb.shape[0]
            return image.thumb[round(cut_top * height) : height - round(cut_bottom * height)], share
    return image.thumb, 0.0


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
    matched, first = match_tones(b, a)
    gain = _bracket_gain(a_rgb, b_rgb)
    structure = _correlation(a, b)
    detail = _correlation(_band_pass(a), _band_pass(b))
    tone = 1.0 - float(np.abs(a - matched).mean()) / 255.0
    score = PairScore(grid, colour, structure, detail, cropped, scale, tone, gain)
    # The refitted tone curve finds overlays that bend a first fit, the first fit faint ones (a
    # see-through logo) whose pixels the refit takes back in.
    forward = _overlay(a, matched) or _overlay(a, first)
    backward: list[Box] = []
    chosen = _masked(score, a, b, forward)
    if chosen is None and (forward or score.relation(0.9) != "duplicate"):
        # A light watermark can bend one tone mapping into a wrong, larger box and not the other.
        reverse, reverse_first = match_tones(a, b)
        backward = [
            (keep, _SWAP[on[0]] + on[1:], kind)
            for keep, on, kind in _overlay(b, reverse) or _overlay(b, reverse_first)
        ]
        chosen = _masked(score, a, b, backward)
    undecided = [box for box in forward + backward if box[1].endswith("?")]
    if chosen is None and undecided:
        keep, lean, kind = undecided[0]
        chosen = replace(score, overlay=float(1.0 - keep.mean()), overlay_kind=kind, overlay_lean=lean[0])
    return chosen or score


def _masked(score: PairScore, a: np.ndarray, b: np.ndarray, boxes: list[Box]) -> PairScore | None:
    """The pair scored without the decided overlay box that leaves the best agreement (a larger
    box only if it is clearly better), when that agrees better than the whole frame; else None.
    The tones are matched again without the box: a dark banner bends a curve fitted with it."""
    masked = [
        replace(
            score,
            structure=_correlation(a[keep], b[keep]),
            detail=_correlation(_band_pass(a)[keep], _band_pass(b)[keep]),
            tone=1.0 - float(np.abs(a - _tone_curve(b, a, keep))[keep].mean()) / 255.0,
            overlay=float(1.0 - keep.mean()),
            overlay_on=on,
            overlay_kind=kind,
        )
        for keep, on, kind in boxes
        if not on.endswith("?")
    ]
    masked = [m for m in masked if _total(m) > _total(score)]
    if not masked:
        return None
    best = max(_total(m) for m in masked)
    return min((m for m in masked if _total(m) >= best - 0.005), key=lambda m: m.overlay)


def match_tones(source: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`source` with its grey levels mapped onto `reference`'s (same picture, aligned) by one
    monotone curve, which undoes a grade, a curve or a black-and-white conversion. The curve is
    fitted twice: the second time without the pixels the first fit left far off, which are an
    overlay's fill or text, so it does not bend the curve for the rest of the picture. Returns
    the second fit and the first (which finds faint overlays that the second takes back in)."""
    first = _tone_curve(source, reference, np.ones(source.shape, dtype=bool))
    residual = np.abs(reference - first)
    return _tone_curve(source, reference, residual <= 3.0 * float(np.median(residual)) + 6.0), first


def _tone_curve(source: np.ndarray, reference: np.ndarray, use: np.ndarray) -> np.ndarray:
    """The median reference level at each source level (over `use`), made monotone; levels whose
    reference values scatter widely are left out of the fit."""
    bins = np.clip((source / 8.0).astype(np.int64), 0, 31)[use]
    values = reference[use]
    counts = np.bincount(bins, minlength=32)
    present = np.flatnonzero(counts >= 4)
    if len(present) < 2:
        return source + (float(reference.mean()) - float(source.mean()))
    # Quartiles per level from one sort by (level, reference value).
    ordered = values[np.lexsort((values, bins))]
    starts = np.cumsum(counts) - counts
    sizes = counts[present] - 1
    quartile = {q: ordered[starts[present] + np.floor(sizes * q).astype(np.int64)] for q in (0.25, 0.5, 0.75)}
    centres = np.bincount(bins, weights=source[use], minlength=32)[present] / counts[present]
    levels = quartile[0.5]
    spreads = quartile[0.75] - quartile[0.25]
    fit = spreads <= max(24.0, 3.0 * float(np.median(spreads)))
    if fit.sum() < 2:
        fit[:] = True
    curve = np.maximum.accumulate(levels[fit])
    return np.interp(source, centres[fit], curve)


def _bracket_gain(a_rgb: np.ndarray, b_rgb: np.ndarray) -> float:
    """B's exposure relative to A in stops when one constant gain in linear light explains the
    pair (an exposure bracket), else 0. A grade or a tone curve gives gains that vary with level.

    Measured on luminance, then, failing that, channel by channel: an exposure clips each channel
    on its own, so in a saturated colour (a yellow petal) the brightest channel clips while the
    luminance does not, and the luminance gains less than the exposure, by varying amounts. A
    grade's saturation gains differ between channels, so they do not look constant there either.
    Luminance is still needed for a black-and-white copy, which has no channels to compare."""
    grey = _constant_gain(_gray(a_rgb)[..., None], _gray(b_rgb)[..., None])
    return grey if grey else _constant_gain(a_rgb, b_rgb)


def _constant_gain(a: np.ndarray, b: np.ndarray) -> float:
    """The median gain in stops over the samples (pixels x channels) unclipped in both, when at
    least a fifth of the pixels have one and three quarters of them gain BRACKET_CONSISTENT."""
    lin_a, lin_b = (np.clip(x / 255.0, 0.0, 1.0) ** 2.2 for x in (a, b))
    usable = (lin_a > 0.02) & (lin_a < 0.85) & (lin_b > 0.02) & (lin_b < 0.85)
    if usable.any(axis=-1).mean() < 0.2:
        return 0.0
    stops = np.log2(lin_b[usable] / lin_a[usable])
    low, median, high = np.percentile(stops, [25, 50, 75])
    nearer_zero = low if median > 0 else -high  # a grade's gains straddle or approach zero
    consistent = nearer_zero >= BRACKET_CONSISTENT
    return float(median) if consistent and abs(median) >= BRACKET_STOPS else 0.0


def _overlay(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, str, str]]:
    """Ways to leave an overlay out: (mask of the pixels outside it, the copy carrying it, its
    kind) for the densest box of disagreement and for the bands across the frame through it (a
    banner's fill can match a dark photo, leaving only its text to find). None found: [].

    Each box must be at most OVERLAY_MAX_AREA of the frame and hold at least OVERLAY_SHARE of the
    disagreement; the copy carrying it shows a straight edge around the first such box clearly
    more than the other does."""
    difference = _gaussian(np.abs(a - b), 1.0)
    bar = max(10.0, min(OVERLAY_DIFFERENCE, 6.0 * float(np.median(difference))))
    strong = difference > bar
    total = float(difference.sum())
    if strong.mean() < 0.002 or total <= 0:
        return []
    # The densest box of strong pixels (rows, then columns within them), grown by two pixels for
    # the blur; stray pixels elsewhere (a grade's hue shifts, JPEG noise) do not stretch it.
    height, width = a.shape
    core_y0, core_y1 = _dense_run(strong.mean(axis=1))
    core_x0, core_x1 = _dense_run(strong[core_y0:core_y1].mean(axis=0))
    core = (core_y0, core_y1, core_x0, core_x1)
    y0, y1 = max(0, core_y0 - 2), min(height, core_y1 + 2)
    x0, x1 = max(0, core_x0 - 2), min(width, core_x1 + 2)
    boxes = [
        (top, bottom, left, right)
        for top, bottom, left, right in ((y0, y1, x0, x1), (y0, y1, 0, width), (0, height, x0, x1))
        if (bottom - top) * (right - left) <= OVERLAY_MAX_AREA * height * width
        and float(difference[top:bottom, left:right].sum()) >= OVERLAY_SHARE * total
    ]
    if not boxes:
        return []
    # The edge is looked for around the core when it holds its share, else around the band.
    top, bottom, left, right = boxes[0]
    edge = core if boxes[0] == (y0, y1, x0, x1) else (top, bottom, left, right)
    step_a, step_b = _edge_step(a, edge), _edge_step(b, edge)
    # Neither copy shows an overlay's edge clearly: the side is left open ("a?": it leans to a) for
    # the group to settle, and the pair is scored without masking (it may be a change of scene).
    clear = max(step_a, step_b) >= OVERLAY_CLEAR * min(step_a, step_b)
    on = ("a" if step_a > step_b else "b") + ("" if clear else "?")
    found = []
    for top, bottom, left, right in boxes:
        keep = np.ones(a.shape, dtype=bool)
        keep[top:bottom, left:right] = False
        near_edge = 3
        band = (right - left >= 0.6 * width and (top <= near_edge or bottom >= height - near_edge)) or (
            bottom - top >= 0.6 * height and (left <= near_edge or right >= width - near_edge)
        )
        found.append((keep, on, "text banner" if band else "watermark or logo"))
    return found


def _dense_run(profile: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the contiguous run around the profile's peak where it stays above half
    the peak."""
    peak = int(np.argmax(profile))
    above = profile >= 0.5 * profile[peak]
    start, stop = peak, peak + 1
    while start > 0 and above[start - 1]:
        start -= 1
    while stop < len(profile) and above[stop]:
        stop += 1
    return start, stop


def _edge_step(gray: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """How sharply `gray` changes across the inner sides of `box` (an overlay's straight edge),
    relative to its usual neighbour differences, plus how flat the box is inside."""
    y0, y1, x0, x1 = box
    height, width = gray.shape
    typical = float(np.median(np.abs(np.diff(gray, axis=1)))) + 1.0
    steps = []
    sides = ((y0, y0 - 1, True), (y1 - 1, y1, True), (x0, x0 - 1, False), (x1 - 1, x1, False))
    for inner, outer, horizontal in sides:
        if outer < 0 or outer >= (height if horizontal else width):
            continue
        best = 0.0
        for shift in (-2, -1, 0, 1, 2):
            i, o = inner + shift, outer + shift
            if min(i, o) < 0 or max(i, o) >= (height if horizontal else width):
                continue
            line_i = gray[i, x0:x1] if horizontal else gray[y0:y1, i]
            line_o = gray[o, x0:x1] if horizontal else gray[y0:y1, o]
            best = max(best, float(np.abs(line_i - line_o).mean()))
        steps.append(best / typical)
    inside = gray[y0:y1, x0:x1]
    flat = float((np.abs(np.diff(inside, axis=1)) < 1.0).mean()) if inside.shape[1] > 1 else 0.0
    return (max(steps) if steps else 0.0) + 4.0 * flat


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
    """Normalised correlation; two flat arrays agree, a flat and a textured one do not."""
    a, b = a - a.mean(), b - b.mean()
    energy_a, energy_b = float((a * a).sum()), float((b * b).sum())
    flat = 1e-6 * max(a.size, 1)
    if energy_a <= flat or energy_b <= flat:
        return 1.0 if energy_a <= flat and energy_b <= flat else 0.0
    return float((a * b).sum() / np.sqrt(energy_a * energy_b))
