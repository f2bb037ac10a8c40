import itertools

import pytest
from PIL import Image

from lora_assets.training.buckets import assign_bucket, fit_to_bucket, predefined_buckets

SIZES = [
    (640, 427),
    (512, 600),
    (1350, 890),
    (2056, 3088),
    (3000, 1000),
    (300, 300),
    (1024, 1024),
    (700, 512),
]


def test_predefined_buckets_respect_area_step_and_limits():
    buckets = predefined_buckets(512, 256, 1024, 64)
    assert (512, 512) in buckets and (768, 320) in buckets and (320, 768) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0 and 256 <= w <= 1024 and 256 <= h <= 1024 and w * h <= 512 * 512


@pytest.mark.parametrize(("size", "no_upscale"), itertools.product(SIZES, [True, False]))
def test_buckets_keep_aspect_within_one_step_and_never_upscale_when_asked(size, no_upscale):
    width, height = size
    bucket_w, bucket_h = assign_bucket(width, height, 512, no_upscale=no_upscale)
    assert bucket_w % 64 == 0 and bucket_h % 64 == 0 and bucket_w * bucket_h <= 512 * 512
    scale = max(bucket_w / width, bucket_h / height)
    if no_upscale:
        assert scale <= 1.0 + 1e-9  # the image is only ever shrunk
    # what the cover-resize crops away is less than one step in each dimension
    assert width * scale - bucket_w < 64 and height * scale - bucket_h < 64


def test_fit_to_bucket_returns_exactly_the_bucket_size():
    image = Image.new("RGB", (1350, 890), "red")
    bucket = assign_bucket(1350, 890, 512)
    assert fit_to_bucket(image, bucket).size == bucket
