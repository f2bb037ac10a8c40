"""Near-duplicate groups that keep the copy with the most real detail (no Dagster here).

Pipeline: features per image (one reduced decode) → candidate pairs by hash popcount →
aligned verification of each candidate (duplicate / similar / unrelated) → groups in which every
member matches every other → keep-best by real detail → manual pins, which always win.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lora_assets.images.candidates import candidate_pairs
from lora_assets.images.decode import ImageRejected
from lora_assets.images.detail import DetailMeasure
from lora_assets.images.features import ImageFeatures
from lora_assets.images.grouping import components, group_items
from lora_assets.images.interpolation import compare_grids
from lora_assets.images.keep_best import DENSITY_STEP, Candidate, choose
from lora_assets.images.rules import DedupRules
from lora_assets.images.similarity import PairScore
from lora_assets.images.workers import (
    ImageWorkers,
    MeasureCache,
    Photo,
    Progress,
    compare_job,
    features_job,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Group:
    """Copies of one photo: the kept key(s), the dropped ones, reasons and scores per member."""

    kept: list[str]
    dropped: list[str]
    reason: str
    reasons: dict[str, str]
    scores: dict[str, dict[str, float]]
    similarity: dict[str, float]


# Progress stages, in order: hashing every photo, verifying candidate pairs, then every other pair
# inside clusters of duplicates, then scoring the detail of group members.
DEDUP_STAGES = ("hashing", "verifying", "verifying clusters", "scoring detail")
# A member of a group of three or more may fail against a quarter of it (see grouping).
GROUP_JOIN_SHARE = 0.75
# A copy is black-and-white below GREY_CHROMA when another copy is in colour above COLOUR_CHROMA.
GREY_CHROMA, COLOUR_CHROMA = 1.5, 4.0
INTERPOLATION_PEERS = 3
SCORE_COLUMNS = ["effective_mp", "native_mp", "effective_scale", "sharpness", "quality"]
GROUP_COLUMNS = ["group_id", "path", "sha256", "kept", "similarity", *SCORE_COLUMNS, "reason"]
SIMILAR_COLUMNS = ["a", "b", "colour", "structure", "detail", "grid"]


@dataclass
class DedupResult:
    """Groups (kept and dropped copies with reasons), unique photos, similar pairs for review."""

    groups: list[Group]
    unique: list[str]
    similar: list[dict[str, Any]]
    rejected: list[dict[str, str]]
    pinned_drops: list[str]
    unknown_pins: list[str]
    counters: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def selected(self) -> list[str]:
        """Every key that goes on to training, sorted."""
        kept = [key for group in self.groups for key in group.kept]
        return sorted([*kept, *self.unique])

    def groups_table(self, sha_of: dict[str, str]) -> pd.DataFrame:
        """One row per member of every group (see GROUP_COLUMNS); ids from 1, largest groups first."""
        rows = []
        ordered = sorted(
            self.groups, key=lambda g: (-(len(g.kept) + len(g.dropped)), sorted(g.kept + g.dropped))
        )
        for group_id, group in enumerate(ordered, 1):
            for path in [*group.kept, *group.dropped]:
                rows.append(
                    {
                        "group_id": group_id,
                        "path": path,
                        "sha256": sha_of[path],
                        "kept": path in group.kept,
                        "similarity": group.similarity[path],
                        **{column: group.scores[path][column] for column in SCORE_COLUMNS},
                        "reason": group.reasons[path],
                    }
                )
        import pandas as pd  # here, not at the top: `lora-assets dedup` never builds a table

        return pd.DataFrame(rows, columns=GROUP_COLUMNS)

    def similar_table(self) -> pd.DataFrame:
        """Pairs of similar (not duplicate) photos with their scores, for review."""
        import pandas as pd

        return pd.DataFrame(self.similar, columns=SIMILAR_COLUMNS)


class Deduplicator(ImageWorkers):
    """The whole pipeline (see module docstring) under `rules`."""

    def __init__(
        self,
        rules: DedupRules,
        max_pixels: int,
        workers: int | None = None,
        cache: MeasureCache | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(max_pixels, workers, cache, progress)
        self.rules = rules
        self.counters.update({"features_computed": 0, "features_cached": 0, "pairs_verified": 0})
        self.seconds: dict[str, float] = {}

    def run(self, photos: Sequence[Photo]) -> DedupResult:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lora-assets-dedup-") as scratch, self._pool() as pool:
            self.scratch = Path(scratch)
            try:
                features, rejected = self._features(photos, pool)
                self.seconds["hashing"] = time.perf_counter() - started
                ok = [p for p in photos if p.key in features]
                relations, scores = self._relations(ok, features, pool)
                self.seconds["verifying"] = time.perf_counter() - started - self.seconds["hashing"]
                multi = self._group(ok, features, relations)
                by_keys = {(ok[i].key, ok[j].key): score for (i, j), score in scores.items()}
                before_detail = time.perf_counter()
                details = self._details([p for g in multi for p in g], pool, _on_other_grids(multi, by_keys))
                self.seconds["scoring detail"] = time.perf_counter() - before_detail
            finally:
                self.scratch = None
        before_keep_best = time.perf_counter()
        # Keep-best per group on threads: its array work (resampling, least squares) frees the GIL.
        with ThreadPoolExecutor(max_workers=self.workers) as threads:
            groups = list(
                threads.map(lambda members: self._decide(members, features, details, by_keys), multi)
            )
        self.seconds["keep-best"] = time.perf_counter() - before_keep_best
        self.seconds["total"] = time.perf_counter() - started
        return self._result(photos, ok, multi, groups, relations, scores, rejected)

    def _group(
        self, ok: list[Photo], features: dict[str, ImageFeatures], relations: dict[tuple[int, int], str]
    ) -> list[list[Photo]]:
        """Groups of two or more (largest photos found groups first; pinned-apart pairs never meet)."""
        order = sorted(
            range(len(ok)), key=lambda i: (-features[ok[i].key].width * features[ok[i].key].height, ok[i].key)
        )
        accept = ("duplicate", "similar") if self.rules.drop_similar else ("duplicate",)
        forbidden = _forbidden_pairs(self.rules.not_duplicates)
        apart = {
            frozenset((i, j))
            for i in range(len(ok))
            for j in range(i + 1, len(ok))
            if forbidden and frozenset((ok[i].key, ok[j].key)) in forbidden
        }
        index_groups = group_items(order, relations, accept, GROUP_JOIN_SHARE, apart)
        return [[ok[i] for i in g] for g in index_groups if len(g) > 1]

    def _result(
        self,
        photos: Sequence[Photo],
        ok: list[Photo],
        multi: list[list[Photo]],
        groups: list[Group],
        relations: dict[tuple[int, int], str],
        scores: dict[tuple[int, int], PairScore],
        rejected: list[dict[str, str]],
    ) -> DedupResult:
        grouped = {p.key for g in multi for p in g}
        drop = set(self.rules.drop)
        similar = [
            {"a": ok[i].key, "b": ok[j].key, **_rounded(scores[i, j])}
            for (i, j), relation in sorted(relations.items())
            if relation == "similar" and not _same_group(ok[i].key, ok[j].key, groups)
        ]
        rules = self.rules
        pinned = {
            *rules.keep,
            *rules.drop,
            *(name for names in rules.not_duplicates for name in names),
        }
        return DedupResult(
            groups=groups,
            unique=[p.key for p in ok if p.key not in grouped and p.key not in drop],
            similar=similar,
            rejected=rejected,
            pinned_drops=sorted(p.key for p in ok if p.key not in grouped and p.key in drop),
            unknown_pins=sorted(pinned - {p.key for p in photos}),
            counters=dict(self.counters),
            seconds={name: round(value, 3) for name, value in self.seconds.items()},
        )

    def _features(
        self, photos: Sequence[Photo], pool: Executor
    ) -> tuple[dict[str, ImageFeatures], list[dict[str, str]]]:
        lookup = self.cache.features if self.cache else None
        features, todo = self._split_cached(photos, lookup, "features_cached")
        rejected: list[dict[str, str]] = []
        # Byte-identical files are decoded once.
        first: dict[str, Photo] = {}
        for photo in todo:
            first.setdefault(photo.sha256 or photo.key, photo)
        unique_todo = list(first.values())
        jobs = [(p.path, self.max_pixels, self._scratch_file(p)) for p in unique_todo]
        results = self._map(pool, features_job, jobs, "hashing")
        computed = dict(zip([p.sha256 or p.key for p in unique_todo], results, strict=True))
        for photo in todo:
            result = computed[photo.sha256 or photo.key]
            if isinstance(result, ImageRejected):
                rejected.append({"path": photo.key, "error": f"{result.reason}: {result.detail}"})
                continue
            features[photo.key] = result
        for photo in unique_todo:
            result = computed[photo.sha256 or photo.key]
            if not isinstance(result, ImageRejected):
                self.counters["features_computed"] += 1
                if self.cache and photo.sha256:
                    self.cache.put_features(photo.sha256, result)
        return features, rejected

    def _relations(
        self, photos: list[Photo], features: dict[str, ImageFeatures], pool: Executor
    ) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], PairScore]]:
        feats = [features[p.key] for p in photos]
        pairs = candidate_pairs(
            [f.phash for f in feats],
            [f.dhash for f in feats],
            [f.phash_center for f in feats],
            self.rules.crop_tolerant,
            [f.phash_mirror for f in feats],
            [f.phash_strip for f in feats],
        )
        forbidden = _forbidden_pairs(self.rules.not_duplicates)
        exact = {
            (i, j)
            for i in range(len(photos))
            for j in range(i + 1, len(photos))
            if photos[i].sha256 and photos[i].sha256 == photos[j].sha256
        }
        keys = [p.key for p in photos]
        pairs = sorted(
            pair for pair in set(pairs) | exact if frozenset((keys[pair[0]], keys[pair[1]])) not in forbidden
        )
        identical = PairScore(grid=1.0, colour=1.0, structure=1.0, detail=1.0, cropped=False, scale=1.0)
        scores: dict[tuple[int, int], PairScore] = {pair: identical for pair in pairs if pair in exact}
        threshold = self.rules.threshold
        # Two rounds: the candidate pairs, then every other pair inside a cluster of duplicates
        # (a mirrored copy and a cropped one of the same photo have no close hash, but both match
        # their source), so that grouping sees every pair of a group.
        to_verify = [pair for pair in pairs if pair not in exact]
        for stage in ("verifying", "verifying clusters"):
            results = self._map(
                pool,
                compare_job,
                [(feats[i], feats[j], self.rules.crop_tolerant) for i, j in to_verify],
                stage,
            )
            self.counters["pairs_verified"] += len(to_verify)
            scores.update(zip(to_verify, results, strict=True))
            duplicates = [pair for pair, score in scores.items() if score.relation(threshold) == "duplicate"]
            to_verify = [
                pair
                for pair in cluster_pairs(len(photos), duplicates)
                if pair not in scores and frozenset((keys[pair[0]], keys[pair[1]])) not in forbidden
            ]
        relations = {pair: rel for pair, score in scores.items() if (rel := score.relation(threshold))}
        return relations, scores

    def _decide(
        self,
        members: list[Photo],
        features: dict[str, ImageFeatures],
        details: dict[str, DetailMeasure],
        scores: dict[tuple[str, str], PairScore],
    ) -> Group:
        """Keep-best for one group, then the pins: `keep` always kept, `drop` always dropped."""
        keep, drop = set(self.rules.keep), set(self.rules.drop)

        def pair(a: str, b: str) -> tuple[PairScore, bool]:
            """The score of (a, b) and whether it was measured the other way round."""
            return (scores[a, b], False) if (a, b) in scores else (scores[b, a], True)

        def density(key: str) -> float:
            return _density(scores, members[0].key, key)

        candidates = _candidates(members, features, details, pair, density)
        decision = choose(candidates)
        reasons = dict(decision.reasons)
        pinned_keep = [c.key for c in candidates if c.key in keep and c.key not in drop]
        if pinned_keep:
            kept = pinned_keep
            for key in reasons:
                pinned = ", ".join(kept)
                reasons[key] = (
                    "kept: pinned in [dedup] keep"
                    if key in kept
                    else f"dropped: duplicate of pinned {pinned}"
                )
        elif decision.kept in drop and (allowed := [c for c in candidates if c.key not in drop]):
            fallback = choose(allowed)
            kept = [fallback.kept]
            reasons.update(fallback.reasons)
        else:
            kept = [decision.kept] if decision.kept not in drop else []
        for key in drop & reasons.keys():
            reasons[key] = "dropped: pinned in [dedup] drop"
        anchor = kept[0] if kept else decision.kept
        similarity = {
            c.key: 1.0 if c.key == anchor else round(pair(anchor, c.key)[0].colour, 4) for c in candidates
        }
        return Group(
            kept=kept,
            dropped=[c.key for c in candidates if c.key not in kept],
            reason=reasons[anchor] if kept else "dropped: every copy is pinned in [dedup] drop",
            reasons=reasons,
            scores=decision.scores,
            similarity=similarity,
        )


def _on_other_grids(multi: list[list[Photo]], scores: dict[tuple[str, str], PairScore]) -> set[str]:
    """Members of a group holding a copy on a clearly other pixel grid (DENSITY_STEP): the
    interpolation test between them needs their native windows."""
    keys: set[str] = set()
    for members in multi:
        density = {photo.key: _density(scores, members[0].key, photo.key) for photo in members}
        if max(density.values()) >= min(density.values()) * DENSITY_STEP:
            keys.update(density)
    return keys


def _density(scores: dict[tuple[str, str], PairScore], founder: str, key: str) -> float:
    """Pixels per unit of shared content in `key` relative to the group's founder."""
    if key == founder:
        return 1.0
    score = scores.get((founder, key))
    return score.scale if score else 1.0 / scores[key, founder].scale


