"""`dataset_zip`: the Kohya DreamBooth zip of a subject (what a Kohya user would upload)."""

import dagster as dg
import pandas as pd

from lora_assets.assets.captions import captions
from lora_assets.assets.sources import settings_source
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.automation import eager_on_new_data
from lora_assets.dataset.kohya_zip import DatasetImage, build_zip, copy_to_remote, subset_folder, verify_zip
from lora_assets.partitions import subjects_partitions
from lora_assets.storage import DataRoot

STAGE = "dataset_zip"
ZIP_VERSION = 1


@dg.asset(
    partitions_def=subjects_partitions,
    automation_condition=eager_on_new_data(),
    deps=[captions, settings_source("dataset")],
    code_version=f"dataset-{ZIP_VERSION}",
    group_name="dataset",
    kinds={"python"},
    description="Kohya DreamBooth zip: `<repeats>_<trigger> <class>/` images + .txt captions, "
    "sd-scripts dataset_config.toml and metadata.jsonl; byte-identical for identical content.",
)
def dataset_zip(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    run = SubjectRun.start(context, data_root)
    out = run.work_dir(STAGE)
    table = pd.read_parquet(run.layout.work_dir(run.subject, "captions") / "captions.parquet")
    copies = run.layout.work_dir(run.subject, "filtered_images") / "images"
    images = [DatasetImage(copies / row.file_name, row.file_name, row.caption) for row in table.itertuples()]
    if not images:
        raise ValueError(f"subject {run.subject!r} has no training images after filtering: nothing to zip")
    trigger, class_token = run.settings.trigger or run.subject, run.settings.class_token
    target = out / f"{run.subject}.zip"
    digest = build_zip(images, run.settings.dataset, trigger, class_token, target)
    checked = verify_zip(target)
    metadata = {
        "images": len(checked),
        "folder": subset_folder(run.settings.dataset.repeats, trigger, class_token),
        "sha256": digest,
        "bytes": target.stat().st_size,
        "zip": dg.MetadataValue.path(str(target)),
    }
    if run.settings.dataset.remote_uri:
        metadata["remote"] = copy_to_remote(target, run.settings.dataset.remote_uri)
        run.log.info(f"copied {target.name} to {metadata['remote']}")
    return dg.MaterializeResult(data_version=dg.DataVersion(digest[:24]), metadata=metadata)
