"""`lora`: an SD 1.5 LoRA trained from the subject's dataset zip, in a separate process (Pipes)."""

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from lora_assets.assets.dataset import dataset_zip
from lora_assets.assets.sources import settings_source
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.digests import stable_hash
from lora_assets.images.contact_sheet import markdown_image
from lora_assets.models.references import resolve_model
from lora_assets.partitions import subjects_partitions
from lora_assets.storage import DataRoot
from lora_assets.training.base_model import model_identity
from lora_assets.training.config import TrainConfig
from lora_assets.training.trainer import TRAINER_VERSION

STAGE = "lora"
GPU_POOL = "gpu"


class LoraRunConfig(dg.Config):
    """Run config of `lora` (launchpad: `ops: {lora: {config: {force_retrain: true}}}`)."""

    force_retrain: bool = Field(
        default=False, description="train even when the dataset, settings and base model are unchanged"
    )


def training_key(run: SubjectRun, zip_sha: str, base: str, vae: str | None, config: str | None) -> str:
    """What the LoRA depends on: the zip's bytes, the training settings, the weights, the code."""
    return stable_hash(
        {
            "zip": zip_sha,
            "settings": run.settings.stage_version("training"),
            "dataset": run.settings.stage_version("dataset"),
            "weights": model_identity(base, vae, config, run.settings.training.revision),
            "trainer": TRAINER_VERSION,
        }
    )[:32]


def stored_key(path: Path) -> str | None:
    """The training key recorded in an existing LoRA's metadata, if it is readable."""
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("lora_assets_training_key")
    except Exception:  # noqa: BLE001 - an unreadable file just means "train again"
        return None


def train_config(
    run: SubjectRun, zip_path: Path, key: str, base: str, vae: str | None, config: str | None
) -> TrainConfig:
    t, d = run.settings.training, run.settings.dataset
    trigger, class_token = run.settings.trigger or run.subject, run.settings.class_token
    return TrainConfig(
        dataset_zip=str(zip_path),
        work_dir=str(run.work_dir(STAGE)),
        output_file=str(run.layout.loras_dir(run.subject) / f"{run.subject}.safetensors"),
        base_model=base,
        revision=t.revision,
        vae=vae,
        base_config=config,
        output_name=run.subject,
        trigger=trigger,
        class_token=class_token,
        resolution=d.resolution,
        min_bucket_reso=d.min_bucket_reso,
        max_bucket_reso=d.max_bucket_reso,
        bucket_reso_steps=d.bucket_reso_steps,
        bucket_no_upscale=t.bucket_no_upscale,
        network_dim=t.network_dim,
        network_alpha=t.network_alpha,
        train_text_encoder=t.train_text_encoder,
        text_encoder_dim=t.text_encoder_dim,
        text_encoder_alpha=t.text_encoder_alpha,
        unet_lr=t.unet_lr,
        text_encoder_lr=t.text_encoder_lr,
        optimizer=t.optimizer,
        lr_scheduler=t.lr_scheduler,
        lr_warmup_steps=t.lr_warmup_steps,
        epochs=t.epochs,
        batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        mixed_precision=t.mixed_precision,
        seed=t.seed,
        clip_skip=t.clip_skip,
        min_snr_gamma=t.min_snr_gamma,
        noise_offset=t.noise_offset,
        gradient_checkpointing=t.gradient_checkpointing,
        shuffle_caption=t.shuffle_caption,
        keep_tokens=t.keep_tokens,
        flip_aug=t.flip_aug,
        save_every_n_epochs=t.save_every_n_epochs,
        keep_last_checkpoints=t.keep_last_checkpoints,
        sample_prompts=[p.format(trigger=trigger, class_token=class_token) for p in t.sample_prompts],
        sample_steps=t.sample_steps,
        compile_unet=t.compile_unet,
        compile_mode=t.compile_mode,
        export_diffusers=t.export_diffusers,
        training_key=key,
    )


def loss_plot(losses: list[float]) -> str:
    """The loss per step and its moving average, as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    figure, axes = plt.subplots(figsize=(6, 2.6), dpi=90)
    steps = np.arange(1, len(losses) + 1)
    axes.plot(steps, losses, linewidth=0.6, alpha=0.45, label="loss")
    window = max(1, len(losses) // 20)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1 :], smooth, linewidth=1.6, label=f"mean of {window}")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return markdown_image(Image.open(buffer), "training loss")


def result_metadata(output: Path, cache_hit: bool) -> dict[str, Any]:
    """Summary, loss curve and samples from the run's `training_log.json`."""
    from PIL import Image

    log = json.loads(output.with_name("training_log.json").read_text())
    samples = [Path(p) for p in log.get("samples", []) if Path(p).exists()][-4:]
    metadata: dict[str, Any] = {
        "cache_hit": cache_hit,
        "path": dg.MetadataValue.path(str(output)),
        "size_bytes": output.stat().st_size,
        "steps": log["steps"],
        "training_seconds": log["seconds"],
        "images_per_second": log["images_per_second"],
        "peak_memory_mb": round(log["peak_memory_bytes"] / 2**20, 1),
        "final_loss": log["final_loss"],
        "device": log["device"],
    }
    if log["losses"]:
        metadata["loss_curve"] = dg.MetadataValue.md(loss_plot(log["losses"]))
    if samples:
        images = "\n".join(markdown_image(Image.open(p), p.name, max_side=192) for p in samples)
        metadata["samples"] = dg.MetadataValue.md(images)
    return metadata


@dg.asset(
    partitions_def=subjects_partitions,
    deps=[dataset_zip, settings_source("training")],
    code_version=f"lora-{TRAINER_VERSION}",
    group_name="training",
    kinds={"pytorch", "safetensors"},
    pool=GPU_POOL,
    description="SD 1.5 LoRA (diffusers + peft) trained from the dataset zip in a Pipes subprocess, "
    "saved in kohya format with full metadata. Unchanged inputs: no training, same data version.",
)
def lora(
    context: dg.AssetExecutionContext,
    config: LoraRunConfig,
    data_root: DataRoot,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    run = SubjectRun.start(context, data_root)
    settings = run.settings.training
    zip_path = run.layout.work_dir(run.subject, "dataset_zip") / f"{run.subject}.zip"
    zip_sha = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    base = resolve_model(settings.base_model, run.layout.root)
    vae = resolve_model(settings.vae, run.layout.root) if settings.vae else None
    base_config = resolve_model(settings.base_config, run.layout.root) if settings.base_config else None
    key = training_key(run, zip_sha, base, vae, base_config)
    output = run.layout.loras_dir(run.subject) / f"{run.subject}.safetensors"
    if not config.force_retrain and stored_key(output) == key:
        context.log.info(f"{output.name} is up to date (training key {key[:12]}): no training")
        digest = hashlib.sha256(output.read_bytes()).hexdigest()
        return dg.MaterializeResult(
            data_version=dg.DataVersion(digest[:24]), metadata=result_metadata(output, True)
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    reported = pipes_subprocess_client.run(
        command=[sys.executable, "-m", "lora_assets.training.pipes_entry"],
        context=context,
        extras={"config": json.loads(train_config(run, zip_path, key, base, vae, base_config).to_json())},
    ).get_materialize_result()
    return dg.MaterializeResult(
        data_version=reported.data_version,
        metadata={**(reported.metadata or {}), **result_metadata(output, False)},
    )