def _candidates(
    members: list[Photo],
    features: dict[str, ImageFeatures],
    details: dict[str, DetailMeasure],
    pair: Callable[[str, str], tuple[PairScore, bool]],
    density: Callable[[str], float],
) -> list[Candidate]:
    """The members as keep-best sees them, with what their pairs and the group say of each."""
    keys = [p.key for p in members]
    overlays = _overlaid_members(keys, pair)
    colourful = any(_chroma(features[key]) > COLOUR_CHROMA for key in keys)
    edits = _edit_distances({key: features[key] for key in keys})
    upscale_of, source_of = _interpolation_evidence(members, details, pair, density, edits)
    # Orientation against the founder's; the minority orientation (if there is one) is flipped.
    mirrored = {key: key != keys[0] and pair(keys[0], key)[0].mirrored for key in keys}
    votes = sum(mirrored.values()) * 2 - len(keys)  # > 0: most are mirrored against the founder
    return [
        _candidate(
            p,
            features[p.key],
            details[p.key],
            density(p.key),
            overlay=_overlay_reason(*overlays[p.key]) if p.key in overlays else "",
            colourless=colourful and _chroma(features[p.key]) < GREY_CHROMA,
            upscale_of=upscale_of.get(p.key, NOT_AN_UPSCALE).of,
            upscale_gain=upscale_of.get(p.key, NOT_AN_UPSCALE).gain,
            upscale_grid=upscale_of.get(p.key, NOT_AN_UPSCALE).shown_by == "block grid",
            source_of=frozenset(source_of.get(p.key, ())),
            edits=edits[p.key],
            flipped=votes != 0 and mirrored[p.key] != (votes > 0),
        )
        for p in members
    ]


