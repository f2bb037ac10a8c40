"""The interpolation test on real photos: upscales (plain or sharpened) are predicted by their
source, a sharpened one amplifies its source's detail, an upscale of a soft JPEG carries that
JPEG's block grid, a real original is neither predicted nor amplified by its half-size copy, nor
carries its grid."""

import pytest
from PIL import Image, ImageFilter

from lora_assets.images.detail import measure_detail
from lora_assets.images.interpolation import (
    AMPLIFIED,
    CARRIED,
    SOURCE_SHARE,
    UPSCALE_SHARE,
    carried_grid,
    compare_grids,
)
from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import sample_photo
from lora_assets_tests.images.test_dedup import group_of, run

MAX_PIXELS = 120_000_000
PHOTOS = ("honey-bee-on-aster.jpg", "portrait-grace-hopper.jpg")


def measured(path):
    return measure_detail(path, MAX_PIXELS)


@pytest.mark.parametrize("photo", PHOTOS)
def test_plain_and_sharpened_upscales_are_predicted_by_their_source(photo, tmp_path):
    source = sample_photo(photo)
    original = measured(source)
    plain = measured(pf.variant_enlarge(source, tmp_path / "up2.png", 2.0))
    sharpened = measured(pf.variant_sharpened_upscale(source, tmp_path / "sharp.jpg", 1.8))

    plain_evidence, sharpened_evidence = compare_grids(plain, original), compare_grids(sharpened, original)

    assert plain_evidence.share < UPSCALE_SHARE and plain_evidence.amplification < AMPLIFIED
    assert sharpened_evidence.share < UPSCALE_SHARE and sharpened_evidence.amplification >= AMPLIFIED
    assert plain_evidence.verdict == sharpened_evidence.verdict == "upscale"


@pytest.mark.parametrize("photo", PHOTOS)
def test_an_original_holds_detail_its_half_size_copy_cannot_predict(photo, tmp_path):
    source = sample_photo(photo)
    half = measured(pf.variant_downscale(source, tmp_path / "half.jpg", 0.5))

    evidence = compare_grids(measured(source), half)

    assert evidence.share >= SOURCE_SHARE and evidence.amplification < AMPLIFIED
    assert evidence.verdict == "source"


def test_copies_of_one_grid_are_not_judged(tmp_path):
    source = sample_photo("honey-bee-on-aster.jpg")
    original = measured(source)
    resaved = measured(pf.variant_reencode(source, tmp_path / "q60.jpg", quality=60))

    assert compare_grids(resaved, original) is None  # same pixel grid: nothing to predict
    assert compare_grids(original, resaved) is None


def test_a_sharpened_upscale_loses_to_its_source_in_a_group(tmp_path):
    source = tmp_path / "original.jpg"
    Image.open(sample_photo("honey-bee-on-aster.jpg")).save(source, quality=92)
    pf.variant_sharpened_upscale(source, tmp_path / "enhanced-4k.jpg", 1.8)

    result = run(tmp_path)

    group = group_of(result, "original.jpg")
    assert group is not None and group.kept == ["original.jpg"], group and group.reasons
    assert "interpolated upscale" in group.reasons["enhanced-4k.jpg"]


def test_a_soft_original_is_kept_over_its_half_size_copy(tmp_path):
    """Its half holds all of its detail, but the test shows which one is the source."""
    image = Image.open(sample_photo("honey-bee-on-aster.jpg")).convert("RGB")
    image.filter(ImageFilter.GaussianBlur(1.2)).save(tmp_path / "soft.jpg", quality=92)
    pf.variant_downscale(tmp_path / "soft.jpg", tmp_path / "soft-half.jpg", 0.5)

    result = run(tmp_path)

    group = group_of(result, "soft.jpg")
    assert group is not None and group.kept == ["soft.jpg"], group and group.reasons


def test_a_large_sharpened_upscale_is_shown_by_its_amplified_detail(tmp_path):
    """Over 12 MP (the analysis is reduced, the window stays native) and with a share between the
    two bars: the amplification of the fig's own detail is what shows the upscale."""
    source = sample_photo("fig-in-red-bowl.jpg")
    enhanced = measured(pf.variant_sharpened_upscale(source, tmp_path / "enhanced.jpg", 1.7, percent=120))

    evidence = compare_grids(enhanced, measured(source))

    assert enhanced.analysis_scale < 1.0 and enhanced.window.shape[1] >= 0.19 * enhanced.width
    assert UPSCALE_SHARE <= evidence.share < SOURCE_SHARE
    assert evidence.amplification >= AMPLIFIED and evidence.verdict == "upscale"
    assert evidence.sharpened_gain == evidence.amplification


