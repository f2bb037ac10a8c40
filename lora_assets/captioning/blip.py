"""BLIP captioning through transformers' `BlipForConditionalGeneration`.

Decoding is the bottleneck on a GPU (a 12 MP JPEG costs ~150 ms of one core, ~55 ms with DCT
draft decoding), so images are decoded drafted, in a thread pool, ahead of the model; the model
runs batched, in fp16 on CUDA and fp32 on CPU.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lora_assets.images.decode import load_oriented_rgb
from lora_assets.settings import CaptionSettings

TOKENS_PER_WORD = 1.4  # BERT WordPiece tokens per English word in BLIP captions
PREFETCH_BATCHES = 3
# The `[captions]` fields that shape generated text: with the model, the per-image cache key.
GENERATION_FIELDS = frozenset(
    {"min_words", "max_words", "num_beams", "repetition_penalty", "no_repeat_ngram_size", "prompt"}
)


def token_limits(settings: CaptionSettings, fixed_new_tokens: int | None = None) -> tuple[int, int]:
    """(min_new_tokens, max_new_tokens) that yield min..max words after cleaning; benchmarks fix
    every caption at exactly `fixed_new_tokens`."""
    if fixed_new_tokens:
        return fixed_new_tokens, fixed_new_tokens
    low = math.ceil(settings.min_words * TOKENS_PER_WORD)
    return low, math.ceil(settings.max_words * TOKENS_PER_WORD) + 4


class BlipCaptioner:
    """A loaded BLIP model and processor; `caption_files` runs the whole pipeline."""

    def __init__(self, model: Any, processor: Any, device: str) -> None:
        import torch

        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.processor = processor
        self.model = model.to(device, self.dtype).eval()
        image_processor = processor.image_processor
        size = image_processor.size
        self.size = (size["width"], size["height"])
        self.resample = Image.Resampling(image_processor.resample)
        self.mean = np.array(image_processor.image_mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.array(image_processor.image_std, dtype=np.float32).reshape(1, 1, 3)

    @classmethod
    def load(cls, model: str, revision: str = "main", device: str | None = None) -> BlipCaptioner:
        """From a hub id or a local folder (the same call for the real and the tiny model);
        fp16 on CUDA, fp32 on CPU."""
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        processor = BlipProcessor.from_pretrained(model, revision=revision)
        network = BlipForConditionalGeneration.from_pretrained(model, revision=revision, dtype=dtype)
        return cls(network, processor, device)

    @property
    def default_batch_size(self) -> int:
        """64 images a batch on a GPU (fills an H100 with 3 beams), 8 on a CPU."""
        return 64 if self.device.startswith("cuda") else 8

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The model input for one image: what BlipImageProcessor computes (resize, rescale,
        normalise), in numpy, so that it can run in decoding threads."""
        resized = image.convert("RGB").resize(self.size, self.resample)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        return ((array - self.mean) / self.std).transpose(2, 0, 1)

    def caption_arrays(
        self, pixels: Sequence[np.ndarray], settings: CaptionSettings, fixed_new_tokens: int | None = None
    ) -> list[str]:
        """Raw generated text (prompt included) for a batch of preprocessed images."""
        import torch

        batch = torch.from_numpy(np.stack(pixels)).to(self.device, self.dtype)
        prompt = (
            self.processor.tokenizer([settings.prompt] * len(pixels), return_tensors="pt")
            if settings.prompt
            else None
        )
        min_tokens, max_tokens = token_limits(settings, fixed_new_tokens)
        kwargs: dict[str, Any] = {}
        if prompt is not None:
            kwargs = {
                "input_ids": prompt["input_ids"].to(self.device),
                "attention_mask": prompt["attention_mask"].to(self.device),
            }
        with torch.inference_mode():
            output = self.model.generate(
                pixel_values=batch,
                num_beams=settings.num_beams,
                min_new_tokens=min_tokens,
                max_new_tokens=max_tokens,
                repetition_penalty=settings.repetition_penalty,
                no_repeat_ngram_size=settings.no_repeat_ngram_size,
                **kwargs,
            )
        return self.processor.batch_decode(output, skip_special_tokens=True)

    def caption_files(
        self,
        paths: Sequence[Path],
        settings: CaptionSettings,
        max_pixels: int,
        progress: Callable[[int, int], None] | None = None,
        decode_workers: int | None = None,
        fixed_new_tokens: int | None = None,
    ) -> list[str]:
        """Raw text for every file, decoding (drafted) in threads while the model runs, in batches
        of `settings.batch_size` (default `default_batch_size`)."""
        results: list[str] = []
        batch_size = settings.batch_size or self.default_batch_size
        workers = decode_workers or min(16, os.cpu_count() or 1)
        for batch in self._batches(paths, batch_size, max_pixels, workers):
            results.extend(self.caption_arrays(batch, settings, fixed_new_tokens))
            if progress:
                progress(len(results), len(paths))
        return results

    def _batches(
        self, paths: Sequence[Path], batch_size: int, max_pixels: int, workers: int
    ) -> Iterator[list[np.ndarray]]:
        side = min(self.size)

        def load(path: Path) -> np.ndarray:
            return self.pixels(load_oriented_rgb(path, max_pixels, draft_side=side))

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: deque[Future[np.ndarray]] = deque()
            queued = iter(paths)
            batch: list[np.ndarray] = []
            while True:
                while (
                    len(pending) < PREFETCH_BATCHES * batch_size and (path := next(queued, None)) is not None
                ):
                    pending.append(pool.submit(load, path))  # decoded ahead, a few batches at most
                if not pending:
                    break
                batch.append(pending.popleft().result())
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