class Upscale(NamedTuple):
    """A member shown to be an upscale: of which smaller member, the gain it amplifies that
    member's detail by when sharpening is what shows it (else 0), and what showed it
    (GridEvidence.shown_by)."""

    of: str = ""
    gain: float = 0.0
    shown_by: str = ""


NOT_AN_UPSCALE = Upscale()


def _interpolation_evidence(
    members: list[Photo],
    details: dict[str, DetailMeasure],
    pair: Callable[[str, str], tuple[PairScore, bool]],
    density: Callable[[str], float],
    edits: dict[str, float],
) -> tuple[dict[str, Upscale], dict[str, set[str]]]:
    """For each member, the smaller member it is shown to be an interpolated upscale of, and the
    smaller members it is shown to hold real detail beyond (see interpolation). Each member is
    tested against the INTERPOLATION_PEERS members of the closest clearly coarser grid with the
    most real detail that show the whole frame (a crop or a caption strip would misalign it)."""
    upscale_of: dict[str, Upscale] = {}
    source_of: dict[str, set[str]] = {}
    for large in members:
        peers = []
        for small in members:
            if small.key == large.key or density(large.key) < density(small.key) * DENSITY_STEP:
                continue
            score, _ = pair(large.key, small.key)
            if not score.cropped and score.overlay_kind != "caption strip":
                peers.append(small)
        # The closest coarser grid first, and on it the least edited copies: an upscale is
        # predicted only from the picture it was made from, not from a grade of it.
        peers.sort(key=lambda small: (-round(density(small.key), 1), edits[small.key], small.key))
        for small in peers[:INTERPOLATION_PEERS]:
            mirrored = pair(large.key, small.key)[0].mirrored
            evidence = compare_grids(details[large.key], details[small.key], mirrored)
            verdict = evidence.verdict if evidence else ""
            if evidence and verdict == "upscale":
                upscale_of.setdefault(
                    large.key, Upscale(small.key, evidence.sharpened_gain, evidence.shown_by)
                )
            elif verdict == "source":
                source_of.setdefault(large.key, set()).add(small.key)
    return upscale_of, source_of


