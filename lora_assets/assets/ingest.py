"""`raw_images`: every photo of a subject, hashed, fully decoded once and measured."""

import os

import dagster as dg

from lora_assets.assets.metadata import markdown_table
from lora_assets.assets.sources import settings_source, subject_photos
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.automation import eager_on_new_data
from lora_assets.images.contact_sheet import Tile, contact_sheet, markdown_image
from lora_assets.images.inventory import MEASUREMENT_VERSION, PhotoInventory
from lora_assets.partitions import subjects_partitions
from lora_assets.storage import DataRoot

STAGE = "raw_images"
CONTACT_SHEET_TILES = 24


@dg.asset(
    partitions_def=subjects_partitions,
    automation_condition=eager_on_new_data(),
    deps=[subject_photos, settings_source("ingest")],
    code_version=f"ingest-{MEASUREMENT_VERSION}",
    group_name="dataset",
    kinds={"python", "parquet"},
    description="Scan `subjects/<s>/images/`: sha256, format, oriented size, mode, ICC, JPEG quality; "
    "broken files are listed in `rejected.parquet` with their reason.",
)
def raw_images(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    run = SubjectRun.start(context, data_root)
    out = run.work_dir(STAGE)
    inventory = PhotoInventory(out / "cache", run.settings.ingest.max_pixels)
    result = inventory.scan(
        run.layout.images_dir(run.subject),
        workers=min(8, os.cpu_count() or 1),
        progress=run.progress("scanned photos"),
    )
    result.manifest.to_parquet(out / "manifest.parquet", index=False)
    result.rejected.to_parquet(out / "rejected.parquet", index=False)
    for row in result.rejected.itertuples():
        run.log.warning(f"rejected {row.path}: {row.reason}: {row.detail}")

    sheet = contact_sheet(
        [
            Tile(inventory.thumbnail_path(sha), path)
            for sha, path in zip(result.manifest["sha256"], result.manifest["path"], strict=True)
        ][:CONTACT_SHEET_TILES]
    )
    sheet.save(out / "contact_sheet.jpg", quality=85)
    manifest = result.manifest
    total_pixels = int((manifest["width"] * manifest["height"]).sum()) if len(manifest) else 0
    return dg.MaterializeResult(
        data_version=dg.DataVersion(result.data_version),
        metadata={
            "images": len(manifest),
            "rejected": len(result.rejected),
            "total_megapixels": round(total_pixels / 1e6, 1),
            "files_decoded": result.counters["decoded"],
            "hash_cache_hits": result.counters["hash_cache_hits"],
            "measure_cache_hits": result.counters["measure_cache_hits"],
            "rejects": dg.MetadataValue.md(markdown_table(result.rejected, ["path", "reason", "detail"])),
            "contact_sheet": dg.MetadataValue.md(markdown_image(sheet, f"{run.subject} photos")),
            "manifest": dg.MetadataValue.path(str(out / "manifest.parquet")),
            "dagster/row_count": len(manifest),
        },
    )
