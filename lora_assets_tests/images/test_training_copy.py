import io

import numpy as np
from PIL import Image, ImageCms

from lora_assets.images.training_copy import copy_name, make_training_copy
from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import sample_photo


def profile_name(data: bytes) -> str:
    image = Image.open(io.BytesIO(data))
    return ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
    ).strip()


def test_adobe_rgb_comes_out_srgb_with_colour_management():
    source = sample_photo("rocket-on-launch-pad.jpg")
    assert "Adobe RGB" in profile_name(source.read_bytes())
    copy = make_training_copy(source, 10**9, 2048, 95)
    assert "sRGB" in profile_name(copy.data)
    assert "converted from Adobe RGB (1998) to sRGB" in copy.notes
    converted = np.asarray(Image.open(io.BytesIO(copy.data)).convert("RGB"), dtype=float)
    untouched = np.asarray(Image.open(source).convert("RGB"), dtype=float)
    assert np.abs(converted - untouched).mean() > 2.0  # colours really moved


def test_copies_are_oriented_flattened_downscaled_and_deterministic(tmp_path):
    rotated = pf.save_rotated_jpeg(sample_photo("citrus-slices.jpg"), tmp_path / "r.jpg", orientation=6)
    copy = make_training_copy(rotated, 10**9, 1000, 95)
    assert (copy.width, copy.height) == (659, 1000)  # 890x1350 displayed, long side capped
    assert copy.extension == ".jpg" and "EXIF orientation applied" in copy.notes
    assert make_training_copy(rotated, 10**9, 1000, 95).data == copy.data

    rgba = Image.new("RGBA", (600, 600), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 300, 600))
    rgba.save(tmp_path / "a.png")
    flat = make_training_copy(tmp_path / "a.png", 10**9, 2048, 95)
    assert flat.extension == ".png" and "transparency flattened on white" in flat.notes
    pixels = Image.open(io.BytesIO(flat.data)).convert("RGB")
    assert pixels.getpixel((500, 10)) == (255, 255, 255) and pixels.getpixel((10, 10)) == (0, 0, 255)

    small = make_training_copy(sample_photo("portrait-grace-hopper.jpg"), 10**9, 2048, 95)
    assert (small.width, small.height) == (512, 600)  # never upscaled


def test_copy_names_are_flat_unique_and_readable():
    assert copy_name("more/IMG 001.JPG", "abcdef0123", ".jpg") == "more__IMG-001-abcdef01.jpg"
