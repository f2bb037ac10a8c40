"""The LoRA training loop (diffusers + peft + accelerate), from a dataset zip to a kohya file.

What makes it fast: latents are encoded once and cached on disk (and text-encoder outputs when
the text encoder is frozen), so epochs run the UNet alone; losses stay on the device (no
per-step `.item()`); the optimizer is fused (or 8-bit) on CUDA; the UNet can be compiled.
What makes it resumable and repeatable: batches, noise and timesteps are drawn from (seed,
epoch, batch) alone, and `accelerate` checkpoints the LoRA weights, optimizer and scheduler at
epoch ends, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from lora_assets.training.buckets import fit_to_bucket
from lora_assets.training.config import TrainConfig
from lora_assets.training.data import (
    TrainImage,
    epoch_batches,
    extract_dataset,
    read_dataset,
    shuffle_caption,
)
from lora_assets.training.export import export_kohya
from lora_assets.training.network import adapter_state_dict, add_adapters, load_adapter_state_dict
from lora_assets.training.tensor_cache import TensorCache

TRAINER_VERSION = 1
LATENT_BATCH = 8

Log = Callable[[str], None]


@dataclass
class TrainResult:
    """What a run did; written next to the LoRA as `training_log.json`."""

    output_file: str
    steps: int
    epochs: int
    seconds: float
    images_per_second: float
    final_loss: float
    losses: list[float]
    peak_memory_bytes: int
    device: str
    samples: list[str] = field(default_factory=list)
    latents_encoded: int = 0
    latents_cached: int = 0
    text_encoded: int = 0
    resumed_from_epoch: int = 0
    training_key: str = ""
    epoch_seconds: list[float] = field(default_factory=list)
    steady_images_per_second: float = 0.0  # from the second epoch on (no warm-up, no compilation)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)


def _step_generator(seed: int, epoch: int, batch: int, device: Any) -> Any:
    """The step's own RNG, on the device (a CPU-side draw plus copy would synchronise every step)."""
    import torch

    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch * 10_007 + batch) % (2**63))


