"""Dedup benchmark: accuracy on a labelled near-duplicate set (overall and per kind of copy),
speed on 24+ MP JPEGs, and grouping at scale, each against references run in the same process
on the same machine.

    .venv/bin/python -m benchmarks.dedup_bench [--quick] [--skip-speed] [--skip-accuracy]
                                               [--skip-kinds] [--skip-grouping] [--no-extra-photos]

Accuracy set: benchmarks/dedup_dataset.py (the shared photos and the Debian-packaged photos of
benchmarks/dedup_photos.csv, each with its plain and web copies and the hard negatives).
- Mixed set: every image at once; precision/recall/F1 over pairs, keep-best, photos lost and
  false pairs.
- Per kind: recall of each kind of copy on the mixed set (the copy shares a group with its
  original), and keep-best measured on a set of only the originals, their lossless copies and
  that one kind (so kinds don't mask each other); hard negatives wrongly grouped.
References (accuracy): the image viewer's 32x32 colour-grid score at 0.90 keeping the largest
file, and 64-bit pHash with Hamming <= 10 keeping the largest file (imagededup's default).
Reference (speed): `imagehash.phash(Image.open(p))` on each file, serially, in this process, run
in turn with ours three times (the median round counts: the machine drifts between minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from benchmarks.dedup_dataset import (
    COPY_KINDS,
    HARD_NEGATIVE_ROLES,
    KEEPABLE_ROLES,
    WEB_KINDS,
    Item,
    build,
    extra_photos,
    source_photos,
)
from lora_assets.images.candidates import candidate_pairs
from lora_assets.images.dedup import Deduplicator
from lora_assets.images.grouping import components, group_items
from lora_assets.images.workers import MeasureCache, Photo
from lora_assets.settings import DedupSettings

RESULTS = Path(__file__).resolve().parent / "results"
LARGE_SIDE = (6600, 4400)  # 29 MP, so 4 % crops stay above 24 MP
MID_COUNT = 200
SPEED_ROUNDS = 3


Grouping = tuple[list[list[str]], set[str]]  # predicted groups (files) and the kept files


def score(items: list[Item], groups: list[list[str]], kept: set[str]) -> dict[str, float]:
    """Pairwise precision/recall/F1, keep-best, photos lost and false pairs for predicted groups
    + kept files."""
    identity = {item.file: item.identity for item in items}
    role = {item.file: item.role for item in items}
    predicted = {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}
    by_identity: dict[str, list[str]] = {}
    for item in items:
        by_identity.setdefault(item.identity, []).append(item.file)
    truth = {frozenset(p) for files in by_identity.values() for p in itertools.combinations(files, 2)}
    true_positive = len(predicted & truth)
    precision = true_positive / len(predicted) if predicted else 1.0
    recall = true_positive / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    multi = [g for g in groups if len(g) > 1]
    good = sum(_kept_best(group, kept, identity, role) for group in multi)
    lost = sum(1 for files in by_identity.values() if not any(f in kept for f in files))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "keep_best": good / len(multi) if multi else 1.0,
        "photos_lost": lost,
        "false_pairs": len(predicted - truth),
        "groups": len(multi),
    }


def _kept_best(group: list[str], kept: set[str], identity: dict[str, str], role: dict[str, str]) -> bool:
    """Whether a group kept only keepable copies (original / lossless) of its majority photo."""
    majority = Counter(identity[f] for f in group).most_common(1)[0][0]
    keepers = [f for f in group if f in kept]
    return bool(keepers) and all(identity[f] == majority and role[f] in KEEPABLE_ROLES for f in keepers)


def kind_recall(items: list[Item], groups: list[list[str]], kind: str) -> tuple[int, int]:
    """(found, total): copies of `kind` that share a group with their original or its lossless copy."""
    group_of = {f: index for index, g in enumerate(groups) for f in g}
    keepable: dict[str, set[int]] = {}
    for item in items:
        if item.role in KEEPABLE_ROLES and item.file in group_of:
            keepable.setdefault(item.identity, set()).add(group_of[item.file])
    copies = [item for item in items if item.role == kind]
    found = sum(
        1 for c in copies if c.file in group_of and group_of[c.file] in keepable.get(c.identity, set())
    )
    return found, len(copies)


def kind_keep_best(items: list[Item], groups: list[list[str]], kept: set[str], kind: str) -> tuple[int, int]:
    """(good, total) over the groups that hold a copy of `kind`."""
    identity = {item.file: item.identity for item in items}
    role = {item.file: item.role for item in items}
    holding = [g for g in groups if len(g) > 1 and any(role[f] == kind for f in g)]
    return sum(_kept_best(g, kept, identity, role) for g in holding), len(holding)


def wrongly_grouped(items: list[Item], groups: list[list[str]], negative: str) -> tuple[int, int]:
    """(wrong, total) for a hard negative: parts or exposure brackets in a group with another
    photo, or (`negative` "family") originals grouped with another photo of their family."""
    by_file = {item.file: item for item in items}
    group_of = {f: g for g in groups for f in g}
    if negative == "family":
        subjects = [i for i in items if i.role == "original" and i.family]
    else:
        subjects = [i for i in items if i.role == negative]

    def wrong(item: Item) -> bool:
        others = [by_file[f] for f in group_of.get(item.file, []) if by_file[f].identity != item.identity]
        if negative == "family":
            return any(o.family == item.family for o in others)
        return bool(others)

    return sum(wrong(i) for i in subjects), len(subjects)


def keep_largest(folder: Path, files: list[str], groups: list[list[int]]) -> Grouping:
    named = [[files[i] for i in g] for g in groups]
    kept = {max(g, key=lambda f: (folder / f).stat().st_size) for g in named}
    return [g for g in named if len(g) > 1], kept


def grid_signatures(folder: Path, files: list[str]) -> dict[str, np.ndarray]:
    """The image viewer's 32x32 colour grid of each file."""
    return {
        f: np.asarray(
            Image.open(folder / f).convert("RGB").resize((32, 32), Image.Resampling.BOX), dtype=np.float32
        ).reshape(-1)
        for f in files
    }


