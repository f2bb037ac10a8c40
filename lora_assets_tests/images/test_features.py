"""The features' own pHash is imagehash's, bit for bit, on real photos and the views dedup hashes."""

from __future__ import annotations

import imagehash
import pytest
from PIL import Image, ImageOps

from lora_assets.images.features import hash_to_int, perceptual_hash
from lora_assets_tests.conftest import SAMPLE_IMAGES, TEST_PHOTOS

PHOTOS = sorted(SAMPLE_IMAGES.rglob("*.jpg")) + sorted(TEST_PHOTOS.rglob("*.jpg"))


def _views(image: Image.Image) -> list[Image.Image]:
    """The frame, mirrored, its centre, without a band (as for a caption strip), and in grey."""
    w, h = image.size
    return [
        image,
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        image.crop((w // 12, h // 12, w - w // 12, h - h // 12)),
        image.crop((0, h // 8, w, h)),
        image.convert("L"),
    ]


def test_the_photos_are_there() -> None:
    assert len(PHOTOS) >= 15


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.stem)
def test_perceptual_hash_is_imagehash_phash(path) -> None:
    image = ImageOps.exif_transpose(Image.open(path))
    image.draft("RGB", (256, 256))
    for view in _views(image.convert("RGB")):
        assert perceptual_hash(view) == hash_to_int(imagehash.phash(view))


@pytest.mark.parametrize("level", [0, 37, 255])
def test_a_flat_picture_hashes_to_its_dc_bit_only(level: int) -> None:
    """Every low frequency but DC is 0; float noise must not pick the bits."""
    flat = Image.new("RGB", (300, 200), (level, level, level))
    assert perceptual_hash(flat) == (1 << 63 if level else 0)
    assert perceptual_hash(flat.resize((640, 480))) == perceptual_hash(flat)
