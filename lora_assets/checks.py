"""Asset checks of `lora`: a file UIs can load, with no NaN, that changes the image. One step runs
all three (one pull of the file, one load), so a run costs one check step, not three."""

from collections.abc import Iterator

import dagster as dg

from lora_assets.assets.lora import lora, resolve_models
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.partitions import subjects_partitions
from lora_assets.storage import DataRoot
from lora_assets.training.verify import key_problems, lora_changes_output, non_finite, read


def _spec(name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=lora, partitions_def=subjects_partitions, description=description)


LORA_CHECKS = [
    _spec("lora_keys_and_metadata", "kohya keys and metadata complete"),
    _spec("lora_weights_finite", "no NaN or infinite weights"),
    _spec(
        "lora_loads_in_diffusers",
        "diffusers load_lora_weights accepts the file and it changes the base pipeline's output",
    ),
]


@dg.multi_asset_check(specs=LORA_CHECKS, name="lora_checks")
def lora_checks(context: dg.AssetCheckExecutionContext, data_root: DataRoot) -> Iterator[dg.AssetCheckResult]:
    with SubjectRun.open(context, data_root, "lora", publish=False) as run:
        tensors, metadata = read(run.files.lora_file)
        problems = key_problems(tensors, metadata)
        modules = {k.split(".")[0] for k in tensors}
        yield dg.AssetCheckResult(
            check_name="lora_keys_and_metadata",
            passed=not problems,
            metadata={
                "problems": dg.MetadataValue.json(problems[:20]),
                "unet_modules": sum(m.startswith("lora_unet_") for m in modules),
                "text_encoder_modules": sum(m.startswith("lora_te_") for m in modules),
            },
        )
        bad = non_finite(tensors)
        yield dg.AssetCheckResult(
            check_name="lora_weights_finite",
            passed=not bad,
            metadata={"non_finite": dg.MetadataValue.json(bad[:20])},
        )
        models = resolve_models(run)
        prompt = f"{run.trigger} {run.settings.class_token}"
        side = min(256, run.settings.dataset.resolution)
        change = lora_changes_output(
            run.files.lora_file, models.base_model, models.vae, models.base_config, prompt, side
        )
        yield dg.AssetCheckResult(
            check_name="lora_loads_in_diffusers",
            passed=change.changed,
            metadata={"max_pixel_difference": change.max_difference},
        )
