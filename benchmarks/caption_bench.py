"""Caption benchmark: images/s from JPEG files on disk to captions, BLIP-large architecture.

    python -m benchmarks.caption_bench [--images 64] [--tokens 40]

Random weights (the hub is unreachable), every caption forced to `--tokens` new tokens so that
runs compare. Rows, all in one process on the same machine:
- reference, shaped like the Kohya notebook's BLIP script: batch 1, fp32, greedy, each image
  opened and preprocessed by BlipProcessor in the main loop;
- lora_assets at its defaults: drafted decoding in threads ahead of the model, batched
  (64 on a GPU, 8 on a CPU), fp16 on CUDA, 3 beams;
- lora_assets with 1 beam (the reference's decoding work, for a like-for-like pipeline figure).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.dedup_dataset import source_photos
from lora_assets.captioning.blip import BlipCaptioner
from lora_assets.models.tiny import blip_processor
from lora_assets.settings import CaptionSettings

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (4000, 3000)  # 12 MP


def blip_large(seed: int = 0) -> torch.nn.Module:
    """Salesforce/blip-image-captioning-large's architecture with random weights."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = BlipConfig(
        vision_config={
            "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "image_size": 384, "patch_size": 16,
        },
        text_config={"vocab_size": 30524, "encoder_hidden_size": 1024},
    )  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    ):  # 470M weights initialise in a second on a GPU
        return BlipForConditionalGeneration(config).eval()


def make_images(folder: Path, count: int) -> list[Path]:
    """`count` 12 MP JPEGs with film-like grain, from the shared photos."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.glob("*.jpg"))[:count]
    if len(paths) == count:
        return paths
    sources = [p for p, _ in source_photos()]
    jobs = [(sources[i % len(sources)], folder / f"photo-{i:03d}.jpg", i) for i in range(count)]
    with ProcessPoolExecutor() as pool:
        return list(pool.map(_make_image, jobs))


def _make_image(job: tuple[Path, Path, int]) -> Path:
    source, path, seed = job
    image = Image.open(source).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 3.0, (SIZE[1], SIZE[0], 1))
    Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)).save(
        path, quality=92
    )
    return path


def reference(
    model: torch.nn.Module, processor: object, paths: list[Path], tokens: int, device: str
) -> float:
    model = model.to(device, torch.float32)
    start = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, text="a picture of", return_tensors="pt").to(device)
        with torch.inference_mode():
            output = model.generate(**inputs, num_beams=1, min_new_tokens=tokens, max_new_tokens=tokens)
        processor.batch_decode(output, skip_special_tokens=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(
    model: torch.nn.Module, processor: object, paths: list[Path], tokens: int, device: str, beams: int
) -> tuple[float, int]:
    captioner = BlipCaptioner(model, processor, device)
    settings = CaptionSettings(num_beams=beams)
    start = time.perf_counter()
    texts = captioner.caption_files(paths, settings, max_pixels=10**9, fixed_new_tokens=tokens)
    if device == "cuda":
        torch.cuda.synchronize()
    assert len(texts) == len(paths)
    return time.perf_counter() - start, captioner.default_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=None, help="default: 256 on a GPU, 6 on a CPU")
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    count = args.images or (256 if device == "cuda" else 6)
    paths = make_images(RESULTS / "caption_images", count)
    card = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    print(f"# caption benchmark: {count} JPEGs of {SIZE[0]}x{SIZE[1]}, {args.tokens} new tokens each, {card}")
    processor = blip_processor()
    model = blip_large()
    warm = paths[: min(2, len(paths))]
    ours(model, processor, warm, 4, device, 1)
    reference(model, processor, warm, 4, device)
    rows = []
    seconds = reference(model, processor, paths, args.tokens, device)
    rows.append(("reference: batch 1, fp32, greedy, decode in the loop", seconds))
    for beams in (3, 1):
        seconds, batch = ours(model, processor, paths, args.tokens, device, beams)
        precision = "fp16" if device == "cuda" else "fp32"
        label = f"lora_assets: batch {batch}, {precision}, {beams} beam(s), drafted threaded decode"
        rows.append((label, seconds))
    base = count / rows[0][1]
    print("| run | seconds | images/s | vs reference |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {count / seconds:.2f} | {count / seconds / base:.1f}x |")


if __name__ == "__main__":
    main()
