"""Choose the copy with the most real detail in a group of duplicates, and say why.

Rules, in order, each with a tolerance so that measurement noise never decides; a rule that would
drop every remaining contender drops none:
1. overlay: a copy carrying a text banner, caption strip, watermark or logo (found while
   verifying its pairs, settled by the group) loses to a clean one, whatever its size;
2. colour: a black-and-white copy loses to a colour one;
3. interpolation: a copy shown to be an interpolated upscale of a smaller member (see
   interpolation: predicted by a linear filter over it, or that member's band amplified by a
   sharpening) loses to it;
4. effective resolution: native megapixels x effective scale², every member measured against
   the same *content* frequency (so a 2x upscale measures half its source's scale and collapses
   to its source's effective megapixels; a blurred copy collapses further); a coarser re-save of
   the same grid never wins on its artefacts;
5. sharpness per unit of tonal range, only between copies of one pixel grid (sharpening an
   upscale adds edge contrast that a common-scale comparison would count as detail);
6. real detail per pixel (effective scale): between copies with equal real detail, the one whose
   pixels are not padding, unless the interpolation test showed the denser copy to hold detail
   beyond the others (a soft original over its half);
7. orientation, then tones: the mirror image and the edited grade most copies do not share lose;
8. JPEG quality, among JPEG members (a PNG says nothing of what it was saved from);
9. native pixel count; among what is left, lossless before lossy, the higher JPEG quality, then
   the name (deterministic). File size never decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lora_assets.images.detail import REFERENCE_SCALE, DetailMeasure, resize_gray, sharpness

# Re-encoding noise on a soft photo moves its measured detail by up to ~1.35x; blur by 2x or more.
EFFECTIVE_TOLERANCE = 1.5
# A denser copy (more pixels per unit of content) must win by more: interpolation leaks a little
# energy above an upscale's real cutoff, which inflated 2x upscales by up to 1.31x in the dedup
# benchmark, while an original beat its half-size copy by at least 1.47x (unless it is so soft
# that the half holds all of its detail).
DENSER_TOLERANCE = 1.4
DENSITY_STEP = 1.2  # copies closer in density than this count as the same pixel grid
SCALE_TOLERANCE = 1.3
# Blur divides sharpness several times over; re-encoding and grading move it by tens of per cent.
SHARPNESS_TOLERANCE = 2.0
QUALITY_TOLERANCE = 5
# Distance from the group's consensus tones beyond which a copy counts as edited (see dedup).
EDIT_BAR = 0.12
LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP"})


@dataclass(frozen=True)
class Candidate:
    """One member of a duplicate group, as measured."""

    key: str
    measure: DetailMeasure
    format: str | None
    jpeg_quality: int | None
    density: float = 1.0  # pixels per unit of shared content, relative to one group member
    overlay: str = ""  # what covers part of this copy, e.g. "text banner over 12% of the frame"
    colourless: bool = False  # a black-and-white copy in a group with colour copies
    upscale_of: str = ""  # a smaller member this copy is shown to be an upscale of (interpolation)
    upscale_gain: float = 0.0  # when the upscale was shown by sharpening: how much it amplifies that member
    upscale_grid: bool = False  # when it was shown by carrying that member's JPEG block grid
    edits: float = 0.0  # how far its tones and colours are from the group's consensus (0 = typical)
    flipped: bool = False  # mirrored against the orientation most members share
    source_of: frozenset[str] = frozenset()  # smaller members this copy holds real detail beyond

    @property
    def width(self) -> int:
        return self.measure.width

    @property
    def native_mp(self) -> float:
        return self.measure.native_mp

    @property
    def quality(self) -> int:
        """Estimated JPEG quality; -1 (unknown) for lossless formats; 90 for other lossy ones (WebP)."""
        if self.jpeg_quality is not None:
            return self.jpeg_quality
        return -1 if self.format in LOSSLESS_FORMATS else 90


@dataclass(frozen=True)
class Decision:
    """The kept member, the step that decided, and one line per member."""

    kept: str
    reasons: dict[str, str]
    scores: dict[str, dict[str, float]]


def choose(members: Sequence[Candidate]) -> Decision:
    """Pick the member to keep; every other member gets a reason naming the deciding criterion.

    The rules (module docstring) run in order over the members still in contention; a rule that
    would drop every one of them drops none."""
    if not members:
        raise ValueError("empty group")
    scale = {m.key: m.measure.effective_scale for m in members}
    effective = {m.key: m.native_mp * scale[m.key] ** 2 for m in members}
    sharp: dict[str, float] = {}
    eliminated_at: dict[str, str] = {}
    contenders = list(members)
    for name, losers in _rules(scale, sharp):
        lost = losers(contenders)
        if len(lost) < len(contenders):
            eliminated_at.update({key: name for key in lost})
            contenders = [m for m in contenders if m.key not in lost]
    kept = min(contenders, key=lambda m: (m.format not in LOSSLESS_FORMATS, -m.quality, m.key))
    measured = Measured(effective, scale, sharp)
    reasons = {kept.key: _kept_reason(kept, members, eliminated_at, measured)}
    for member in members:
        if member.key != kept.key:
            step = eliminated_at.get(member.key, "tie")
            reasons[member.key] = (
                f"dropped: duplicate of {kept.key}; {_compare(step, kept, member, measured)}"
            )
    scores = {
        m.key: {
            "effective_mp": round(effective[m.key], 3),
            "native_mp": round(m.native_mp, 3),
            "effective_scale": round(scale[m.key], 3),
            "sharpness": round(sharp.get(m.key, 0.0), 2),
            "quality": float(m.quality),
        }
        for m in members
    }
    return Decision(kept.key, reasons, scores)


Rule = Callable[[list[Candidate]], set[str]]


def _rules(scale: dict[str, float], sharp: dict[str, float]) -> list[tuple[str, Rule]]:
    """(name, the contenders it drops), in the order they apply; `sharp` is filled on the way."""

    def keys(members: Iterable[Candidate]) -> set[str]:
        return {m.key for m in members}

    def quality(contenders: list[Candidate]) -> set[str]:
        best = max(m.quality for m in contenders)
        return keys(m for m in contenders if m.quality >= 0 and m.quality + QUALITY_TOLERANCE < best)

    return [
        ("overlay", lambda cs: keys(m for m in cs if m.overlay)),
        ("colour", lambda cs: keys(m for m in cs if m.colourless)),
        ("interpolation", lambda cs: keys(m for m in cs if m.upscale_of in keys(cs))),
        ("effective", lambda cs: keys(m for m in cs if any(o is not m and _more_detail(o, m) for o in cs))),
        ("sharpness", lambda cs: _less_sharp(cs, sharp)),
        ("per-pixel", lambda cs: _padded(cs, scale)),
        ("orientation", lambda cs: keys(m for m in cs if m.flipped)),
        ("tones", lambda cs: keys(m for m in cs if m.edits > max(EDIT_BAR, 2.0 * min(o.edits for o in cs)))),
        ("quality", quality),
        ("size", lambda cs: keys(m for m in cs if m.native_mp < max(o.native_mp for o in cs))),
    ]


def _less_sharp(contenders: list[Candidate], sharp: dict[str, float]) -> set[str]:
    """Clearly less sharp than a copy of the same pixel grid (sharpening an upscale adds edge
    contrast that a common-scale comparison would count as detail), at the lowest content
    density a contender offers (its grey copy may be smaller)."""
    target = min(m.density * min(1.0, m.measure.gray.shape[1] / m.width) for m in contenders)
    for m in contenders:
        sharp[m.key] = _contrast_sharpness(resize_gray(m.measure.gray, round(m.width * target / m.density)))
    return {
        m.key
        for m in contenders
        if any(
            max(o.density, m.density) / min(o.density, m.density) < DENSITY_STEP
            and sharp[m.key] * SHARPNESS_TOLERANCE < sharp[o.key]
            for o in contenders
        )
    }


def _padded(contenders: list[Candidate], scale: dict[str, float]) -> set[str]:
    """Real detail per pixel: a copy loses to those whose pixels hold clearly more (its own are
    padding), unless the interpolation test showed it to hold detail beyond them (a soft
    original). A test that shows neither drops nothing by itself."""
    lost = set()
    for m in contenders:
        better = {o.key for o in contenders if scale[m.key] * SCALE_TOLERANCE < scale[o.key]}
        if better and not better <= m.source_of:
            lost.add(m.key)
    return lost


def _contrast_sharpness(gray: np.ndarray) -> float:
    """Sharpness per unit of tonal range (squared, as sharpness is a variance), x 1e4."""
    low, high = percentiles_u8(gray, (2, 98))
    return sharpness(gray) / max(float(high - low), 8.0) ** 2 * 1e4


def percentiles_u8(gray: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """`np.percentile(gray, q)` (linear interpolation) of an 8-bit array, read off its histogram
    instead of partitioning a megapixel: 10x cheaper, the same values."""
    below = np.bincount(gray.ravel(), minlength=256).cumsum()  # below[v]: how many are <= v
    position = np.asarray(q, dtype=np.float64) / 100 * (gray.size - 1)
    lower = np.floor(position)
    low = np.searchsorted(below, lower, side="right")  # the order statistic at `lower`
    high = np.searchsorted(below, np.minimum(lower + 1, gray.size - 1), side="right")
    return low + (position - lower) * (high - low)


def _more_detail(a: Candidate, b: Candidate) -> bool:
    """Whether `a` holds clearly more real detail than `b`.

    Both are judged against one *content* frequency: 1/8 of the denser one's Nyquist, which in
    the other's pixels is 1/8 x the density ratio. A 2x upscale then measures half its source's
    scale and collapses to the source's effective megapixels; a copy at the same density is
    judged with the usual 1/8 reference."""
    ratio = a.density / b.density
    same_grid = max(ratio, 1 / ratio) < DENSITY_STEP
    if same_grid and 0 <= a.quality < b.quality - QUALITY_TOLERANCE:
        return False  # a coarser re-save adds artefacts, never detail, on the same pixel grid
    reference_a = REFERENCE_SCALE * max(1.0, 1.0 / ratio)
    reference_b = REFERENCE_SCALE * max(1.0, ratio)
    effective_a = a.native_mp * a.measure.scale_at(reference_a) ** 2
    effective_b = b.native_mp * b.measure.scale_at(reference_b) ** 2
    margin = DENSER_TOLERANCE if ratio > DENSITY_STEP else EFFECTIVE_TOLERANCE
    return effective_a > effective_b * margin


@dataclass(frozen=True)
class Measured:
    """Per-member values computed for one group (they depend on the other members)."""

    effective: dict[str, float]
    scale: dict[str, float]
    sharp: dict[str, float]


def _kept_reason(
    kept: Candidate, members: Sequence[Candidate], eliminated_at: dict[str, str], measured: Measured
) -> str:
    """'kept: <criterion that separated it from the runner-up>' (the member that lasted longest)."""
    order = [
        "overlay",
        "colour",
        "interpolation",
        "effective",
        "sharpness",
        "per-pixel",
        "orientation",
        "tones",
        "quality",
        "size",
    ]
    others = [m for m in members if m.key != kept.key]
    if not others:
        return "kept: only member"
    runner_up = max(others, key=lambda m: (order.index(eliminated_at.get(m.key, "size")), m.key))
    step = eliminated_at.get(runner_up.key, "tie")
    return "kept: " + _compare(step, kept, runner_up, measured, kept_view=True)


def _label(member: Candidate, kept: Candidate, measured: Measured) -> str:
    """A short hint of what the dropped member looks like next to the kept one."""
    more_pixels = member.native_mp > kept.native_mp * 1.2
    if more_pixels and measured.effective[member.key] < measured.effective[kept.key] * EFFECTIVE_TOLERANCE:
        return " (upscale)"
    if measured.scale[member.key] < 0.6 and member.native_mp >= kept.native_mp * 0.8:
        return " (soft: blurred or upscaled)"
    if member.native_mp < kept.native_mp * 0.8:
        return " (smaller)"
    return ""


def _compare(
    step: str, kept: Candidate, other: Candidate, measured: Measured, kept_view: bool = False
) -> str:
    """One clause comparing `kept` with `other` on the criterion that decided."""
    label = _label(other, kept, measured)
    effective, sharp = measured.effective, measured.sharp
    if step == "overlay":
        return "the copy without an overlay" if kept_view else f"{other.overlay}"
    if step == "colour":
        return "in colour" if kept_view else "a black-and-white copy of a colour photo"
    if step == "interpolation":
        if kept_view:
            return "not an interpolated upscale of a smaller copy"
        if other.upscale_gain:
            return (
                f"a sharpened upscale (it is a smaller copy, {other.upscale_of}, with its detail "
                f"amplified {other.upscale_gain:.1f}x)"
            )
        if other.upscale_grid:
            return f"an upscale of a smaller copy, {other.upscale_of} (it carries that JPEG's block grid)"
        return f"an interpolated upscale (a smaller copy, {other.upscale_of}, predicts its extra pixels)"
    if step == "orientation":
        return "the orientation most copies share" if kept_view else "a mirrored copy"
    if step == "tones":
        return "the tones most copies share" if kept_view else "a copy with edited tones or colours"
    if step == "effective":
        head = "highest effective resolution" if kept_view else "lower effective resolution"
        return f"{head} {effective[kept.key]:.1f} MP vs {effective[other.key]:.1f} MP{label}"
    if step == "sharpness":
        head = "sharpest at a common scale" if kept_view else "less sharp at a common scale"
        return f"{head} ({sharp[kept.key]:.0f} vs {sharp[other.key]:.0f}){label}"
    if step == "per-pixel":
        head = "same real detail in fewer pixels" if kept_view else "same real detail spread over more pixels"
        return (
            f"{head} ({effective[kept.key]:.1f} of {kept.native_mp:.1f} MP vs "
            f"{effective[other.key]:.1f} of {other.native_mp:.1f} MP){label}"
        )
    if step == "quality":
        head = "highest JPEG quality" if kept_view else "lower JPEG quality"
        return f"{head} (q{kept.quality} vs q{other.quality})"
    if step == "size":
        head = "largest" if kept_view else "smaller"
        return f"{head} ({kept.native_mp:.1f} MP vs {other.native_mp:.1f} MP)"
    return "same detail, quality and size; first by name" + ("" if kept_view else f" ({kept.key})")
