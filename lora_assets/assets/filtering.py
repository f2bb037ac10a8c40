"""`filtered_images`: photos good enough to train on, as training-ready copies with quality flags."""

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pandas as pd
from PIL import Image

from lora_assets.assets.dedup import deduped_images
from lora_assets.assets.metadata import markdown_table
from lora_assets.assets.sources import settings_source
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.automation import eager_on_new_data
from lora_assets.digests import hash_lines
from lora_assets.images.contact_sheet import Tile, contact_sheet, markdown_image
from lora_assets.images.dedup import ImageWorkers, Photo
from lora_assets.images.detail import DETAIL_VERSION
from lora_assets.images.filtering import rejection_reason
from lora_assets.images.inventory import thumbnail_path
from lora_assets.images.quality import QUALITY_VERSION, QualityMeasures, measure_quality, quality_flags
from lora_assets.images.training_copy import COPY_VERSION, copy_name, make_training_copy
from lora_assets.partitions import subjects_partitions
from lora_assets.record_store import RecordStore, write_atomic
from lora_assets.storage import DataRoot

STAGE = "filtered_images"
SIZE_BUCKETS = [0, 512, 768, 1024, 1536, 2048, 4096, 10**9]


def _copy_one(
    store: RecordStore, source: Path, sha: str, jpeg_quality: int | None, effective_mp: float, run: SubjectRun
) -> tuple[dict, bytes, bool]:
    """The training copy and its quality measures, from the cache when the same (sha, settings) ran before."""
    settings = run.settings.filter
    key = RecordStore.key_for(
        "copy", COPY_VERSION, QUALITY_VERSION, sha, settings.max_side, settings.jpeg_quality
    )
    record = store.get(key)
    data = store.get_bytes(key, ".img") if record else None
    if record and data:
        return record, data, True
    copy = make_training_copy(
        source, run.settings.ingest.max_pixels, settings.max_side, settings.jpeg_quality
    )
    with Image.open(io.BytesIO(copy.data)) as image:
        measures = measure_quality(image.convert("RGB"), jpeg_quality, effective_mp)
    record = {
        "extension": copy.extension,
        "width": copy.width,
        "height": copy.height,
        "notes": copy.notes,
        "measures": measures.as_dict(),
        "copy_sha256": hashlib.sha256(copy.data).hexdigest(),
    }
    store.put_bytes(key, copy.data, ".img")
    store.put(key, record)
    return record, copy.data, False


