"""A labelled near-duplicate set built from real, licence-clean photos.

Per photo: the original, a lossless PNG copy, a low-quality re-encode, two downscales, a
thumbnail, a 3x upscale of a 1/3 downscale, a 3-5% crop and a blurred copy (one identity); for
photos up to 1400 px also a 2x "web upscale" saved as PNG (a bigger file with no new detail).
Hard negatives: photos that share a MANIFEST family (same shoot or scene), left/right parts of
one photo (their own identities), and exposure brackets (+-1 stop, their own identities).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lora_assets_tests import photo_factory as pf

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "photos"
BUNDLED_PHOTOS = REPO / "data" / "subjects" / "sample" / "images"
MAX_ORIGINAL_SIDE = 2400
WEB_UPSCALE_MAX_SIDE = 1400
KEEPABLE_ROLES = ("original", "lossless")


@dataclass(frozen=True)
class Item:
    file: str
    identity: str
    role: str
    family: str


def source_photos() -> list[tuple[Path, str]]:
    """(photo, family) for every photo in ../shared/photos (or the bundled sample as a fallback)."""
    manifest = SHARED_PHOTOS / "MANIFEST.csv"
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as handle:
            return [(SHARED_PHOTOS / row["file"], row["family"]) for row in csv.DictReader(handle)]
    return [(p, "") for p in sorted(BUNDLED_PHOTOS.rglob("*.jpg")) if "copy" not in p.name]


def build(folder: Path, seed: int = 0) -> list[Item]:
    """Write the labelled set into `folder` (reused if its labels.csv exists) and return its labels."""
    labels = folder / "labels.csv"
    if labels.exists():
        with open(labels, newline="", encoding="utf-8") as handle:
            return [Item(**row) for row in csv.DictReader(handle)]
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    items: list[Item] = []
    for number, (source, family) in enumerate(source_photos()):
        stem = source.stem
        image = Image.open(source)
        image.load()
        if max(image.size) > MAX_ORIGINAL_SIDE:
            image.thumbnail((MAX_ORIGINAL_SIDE, MAX_ORIGINAL_SIDE), Image.Resampling.LANCZOS)
            original = folder / f"{stem}.jpg"
            image.convert("RGB").save(original, "JPEG", quality=92)
        else:
            original = folder / f"{stem}{source.suffix.lower()}"
            original.write_bytes(source.read_bytes())

        def add(role: str, path: Path, identity: str = stem, family: str = family) -> None:
            items.append(Item(path.name, identity, role, family))

        add("original", original)
        add("lossless", pf.variant_lossless(original, folder / f"{stem}__lossless.png"))
        add("reencode", pf.variant_reencode(original, folder / f"{stem}__q30.jpg", quality=30))
        add("downscale", pf.variant_downscale(original, folder / f"{stem}__half.jpg", 0.5))
        add("downscale", pf.variant_downscale(original, folder / f"{stem}__third.jpg", 0.33))
        add("thumbnail", pf.variant_thumbnail(original, folder / f"{stem}__thumb.jpg", 160))
        add("upscale", pf.variant_upscale(original, folder / f"{stem}__upscale3.jpg", 3))
        crop = rng.uniform(0.03, 0.05)
        add("crop", pf.variant_crop(original, folder / f"{stem}__crop.jpg", crop))
        add("blur", pf.variant_blur(original, folder / f"{stem}__blur.jpg", 2.5))
        if max(image.size) <= WEB_UPSCALE_MAX_SIDE:
            add("web-upscale", pf.variant_enlarge(original, folder / f"{stem}__upscale2x.png", 2.0))
        if image.width >= 600:
            for side in ("left", "right"):
                path = pf.variant_half(original, folder / f"{stem}__part-{side}.jpg", side)
                add("part", path, identity=f"{stem}#part-{side}")
        if number % 3 == 0:
            for stops in (-1.0, 1.0):
                path = pf.variant_exposure(original, folder / f"{stem}__ev{stops:+.0f}.jpg", stops)
                add("exposure", path, identity=f"{stem}#ev{stops:+.0f}")
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "identity", "role", "family"])
        writer.writeheader()
        writer.writerows(item.__dict__ for item in items)
    return items
