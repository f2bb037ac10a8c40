"""Aspect-ratio bucketing, as Kohya's sd-scripts does it: the user never crops.

Buckets are (width, height) multiples of `step` between `min_side` and `max_side` with area at
most `resolution`². With `no_upscale`, an image smaller than that area gets a bucket of its
own size rounded down to the step (never enlarged); a larger one is scaled down, aspect kept.
Otherwise an image goes to the predefined bucket closest in aspect ratio. Either way at most
one step is cropped away in each dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

Bucket = tuple[int, int]


def predefined_buckets(resolution: int, min_side: int, max_side: int, step: int) -> list[Bucket]:
    """Every (w, h), both multiples of `step` in [min_side, max_side], as large as the area allows."""
    area = resolution * resolution
    buckets: set[Bucket] = set()
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (area // width) // step * step)
        if height >= min_side:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def assign_bucket(
    width: int,
    height: int,
    resolution: int,
    min_side: int = 256,
    max_side: int = 1024,
    step: int = 64,
    no_upscale: bool = True,
    buckets: Sequence[Bucket] | None = None,
) -> Bucket:
    """The bucket an image of `width` x `height` trains in."""
    area = resolution * resolution
    if no_upscale:
        if width * height > area:
            scale = math.sqrt(area / (width * height))
            width, height = width * scale, height * scale
        bucket_w = max(step, min(max_side, int(width) // step * step))
        bucket_h = max(step, min(max_side, int(height) // step * step))
        return bucket_w, bucket_h
    candidates = buckets or predefined_buckets(resolution, min_side, max_side, step)
    aspect = math.log(width / height)
    return min(candidates, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def fit_to_bucket(image: Image.Image, bucket: Bucket) -> Image.Image:
    """Resize so the image covers the bucket (aspect kept), then centre-crop the excess."""
    bucket_w, bucket_h = bucket
    scale = max(bucket_w / image.width, bucket_h / image.height)
    size = (max(bucket_w, round(image.width * scale)), max(bucket_h, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image
    left, top = (resized.width - bucket_w) // 2, (resized.height - bucket_h) // 2
    return resized.crop((left, top, left + bucket_w, top + bucket_h))
