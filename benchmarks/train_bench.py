"""Training benchmark: our training loop vs a loop shaped like diffusers' train_text_to_image_lora.py.

    python -m benchmarks.train_bench [--steps 40] [--batch 8] [--compile]

Same network (UNet LoRA on kohya's targets, same rank), batch, precision and images, one
process, one machine. The reference encodes every batch with the VAE and the text encoder,
uses the default (foreach) AdamW and reads the loss every step, as that script does; ours is
`lora_assets.training.trainer.train` itself (latents and text-encoder outputs cached, fused
optimizer, no per-step sync; optionally a compiled UNet), timed from its second epoch on.
On a GPU: SD 1.5's architecture (bundled configs) with random weights at 512 px; on a CPU:
the tiny model at 64 px.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.dedup_dataset import source_photos
from lora_assets.dataset.kohya_zip import DatasetImage, DatasetOptions, build_zip
from lora_assets.settings import DatasetSettings, TrainingSettings
from lora_assets.training.base_model import bundled_sd15_config, load_base_model
from lora_assets.training.config import ModelFiles, TrainConfig
from lora_assets.training.network import add_adapters
from lora_assets.training.trainer import train

RANK, ALPHA = 32, 16.0


def random_sd15(folder: Path) -> Path:
    """SD 1.5's architecture with random weights, saved (fp16) as a diffusers folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    config = bundled_sd15_config()
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    pipeline = StableDiffusionPipeline(
        vae=vae.half(),
        text_encoder=text_encoder.half(),
        unet=unet.half(),
        tokenizer=CLIPTokenizer.from_pretrained(config / "tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(config / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def dataset(folder: Path, count: int, side: int) -> Path:
    """`count` real photos resized to side x side, captioned, as a Kohya zip (repeats 1)."""
    images = []
    sources = [p for p, _ in source_photos()]
    for index in range(count):
        path = folder / f"photo-{index:03d}.jpg"
        Image.open(sources[index % len(sources)]).convert("RGB").resize((side, side)).save(path, quality=95)
        images.append(DatasetImage(path, path.name, f"ohwx man, photo {index}, outdoors"))
    dataset = DatasetSettings(repeats=1, resolution=side, min_bucket_reso=64)
    build_zip(
        images, DatasetOptions.from_settings(dataset, TrainingSettings()), "ohwx", "man", folder / "set.zip"
    )
    return folder / "set.zip"


def reference(
    base_dir: Path, zip_folder: Path, batch: int, steps: int, side: int, mixed: str
) -> tuple[float, int]:
    """Images/s and peak bytes of a loop shaped like diffusers' train_text_to_image_lora.py."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params

    accelerator = Accelerator(mixed_precision=mixed)
    device = accelerator.device
    dtype = torch.float16 if mixed == "fp16" else torch.float32
    base = load_base_model(str(base_dir))
    vae, text_encoder, unet, scheduler = base.vae, base.text_encoder, base.unet, base.noise_scheduler
    for model in (vae, text_encoder, unet):
        model.requires_grad_(False)
    torch.manual_seed(0)
    add_adapters(unet, None, RANK, ALPHA)
    vae.to(device, dtype=dtype)
    text_encoder.to(device, dtype=dtype)
    unet.to(device, dtype=dtype)
    if dtype != torch.float32:
        cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    lr_scheduler = get_scheduler("constant", optimizer)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    photos = sorted(zip_folder.glob("photo-*.jpg"))
    pixels = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32).transpose(2, 0, 1)) for p in photos]
    )
    pixels = pixels / 127.5 - 1.0
    ids = base.tokenizer(
        [f"ohwx man, photo {i}, outdoors" for i in range(len(photos))], padding="max_length", max_length=77,
        truncation=True, return_tensors="pt",
    ).input_ids  # fmt: skip
    warmup, total_loss = 3, 0.0
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
        chosen = [(step * batch + k) % len(photos) for k in range(batch)]
        with accelerator.accumulate(unet):
            latents = vae.encode(pixels[chosen].to(device, dtype=dtype)).latent_dist.sample()
            latents = latents * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device).long()
            noisy = scheduler.add_noise(latents, noise, timesteps)
            states = text_encoder(ids[chosen].to(device), return_dict=False)[0]
            prediction = unet(noisy, timesteps, states, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(prediction.float(), noise.float(), reduction="mean")
            total_loss += accelerator.gather(loss.repeat(batch)).mean().item()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0  # CPU: not compared
    return steps * batch / seconds, peak


def ours(
    base_dir: Path,
    zip_path: Path,
    work: Path,
    batch: int,
    steps: int,
    side: int,
    mixed: str,
    compile_mode: str | None,
) -> tuple[float, int, float]:
    images = len(list(zip_path.parent.glob("photo-*.jpg")))
    epochs = max(2, 1 + round(steps * batch / images))
    result = train(
        TrainConfig(
            dataset_zip=str(zip_path),
            work_dir=str(work),
            output_file=str(work / "out" / "bench.safetensors"),
            log_file=str(work / "out" / "training_log.json"),
            samples_dir=str(work / "out" / "samples"),
            diffusers_dir=str(work / "out" / "bench-diffusers"),
            output_name="bench",
            trigger="ohwx",
            class_token="man",
            models=ModelFiles(base_model=str(base_dir)),
            training=TrainingSettings(
                network_dim=RANK,
                network_alpha=ALPHA,
                train_text_encoder=False,
                epochs=epochs,
                batch_size=batch,
                mixed_precision=mixed,
                optimizer="AdamW",
                save_every_n_epochs=10_000,
                sample_prompts=[],
                compile_unet=compile_mode is not None,
                compile_mode=compile_mode or "default",
            ),
            training_key=f"bench-{compile_mode}",
        ),
        log=lambda message: None,
    )
    first_epoch = result.epoch_seconds[0] if result.epoch_seconds else 0.0
    return result.steady_images_per_second, result.peak_memory_bytes, first_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--runs",
        default="eager",
        help="comma-separated: eager, and torch.compile modes (default, reduce-overhead)",
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    side, mixed = (512, "fp16") if cuda else (64, "no")
    card = (
        torch.cuda.get_device_name()
        if cuda
        else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if cuda:
            base_dir = random_sd15(root / "sd15-random")
        else:
            from lora_assets.models.tiny import build_tiny_sd

            base_dir = build_tiny_sd(root / "tiny-sd")
        data = root / "data"
        data.mkdir()
        zip_path = dataset(data, count=4 * args.batch, side=side)
        model = "SD 1.5 architecture, random weights" if cuda else "tiny SD"
        print(
            f"# training benchmark: {model}, {side} px, batch {args.batch}, LoRA rank {RANK}, {mixed}, {card}"
        )
        rows = [
            (
                "reference: VAE + text encoder every step, AdamW, loss.item() every step",
                *reference(base_dir, data, args.batch, args.steps, side, mixed),
                None,
            )
        ]
        for run in args.runs.split(","):
            mode = None if run == "eager" else run
            if mode and not cuda:
                continue
            label = "cached latents + text, fused AdamW, no per-step sync" + (
                f", torch.compile(mode={mode}), first epoch includes compiling" if mode else ""
            )
            try:
                measured = ours(
                    base_dir, zip_path, root / f"work-{run}", args.batch, args.steps, side, mixed, mode
                )
                rows.append((f"lora_assets: {label}", *measured))
            except Exception as exc:  # noqa: BLE001 - report the other rows even if one run fails
                print(f"{run} run failed: {type(exc).__name__}: {str(exc)[:400]}")
    base_rate = rows[0][1]
    print("| run | images/s | steps/s | peak GiB | vs reference | first epoch s |")
    print("|---|---|---|---|---|---|")
    for name, rate, peak, first in rows:
        first_text = "-" if first is None else f"{first:.1f}"
        peak_text = f"{peak / 2**30:.2f}" if cuda else "-"
        ratio = rate / base_rate
        print(
            f"| {name} | {rate:.1f} | {rate / args.batch:.2f} | {peak_text} | {ratio:.2f}x | {first_text} |"
        )


if __name__ == "__main__":
    main()
