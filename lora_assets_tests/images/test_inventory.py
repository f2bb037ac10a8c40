import io
import shutil

import numpy as np
import pytest
from PIL import Image

from lora_assets.images.decode import load_oriented_rgb, to_rgb
from lora_assets.images.inventory import PhotoInventory
from lora_assets.images.jpeg_quality import estimate_jpeg_quality
from lora_assets_tests.conftest import sample_photo
from lora_assets_tests.photo_factory import (
    save_bomb_png,
    save_cmyk_jpeg,
    save_float_tiff,
    save_png16,
    save_rotated_jpeg,
    save_truncated_jpeg,
)

LANDSCAPE = "honey-bee-on-aster.jpg"  # 1620x1280


@pytest.fixture
def messy_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    source = sample_photo(LANDSCAPE)
    shutil.copy2(source, folder / "good.jpg")
    shutil.copy2(sample_photo("citrus-slices.jpg"), folder / "sub" / "nested.jpg")
    save_truncated_jpeg(source, folder / "truncated.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    save_cmyk_jpeg(source, folder / "cmyk.jpg")
    save_png16(source, folder / "gray16.png")
    save_rotated_jpeg(source, folder / "rotated.jpg", orientation=6)
    save_float_tiff(sample_photo("portrait-grace-hopper.jpg"), folder / "float.tif")
    save_bomb_png(folder / "bomb.png")
    return folder


def test_scan_accepts_awkward_photos_and_rejects_broken_files_with_reasons(tmp_path, messy_folder):
    result = PhotoInventory(tmp_path / "cache", max_pixels=120_000_000).scan(messy_folder, workers=2)
    manifest = result.manifest.set_index("path")
    assert sorted(manifest.index) == ["cmyk.jpg", "good.jpg", "gray16.png", "rotated.jpg", "sub/nested.jpg"]
    rejected = dict(zip(result.rejected["path"], result.rejected["reason"], strict=True))
    assert rejected == {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
        "float.tif": "unsupported mode",
        "bomb.png": "decompression bomb",
    }
    details = dict(zip(result.rejected["path"], result.rejected["detail"], strict=True))
    assert "144 MP exceeds the limit of 120 MP" in details["bomb.png"]
    assert "'F'" in details["float.tif"]

    assert (manifest.loc["good.jpg", "width"], manifest.loc["good.jpg", "height"]) == (1620, 1280)
    assert (manifest.loc["rotated.jpg", "width"], manifest.loc["rotated.jpg", "height"]) == (1280, 1620)
    assert manifest.loc["rotated.jpg", "exif_orientation"] == 6
    assert manifest.loc["cmyk.jpg", "mode"] == "CMYK"
    assert manifest.loc["gray16.png", "mode"].startswith("I")
    assert manifest.loc["gray16.png", "format"] == "PNG"
    assert 85 <= manifest.loc["rotated.jpg", "jpeg_quality"] <= 95
    assert manifest.loc["good.jpg", "icc_profile"] == "sRGB IEC61966-2.1"
    assert manifest.loc["good.jpg", "file_size"] == sample_photo(LANDSCAPE).stat().st_size
    assert len(set(manifest["sha256"])) == 5
    assert result.counters["decoded"] == 10


def test_rescan_of_unchanged_folder_reads_no_pixels_and_keeps_version(tmp_path, messy_folder):
    inventory = PhotoInventory(tmp_path / "cache", max_pixels=120_000_000)
    first = inventory.scan(messy_folder)
    second = inventory.scan(messy_folder)
    assert second.counters == {"files": 10, "hash_cache_hits": 10, "measure_cache_hits": 10, "decoded": 0}
    assert second.data_version == first.data_version
    assert second.manifest.equals(first.manifest)


def test_new_photo_costs_one_decode_and_changes_version(tmp_path, messy_folder):
    inventory = PhotoInventory(tmp_path / "cache", max_pixels=120_000_000)
    first = inventory.scan(messy_folder)
    shutil.copy2(sample_photo("dogs-at-window.jpg"), messy_folder / "new.jpg")
    second = inventory.scan(messy_folder)
    assert second.counters["decoded"] == 1
    assert second.data_version != first.data_version


def test_replaced_bytes_under_same_name_are_rehashed(tmp_path, messy_folder):
    inventory = PhotoInventory(tmp_path / "cache", max_pixels=120_000_000)
    first = inventory.scan(messy_folder)
    shutil.copy2(sample_photo("dogs-at-window.jpg"), messy_folder / "good.jpg")
    second = inventory.scan(messy_folder)
    assert second.counters["decoded"] == 1 and second.counters["hash_cache_hits"] == 9
    assert second.data_version != first.data_version


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = save_png16(sample_photo(LANDSCAPE), tmp_path / "g.png")
    rgb = np.asarray(load_oriented_rgb(path, 10**9))
    expected = np.asarray(Image.open(sample_photo(LANDSCAPE)).convert("L"))
    assert np.abs(rgb[..., 0].astype(int) - expected.astype(int)).max() <= 1


def test_alpha_is_flattened_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95, 100])
def test_jpeg_quality_estimate_matches_encoder_setting(quality):
    buffer = io.BytesIO()
    Image.open(sample_photo("citrus-slices.jpg")).save(buffer, "JPEG", quality=quality)
    assert estimate_jpeg_quality(Image.open(buffer).quantization) == quality
