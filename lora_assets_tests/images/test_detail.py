"""Effective resolution: real detail, not pixel count."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from lora_assets.images.detail import WINDOW_SHARE, DetailMeasure, measure_detail
from lora_assets.images.keep_best import Candidate, choose
from lora_assets.images.workers import ImageWorkers, MeasureCache, Photo
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


def test_a_large_photo_gets_its_native_window_only_on_demand(tmp_path):
    """Over ANALYSIS_PIXELS the analysis is a reduced decode; the native central window costs a
    second decode, so it is cut only where a group spans pixel grids, and a cached measure
    without one is redone when one is needed."""
    image = Image.open(sample_photo("fig-in-red-bowl.jpg")).convert("RGB")
    large = tmp_path / "large.jpg"
    size = (image.width * 2, image.height * 2)
    image.resize(size, Image.Resampling.LANCZOS).save(large, quality=90)
    plain, windowed = measure_detail(large, MAX_PIXELS, window=False), measure_detail(large, MAX_PIXELS)

    assert plain.analysis_scale == windowed.analysis_scale == 0.5
    assert plain.window.size == 0 and np.array_equal(plain.losses, windowed.losses)
    expected = (round(windowed.height * WINDOW_SHARE), round(windowed.width * WINDOW_SHARE))
    assert windowed.window.shape == expected

    photo = Photo("large.jpg", large, "0" * 64)
    workers = ImageWorkers(MAX_PIXELS, workers=1, cache=MeasureCache(tmp_path / "cache"))
    with ThreadPoolExecutor(1) as pool:
        assert workers._details([photo], pool)["large.jpg"].window.size == 0
        assert workers._details([photo], pool, windows={"large.jpg"})["large.jpg"].window.size > 0
        assert workers._details([photo], pool, windows={"large.jpg"})["large.jpg"].window.size > 0
    assert workers.counters == {"details_computed": 2, "details_cached": 1, "details_from_hashing_decode": 0}