class Trainer:
    """One run of `train`; split in methods so each stage reads on its own."""

    def __init__(self, config: TrainConfig, log: Log) -> None:
        import torch
        from accelerate import Accelerator

        self.config = config
        self.log = log
        self.work = Path(config.work_dir)
        self.run_dir = self.work / "runs" / (config.training_key or "default")
        cuda = torch.cuda.is_available()
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision if cuda else "no",
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            project_dir=str(self.run_dir),
        )
        self.device = self.accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            self.accelerator.mixed_precision, torch.float32
        )
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # -- data and caches -------------------------------------------------------------------
    def load_data(self) -> list[TrainImage]:
        c = self.config
        folder = extract_dataset(Path(c.dataset_zip), self.work / "dataset")
        images = read_dataset(
            folder,
            c.resolution,
            c.min_bucket_reso,
            c.max_bucket_reso,
            c.bucket_reso_steps,
            c.bucket_no_upscale,
        )
        buckets = sorted({image.bucket for image in images})
        self.log(
            f"{len(images)} images in {len(buckets)} buckets: {', '.join(f'{w}x{h}' for w, h in buckets)}"
        )
        return images

    def encode_latents(
        self, images: list[TrainImage], vae: Any, identity: str
    ) -> dict[tuple[int, bool], Any]:
        """Latents (scaled) per (image, flipped), from the disk cache or the VAE (fp32, batched)."""
        import torch

        cache = TensorCache(self.work / "cache" / "latents")
        flips = (False, True) if self.config.flip_aug else (False,)
        latents: dict[tuple[int, bool], Any] = {}
        todo: list[tuple[int, bool, str]] = []
        for index, image in enumerate(images):
            for flip in flips:
                key = TensorCache.key("latent", image.sha256, identity, image.bucket, flip)
                cached = cache.get(key)
                if cached is None:
                    todo.append((index, flip, key))
                else:
                    latents[index, flip] = cached
        if todo:
            vae.to(self.device, dtype=torch.float32)
            by_bucket: dict[tuple[int, int], list[tuple[int, bool, str]]] = {}
            for item in todo:
                by_bucket.setdefault(images[item[0]].bucket, []).append(item)
            for bucket, items in by_bucket.items():
                for start in range(0, len(items), LATENT_BATCH):
                    chunk = items[start : start + LATENT_BATCH]
                    pixels = torch.stack([self._pixels(images[i], bucket, flip) for i, flip, _ in chunk])
                    with torch.no_grad():
                        encoded = vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mean
                    encoded = (encoded * vae.config.scaling_factor).cpu()
                    for (index, flip, key), tensor in zip(chunk, encoded, strict=True):
                        cache.put(key, tensor)
                        latents[index, flip] = tensor
            vae.to("cpu")
        self.latent_counts = (cache.misses, cache.hits)
        self.log(f"latents: {cache.misses} encoded, {cache.hits} from the cache")
        return latents

    @staticmethod
    def _pixels(image: TrainImage, bucket: tuple[int, int], flip: bool) -> Any:
        import torch

        with Image.open(image.path) as opened:
            picture = fit_to_bucket(opened.convert("RGB"), bucket)
        if flip:
            picture = ImageOps.mirror(picture)
        array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def tokenize(self, tokenizer: Any, captions: list[str]) -> Any:
        return tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids

    def encode_text(self, text_encoder: Any, ids: Any) -> Any:
        """CLIP hidden states; with clip skip N > 1, the N-th last layer through the final layer norm."""
        if self.config.clip_skip <= 1:
            return text_encoder(ids.to(self.device))[0]
        output = text_encoder(ids.to(self.device), output_hidden_states=True)
        hidden = output.hidden_states[-self.config.clip_skip]
        model = getattr(text_encoder, "module", text_encoder)
        return getattr(model, "text_model", model).final_layer_norm(hidden)

    def cached_text(
        self, images: list[TrainImage], tokenizer: Any, text_encoder: Any, identity: str
    ) -> dict[str, Any]:
        """Text-encoder outputs per caption when the text encoder is frozen and captions fixed."""
        import torch

        cache = TensorCache(self.work / "cache" / "text")
        embeddings: dict[str, Any] = {}
        for caption in sorted({image.caption for image in images}):
            key = TensorCache.key("text", caption, identity, self.config.clip_skip)
            cached = cache.get(key)
            if cached is None:
                with torch.no_grad():
                    cached = (
                        self.encode_text(text_encoder, self.tokenize(self.tokenizer, [caption]))[0]
                        .float()
                        .cpu()
                    )
                cache.put(key, cached)
            embeddings[caption] = cached
        self.text_encoded = cache.misses
        return embeddings

    # -- optimisation ----------------------------------------------------------------------
    def optimizer(self, groups: list[dict[str, Any]]) -> Any:
        import torch

        if self.config.optimizer == "AdamW8bit" and self.device.type == "cuda":
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(groups)
            except ImportError:
                self.log("bitsandbytes is not installed: AdamW8bit falls back to AdamW (fused)")
        return torch.optim.AdamW(groups, fused=self.device.type == "cuda")

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        root = self.run_dir / "checkpoints"
        return sorted(root.glob("epoch-*")) if root.exists() else []


