"""Keep-best's helpers on real pixels."""

import numpy as np
from PIL import Image

from lora_assets.images.keep_best import percentiles_u8
from lora_assets_tests.conftest import sample_photo


def test_percentiles_from_the_histogram_equal_numpys():
    photo = np.asarray(Image.open(sample_photo("honey-bee-on-aster.jpg")).convert("L"))
    rng = np.random.default_rng(0)
    arrays = [photo, photo[:1, :1], photo[:2, :3], rng.integers(0, 7, 1001).astype(np.uint8)]
    for gray in arrays:
        q = (0, 2, 37.5, 50, 98, 100)
        assert np.allclose(percentiles_u8(gray, q), np.percentile(gray, q)), gray.shape