# Blurred, their sharpened upscales show neither a share nor an amplification (the mask's threshold
# leaves soft areas alone): only their own JPEG's block grid gives them away.
SOFT_PHOTOS = tuple(
    f"families/{name}"
    for name in ("bird-ornament-ceiling-lamp.jpg", "mountain-meadow-aitzgorri.jpg", "wall-clock-closeup.jpg")
)


def soft_jpeg(photo: str, target):
    """A soft original: the photo blurred (radius 2), saved at quality 80, as a phone's would be.
    Its width is 4 off a multiple of 8, so that a mirror image's block grid sits elsewhere."""
    image = Image.open(sample_photo(photo)).convert("RGB")
    image = image.crop((0, 0, image.width // 8 * 8 - 4, image.height))
    image.filter(ImageFilter.GaussianBlur(2)).save(target, quality=80)
    return target


@pytest.mark.parametrize("photo", SOFT_PHOTOS)
def test_an_upscale_of_a_soft_jpeg_carries_its_block_grid(photo, tmp_path):
    soft = soft_jpeg(photo, tmp_path / "soft.jpg")
    original = measured(soft)
    enhanced = measured(pf.variant_sharpened_upscale(soft, tmp_path / "enhanced.jpg", 1.7, percent=140))
    flipped = Image.open(tmp_path / "enhanced.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(tmp_path / "enhanced-mirrored.jpg", quality=90)
    mirrored = measured(tmp_path / "enhanced-mirrored.jpg")

    evidence = compare_grids(enhanced, original)

    assert evidence.share is None and evidence.amplification < AMPLIFIED  # nothing else shows it
    assert evidence.carried >= CARRIED and evidence.shown_by == "block grid"
    assert evidence.verdict == "upscale"
    assert carried_grid(mirrored, original, mirrored=True) >= CARRIED
    assert carried_grid(mirrored, original, mirrored=False) < CARRIED  # the grid's position matters


@pytest.mark.parametrize("photo", SOFT_PHOTOS)
def test_a_soft_original_does_not_carry_its_smaller_copies_grid(photo, tmp_path):
    soft = soft_jpeg(photo, tmp_path / "soft.jpg")
    original = measured(soft)
    for scale, name in ((0.5, "half.jpg"), (0.33, "third.jpg")):
        small = measured(pf.variant_downscale(soft, tmp_path / name, scale))
        evidence = compare_grids(original, small)
        assert evidence is not None and evidence.carried < CARRIED, name
        assert evidence.verdict != "upscale", name
    image = Image.open(soft)
    image.resize((round(image.width * 0.6), round(image.height * 0.6)), Image.Resampling.LANCZOS).save(
        tmp_path / "lossless.png"
    )
    assert carried_grid(original, measured(tmp_path / "lossless.png")) == 0.0  # no grid of its own


@pytest.mark.parametrize(
    ("soft", "percent", "reason"),
    [
        (False, 120, "a sharpened upscale (it is a smaller copy, original.jpg, with its detail amplified"),
        (True, 140, "an upscale of a smaller copy, original.jpg (it carries that JPEG's block grid)"),
    ],
    ids=["amplified-fig", "block-grid-soft-clock"],
)
def test_the_reason_names_what_shows_the_upscale(soft, percent, reason, tmp_path):
    source = tmp_path / "original.jpg"
    if soft:
        soft_jpeg("families/wall-clock-closeup.jpg", source)
    else:
        Image.open(sample_photo("fig-in-red-bowl.jpg")).save(source, quality=92)
    pf.variant_sharpened_upscale(source, tmp_path / "enhanced.jpg", 1.7, percent=percent)

    result = run(tmp_path)

    group = group_of(result, "original.jpg")
    assert group is not None and group.kept == ["original.jpg"], group and group.reasons
    assert reason in group.reasons["enhanced.jpg"]