def train(
    config: TrainConfig, log: Log = print, on_epoch_end: Callable[[int], None] | None = None
) -> TrainResult:
    """Train (or resume) a LoRA as `config` says and write the kohya file; see module docstring."""
    import torch
    from accelerate.utils import set_seed
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr

    from lora_assets.training.base_model import load_base_model

    started = time.time()
    trainer = Trainer(config, log)
    accelerator, device, dtype = trainer.accelerator, trainer.device, trainer.weight_dtype
    images = trainer.load_data()

    base = load_base_model(config.base_model, config.vae, config.base_config, config.revision)
    trainer.tokenizer = base.tokenizer
    unet, text_encoder, vae, noise_scheduler = base.unet, base.text_encoder, base.vae, base.noise_scheduler
    for model in (unet, text_encoder, vae):
        model.requires_grad_(False)
    latents = trainer.encode_latents(images, vae, base.identity)

    train_te = config.train_text_encoder
    frozen_text = not train_te and not config.shuffle_caption
    text_encoder.to(device, dtype=torch.float32 if train_te else dtype)
    embeddings = (
        trainer.cached_text(images, base.tokenizer, text_encoder, base.identity) if frozen_text else {}
    )
    if frozen_text:
        text_encoder.to("cpu")

    set_seed(config.seed)
    add_adapters(
        unet,
        text_encoder if train_te else None,
        config.network_dim,
        config.network_alpha,
        config.text_encoder_dim,
        config.text_encoder_alpha,
    )
    unet.to(device, dtype=dtype)
    trainable = [unet, text_encoder] if train_te else [unet]
    if dtype != torch.float32:
        cast_training_params(trainable, dtype=torch.float32)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if train_te:
            text_encoder.gradient_checkpointing_enable()
    groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": config.unet_lr}]
    if train_te:
        groups.append(
            {
                "params": [p for p in text_encoder.parameters() if p.requires_grad],
                "lr": config.text_encoder_lr,
            }
        )
    optimizer = trainer.optimizer(groups)
    batches_per_epoch = len(epoch_batches(images, config.batch_size, config.seed, 0))
    updates_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_updates = updates_per_epoch * config.epochs
    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=total_updates,
    )
    if train_te:
        unet, text_encoder, optimizer, scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, scheduler
        )
    else:
        unet, optimizer, scheduler = accelerator.prepare(unet, optimizer, scheduler)

    def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        from safetensors.torch import save_file

        for model in models:
            unwrapped = accelerator.unwrap_model(model)
            name = "unet" if unwrapped is accelerator.unwrap_model(unet) else "text_encoder"
            save_file(
                {k: v.contiguous() for k, v in adapter_state_dict(unwrapped).items()},
                f"{output_dir}/lora_{name}.safetensors",
            )
            if weights:
                weights.pop()

    def load_hook(models: list[Any], input_dir: str) -> None:
        from safetensors.torch import load_file

        while models:
            unwrapped = accelerator.unwrap_model(models.pop())
            name = "unet" if unwrapped is accelerator.unwrap_model(unet) else "text_encoder"
            load_adapter_state_dict(unwrapped, load_file(f"{input_dir}/lora_{name}.safetensors"))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    start_epoch, global_step = 0, 0
    checkpoints = trainer.checkpoints()
    if checkpoints:
        latest = checkpoints[-1]
        accelerator.load_state(str(latest))
        state = json.loads((latest / "progress.json").read_text())
        start_epoch, global_step = state["epoch"], state["global_step"]
        log(f"resumed from {latest.name}: epoch {start_epoch}, step {global_step}")

    if config.compile_unet and device.type == "cuda":
        # Inductor's caches make a second compilation of the same UNet take seconds, not minutes.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(trainer.work / "cache" / "inductor"))
        unet = torch.compile(unet, mode=config.compile_mode)
    cuda_graphs = config.compile_unet and device.type == "cuda" and config.compile_mode == "reduce-overhead"

    # Everything a step reads lives on the device already: no host-to-device copy in the loop.
    latents = {key: value.to(device, dtype=dtype) for key, value in latents.items()}
    embeddings = {key: value.to(device, dtype=dtype) for key, value in embeddings.items()}
    prediction = noise_scheduler.config.prediction_type
    timesteps_total = noise_scheduler.config.num_train_timesteps
    losses: list[Any] = []
    images_seen = 0
    samples: list[str] = []
    train_started = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    epoch_seconds: list[float] = []
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        unet.train()
        if train_te:
            text_encoder.train()
        batches = epoch_batches(images, config.batch_size, config.seed, epoch)
        for index, batch in enumerate(batches):
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # last step's graph outputs may be reused
            generator = _step_generator(config.seed, epoch, index, device)
            flips = [
                config.flip_aug and random.Random(f"{config.seed}:{epoch}:{index}:{n}").random() < 0.5
                for n in range(len(batch))
            ]
            with accelerator.accumulate(unet):
                model_input = torch.stack([latents[i, flip] for i, flip in zip(batch, flips, strict=True)])
                noise = torch.randn(model_input.shape, generator=generator, device=device, dtype=dtype)
                if config.noise_offset:
                    shape = (*noise.shape[:2], 1, 1)
                    noise += config.noise_offset * torch.randn(
                        shape, generator=generator, device=device, dtype=dtype
                    )
                timesteps = torch.randint(
                    0, timesteps_total, (len(batch),), generator=generator, device=device
                )
                noisy = noise_scheduler.add_noise(model_input, noise, timesteps)
                if frozen_text:
                    states = torch.stack([embeddings[images[i].caption] for i in batch])
                else:
                    captions = [
                        shuffle_caption(
                            images[i].caption, config.keep_tokens, f"{config.seed}:{epoch}:{index}:{n}"
                        )
                        if config.shuffle_caption
                        else images[i].caption
                        for n, i in enumerate(batch)
                    ]
                    states = trainer.encode_text(text_encoder, trainer.tokenize(base.tokenizer, captions)).to(
                        dtype
                    )
                prediction_out = unet(noisy, timesteps, states).sample
                target = (
                    noise
                    if prediction == "epsilon"
                    else noise_scheduler.get_velocity(model_input, noise, timesteps)
                )
                per_item = torch.nn.functional.mse_loss(
                    prediction_out.float(), target.float(), reduction="none"
                )
                per_item = per_item.mean(dim=list(range(1, per_item.ndim)))
                if config.min_snr_gamma:
                    snr = compute_snr(noise_scheduler, timesteps)
                    weights = torch.clamp(snr, max=config.min_snr_gamma) / (
                        snr if prediction == "epsilon" else snr + 1
                    )
                    per_item = per_item * weights
                loss = per_item.mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            images_seen += len(batch)
            if accelerator.sync_gradients:
                global_step += 1
        epoch_losses = torch.stack(losses[-len(batches) :]).float().mean().item() if batches else float("nan")
        epoch_seconds.append(time.perf_counter() - epoch_started)  # the .item() above synchronised
        log(f"epoch {epoch + 1}/{config.epochs}: loss {epoch_losses:.4f}, step {global_step}")
        done = epoch + 1
        if done % config.save_every_n_epochs == 0 or done == config.epochs:
            path = trainer.run_dir / "checkpoints" / f"epoch-{done:04d}"
            accelerator.save_state(str(path))
            (path / "progress.json").write_text(json.dumps({"epoch": done, "global_step": global_step}))
            for old in trainer.checkpoints()[: -config.keep_last_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            samples += render_samples(
                config,
                base,
                accelerator.unwrap_model(unet),
                accelerator.unwrap_model(text_encoder),
                done,
                DDIMScheduler,
                StableDiffusionPipeline,
            )
        if on_epoch_end:
            on_epoch_end(done)

    seconds = time.perf_counter() - train_started
    loss_values = torch.stack(losses).float().cpu().tolist() if losses else []
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_bytes()
    result = TrainResult(
        output_file=config.output_file,
        steps=global_step,
        epochs=config.epochs,
        seconds=round(time.time() - started, 2),
        images_per_second=round(images_seen / seconds, 3) if seconds > 0 else 0.0,
        final_loss=float(np.mean(loss_values[-max(1, len(loss_values) // 10) :]))
        if loss_values
        else float("nan"),
        losses=[round(v, 6) for v in loss_values],
        peak_memory_bytes=int(peak),
        device=str(device),
        samples=samples,
        latents_encoded=trainer.latent_counts[0],
        latents_cached=trainer.latent_counts[1],
        text_encoded=getattr(trainer, "text_encoded", 0),
        resumed_from_epoch=start_epoch,
        training_key=config.training_key,
        epoch_seconds=[round(s, 4) for s in epoch_seconds],
        steady_images_per_second=_steady_rate(sum(image.repeats for image in images), epoch_seconds),
    )
    export_kohya(
        config,
        accelerator.unwrap_model(unet),
        accelerator.unwrap_model(text_encoder) if train_te else None,
        images,
        result,
        base.identity,
    )
    Path(config.output_file).with_name("training_log.json").write_text(result.to_json())
    return result


def render_samples(
    config: TrainConfig,
    base: Any,
    unet: Any,
    text_encoder: Any,
    epoch: int,
    scheduler_class: Any,
    pipeline_class: Any,
) -> list[str]:
    """Images for the fixed sample prompts (fixed seed) with the LoRA as trained so far."""
    import torch

    if not config.sample_prompts:
        return []
    folder = Path(config.output_file).parent / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    was_training = unet.training
    unet.eval()
    pipeline = pipeline_class(
        vae=base.vae.to(unet.device, dtype=torch.float32),
        text_encoder=text_encoder,
        tokenizer=base.tokenizer,
        unet=unet,
        scheduler=scheduler_class.from_config(base.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    side = config.sample_resolution or config.resolution
    paths = []
    for number, prompt in enumerate(config.sample_prompts):
        generator = torch.Generator().manual_seed(config.seed + number)
        with torch.no_grad(), torch.autocast(unet.device.type, enabled=unet.device.type == "cuda"):
            image = pipeline(
                prompt, num_inference_steps=config.sample_steps, generator=generator, height=side, width=side
            ).images[0]
        path = folder / f"epoch-{epoch:04d}-{number}.png"
        image.save(path)
        paths.append(str(path))
    base.vae.to("cpu")
    unet.train(was_training)
    return paths


def _steady_rate(images_per_epoch: int, epoch_seconds: list[float]) -> float:
    """Images/s over the epochs after the first (which pays for warm-up and compilation)."""
    steady = epoch_seconds[1:] or epoch_seconds
    return round(images_per_epoch * len(steady) / sum(steady), 3) if steady and sum(steady) > 0 else 0.0


def _rss_bytes() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024
