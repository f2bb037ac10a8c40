"""A labelled near-duplicate set built from real, licence-clean photos.

Sources: every photo in ../shared/photos (MANIFEST.csv) plus the photos listed in
benchmarks/dedup_photos.csv, fetched from their Debian packages (`apt-get download`,
`dpkg-deb -x`) into a cache folder and checked against their sha256. Without apt (or with a
package no longer served) the set is built from the shared photos alone, with a warning.

Per photo (one identity): the original and a lossless PNG copy (the two keepable roles), then
the copies the web makes of it:
- plain ones: a low-quality re-encode, two downscales, a thumbnail, a 3x upscale of a 1/3
  downscale, a 3-5% crop, a blurred copy, and for photos up to 1400 px a 2x "web upscale" saved
  as PNG (a bigger file with no new detail);
- issue 10's web copies: a mirrored re-save, a colour grade (contrast, saturation, brightness),
  a black-and-white conversion (colour photos only), a text banner over the top or bottom
  8-14% of the frame or a meme caption strip added above or below it (alternating photos), a
  semi-transparent corner watermark (3-8% of the frame), a sharpened 1.6-2x upscale, a
  median-denoised copy, an 8% crop at a random offset and a lossy WebP copy.
Hard negatives: photos that share a family (same shoot or scene), left/right parts of one photo
(their own identities), and exposure brackets (+-1 stop, their own identities).

Every parameter comes from a random generator seeded per photo, so a photo's copies do not depend
on which other photos are present. The set is cached in its folder; DATASET_VERSION marks it.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lora_assets_tests import photo_factory as pf

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "photos"
BUNDLED_PHOTOS = REPO / "data" / "subjects" / "sample" / "images"
EXTRA_PHOTOS = Path(__file__).resolve().with_name("dedup_photos.csv")
EXTRA_CACHE = Path(__file__).resolve().parent / "results" / "dedup_photos"
DATASET_VERSION = 2  # bump whenever the set's content changes: an older cached set is rebuilt
MAX_ORIGINAL_SIDE = 2400
WEB_UPSCALE_MAX_SIDE = 1400
SHARPENED_UPSCALE_MAX_SIDE = 4096
KEEPABLE_ROLES = ("original", "lossless")
# Copy kinds (roles of items that share their original's identity), in report order.
PLAIN_KINDS = ("reencode", "downscale", "thumbnail", "upscale", "crop", "blur", "web-upscale")
WEB_KINDS = (
    "mirror",
    "graded",
    "bw",
    "banner",
    "caption",
    "watermark",
    "sharpened-upscale",
    "denoised",
    "crop-8",
    "webp",
)
COPY_KINDS = PLAIN_KINDS + WEB_KINDS
HARD_NEGATIVE_ROLES = ("part", "exposure")
BANNER_TEXTS = ("SHARE IF YOU LOVE NATURE", "FOLLOW FOR MORE", "Photo of the day", "NEW WALLPAPER 4K")
CAPTION_TEXTS = (
    "when the photo is just right",
    "me on monday morning",
    "nobody: / this photo:",
    "10/10 would look again",
)
WATERMARK_TEXTS = ("@photo.daily", "wallpapers.hd", "(c) pixfeed", "pinspace")
LABEL_FIELDS = ["file", "identity", "role", "family", "source"]


@dataclass(frozen=True)
class Item:
    file: str
    identity: str
    role: str
    family: str
    source: str = ""


def source_photos() -> list[tuple[Path, str]]:
    """(photo, family) for every photo in ../shared/photos (or the bundled sample as a fallback)."""
    manifest = SHARED_PHOTOS / "MANIFEST.csv"
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as handle:
            return [(SHARED_PHOTOS / row["file"], row["family"]) for row in csv.DictReader(handle)]
    return [(p, "") for p in sorted(BUNDLED_PHOTOS.rglob("*.jpg")) if "copy" not in p.name]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and _sha256(path) == sha256


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _fetch_package(package: str, version: str, rows: list[dict[str, str]], cache: Path) -> None:
    """Download one Debian package (the listed version, else the one apt serves), extract it and
    copy the listed files into `cache` when their sha256 matches."""
    with tempfile.TemporaryDirectory(prefix="dedup-photos-") as tmp:
        work = Path(tmp)
        for spec in (f"{package}={version}", package):
            done = subprocess.run(
                ["apt-get", "download", spec], cwd=work, capture_output=True, text=True, timeout=900
            )
            debs = sorted(work.glob(f"{package}_*.deb"))
            if done.returncode == 0 and debs:
                break
        else:
            reason = (done.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise RuntimeError(f"apt-get download {package} failed: {reason}")
        tree = work / "tree"
        subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True, capture_output=True, timeout=900
        )
        for row in rows:
            found = tree / row["path"].lstrip("/")
            if not found.is_file():
                _warn(f"{row['path']} is not in {debs[0].name}")
                continue
            if _sha256(found) != row["sha256"]:
                _warn(f"{row['path']} in {debs[0].name} has another sha256 than dedup_photos.csv lists")
                continue
            partial = cache / f".{row['file']}.part"
            shutil.copyfile(found, partial)
            partial.replace(cache / row["file"])


def extra_photos(listing: Path = EXTRA_PHOTOS, cache: Path = EXTRA_CACHE) -> list[tuple[Path, str]]:
    """(photo, family) for each photo listed in dedup_photos.csv that is (or can be made) present
    in `cache` with its listed sha256; fetches missing ones from their Debian packages."""
    if not listing.exists():
        return []
    with open(listing, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cache.mkdir(parents=True, exist_ok=True)
    missing = [row for row in rows if not _verified(cache / row["file"], row["sha256"])]
    packages: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in missing:
        packages.setdefault((row["package"], row["version"]), []).append(row)
    if packages and not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        _warn(
            f"apt-get/dpkg-deb not found: the {len(missing)} photos of {listing.name} are left out; "
            "building from the shared photos only"
        )
        packages = {}
    for (package, version), wanted in packages.items():
        print(f"fetching {len(wanted)} photos from the Debian package {package} {version} ...", flush=True)
        try:
            _fetch_package(package, version, wanted, cache)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _warn(f"{exc}; its {len(wanted)} photos are left out (continuing without them)")
    present = [row for row in rows if _verified(cache / row["file"], row["sha256"])]
    if len(present) < len(rows):
        _warn(f"{len(rows) - len(present)} of the {len(rows)} photos in {listing.name} are unavailable")
    return [(cache / row["file"], row["family"]) for row in present]


def _is_gray(image: Image.Image) -> bool:
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    small = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.int16)
    return int(np.abs(small - small.mean(axis=2, keepdims=True)).max()) <= 3


def _photo_items(args: tuple[int, Path, str, str, Path, int]) -> list[Item]:
    """Write one photo's original and all its copies into `folder`; return their labels."""
    number, source, family, origin, folder, seed = args
    stem = source.stem
    rng = random.Random(f"{seed}:{stem}")
    image = Image.open(source)
    image.load()
    if max(image.size) > MAX_ORIGINAL_SIDE:
        image.thumbnail((MAX_ORIGINAL_SIDE, MAX_ORIGINAL_SIDE), Image.Resampling.LANCZOS)
        original = folder / f"{stem}.jpg"
        image.convert("RGB").save(original, "JPEG", quality=92)
    else:
        original = folder / f"{stem}{source.suffix.lower()}"
        original.write_bytes(source.read_bytes())
    items: list[Item] = []

    def add(role: str, path: Path, identity: str = stem) -> None:
        items.append(Item(path.name, identity, role, family, origin))

    def name(suffix: str) -> Path:
        return folder / f"{stem}__{suffix}"

    add("original", original)
    add("lossless", pf.variant_lossless(original, name("lossless.png")))
    add("reencode", pf.variant_reencode(original, name("q30.jpg"), quality=30))
    add("downscale", pf.variant_downscale(original, name("half.jpg"), 0.5))
    add("downscale", pf.variant_downscale(original, name("third.jpg"), 0.33))
    add("thumbnail", pf.variant_thumbnail(original, name("thumb.jpg"), 160))
    add("upscale", pf.variant_upscale(original, name("upscale3.jpg"), 3))
    add("crop", pf.variant_crop(original, name("crop.jpg"), rng.uniform(0.03, 0.05)))
    add("blur", pf.variant_blur(original, name("blur.jpg"), 2.5))
    if max(image.size) <= WEB_UPSCALE_MAX_SIDE:
        add("web-upscale", pf.variant_enlarge(original, name("upscale2x.png"), 2.0))

    # issue 10: the web copies
    add("mirror", pf.variant_mirror(original, name("mirror.jpg"), quality=rng.choice((85, 88, 90))))
    grade = {
        "contrast": rng.uniform(1.2, 1.4),
        "colour": rng.uniform(1.3, 1.5),
        "brightness": rng.uniform(1.03, 1.12),
    }
    add("graded", pf.variant_graded(original, name("graded.jpg"), **grade))
    if not _is_gray(image):
        mode = rng.choice(("L", "RGB"))
        add("bw", pf.variant_bw(original, name("bw.jpg"), mode=mode, contrast=rng.uniform(1.0, 1.12)))
    top = rng.random() < 0.5
    if number % 2 == 0:
        bar = rng.choice(((20, 20, 20), (190, 25, 30), (245, 245, 245), (20, 60, 150)))
        banner = pf.variant_banner(
            original,
            name("banner.jpg"),
            text=rng.choice(BANNER_TEXTS),
            fraction=rng.uniform(0.08, 0.14),
            top=top,
            opacity=rng.choice((1.0, 0.8)),
            bar=bar,
        )
        add("banner", banner)
    else:
        caption = pf.variant_caption(
            original,
            name("caption.jpg"),
            text=rng.choice(CAPTION_TEXTS),
            fraction=rng.uniform(0.10, 0.16),
            top=top,
        )
        add("caption", caption)
    watermark = pf.variant_watermark(
        original,
        name("watermark.jpg"),
        text=rng.choice(WATERMARK_TEXTS),
        area=rng.uniform(0.03, 0.08),
        corner=rng.choice(("top-left", "top-right", "bottom-left", "bottom-right")),
        opacity=rng.uniform(0.4, 0.7),
    )
    add("watermark", watermark)
    factor = min(rng.uniform(1.6, 2.0), SHARPENED_UPSCALE_MAX_SIDE / max(image.size))
    percent = rng.choice((120, 140, 160))
    add("sharpened-upscale", pf.variant_sharpened_upscale(original, name("sharp-up.jpg"), factor, percent))
    add("denoised", pf.variant_denoised(original, name("denoised.jpg"), 3))
    shift = (rng.random(), rng.random())
    add("crop-8", pf.variant_crop_offset(original, name("crop8.jpg"), 0.08, shift))
    add("webp", pf.variant_webp(original, name("webp.webp"), quality=rng.randint(75, 80)))

    # hard negatives: their own identities
    if image.width >= 600:
        for side in ("left", "right"):
            add(
                "part",
                pf.variant_half(original, name(f"part-{side}.jpg"), side),
                identity=f"{stem}#part-{side}",
            )
    if number % 3 == 0:
        for stops in (-1.0, 1.0):
            path = pf.variant_exposure(original, name(f"ev{stops:+.0f}.jpg"), stops)
            add("exposure", path, identity=f"{stem}#ev{stops:+.0f}")
    return items


