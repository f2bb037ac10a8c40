"""The interpolation test on real photos: upscales (plain or sharpened) are predicted by their
source, a real original is not predicted by its half-size copy."""

import pytest
from PIL import Image, ImageFilter

from lora_assets.images.detail import measure_detail
from lora_assets.images.interpolation import SOURCE_SHARE, UPSCALE_SHARE, unexplained_share
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

    assert unexplained_share(plain, original) < UPSCALE_SHARE
    assert unexplained_share(sharpened, original) < UPSCALE_SHARE


@pytest.mark.parametrize("photo", PHOTOS)
def test_an_original_holds_detail_its_half_size_copy_cannot_predict(photo, tmp_path):
    source = sample_photo(photo)
    half = measured(pf.variant_downscale(source, tmp_path / "half.jpg", 0.5))

    assert unexplained_share(measured(source), half) >= SOURCE_SHARE


def test_copies_of_one_grid_or_of_a_reduced_analysis_are_not_judged(tmp_path):
    source = sample_photo("honey-bee-on-aster.jpg")
    original = measured(source)
    resaved = measured(pf.variant_reencode(source, tmp_path / "q60.jpg", quality=60))

    assert unexplained_share(resaved, original) is None  # same pixel grid: nothing to predict
    assert unexplained_share(original, resaved) is None


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
