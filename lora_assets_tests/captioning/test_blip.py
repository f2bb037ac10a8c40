"""The BLIP captioner with a tiny random model loaded through the real transformers code."""

import numpy as np
import pytest
from PIL import Image
from transformers import BlipProcessor

from lora_assets.captioning.blip import BlipCaptioner
from lora_assets.captioning.text import clean_generated, has_repeated_ngram, word_count
from lora_assets.settings import CaptionSettings
from lora_assets_tests.conftest import sample_photo

PHOTOS = ["citrus-slices.jpg", "honey-bee-on-aster.jpg", "dogs-at-window.jpg"]


@pytest.fixture(scope="module")
def captioner(tiny_blip):
    return BlipCaptioner.load(str(tiny_blip), device="cpu")


def test_fast_preprocessing_matches_the_blip_image_processor(captioner, tiny_blip):
    image = Image.open(sample_photo("citrus-slices.jpg")).convert("RGB")
    reference = BlipProcessor.from_pretrained(tiny_blip)(images=image, return_tensors="np")["pixel_values"][0]
    assert np.abs(captioner.pixels(image) - reference).max() < 0.02


@pytest.mark.parametrize(("min_words", "max_words"), [(8, 15), (20, 30)])
def test_batched_captions_honour_word_limits_without_repeats(captioner, min_words, max_words):
    settings = CaptionSettings(min_words=min_words, max_words=max_words, num_beams=2, batch_size=2)
    raw = captioner.caption_files([sample_photo(p) for p in PHOTOS], settings, max_pixels=10**9)
    assert len(raw) == 3 and all(text.startswith("a picture of") for text in raw)
    for text in raw:
        cleaned = clean_generated(text, settings.prompt, settings.no_repeat_ngram_size, settings.max_words)
        assert min_words <= word_count(cleaned) <= max_words
        assert not has_repeated_ngram(cleaned, 3)
