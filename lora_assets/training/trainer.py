"""The LoRA training loop (diffusers + peft + accelerate), from a dataset zip to a kohya file.

What makes it fast: latents are encoded once and cached on disk (and text-encoder outputs when
the text encoder is frozen), so epochs run the UNet alone; losses stay on the device (no
per-step `.item()`); the optimizer is fused (or 8-bit) on CUDA; the UNet can be compiled.
What makes it resumable and repeatable: batches, noise and timesteps are drawn from (seed,
epoch, batch) alone, and `accelerate` checkpoints the LoRA weights, optimizer and scheduler at
epoch ends, so a resumed run equals an uninterrupted one.

`Trainer` is one run in small steps: set-up (in `__init__`, where every attribute is set),
resume, `step`, `end_of_epoch`, `finish` (export).
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

from lora_assets.layout import TrainingWork
from lora_assets.training.buckets import fit_to_bucket
from lora_assets.training.checkpoints import complete_checkpoints, manifest_of, remove_stale, save_checkpoint
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
from lora_assets.training.speed import compile_plan, compiled, optimizer_for, precision_for
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
    optimizer: str = ""  # the class used, module path and name (sd-scripts' ss_optimizer)
    precision: str = "no"  # the autocast precision used: no, fp16 or bf16
    batches_per_epoch: int = 0
    planned_steps: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)


def _accelerator(settings: Any, project_dir: Path) -> tuple[Any, Any, Any]:
    """(Accelerator, device, weight dtype): mixed precision and TF32 matmuls on CUDA only."""
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    accelerator = Accelerator(
        mixed_precision=precision_for(settings.mixed_precision, "cuda" if cuda else "cpu", bf16),
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        project_dir=str(project_dir),
    )
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    return accelerator, accelerator.device, dtype


def _step_generator(seed: int, epoch: int, batch: int, device: Any) -> Any:
    """The step's own RNG, on the device (a CPU-side draw plus copy would synchronise every step)."""
    import torch

    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch * 10_007 + batch) % (2**63))


def _item_seed(seed: int, epoch: int, batch: int, item: int) -> str:
    """The seed of one item's flip and caption shuffle: a function of its position only."""
    return f"{seed}:{epoch}:{batch}:{item}"