def phash_signatures(folder: Path, files: list[str]) -> dict[str, int]:
    """`imagehash.phash(Image.open(p))` of each file, serially, as a 64-bit integer."""
    return {f: int(str(imagehash.phash(Image.open(folder / f))), 16) for f in files}


def reference_grid(
    folder: Path, files: list[str], signatures: dict[str, np.ndarray], threshold: float = 0.90
) -> Grouping:
    grids = np.stack([signatures[f] for f in files])
    pairs = []
    for i in range(len(files)):
        similarity = 1.0 - np.abs(grids[i + 1 :] - grids[i]).mean(axis=1) / 255.0
        pairs.extend((i, i + 1 + int(j)) for j in np.nonzero(similarity >= threshold)[0])
    return keep_largest(folder, files, components(len(files), pairs))


def reference_phash(
    folder: Path, files: list[str], signatures: dict[str, int], max_distance: int = 10
) -> Grouping:
    hashes = np.array([signatures[f] for f in files], dtype=np.uint64)
    pairs = []
    for i in range(len(files)):
        distance = np.bitwise_count(hashes[i + 1 :] ^ hashes[i])
        pairs.extend((i, i + 1 + int(j)) for j in np.nonzero(distance <= max_distance)[0])
    return keep_largest(folder, files, components(len(files), pairs))


def ours(
    folder: Path,
    files: list[str],
    similarity: str | float = "medium",
    cache: MeasureCache | None = None,
    sha: dict[str, str] | None = None,
) -> tuple[list[list[str]], set[str], float]:
    start = time.perf_counter()
    photos = [Photo(f, folder / f, sha[f] if sha else None) for f in files]
    result = Deduplicator(DedupSettings(similarity=similarity).rules(), 10**9, cache=cache).run(photos)
    elapsed = time.perf_counter() - start
    groups = [[*g.kept, *g.dropped] for g in result.groups]
    return groups, set(result.selected), elapsed


def _fraction(good: int, total: int) -> str:
    return f"{good / total:.1%} ({good}/{total})" if total else "-"