def _candidate(
    photo: Photo, features: ImageFeatures, detail: DetailMeasure, density: float, **evidence: Any
) -> Candidate:
    """A group member as keep-best sees it; `evidence`: overlay, colourless, upscale_of, source_of."""
    return Candidate(
        key=photo.key,
        measure=detail,
        format=features.format,
        jpeg_quality=features.jpeg_quality,
        density=density,
        **evidence,
    )


def _overlaid_members(
    keys: list[str], pair: Callable[[str, str], tuple[PairScore, bool]]
) -> dict[str, tuple[float, str]]:
    """The members that carry an overlay, with its share of the frame and kind.

    A pair that finds an overlay names the copy carrying it, or only where its edge leans. In a
    group of two that is all there is. In a larger group the members settle it: a member with
    overlay pairs against more than half of the others carries one, and of any overlay pair, the
    member with more overlay pairs does (the copy that carries a faint watermark is the one such
    pairs have in common, even where some of them are missed or blame its partner); a tie goes by
    the pair's own verdict, if it has one."""
    found_with: dict[str, list[tuple[float, str]]] = {key: [] for key in keys}
    verdicts: list[tuple[str, str, bool, tuple[float, str]]] = []  # (named, other, decided, found)
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            score, flipped = pair(first, second)
            if not score.overlay:
                continue
            found = (score.overlay, score.overlay_kind)
            side = score.overlay_on or score.overlay_lean
            named, other = (first, second) if (side == "a") != flipped else (second, first)
            verdicts.append((named, other, bool(score.overlay_on), found))
            found_with[first].append(found)
            found_with[second].append(found)
    overlays: dict[str, tuple[float, str]] = {}
    if len(keys) == 2:
        for named, _, _, found in verdicts:
            overlays[named] = found
        return overlays
    for key, found in found_with.items():
        if len(found) * 2 > len(keys) - 1:
            overlays[key] = max(found)
    for named, other, decided, found in verdicts:
        if len(found_with[named]) != len(found_with[other]):
            hub = max((named, other), key=lambda key: len(found_with[key]))
            overlays.setdefault(hub, max(found_with[hub]))
        elif decided:
            overlays[named] = max(overlays.get(named, (0.0, "")), found)
    return overlays


