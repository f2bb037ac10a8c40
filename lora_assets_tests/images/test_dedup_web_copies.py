"""Issue 10: the web copies people really meet (mirrored, colour-graded, black-and-white,
captioned, bannered, watermarked, sharpened upscales, denoised, 8% crops, WebP) group with their
original, the original is kept, and the reason names an overlay or a black-and-white conversion;
the hard negatives (exposure brackets, one shoot's other photos) stay apart.

Small copies (long side 640 px) of real photos, so the whole file runs in well under a minute."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from lora_assets.images.dedup import _overlaid_members
from lora_assets.images.features import compute_features
from lora_assets.images.similarity import PairScore, compare
from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import REPO, TEST_PHOTOS, sample_photo
from lora_assets_tests.images.test_dedup import group_of, run

SHARED_PHOTOS = REPO.parent / "shared" / "photos"
SIDE = 640
PHOTOS = ("citrus-slices.jpg", "dogs-at-window.jpg", "suspension-bridge-night.jpg")

# kind -> (file name of the copy, how it is made from the original); `index` varies the edit per photo
Maker = Callable[[Path, Path, int], Path]
COPIES: dict[str, tuple[str, Maker]] = {
    "mirror": ("copy.jpg", lambda src, dst, i: pf.variant_mirror(src, dst, quality=88)),
    "graded": (
        "copy.jpg",
        lambda src, dst, i: pf.variant_graded(src, dst, contrast=1.3, colour=1.4, brightness=1.08),
    ),
    "bw": ("copy.jpg", lambda src, dst, i: pf.variant_bw(src, dst, mode=("L", "RGB")[i % 2])),
    "banner": ("copy.jpg", lambda src, dst, i: pf.variant_banner(src, dst, fraction=0.12, top=i % 2 == 0)),
    "caption": ("copy.jpg", lambda src, dst, i: pf.variant_caption(src, dst, fraction=0.14, top=i % 2 == 1)),
    "watermark": (
        "copy.jpg",
        lambda src, dst, i: pf.variant_watermark(
            src, dst, area=0.06, corner=("bottom-right", "top-left", "bottom-left")[i % 3]
        ),
    ),
    "sharpened-upscale": ("copy.jpg", lambda src, dst, i: pf.variant_sharpened_upscale(src, dst, 1.8)),
    "denoised": ("copy.jpg", lambda src, dst, i: pf.variant_denoised(src, dst, 3)),
    "crop-8": (
        "copy.jpg",
        lambda src, dst, i: pf.variant_crop_offset(
            src, dst, 0.08, ((0.5, 0.5), (0.1, 0.8), (0.9, 0.2))[i % 3]
        ),
    ),
    "webp": ("copy.webp", lambda src, dst, i: pf.variant_webp(src, dst, quality=78)),
}
# words one of which the dropped copy's reason must contain (loosely: the cause, in any phrasing;
# an overlay may be named as any kind of overlay)
OVERLAY_WORDS = ("banner", "caption", "watermark", "logo", "overlay", "text", "strip")
CAUSES = {
    "bw": ("black-and-white", "black and white", "grayscale", "greyscale", "monochrome"),
    "banner": OVERLAY_WORDS,
    "caption": OVERLAY_WORDS,
    "watermark": OVERLAY_WORDS,
}


def shared_photo(name: str) -> Path:
    """A photo of ../shared/photos, or its bundled copy where that folder is absent (a sample
    photo, or a 640 px copy in photos/families/, see photos/CREDITS.csv)."""
    path = SHARED_PHOTOS / name
    if path.exists():
        return path
    bundled = sorted((TEST_PHOTOS / "families").glob(f"{Path(name).stem}.*"))
    return bundled[0] if bundled else sample_photo(name)


def small_original(name: str, target: Path) -> Path:
    """The real photo at a long side of SIDE px, saved as a high-quality JPEG."""
    image = Image.open(shared_photo(name)).convert("RGB")
    image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    image.save(target, "JPEG", quality=95)
    return target


# What the engine does not do yet (a known limit in the README), kept visible rather than left
# out: strict, so a case that starts passing must be moved back to the plain list.
KNOWN_GAPS = {
    ("watermark", "suspension-bridge-night.jpg"): "which copy carries a faint logo is not decided in a pair",
}
CASES = [
    pytest.param(kind, photo, marks=[pytest.mark.xfail(reason=KNOWN_GAPS[kind, photo], strict=True)])
    if (kind, photo) in KNOWN_GAPS
    else (kind, photo)
    for kind in COPIES
    for photo in PHOTOS
]


@pytest.mark.parametrize(("kind", "photo"), CASES)
def test_a_web_copy_is_grouped_with_its_original_and_the_original_is_kept(kind, photo, tmp_path):
    original = small_original(photo, tmp_path / "original.jpg")
    name, make = COPIES[kind]
    make(original, tmp_path / name, PHOTOS.index(photo))

    result = run(tmp_path)

    assert result.rejected == []
    group = group_of(result, "original.jpg")
    assert group is not None and name in group.kept + group.dropped, f"{kind} copy of {photo} not grouped"
    assert len(result.groups) == 1
    assert sorted(group.kept + group.dropped) == sorted(["original.jpg", name])
    assert group.kept == ["original.jpg"], group.reasons
    assert group.dropped == [name]
    assert result.selected == ["original.jpg"]
    reason = group.reasons[name].lower()
    assert reason.startswith("dropped: duplicate of original.jpg; "), reason
    if kind in CAUSES:
        assert any(word in reason for word in CAUSES[kind]), f"the reason does not name the {kind}: {reason}"


@pytest.mark.parametrize("photo", PHOTOS)
def test_exposure_brackets_one_stop_apart_are_not_duplicates(photo, tmp_path):
    source = small_original(photo, tmp_path / "source.jpg")
    folder = tmp_path / "brackets"
    folder.mkdir()
    pf.variant_exposure(source, folder / "ev0.jpg", 0.0)
    pf.variant_exposure(source, folder / "ev+1.jpg", 1.0)

    result = run(folder)

    assert result.groups == [], [(g.kept, g.dropped, g.reasons) for g in result.groups]
    assert sorted(result.selected) == ["ev+1.jpg", "ev0.jpg"]


def manifest_families() -> dict[str, list[str]]:
    """Families of related shots (not duplicates) from ../shared/photos' manifest, or from the
    credits of their bundled copies in a clone without that folder."""
    manifest = SHARED_PHOTOS / "MANIFEST.csv"
    if not manifest.exists():
        manifest = TEST_PHOTOS / "CREDITS.csv"
    families: dict[str, list[str]] = {}
    with open(manifest, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["family"]:
                families.setdefault(row["family"], []).append(row["file"])
    return {family: files for family, files in sorted(families.items()) if len(files) >= 2}


FAMILIES = manifest_families()


def test_the_families_are_found_with_or_without_the_shared_photos():
    names = [name for family in FAMILIES.values() for name in family]
    assert len(FAMILIES) >= 4 and all(shared_photo(name).exists() for name in names)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_photos_of_one_manifest_family_are_not_grouped(family, tmp_path):
    names = FAMILIES[family]
    for name in names:
        small_original(name, tmp_path / f"{Path(name).stem}.jpg")

    result = run(tmp_path)

    assert result.groups == [], [(g.kept, g.dropped, g.reasons) for g in result.groups]
    assert len(result.selected) == len(names)


def test_an_8_percent_crop_does_not_pass_for_a_banner_on_the_other_copies(tmp_path):
    """The rocket's whole frame against its 8 % crop matches everywhere but one band: a trim
    that matches cleanly explains it, so no copy is said to carry a banner."""
    original = small_original("rocket-on-launch-pad.jpg", tmp_path / "rocket.jpg")
    pf.variant_crop_offset(original, tmp_path / "rocket-crop8.jpg", 0.08, (0.5, 0.5))
    pf.variant_bw(original, tmp_path / "rocket-bw.jpg")
    pf.variant_downscale(original, tmp_path / "rocket-half.jpg", 0.5)

    result = run(tmp_path)

    group = group_of(result, "rocket.jpg")
    assert group is not None and group.kept == ["rocket.jpg"], group and group.reasons
    assert len(group.dropped) == 3
    assert not any(word in reason for reason in group.reasons.values() for word in OVERLAY_WORDS)


def test_a_caption_strip_is_found_on_a_photo_whose_other_edge_is_plain(tmp_path):
    """A flat sky along the top is part of the photo: the strip the caption adds at the bottom is
    what gives the original's aspect ratio back."""
    image = Image.open(small_original("citrus-slices.jpg", tmp_path / "scratch.jpg")).convert("RGB")
    image.paste((206, 214, 222), (0, 0, image.width, round(image.height * 0.08)))
    image.save(tmp_path / "citrus.jpg", quality=95)
    (tmp_path / "scratch.jpg").unlink()
    pf.variant_caption(tmp_path / "citrus.jpg", tmp_path / "citrus-caption.jpg", fraction=0.12, top=False)
    pf.variant_downscale(tmp_path / "citrus.jpg", tmp_path / "citrus-half.jpg", 0.5)

    result = run(tmp_path)

    group = group_of(result, "citrus.jpg")
    assert group is not None and group.kept == ["citrus.jpg"], group and group.reasons
    assert "caption strip" in group.reasons["citrus-caption.jpg"]


