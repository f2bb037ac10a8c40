"""`lora`: an SD 1.5 LoRA trained from the subject's dataset zip, in a separate process (Pipes)."""

import io
import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from lora_assets.assets.dataset_zip import dataset_zip
from lora_assets.assets.sources import settings_source
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.deployment import GPU_STEP_TAGS, TrainingLauncher
from lora_assets.digests import sha256_file, short_version, stable_hash
from lora_assets.images.contact_sheet import markdown_image
from lora_assets.layout import SubjectFiles
from lora_assets.models.references import require_available, resolve_model
from lora_assets.partitions import subjects_partitions
from lora_assets.recovery import stop_with_run
from lora_assets.storage import DataRoot
from lora_assets.training.base_model import model_identity
from lora_assets.training.config import ModelFiles, SyncSpec, TrainConfig
from lora_assets.training.trainer import TRAINER_VERSION

GPU_POOL = "gpu"
RUN_COUNTERS = ("latents_encoded", "latents_cached", "resumed_from_epoch")


class LoraRunConfig(dg.Config):
    """Run config of `lora` (launchpad: `ops: {lora: {config: {force_retrain: true}}}`)."""

    force_retrain: bool = Field(
        default=False, description="train even when the dataset, settings and base model are unchanged"
    )


def resolve_models(run: SubjectRun) -> ModelFiles:
    """`[training]` model references as local paths (relative ones under the data root) or hub ids."""
    s, root = run.settings.training, run.layout.root
    return ModelFiles(
        base_model=resolve_model(s.base_model, root, s.revision),
        vae=resolve_model(s.vae, root) if s.vae else None,
        base_config=resolve_model(s.base_config, root) if s.base_config else None,
    )


def training_key(run: SubjectRun, zip_sha: str, models: ModelFiles) -> str:
    """What the LoRA depends on: the zip's bytes (images, captions, dataset options), the
    training settings, the weights, the code."""
    identity = model_identity(
        models.base_model, models.vae, models.base_config, run.settings.training.revision
    )
    return stable_hash(
        {
            "zip": zip_sha,
            "settings": run.settings.stage_version("training"),
            "weights": identity,
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


def train_config(run: SubjectRun, models: ModelFiles, key: str) -> TrainConfig:
    """The run's settings as they are, plus where everything is (see `training/config.py`); on a
    URL root the training process pulls and publishes its files itself (`sync`)."""
    files = run.files
    return TrainConfig(
        sync=SyncSpec(data_root=run.remote.url, subject=run.subject) if run.remote else None,
        dataset_zip=str(files.dataset_zip),
        work_dir=str(files.training_work),
        output_file=str(files.lora_file),
        log_file=str(files.training_log),
        samples_dir=str(files.samples),
        diffusers_dir=str(files.diffusers_copy),
        output_name=run.subject,
        trigger=run.trigger,
        class_token=run.settings.class_token,
        models=models,
        training=run.settings.training,
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


def result_metadata(files: SubjectFiles, cache_hit: bool) -> dict[str, Any]:
    """Summary, loss curve and samples from `training_log.json` (of the run that wrote the file);
    this run's work counters only when it trained."""
    from PIL import Image

    output = files.lora_file
    log = json.loads(files.training_log.read_text())
    samples = [Path(p) for p in log.get("samples", []) if Path(p).exists()][-4:]
    metadata: dict[str, Any] = {
        "cache_hit": cache_hit,
        "path": dg.MetadataValue.path(str(output)),
        "size_bytes": output.stat().st_size,
        "steps": log["steps"],
        "seconds": log["seconds"],
        "images_per_second": log["images_per_second"],
        "peak_memory_mb": round(log["peak_memory_bytes"] / 2**20, 1),
        "final_loss": log["final_loss"],
        "device": log["device"],
        "subject_disk_mb": round(files.disk_bytes() / 1e6, 1),
        **({} if cache_hit else {name: log[name] for name in RUN_COUNTERS}),
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
    op_tags=GPU_STEP_TAGS,
    description="SD 1.5 LoRA (diffusers + peft) trained from the dataset zip in a Pipes subprocess, "
    "saved in kohya format with full metadata. Unchanged inputs: no training, same data version.",
)
def lora(
    context: dg.AssetExecutionContext,
    config: LoraRunConfig,
    data_root: DataRoot,
    training_launcher: TrainingLauncher,
) -> dg.MaterializeResult:
    with SubjectRun.open(context, data_root, "lora") as run:
        return train_or_reuse(context, run, config.force_retrain, training_launcher)


def train_or_reuse(
    context: dg.AssetExecutionContext, run: SubjectRun, force: bool, launcher: TrainingLauncher
) -> dg.MaterializeResult:
    """The LoRA as it is when its training key matches, else a training process through Pipes."""
    files = run.files
    models = resolve_models(run)
    key = training_key(run, sha256_file(files.dataset_zip), models)
    if not force and stored_key(files.lora_file) == key:
        run.log.info(f"{files.lora_file.name} is up to date (training key {key[:12]}): no training")
        return dg.MaterializeResult(
            data_version=dg.DataVersion(short_version(sha256_file(files.lora_file))),
            metadata=result_metadata(files, True),
        )
    files.lora_file.parent.mkdir(parents=True, exist_ok=True)
    revision = run.settings.training.revision
    require_available(models.base_model, revision, "model_index.json", "[training] base_model")
    config = json.loads(train_config(run, models, key).to_json())
    try:
        with stop_with_run(context):
            reported = launcher.run(context, {"config": config}).get_materialize_result()
    except Exception:  # re-raised; Dagster's Pipes error class is not public
        if run.remote:  # its messages may have been lost with the store: name the store if so
            run.remote.check()
        raise
    run.pull([files.layout.loras_dir(run.subject)])  # a training pod elsewhere published it
    return dg.MaterializeResult(data_version=reported.data_version, metadata=result_metadata(files, False))
