"""Asset checks: a LoRA that UIs can load, that changes the image, with no NaN."""

from pathlib import Path

import dagster as dg

from lora_assets.assets.lora import lora, resolve_models
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.partitions import subjects_partitions
from lora_assets.storage import DataRoot
from lora_assets.training.verify import key_problems, lora_changes_output, non_finite, read


def _lora_file(context: dg.AssetCheckExecutionContext, data_root: DataRoot) -> tuple[SubjectRun, Path]:
    with SubjectRun.open(context, data_root, "lora", publish=False) as run:
        return run, run.files.lora_file


@dg.asset_check(
    asset=lora, partitions_def=subjects_partitions, description="kohya keys and metadata complete"
)
def lora_keys_and_metadata(
    context: dg.AssetCheckExecutionContext, data_root: DataRoot
) -> dg.AssetCheckResult:
    _, path = _lora_file(context, data_root)
    tensors, metadata = read(path)
    problems = key_problems(tensors, metadata)
    modules = {k.split(".")[0] for k in tensors}
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "problems": dg.MetadataValue.json(problems[:20]),
            "unet_modules": sum(m.startswith("lora_unet_") for m in modules),
            "text_encoder_modules": sum(m.startswith("lora_te_") for m in modules),
        },
    )


@dg.asset_check(asset=lora, partitions_def=subjects_partitions, description="no NaN or infinite weights")
def lora_weights_finite(context: dg.AssetCheckExecutionContext, data_root: DataRoot) -> dg.AssetCheckResult:
    _, path = _lora_file(context, data_root)
    bad = non_finite(read(path)[0])
    return dg.AssetCheckResult(passed=not bad, metadata={"non_finite": dg.MetadataValue.json(bad[:20])})


@dg.asset_check(
    asset=lora,
    partitions_def=subjects_partitions,
    description="diffusers load_lora_weights accepts the file and it changes the base pipeline's output",
)
def lora_loads_in_diffusers(
    context: dg.AssetCheckExecutionContext, data_root: DataRoot
) -> dg.AssetCheckResult:
    run, path = _lora_file(context, data_root)
    models = resolve_models(run)
    side = min(256, run.settings.dataset.resolution)
    change = lora_changes_output(
        path,
        models.base_model,
        models.vae,
        models.base_config,
        f"{run.trigger} {run.settings.class_token}",
        side,
    )
    return dg.AssetCheckResult(
        passed=change.changed, metadata={"max_pixel_difference": change.max_difference}
    )
