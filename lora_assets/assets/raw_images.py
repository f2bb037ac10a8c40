"""`raw_images`: every photo of a subject, hashed, fully decoded once and measured."""

import os

import dagster as dg

from lora_assets.assets.metadata import markdown_table
from lora_assets.assets.sources import subject_photos
from lora_assets.assets.stage_asset import stage_asset
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.images.contact_sheet import Tile, contact_sheet, markdown_image
from lora_assets.images.inventory import MEASUREMENT_VERSION, PhotoInventory

CONTACT_SHEET_TILES = 24
HASH_THREADS = 8  # hashing is mostly file reading: more threads than cores pay off


@stage_asset(
    "ingest",
    subject_photos,
    code_version=f"ingest-{MEASUREMENT_VERSION}",
    kinds={"python", "parquet"},
    description="Scan `subjects/<s>/images/`: sha256, format, oriented size, mode, ICC, JPEG quality; "
    "broken files are listed in `rejected.parquet` with their reason.",
)
def raw_images(run: SubjectRun) -> dg.MaterializeResult:
    files = run.files
    inventory = PhotoInventory(files.raw_cache, run.settings.ingest.max_pixels)
    result = inventory.scan(
        files.photos, workers=min(HASH_THREADS, os.cpu_count() or 1), progress=run.progress("scanned photos")
    )
    result.manifest.to_parquet(files.raw_manifest, index=False)
    result.rejected.to_parquet(files.raw_rejected, index=False)
    for row in result.rejected.itertuples():
        run.log.warning(f"rejected {row.path}: {row.reason}: {row.detail}")

    sheet = contact_sheet(
        [
            Tile(inventory.thumbnail_path(sha), path)
            for sha, path in zip(result.manifest["sha256"], result.manifest["path"], strict=True)
        ][:CONTACT_SHEET_TILES]
    )
    sheet.save(files.raw_contact_sheet, quality=85)
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
            "manifest": dg.MetadataValue.path(str(files.raw_manifest)),
            "dagster/row_count": len(manifest),
        },
    )