def accuracy(folder: Path, quick: bool = False, per_kind: bool = True, extra: bool = True) -> None:
    items = build(folder, extra=extra)
    files = [item.file for item in items]
    roles = Counter(item.role for item in items)
    sources = Counter(item.source for item in items if item.role == "original")
    print(
        f"\n## Accuracy: {len(files)} images, {len({i.identity for i in items})} distinct photos "
        f"({sources.get('shared', 0)} originals from ../shared/photos, {sources.get('debian', 0)} from "
        f"Debian packages, see benchmarks/dedup_photos.csv)"
    )
    print("   roles: " + ", ".join(f"{k} {v}" for k, v in sorted(roles.items())))
    cache_root = folder.parent / "dedup_bench_cache"
    shutil.rmtree(cache_root, ignore_errors=True)
    cache = MeasureCache(cache_root)
    sha = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}
    rows: list[tuple[str, dict[str, float], float]] = []
    predictions: dict[str, Grouping] = {}
    runs = [("ours (medium, default)", "medium")]
    if not quick:
        runs += [("ours (low)", "low"), ("ours (high)", "high")]
    for name, similarity in runs:
        # the default run fills a fresh measure cache (as the pipeline does) for the per-kind runs
        groups, kept, elapsed = ours(
            folder, files, similarity, *((cache, sha) if similarity == "medium" else ())
        )
        predictions[name] = (groups, kept)
        rows.append((name, score(items, groups, kept), elapsed))
    signatures: dict[str, dict] = {}
    references = (
        ("viewer grid >= 0.90, keep largest", grid_signatures, reference_grid),
        ("pHash <= 10, keep largest", phash_signatures, reference_phash),
    )
    for name, signer, function in references:
        start = time.perf_counter()
        signatures[name] = signer(folder, files)
        groups, kept = function(folder, files, signatures[name])
        predictions[name] = (groups, kept)
        rows.append((name, score(items, groups, kept), time.perf_counter() - start))
    print("\n### Mixed set (every kind and the hard negatives together)\n")
    print("| method | precision | recall | F1 | keep-best | photos lost | false pairs | groups | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s, elapsed in rows:
        print(
            f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['keep_best']:.1%} | "
            f"{s['photos_lost']} | {s['false_pairs']} | {s['groups']} | {elapsed:.1f} |"
        )
    default = rows[0][1]
    refs = [r[1] for r in rows[len(runs) :]]
    phash_seconds = rows[-1][2]
    ours_seconds = rows[0][2]
    print(
        f"\nspeed on this set: the whole dedup (default, {os.cpu_count()} cores) {ours_seconds:.1f} s, "
        f"serial pHash of the same {len(files)} files {phash_seconds:.1f} s: "
        f"speed-up {phash_seconds / ours_seconds:.2f}x"
    )

    kinds = [k for k in COPY_KINDS if roles.get(k)]
    default_name = runs[0][0]
    method_names = [default_name, *(name for name, _, _ in references)]
    print("\n### Per kind of copy\n")
    print(
        "recall: copies of the kind grouped with their original, on the mixed set; keep-best: groups "
        "holding such a copy that kept the original (or its lossless copy), on a set of only the "
        "originals, their lossless copies and that kind; lost: photos with no copy kept there.\n"
    )
    print(
        "| kind | copies | recall ours | recall grid | recall pHash | keep-best ours | keep-best grid "
        "| keep-best pHash | lost ours |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    kind_figures: dict[str, tuple[float, float]] = {}
    for kind in kinds:
        recalls = [kind_recall(items, predictions[m][0], kind) for m in method_names]
        keeps: list[str] = ["-"] * 3
        lost = "-"
        if per_kind:
            subset = [i for i in items if i.role in KEEPABLE_ROLES or i.role == kind]
            names = [i.file for i in subset]
            groups, kept, _ = ours(folder, names, "medium", cache, sha)
            good, total = kind_keep_best(subset, groups, kept, kind)
            keeps[0] = _fraction(good, total)
            lost = str(score(subset, groups, kept)["photos_lost"])
            kind_figures[kind] = (recalls[0][0] / recalls[0][1], good / total if total else 0.0)
            for index, (name, _, function) in enumerate(references, 1):
                ref_groups, ref_kept = function(folder, names, signatures[name])
                keeps[index] = _fraction(*kind_keep_best(subset, ref_groups, ref_kept, kind))
        else:
            kind_figures[kind] = (recalls[0][0] / recalls[0][1], float("nan"))
        marker = " (new)" if kind in WEB_KINDS else ""
        print(
            f"| {kind}{marker} | {recalls[0][1]} | "
            + " | ".join(_fraction(*r) for r in recalls)
            + f" | {' | '.join(keeps)} | {lost} |"
        )

    print("\n### Hard negatives wrongly grouped (mixed set; fewer is better)\n")
    print("| hard negative | items | ours | grid | pHash |")
    print("|---|---|---|---|---|")
    for negative in (*HARD_NEGATIVE_ROLES, "family"):
        counts = [wrongly_grouped(items, predictions[m][0], negative) for m in method_names]
        label = {
            "part": "left/right parts",
            "exposure": "exposure brackets +-1 EV",
            "family": "family originals",
        }
        print(f"| {label[negative]} | {counts[0][1]} | " + " | ".join(str(c[0]) for c in counts) + " |")
    shutil.rmtree(cache_root, ignore_errors=True)

    recall_ok = all(r >= 0.9 for r, _ in kind_figures.values())
    targets = {
        "precision = 1.0": default["precision"] >= 1.0,
        "recall >= 0.97": default["recall"] >= 0.97,
        "recall >= 0.9 per kind": recall_ok,
        "keep-best >= 99%": default["keep_best"] >= 0.99,
        "photos lost = 0": default["photos_lost"] == 0,
        "ahead of both references": all(
            default["precision"] >= r["precision"]
            and default["recall"] > r["recall"]
            and default["f1"] > r["f1"]
            and default["keep_best"] > r["keep_best"]
            and default["photos_lost"] <= r["photos_lost"]
            for r in refs
        ),
    }
    if per_kind:
        targets["keep-best >= 99% per kind"] = all(k >= 0.99 for _, k in kind_figures.values())
    print("\ntargets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))


def build_large(folder: Path, count: int, copies: int) -> list[Path]:
    """`count` JPEGs of >= 24 MP with film-like grain (the entropy of real camera files), of which
    `copies` are near-duplicates of others (4 % crops and q70 re-saves), so keep-best is timed too."""
    folder = folder / f"{count}-{copies}-v2"  # v2: extra pictures are other framings, not mirror images
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    rng = np.random.default_rng(0)
    sources = [p for p, _ in source_photos()]
    made: list[Path] = []
    for index in range(count - copies):
        source = sources[index % len(sources)]
        image = Image.open(source).convert("RGB")
        size = LARGE_SIDE if image.width >= image.height else LARGE_SIDE[::-1]
        if index >= len(sources):  # another picture: the left 70 % of the frame (a mirror image is a copy)
            image = image.crop((0, 0, round(image.width * 0.7), image.height))
        big = np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        big = np.clip(big + rng.normal(0, 3.0, big.shape[:2])[..., None], 0, 255).astype(np.uint8)
        path = folder / f"large-{index:02d}.jpg"
        Image.fromarray(big).save(path, quality=92)
        made.append(path)
    for index in range(copies):
        original = Image.open(made[index])
        path = folder / f"large-{index:02d}-copy.jpg"
        if index % 2:
            original.save(path, quality=70)
        else:
            dx, dy = round(original.width * 0.04), round(original.height * 0.04)
            original.crop((dx, dy, original.width - dx, original.height - dy)).save(path, quality=90)
        made.append(path)
    return sorted(made)


def build_mid(folder: Path, count: int = MID_COUNT) -> list[Path]:
    """About `count` photos of 1-9 MP, as a subject folder holds them: every source photo at
    several sizes and framings (distinct pictures), a quarter of them saved as PNG, and one in
    six followed by a near-duplicate (a re-save, a half-size copy or a 4 % crop)."""
    folder = folder / str(count)
    existing = sorted(folder.glob("*.*"))
    if len(existing) >= count:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    sources = [p for p, _ in source_photos()] + [p for p, _ in extra_photos()]
    made: list[Path] = []
    index = 0
    while len(made) < count:
        source = sources[index % len(sources)]
        image = Image.open(source).convert("RGB")
        # A distinct framing per pass: the whole frame, then different 70 % windows.
        turn = index // len(sources)
        if turn:
            w, h = image.size
            cw, ch = round(w * 0.7), round(h * 0.7)
            x, y = ((turn * 37) % 4) * (w - cw) // 3, ((turn * 53) % 4) * (h - ch) // 3
            image = image.crop((x, y, x + cw, y + ch))
        megapixels = float(rng.uniform(1.0, 9.0))
        factor = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        image = image.resize(
            (round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS
        )
        path = folder / f"mid-{index:03d}.{'png' if index % 4 == 3 else 'jpg'}"
        image.save(path, **({} if path.suffix == ".png" else {"quality": 90}))
        made.append(path)
        if index % 6 == 5:
            copy = folder / f"mid-{index:03d}-copy.jpg"
            kind = (index // 6) % 3
            if kind == 0:
                image.save(copy, quality=75)
            elif kind == 1:
                image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS).save(
                    copy, quality=85
                )
            else:
                dx, dy = round(image.width * 0.04), round(image.height * 0.04)
                image.crop((dx, dy, image.width - dx, image.height - dy)).save(copy, quality=90)
            made.append(copy)
        index += 1
    return sorted(made)


def speed(files: list[Path], title: str, target: float, rounds: int = SPEED_ROUNDS) -> None:
    """Whole `lora-assets dedup` (a fresh process, no cache) against serial pHash, side by side,
    `rounds` times in turn: the machine's speed drifts by 10-30 % between minutes, so each ratio
    is taken within one round and the median round is the result."""
    sizes = [Image.open(p).size for p in files]
    low, high = min(w * h for w, h in sizes) / 1e6, max(w * h for w, h in sizes) / 1e6
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    kinds = Counter(p.suffix.lower().lstrip(".").upper() for p in files)
    formats = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    print(
        f"\n## Speed: {title}: {len(files)} files ({formats}), "
        f"{low:.1f}-{high:.1f} MP, {total_mb:.0f} MB, {os.cpu_count()} cores"
    )
    print(
        "| round | reference: serial imagehash.phash(Image.open(p)), s | lora-assets dedup, s | CPU | ratio |"
    )
    print("|---|---|---|---|---|")
    ratios = []
    for round_number in range(1, rounds + 1):
        reference, elapsed, cpu, report = _speed_round(files)
        ratios.append(reference / elapsed)
        print(f"| {round_number} | {reference:.2f} | {elapsed:.2f} | {cpu:.0%} | {ratios[-1]:.2f}x |")
    phases = ", ".join(f"{name} {value:.2f} s" for name, value in report["seconds"].items())
    print(
        f"speed-up: {float(np.median(ratios)):.1f}x, the median of {rounds} rounds "
        f"({min(ratios):.1f}-{max(ratios):.1f}x; target >= {target:g}x, CPU >= 180 %); "
        f"groups found: {len(report['groups'])}; inside the last command: {phases}"
    )


def _speed_round(files: list[Path]) -> tuple[float, float, float, dict]:
    """(reference s, ours s, our CPU use, our --json report) for one round, back to back."""
    start = time.perf_counter()
    for path in files:
        imagehash.phash(Image.open(path))
    reference = time.perf_counter() - start
    command = [str(Path(sys.executable).with_name("lora-assets")), "dedup", str(files[0].parent), "--json"]
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    return reference, elapsed, (_cpu_seconds() - cpu_before) / elapsed, json.loads(done.stdout)


def _cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (user + nice + system), from /proc/stat: the pool's
    workers are grandchildren of this process, which resource.RUSAGE_CHILDREN does not count."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()[1:]
    return sum(int(v) for v in fields[:3]) / os.sysconf("SC_CLK_TCK")


def grouping_scale(n: int = 20_000) -> None:
    rng = np.random.default_rng(1)
    hashes = [[int(v) for v in rng.integers(0, 2**64, n, dtype=np.uint64)] for _ in range(3)]
    start = time.perf_counter()
    pairs = candidate_pairs(*hashes, crop_tolerant=True)
    p = np.array(hashes[0], dtype=np.uint64)
    related = {(i, j): "duplicate" for i, j in pairs if int(np.bitwise_count(p[i] ^ p[j])) <= 10}
    groups = group_items(range(n), related)
    elapsed = time.perf_counter() - start
    print(
        f"\n## Grouping {n} random 64-bit hashes: {elapsed:.2f} s (target < 5 s); "
        f"{len(pairs)} candidate pairs, {sum(len(g) > 1 for g in groups)} groups"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--large", type=int, default=None, help="number of >= 24 MP JPEGs for the speed run (40)"
    )
    parser.add_argument(
        "--copies", type=int, nargs="+", default=None, help="near-duplicates among them (4 8)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the default similarity on the accuracy set; 12 large JPEGs (2 copies) for speed",
    )
    parser.add_argument("--skip-accuracy", action="store_true", help="no accuracy set (nor per-kind table)")
    parser.add_argument("--skip-kinds", action="store_true", help="no per-kind keep-best runs (recall stays)")
    parser.add_argument(
        "--skip-speed", action="store_true", help="no speed runs (1-9 MP folder, >= 24 MP JPEGs)"
    )
    parser.add_argument("--skip-grouping", action="store_true", help="no grouping-at-scale run")
    parser.add_argument(
        "--no-extra-photos",
        action="store_true",
        help="build the accuracy set from ../shared/photos only (no Debian-packaged photos)",
    )
    args = parser.parse_args()
    large = args.large if args.large is not None else (12 if args.quick else 40)
    copies = args.copies if args.copies is not None else ([2] if args.quick else [4, 8])
    RESULTS.mkdir(parents=True, exist_ok=True)
    mode = " --quick" if args.quick else ""
    print(f"# dedup benchmark{mode} ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)")
    if not args.skip_accuracy:
        accuracy(
            RESULTS / "dedup_set",
            quick=args.quick,
            per_kind=not args.skip_kinds,
            extra=not args.no_extra_photos,
        )
    if not args.skip_speed:
        speed(build_mid(RESULTS / "dedup_mid"), "a subject folder of 1-9 MP photos", 2.0)
    for count in copies if large and not args.skip_speed else []:
        speed(build_large(RESULTS / "dedup_large", large, count), f"{large} JPEGs of >= 24 MP", 5.0)
    if not args.skip_grouping:
        grouping_scale()


if __name__ == "__main__":
    main()