class Trainer:
    """One run of `train` (see module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        log: Log,
        on_epoch_end: Callable[[int], None] | None = None,
        on_checkpoint: Callable[[Path], None] | None = None,
    ) -> None:
        import torch

        from lora_assets.training.base_model import load_base_model

        self.started = time.time()
        self.config, self.settings, self.log = config, config.training, log
        self.on_epoch_end, self.on_checkpoint = on_epoch_end, on_checkpoint
        self.work = TrainingWork(Path(config.work_dir))
        self.run_dir = self.work.run(config.training_key)
        self.accelerator, self.device, self.dtype = _accelerator(self.settings, self.run_dir)
        dataset = read_dataset(extract_dataset(Path(config.dataset_zip), self.work.dataset))
        self.images, self.options = dataset.images, dataset.options
        self._log_buckets()
        models = config.models
        self.base = load_base_model(models.base_model, models.vae, models.base_config, self.settings.revision)
        for model in (self.base.unet, self.base.text_encoder, self.base.vae):
            model.requires_grad_(False)
        self.train_te = self.settings.train_text_encoder
        self.frozen_text = not self.train_te and not self.options.shuffle_caption
        self.latents, self.latent_counts = self._encode_latents()
        self.base.text_encoder.to(self.device, dtype=torch.float32 if self.train_te else self.dtype)
        self.embeddings, self.text_encoded = self._cached_text() if self.frozen_text else ({}, 0)
        self.groups = self._add_network()
        self.batches_per_epoch = len(
            epoch_batches(self.images, self.settings.batch_size, self.settings.seed, 0)
        )
        updates = math.ceil(self.batches_per_epoch / self.settings.gradient_accumulation_steps)
        self.planned_steps = updates * self.settings.epochs
        optimizer = self._optimizer()
        self.unet, self.text_encoder, self.optimizer, self.scheduler = self._prepare(
            optimizer, self._scheduler(optimizer)
        )
        self.start_epoch, self.global_step = self._resume()
        self.compile = compile_plan(
            self.settings.compile_unet, self.settings.compile_mode, self.device.type, self.planned_steps
        )
        self.forward = self._compiled_unet()
        # Everything a step reads lives on the device already: no host-to-device copy in the loop.
        self.latents = {key: value.to(self.device, dtype=self.dtype) for key, value in self.latents.items()}
        self.embeddings = {
            key: value.to(self.device, dtype=self.dtype) for key, value in self.embeddings.items()
        }
        self.losses: list[Any] = []
        self.images_seen = 0
        self.samples: list[str] = []
        self.epoch_seconds: list[float] = []

    # -- set-up ------------------------------------------------------------------------------
    def _log_buckets(self) -> None:
        buckets = ", ".join(f"{w}x{h}" for w, h in sorted({image.bucket for image in self.images}))
        self.log(f"{len(self.images)} images in buckets {buckets}")

    def _encode_latents(self) -> tuple[dict[tuple[int, bool], Any], tuple[int, int]]:
        """Latents (scaled) per (image, flipped), from the disk cache or the VAE (fp32, batched);
        and (encoded, cached) counts."""
        import torch

        vae = self.base.vae
        cache = TensorCache(self.work.latents)
        flips = (False, True) if self.options.flip_aug else (False,)
        latents: dict[tuple[int, bool], Any] = {}
        todo: dict[tuple[int, int], list[tuple[int, bool, str]]] = {}
        for index, image in enumerate(self.images):
            for flip in flips:
                key = TensorCache.key("latent", image.sha256, self.base.identity, image.bucket, flip)
                cached = cache.get(key)
                if cached is None:
                    todo.setdefault(image.bucket, []).append((index, flip, key))
                else:
                    latents[index, flip] = cached
        if todo:
            vae.to(self.device, dtype=torch.float32)
            for bucket, items in todo.items():
                for start in range(0, len(items), LATENT_BATCH):
                    chunk = items[start : start + LATENT_BATCH]
                    pixels = torch.stack([_pixels(self.images[i], bucket, flip) for i, flip, _ in chunk])
                    with torch.no_grad():
                        encoded = vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mean
                    encoded = (encoded * vae.config.scaling_factor).cpu()
                    for (index, flip, key), tensor in zip(chunk, encoded, strict=True):
                        cache.put(key, tensor)
                        latents[index, flip] = tensor
            vae.to("cpu")
        self.log(f"latents: {cache.misses} encoded, {cache.hits} from the cache")
        return latents, (cache.misses, cache.hits)

    def _cached_text(self) -> tuple[dict[str, Any], int]:
        """Text-encoder outputs per caption (frozen text encoder, fixed captions) and how many
        were encoded rather than read from the cache."""
        import torch

        text_encoder = self.base.text_encoder
        cache = TensorCache(self.work.text)
        embeddings: dict[str, Any] = {}
        for caption in sorted({image.caption for image in self.images}):
            key = TensorCache.key("text", caption, self.base.identity, self.settings.clip_skip)
            cached = cache.get(key)
            if cached is None:
                with torch.no_grad():
                    cached = self.encode_text(text_encoder, self.tokenize([caption]))[0].float().cpu()
                cache.put(key, cached)
            embeddings[caption] = cached
        text_encoder.to("cpu")
        return embeddings, cache.misses

    def _add_network(self) -> list[dict[str, Any]]:
        """LoRA adapters (seeded: the init draws), trainable weights in fp32; the optimizer groups."""
        import torch
        from accelerate.utils import set_seed
        from diffusers.training_utils import cast_training_params

        s, unet, text_encoder = self.settings, self.base.unet, self.base.text_encoder
        set_seed(s.seed)
        add_adapters(
            unet,
            text_encoder if self.train_te else None,
            s.network_dim,
            s.network_alpha,
            s.text_encoder_dim,
            s.text_encoder_alpha,
        )
        unet.to(self.device, dtype=self.dtype)
        trainable = [unet, text_encoder] if self.train_te else [unet]
        if self.dtype != torch.float32:
            cast_training_params(trainable, dtype=torch.float32)
        if s.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if self.train_te:
                text_encoder.gradient_checkpointing_enable()
        groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": s.unet_lr}]
        if self.train_te:
            groups.append(
                {"params": [p for p in text_encoder.parameters() if p.requires_grad], "lr": s.text_encoder_lr}
            )
        return groups

    def _optimizer(self) -> Any:
        import torch

        if optimizer_for(self.settings.optimizer, self.device.type) == "AdamW8bit":
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(self.groups)
            except ImportError:
                self.log("bitsandbytes is not installed: AdamW8bit falls back to AdamW (fused)")
        return torch.optim.AdamW(self.groups, fused=self.device.type == "cuda")

    def _scheduler(self, optimizer: Any) -> Any:
        from diffusers.optimization import get_scheduler

        s = self.settings
        return get_scheduler(
            s.lr_scheduler,
            optimizer,
            num_warmup_steps=s.lr_warmup_steps,
            num_training_steps=self.planned_steps,
        )

    def _prepare(self, optimizer: Any, scheduler: Any) -> tuple[Any, Any, Any, Any]:
        """`accelerator.prepare` the trained models, optimizer and scheduler (returned in that order,
        with the text encoder); checkpoints then save the LoRA weights only."""
        accelerator, base = self.accelerator, self.base
        if self.train_te:
            unet, text_encoder, optimizer, scheduler = accelerator.prepare(
                base.unet, base.text_encoder, optimizer, scheduler
            )
        else:
            unet, optimizer, scheduler = accelerator.prepare(base.unet, optimizer, scheduler)
            text_encoder = base.text_encoder

        def name_of(model: Any) -> str:
            return (
                "unet"
                if accelerator.unwrap_model(model) is accelerator.unwrap_model(unet)
                else "text_encoder"
            )

        def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
            from safetensors.torch import save_file

            for model in models:
                state = adapter_state_dict(accelerator.unwrap_model(model))
                save_file(
                    {k: v.contiguous() for k, v in state.items()},
                    f"{output_dir}/lora_{name_of(model)}.safetensors",
                )
                if weights:
                    weights.pop()

        def load_hook(models: list[Any], input_dir: str) -> None:
            from safetensors.torch import load_file

            while models:
                model = models.pop()
                state = load_file(f"{input_dir}/lora_{name_of(model)}.safetensors")
                load_adapter_state_dict(accelerator.unwrap_model(model), state)

        accelerator.register_save_state_pre_hook(save_hook)
        accelerator.register_load_state_pre_hook(load_hook)
        return unet, text_encoder, optimizer, scheduler

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints of this run, oldest first (see checkpoints.py)."""
        return complete_checkpoints(self.run_dir / "checkpoints")

    def _resume(self) -> tuple[int, int]:
        """(first epoch to train, optimizer steps done) from the newest checkpoint, if any."""
        checkpoints = self.checkpoints()
        if not checkpoints:
            return 0, 0
        latest = checkpoints[-1]
        self.accelerator.load_state(str(latest))
        state = manifest_of(latest) or {}
        self.log(f"resumed from {latest.name}: epoch {state['epoch']}, step {state['global_step']}")
        return state["epoch"], state["global_step"]

    def _compiled_unet(self) -> Any:
        """The UNet as the step calls it: compiled whole, compiled block by block, or as it is."""
        if self.compile is not None:
            # Inductor's caches make a second compilation of the same UNet take seconds, not minutes.
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.work.inductor))
        return compiled(self.unet, self.compile, self.accelerator.unwrap_model(self.unet))

    # -- text ----------------------------------------------------------------------------------
    def tokenize(self, captions: list[str]) -> Any:
        tokenizer = self.base.tokenizer
        return tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids

    def encode_text(self, text_encoder: Any, ids: Any) -> Any:
        """CLIP hidden states; with clip skip N > 1, the N-th last layer through the final layer norm."""
        clip_skip = self.settings.clip_skip
        if clip_skip <= 1:
            return text_encoder(ids.to(self.device))[0]
        output = text_encoder(ids.to(self.device), output_hidden_states=True)
        model = getattr(text_encoder, "module", text_encoder)
        return getattr(model, "text_model", model).final_layer_norm(output.hidden_states[-clip_skip])

    def _states(self, epoch: int, index: int, batch: list[int]) -> Any:
        """The batch's text conditioning: cached embeddings, or the (trained) text encoder's output."""
        import torch

        if self.frozen_text:
            return torch.stack([self.embeddings[self.images[i].caption] for i in batch])
        options = self.options
        captions = [
            shuffle_caption(
                self.images[i].caption, options.keep_tokens, _item_seed(self.settings.seed, epoch, index, n)
            )
            if options.shuffle_caption
            else self.images[i].caption
            for n, i in enumerate(batch)
        ]
        return self.encode_text(self.text_encoder, self.tokenize(captions)).to(self.dtype)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        import torch

        train_started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for epoch in range(self.start_epoch, self.settings.epochs):
            epoch_started = time.perf_counter()
            self.unet.train()
            if self.train_te:
                self.text_encoder.train()
            batches = epoch_batches(self.images, self.settings.batch_size, self.settings.seed, epoch)
            for index, batch in enumerate(batches):
                self.step(epoch, index, batch)
            epoch_loss = (
                torch.stack(self.losses[-len(batches) :]).float().mean().item() if batches else math.nan
            )
            self.epoch_seconds.append(time.perf_counter() - epoch_started)  # .item() synchronised
            self.end_of_epoch(epoch + 1, epoch_loss)
        return self.finish(time.perf_counter() - train_started)

    def step(self, epoch: int, index: int, batch: list[int]) -> None:
        """One batch: noise, the UNet's prediction, the (min-SNR weighted) loss, an optimizer step."""
        import torch
        from diffusers.training_utils import compute_snr

        s, device, dtype, noise_scheduler = self.settings, self.device, self.dtype, self.base.noise_scheduler
        if self.compile is not None and self.compile.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # last step's graph outputs may be reused
        generator = _step_generator(s.seed, epoch, index, device)
        flips = [
            self.options.flip_aug and random.Random(_item_seed(s.seed, epoch, index, n)).random() < 0.5
            for n in range(len(batch))
        ]
        prediction_type = noise_scheduler.config.prediction_type
        with self.accelerator.accumulate(self.unet):
            model_input = torch.stack([self.latents[i, flip] for i, flip in zip(batch, flips, strict=True)])
            noise = torch.randn(model_input.shape, generator=generator, device=device, dtype=dtype)
            if s.noise_offset:
                shape = (*noise.shape[:2], 1, 1)
                noise += s.noise_offset * torch.randn(shape, generator=generator, device=device, dtype=dtype)
            timesteps = torch.randint(
                0,
                noise_scheduler.config.num_train_timesteps,
                (len(batch),),
                generator=generator,
                device=device,
            )
            noisy = noise_scheduler.add_noise(model_input, noise, timesteps)
            prediction = self.forward(noisy, timesteps, self._states(epoch, index, batch)).sample
            target = (
                noise
                if prediction_type == "epsilon"
                else noise_scheduler.get_velocity(model_input, noise, timesteps)
            )
            per_item = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
            per_item = per_item.mean(dim=list(range(1, per_item.ndim)))
            if s.min_snr_gamma:
                snr = compute_snr(noise_scheduler, timesteps)
                weights = torch.clamp(snr, max=s.min_snr_gamma) / (
                    snr if prediction_type == "epsilon" else snr + 1
                )
                per_item = per_item * weights
            loss = per_item.mean()
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_([p for g in self.groups for p in g["params"]], 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.detach())
        self.images_seen += len(batch)
        if self.accelerator.sync_gradients:
            self.global_step += 1

    def end_of_epoch(self, done: int, loss: float) -> None:
        """Log; every `save_every_n_epochs` (and at the end) a checkpoint and sample images."""
        s = self.settings
        self.log(f"epoch {done}/{s.epochs}: loss {loss:.4f}, step {self.global_step}")
        if done % s.save_every_n_epochs == 0 or done == s.epochs:
            folder = self.run_dir / "checkpoints"
            save_checkpoint(
                folder, done, self.global_step, lambda path: self.accelerator.save_state(str(path))
            )
            remove_stale(folder, s.keep_last_checkpoints)
            if self.on_checkpoint:
                self.on_checkpoint(self.run_dir)
            self.samples += self.render_samples(done)
        if self.on_epoch_end:
            self.on_epoch_end(done)

    def render_samples(self, epoch: int) -> list[str]:
        """Images for the sample prompts (fixed seeds) with the LoRA as trained so far."""
        import torch
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        prompts = self.config.sample_prompts()
        if not prompts:
            return []
        folder = Path(self.config.samples_dir)
        folder.mkdir(parents=True, exist_ok=True)
        unet = self.accelerator.unwrap_model(self.unet)
        was_training = unet.training
        unet.eval()
        pipeline = StableDiffusionPipeline(
            vae=self.base.vae.to(unet.device, dtype=torch.float32),
            text_encoder=self.accelerator.unwrap_model(self.text_encoder),
            tokenizer=self.base.tokenizer,
            unet=unet,
            scheduler=DDIMScheduler.from_config(self.base.noise_scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.set_progress_bar_config(disable=True)
        side = self.config.sample_resolution or self.options.resolution
        paths = []
        for number, prompt in enumerate(prompts):
            generator = torch.Generator().manual_seed(self.settings.seed + number)
            with torch.no_grad(), torch.autocast(unet.device.type, enabled=unet.device.type == "cuda"):
                image = pipeline(
                    prompt,
                    num_inference_steps=self.settings.sample_steps,
                    generator=generator,
                    height=side,
                    width=side,
                ).images[0]
            path = folder / f"epoch-{epoch:04d}-{number}.png"
            image.save(path)
            paths.append(str(path))
        self.base.vae.to("cpu")
        unet.train(was_training)
        return paths

    def finish(self, seconds: float) -> TrainResult:
        """The run's summary, the kohya file (and diffusers copy), and `training_log.json`."""
        import torch

        loss_values = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        peak = torch.cuda.max_memory_allocated() if self.device.type == "cuda" else _rss_bytes()
        result = TrainResult(
            output_file=self.config.output_file,
            steps=self.global_step,
            epochs=self.settings.epochs,
            seconds=round(time.time() - self.started, 2),
            images_per_second=round(self.images_seen / seconds, 3) if seconds > 0 else 0.0,
            final_loss=float(np.mean(loss_values[-max(1, len(loss_values) // 10) :]))
            if loss_values
            else math.nan,
            losses=[round(v, 6) for v in loss_values],
            peak_memory_bytes=int(peak),
            device=str(self.device),
            samples=self.samples,
            latents_encoded=self.latent_counts[0],
            latents_cached=self.latent_counts[1],
            text_encoded=self.text_encoded,
            resumed_from_epoch=self.start_epoch,
            training_key=self.config.training_key,
            epoch_seconds=[round(s, 4) for s in self.epoch_seconds],
            steady_images_per_second=_steady_rate(sum(i.repeats for i in self.images), self.epoch_seconds),
            optimizer=_class_path(type(getattr(self.optimizer, "optimizer", self.optimizer))),
            batches_per_epoch=self.batches_per_epoch,
            precision=self.accelerator.mixed_precision,
            planned_steps=self.planned_steps,
        )
        unwrap = self.accelerator.unwrap_model
        export_kohya(
            self.config,
            self.options,
            unwrap(self.unet),
            unwrap(self.text_encoder) if self.train_te else None,
            self.images,
            result,
            self.base.identity,
        )
        Path(self.config.log_file).write_text(result.to_json())
        # The unzipped images were only needed for the latents (cached): the zip keeps them.
        shutil.rmtree(self.work.dataset, ignore_errors=True)
        return result


def train(
    config: TrainConfig,
    log: Log = print,
    on_epoch_end: Callable[[int], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Train (or resume) a LoRA as `config` says and write the kohya file; see module docstring.
    `on_checkpoint(run folder)` is called after each checkpoint is saved (to publish it)."""
    return Trainer(config, log, on_epoch_end, on_checkpoint).run()


def _pixels(image: TrainImage, bucket: tuple[int, int], flip: bool) -> Any:
    """An image fitted to its bucket, flipped if asked, as a CHW tensor in [-1, 1]."""
    import torch

    with Image.open(image.path) as opened:
        picture = fit_to_bucket(opened.convert("RGB"), bucket)
    if flip:
        picture = ImageOps.mirror(picture)
    array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def _steady_rate(images_per_epoch: int, epoch_seconds: list[float]) -> float:
    """Images/s over the epochs after the first (which pays for warm-up and compilation)."""
    steady = epoch_seconds[1:] or epoch_seconds
    return round(images_per_epoch * len(steady) / sum(steady), 3) if steady and sum(steady) > 0 else 0.0


def _class_path(cls: type) -> str:
    """`torch.optim.adamw.AdamW`: how sd-scripts names the optimizer it used."""
    return f"{cls.__module__}.{cls.__name__}"


def _rss_bytes() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024