def _read_labels(labels: Path) -> list[Item]:
    with open(labels, newline="", encoding="utf-8") as handle:
        return [Item(**row) for row in csv.DictReader(handle)]


def build(folder: Path, seed: int = 0, extra: bool = True, workers: int | None = None) -> list[Item]:
    """Write the labelled set into `folder` and return its labels; a set already there is reused
    when it was built by this DATASET_VERSION (an older one is deleted and rebuilt)."""
    labels, version = folder / "labels.csv", folder / "VERSION"
    stamp = f"{DATASET_VERSION} extra={int(extra)}"
    if labels.exists() and version.exists() and version.read_text().strip() == stamp:
        return _read_labels(labels)
    if labels.exists():
        print(f"dataset in {folder} is not version {stamp!r}: rebuilding it", flush=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sources = [(path, family, "shared") for path, family in source_photos()]
    if extra:
        sources += [(path, family, "debian") for path, family in extra_photos()]
    stems = [path.stem for path, _, _ in sources]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"two source photos share a name: {', '.join(duplicates)}")
    jobs = [(n, path, family, origin, folder, seed) for n, (path, family, origin) in enumerate(sources)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    print(f"building the dedup set from {len(jobs)} photos on {workers} processes ...", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        items = [item for made in pool.map(_photo_items, jobs) for item in made]
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_FIELDS)
        writer.writeheader()
        writer.writerows(item.__dict__ for item in items)
    version.write_text(stamp + "\n")
    print(f"built {len(items)} images in {time.perf_counter() - started:.0f} s", flush=True)
    return items


if __name__ == "__main__":
    built = build(EXTRA_CACHE.parent / "dedup_set")
    print(f"{len(built)} images, {len({i.identity for i in built})} identities")