def test_an_overlay_seen_against_only_some_copies_goes_to_the_copy_those_pairs_share():
    """A faint watermark is found against two of four copies, and both times its edge leans to
    the clean copy: the copy that every undecided pair has in common carries it."""
    keys = ["original", "half", "graded", "thumb", "watermarked"]
    clean = PairScore(grid=1.0, colour=1.0, structure=1.0, detail=1.0, cropped=False)
    undecided = replace(clean, overlay=0.05, overlay_kind="watermark or logo", overlay_lean="a")

    def pair(first: str, second: str) -> tuple[PairScore, bool]:
        seen = second == "watermarked" and first in ("original", "half")
        return (undecided if seen else clean), False

    assert _overlaid_members(keys, pair) == {"watermarked": (0.05, "watermark or logo")}


@pytest.mark.parametrize(("photo", "top"), [("citrus-slices.jpg", False), ("fig-in-red-bowl.jpg", True)])
def test_a_dark_banner_on_a_hazy_photo_scores_alike_whichever_copy_comes_first(photo, top, tmp_path):
    """The banner's black fill lies outside a hazy photo's tones: a tone curve fitted with it in
    bent the rest, so (original, banner) was a mere 'similar' pair while (banner, original) was a
    duplicate. Leaving the banner out, the tones are matched again."""
    hazy = ImageEnhance.Contrast(Image.open(small_original(photo, tmp_path / "o.jpg"))).enhance(0.5)
    hazy.save(tmp_path / "hazy.jpg", quality=95)
    banner = pf.variant_banner(tmp_path / "hazy.jpg", tmp_path / "banner.jpg", fraction=0.12, top=top)
    first, second = compute_features(tmp_path / "hazy.jpg", 10**8), compute_features(banner, 10**8)

    forward, backward = compare(first, second), compare(second, first)

    assert forward.relation(0.9) == backward.relation(0.9) == "duplicate"
    assert (forward.overlay_on, backward.overlay_on) == ("b", "a")
    assert abs(forward.tone - backward.tone) < 0.01