@dg.asset(
    partitions_def=subjects_partitions,
    automation_condition=eager_on_new_data(),
    deps=[deduped_images, settings_source("filter")],
    code_version=f"filter-{COPY_VERSION}.{QUALITY_VERSION}.{DETAIL_VERSION}",
    group_name="dataset",
    kinds={"python", "parquet"},
    description="Drops photos below min_short_side / min_effective_mp; writes training-ready copies "
    "(EXIF-oriented, sRGB, RGB, <= max_side, never upscaled) and per-image quality flags.",
)
def filtered_images(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    run = SubjectRun.start(context, data_root)
    out = run.work_dir(STAGE)
    settings = run.settings.filter
    selected = pd.read_parquet(run.layout.work_dir(run.subject, "deduped_images") / "selected.parquet")
    images_dir = run.layout.images_dir(run.subject)
    photos = [
        Photo(p, images_dir / p, sha) for sha, p in zip(selected["sha256"], selected["path"], strict=True)
    ]
    report = run.progress("measuring detail")
    workers = ImageWorkers(
        run.settings.ingest.max_pixels,
        min(4, os.cpu_count() or 1),
        run.measure_cache(),
        progress=lambda _stage, done, total: report(done, total),
    )
    details = workers.measure_details(photos)

    rejected_rows, accepted = [], []
    for row in selected.itertuples():
        effective = details[row.path].effective_mp
        reason = rejection_reason(int(row.width), int(row.height), effective, settings)
        if reason:
            rejected_rows.append({"path": row.path, "sha256": row.sha256, "reason": reason})
            run.log.info(f"not used: {row.path}: {reason}")
        else:
            accepted.append((row, effective))

    store = RecordStore(out / "cache")
    copy_progress = run.progress("training copies")
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = [
            pool.submit(
                _copy_one,
                store,
                images_dir / row.path,
                row.sha256,
                None if pd.isna(row.jpeg_quality) else int(row.jpeg_quality),
                effective,
                run,
            )
            for row, effective in accepted
        ]
        results = []
        for done, future in enumerate(futures, 1):
            results.append(future.result())
            copy_progress(done, len(futures))
    flags = quality_flags([QualityMeasures(**record["measures"]) for record, _, _ in results], settings)

    copies_dir = out / "images"
    copies_dir.mkdir(exist_ok=True)
    rows = []
    for (row, effective), (record, data, _), image_flags in zip(accepted, results, flags, strict=True):
        name = copy_name(row.path, row.sha256, record["extension"])
        target = copies_dir / name
        if not target.exists() or target.stat().st_size != len(data):
            write_atomic(target, data)
        rows.append(
            {
                "sha256": row.sha256,
                "path": row.path,
                "file_name": name,
                "copy_sha256": record["copy_sha256"],
                "width": record["width"],
                "height": record["height"],
                "source_width": int(row.width),
                "source_height": int(row.height),
                "effective_mp": round(effective, 3),
                "flags": image_flags,
                "notes": record["notes"],
                "source_bytes": int(row.file_size),
                "copy_bytes": len(data),
                **{f"q_{k}": v for k, v in record["measures"].items() if k != "effective_mp"},
            }
        )
    keep = {r["file_name"] for r in rows}
    for stale in copies_dir.iterdir():
        if stale.name not in keep:
            stale.unlink()
    table = pd.DataFrame(rows).sort_values("file_name").reset_index(drop=True) if rows else pd.DataFrame()
    table.to_parquet(out / "filtered.parquet", index=False)
    rejected = pd.DataFrame(rejected_rows, columns=["path", "sha256", "reason"])
    rejected.to_parquet(out / "rejected.parquet", index=False)

    raw_cache = run.layout.work_dir(run.subject, "raw_images") / "cache"
    sheet = contact_sheet(
        [Tile(thumbnail_path(raw_cache, r["sha256"]), ", ".join(r["flags"]) or r["path"]) for r in rows[:24]]
    )
    flag_counts = pd.Series([f for r in rows for f in r["flags"]], dtype=object).value_counts()
    short_sides = pd.Series([min(r["width"], r["height"]) for r in rows], dtype=float)
    histogram = pd.cut(short_sides, SIZE_BUCKETS, right=False).value_counts(sort=False)
    size_table = "\n".join(
        ["| short side (px) | images |", "|---|---|"]
        + [
            f"| {interval.left}-{interval.right - 1} | {count} |"
            for interval, count in histogram.items()
            if count
        ]
    )
    version = hash_lines(
        f"{r['file_name']}\t{r['copy_sha256']}\t{','.join(r['flags'])}"
        for r in sorted(rows, key=lambda r: r["file_name"])
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version[:24]),
        metadata={
            "kept": len(rows),
            "rejected": len(rejected),
            "rejections": dg.MetadataValue.md(markdown_table(rejected, ["path", "reason"])),
            "flags": dg.MetadataValue.json({str(k): int(v) for k, v in flag_counts.items()}),
            "copies_cached": sum(1 for _, _, cached in results if cached),
            "details_computed": workers.counters["details_computed"],
            "bytes_before": int(sum(r["source_bytes"] for r in rows)),
            "bytes_after": int(sum(r["copy_bytes"] for r in rows)),
            "short_side_histogram": dg.MetadataValue.md(size_table),
            "contact_sheet": dg.MetadataValue.md(
                markdown_image(sheet, f"{run.subject} training copies (flags)")
            ),
            "copies": dg.MetadataValue.path(str(copies_dir)),
            "dagster/row_count": len(rows),
        },
    )
