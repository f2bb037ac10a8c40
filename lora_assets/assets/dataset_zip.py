"""`dataset_zip`: the Kohya DreamBooth zip of a subject (what a Kohya user would upload)."""

import dagster as dg
import pandas as pd

from lora_assets.assets.captions import captions
from lora_assets.assets.stage_asset import stage_asset
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.dataset.kohya_zip import (
    DatasetImage,
    DatasetOptions,
    build_zip,
    copy_to_remote,
    subset_folder,
    verify_zip,
)
from lora_assets.digests import short_version

ZIP_VERSION = 2


@stage_asset(
    "dataset",
    captions,
    code_version=f"dataset-{ZIP_VERSION}",
    kinds={"python"},
    description="Kohya DreamBooth zip: `<repeats>_<trigger> <class>/` images + .txt captions, "
    "sd-scripts dataset_config.toml and metadata.jsonl; byte-identical for identical content.",
)
def dataset_zip(run: SubjectRun) -> dg.MaterializeResult:
    files = run.files
    table = pd.read_parquet(files.captions_table)
    images = [
        DatasetImage(files.training_copies / row.file_name, row.file_name, row.caption)
        for row in table.itertuples()
    ]
    if not images:
        raise ValueError(f"subject {run.subject!r} has no training images after filtering: nothing to zip")
    options = DatasetOptions.from_settings(run.settings.dataset, run.settings.training)
    class_token = run.settings.class_token
    digest = build_zip(images, options, run.trigger, class_token, files.dataset_zip)
    checked = verify_zip(files.dataset_zip)
    metadata = {
        "images": len(checked),
        "folder": subset_folder(options.repeats, run.trigger, class_token),
        "sha256": digest,
        "bytes": files.dataset_zip.stat().st_size,
        "zip": dg.MetadataValue.path(str(files.dataset_zip)),
    }
    if run.settings.dataset.remote_uri:
        metadata["remote"] = copy_to_remote(files.dataset_zip, run.settings.dataset.remote_uri)
        run.log.info(f"copied {files.dataset_zip.name} to {metadata['remote']}")
    return dg.MaterializeResult(data_version=dg.DataVersion(short_version(digest)), metadata=metadata)