def _edit_distances(features: dict[str, ImageFeatures]) -> dict[str, float]:
    """How far each copy's tones and colours lie from the group's median: brightness, contrast
    and saturation of its thumbnail, each relative to the median (0 for a typical copy)."""
    stats = {key: _tone_stats(f.thumb) for key, f in features.items()}
    median = np.median(np.array(list(stats.values())), axis=0)
    scale = np.array([255.0, max(median[1], 8.0), max(median[2], 4.0)])
    return {key: float((np.abs(np.array(v) - median) / scale).sum()) for key, v in stats.items()}


def _tone_stats(thumb: np.ndarray) -> tuple[float, float, float]:
    """(mean grey, grey standard deviation, mean distance from grey) of an RGB thumbnail."""
    rgb = thumb.astype(np.float32)
    if rgb.ndim < 3:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(grey.mean()), float(grey.std()), float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())


def _overlay_reason(share: float, kind: str) -> str:
    return f"{kind} over {share:.0%} of the frame"


def _chroma(features: ImageFeatures) -> float:
    """Mean distance of the thumbnail's pixels from grey (0 for a black-and-white copy)."""
    thumb = features.thumb.astype(np.float32)
    if thumb.ndim < 3:
        return 0.0
    return float(np.abs(thumb - thumb.mean(axis=2, keepdims=True)).mean())


def cluster_pairs(count: int, links: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every (i, j), i < j, within the connected components of `links`."""
    return [(i, j) for group in components(count, links) for k, i in enumerate(group) for j in group[k + 1 :]]


def _forbidden_pairs(groups: Iterable[Sequence[str]]) -> set[frozenset[str]]:
    return {frozenset((a, b)) for names in groups for a in names for b in names if a != b}


def _same_group(a: str, b: str, groups: list[Group]) -> bool:
    return any({a, b} <= {*g.kept, *g.dropped} for g in groups)


def _rounded(score: PairScore) -> dict[str, float]:
    return {
        "colour": round(score.colour, 4),
        "structure": round(score.structure, 4),
        "detail": round(score.detail, 4),
        "grid": round(score.grid, 4),
    }
