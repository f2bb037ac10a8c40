"""Effective resolution: real detail, not pixel count."""

import shutil

import pytest

from lora_assets.images.detail import DetailMeasure, measure_detail
from lora_assets.images.keep_best import Candidate, choose
from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import sample_photo

MAX_PIXELS = 120_000_000


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detail")
    source = folder / "source.jpg"
    shutil.copy2(sample_photo("honey-bee-on-aster.jpg"), source)
    paths = {
        "source": source,
        "q30": pf.variant_reencode(source, folder / "q30.jpg", 30),
        "upscale": pf.variant_upscale(source, folder / "upscale.jpg", 3),
        "blur": pf.variant_blur(source, folder / "blur.jpg", 2.5),
        "half": pf.variant_downscale(source, folder / "half.jpg", 0.5),
    }
    return {name: measure_detail(path, MAX_PIXELS) for name, path in paths.items()}


def test_upscales_and_blurred_copies_measure_far_less_real_detail(measured):
    source = measured["source"].effective_mp
    assert measured["upscale"].effective_mp < source / 2
    assert measured["blur"].effective_mp < source / 2
    assert measured["upscale"].native_mp == pytest.approx(measured["source"].native_mp)


def test_jpeg_artifacts_do_not_count_as_detail(measured):
    assert measured["q30"].effective_mp <= measured["source"].effective_mp * 1.1


def test_measures_survive_the_cache_round_trip(measured):
    again = DetailMeasure.from_bytes(measured["half"].to_bytes())
    assert again.effective_mp == pytest.approx(measured["half"].effective_mp)
    assert (again.gray == measured["half"].gray).all()


def test_keep_best_explains_itself(measured):
    members = [
        Candidate("source.jpg", measured["source"], "JPEG", 80, 1.0),
        Candidate("upscale.jpg", measured["upscale"], "JPEG", 95, 1.0),
        Candidate("half.jpg", measured["half"], "JPEG", 85, 0.5),
    ]
    decision = choose(members)
    assert decision.kept == "source.jpg"
    assert decision.reasons["upscale.jpg"].startswith(
        "dropped: duplicate of source.jpg; lower effective resolution"
    )
    assert "(smaller)" in decision.reasons["half.jpg"]
