"""`filtered_images`: photos good enough to train on, as training-ready copies with quality flags."""

import dagster as dg
import pandas as pd

from lora_assets.assets.deduped_images import deduped_images
from lora_assets.assets.metadata import markdown_table
from lora_assets.assets.stage_asset import stage_asset
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.images.contact_sheet import Tile, contact_sheet, markdown_image
from lora_assets.images.detail import DETAIL_VERSION
from lora_assets.images.filter import FilterResult, TrainingSetFilter
from lora_assets.images.inventory import thumbnail_path
from lora_assets.images.quality import QUALITY_VERSION
from lora_assets.images.training_copy import COPY_VERSION
from lora_assets.images.workers import ImageWorkers
from lora_assets.layout import SubjectFiles
from lora_assets.record_store import RecordStore

SIZE_BUCKETS = [0, 512, 768, 1024, 1536, 2048, 4096, 10**9]
SHEET_TILES = 24


def short_side_histogram(table: pd.DataFrame) -> str:
    """Training copies per short-side range, as a markdown table."""
    short_sides = pd.Series(
        [min(w, h) for w, h in zip(table["width"], table["height"], strict=True)], dtype=float
    )
    histogram = pd.cut(short_sides, SIZE_BUCKETS, right=False).value_counts(sort=False)
    lines = ["| short side (px) | images |", "|---|---|"]
    lines += [f"| {b.left}-{b.right - 1} | {count} |" for b, count in histogram.items() if count]
    return "\n".join(lines)


def flags_sheet(files: SubjectFiles, table: pd.DataFrame, subject: str) -> str:
    """The first training copies with their quality flags, as a markdown contact sheet."""
    tiles = [
        Tile(thumbnail_path(files.raw_cache, row.sha256), ", ".join(row.flags) or row.path)
        for row in table.head(SHEET_TILES).itertuples()
    ]
    return markdown_image(contact_sheet(tiles), f"{subject} training copies (flags)")


def filter_metadata(result: FilterResult, files: SubjectFiles, subject: str) -> dict[str, object]:
    table = result.table if len(result.table) else pd.DataFrame(columns=["flags", "width", "height"])
    flag_counts = pd.Series([f for flags in table["flags"] for f in flags], dtype=object).value_counts()
    return {
        "kept": len(result.table),
        "rejected": len(result.rejected),
        "rejections": dg.MetadataValue.md(markdown_table(result.rejected, ["path", "reason"])),
        "flags": dg.MetadataValue.json({str(k): int(v) for k, v in flag_counts.items()}),
        **result.counters,
        "bytes_before": int(table["source_bytes"].sum()) if len(result.table) else 0,
        "bytes_after": int(table["copy_bytes"].sum()) if len(result.table) else 0,
        "short_side_histogram": dg.MetadataValue.md(short_side_histogram(table)),
        "contact_sheet": dg.MetadataValue.md(flags_sheet(files, table, subject)),
        "copies": dg.MetadataValue.path(str(files.training_copies)),
        "dagster/row_count": len(result.table),
    }


@stage_asset(
    "filter",
    deduped_images,
    code_version=f"filter-{COPY_VERSION}.{QUALITY_VERSION}.{DETAIL_VERSION}",
    kinds={"python", "parquet"},
    description="Drops photos below min_short_side / min_effective_mp; writes training-ready copies "
    "(EXIF-oriented, sRGB, RGB, <= max_side, never upscaled) and per-image quality flags.",
)
def filtered_images(run: SubjectRun) -> dg.MaterializeResult:
    files = run.files
    report = run.progress("measuring detail")
    workers = ImageWorkers(
        run.settings.ingest.max_pixels,
        run.workers,
        run.measure_cache(),
        progress=lambda _stage, done, total: report(done, total),
    )
    result = TrainingSetFilter(
        run.settings.filter,
        run.settings.ingest.max_pixels,
        RecordStore(files.copy_cache),
        workers,
        progress=run.progress("training copies"),
    ).run(pd.read_parquet(files.dedup_selected), files.photos, files.training_copies)
    for row in result.rejected.itertuples():
        run.log.info(f"not used: {row.path}: {row.reason}")
    result.table.to_parquet(files.filter_table, index=False)
    result.rejected.to_parquet(files.filter_rejected, index=False)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(result.data_version),
        metadata=filter_metadata(result, files, run.subject),
    )
