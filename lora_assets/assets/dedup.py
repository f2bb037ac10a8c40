"""`deduped_images`: near-duplicate groups of a subject's photos, keeping the copy with the most
real detail; `subject.toml` pins (`keep`, `drop`, `not_duplicates`) always win."""

import os

import dagster as dg
import pandas as pd

from lora_assets.assets.ingest import raw_images
from lora_assets.assets.metadata import markdown_table
from lora_assets.assets.sources import settings_source
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.automation import eager_on_new_data
from lora_assets.digests import hash_lines
from lora_assets.images.contact_sheet import Tile, contact_sheet, markdown_image
from lora_assets.images.dedup import Deduplicator, DedupResult, Photo
from lora_assets.images.detail import DETAIL_VERSION
from lora_assets.images.features import FEATURES_VERSION
from lora_assets.images.inventory import thumbnail_path
from lora_assets.partitions import subjects_partitions
from lora_assets.storage import DataRoot

STAGE = "deduped_images"
ALGORITHM_VERSION = 1
SHEET_GROUPS = 6
SHEET_MEMBERS = 6
SCORE_COLUMNS = ["effective_mp", "native_mp", "effective_scale", "sharpness", "quality"]


def groups_table(result: DedupResult, sha_of: dict[str, str]) -> pd.DataFrame:
    """One row per member of every duplicate group (group ids from 1, largest groups first)."""
    rows = []
    ordered = sorted(
        result.groups, key=lambda g: (-(len(g.kept) + len(g.dropped)), sorted(g.kept + g.dropped))
    )
    for group_id, group in enumerate(ordered, 1):
        for path in [*group.kept, *group.dropped]:
            rows.append(
                {
                    "group_id": group_id,
                    "path": path,
                    "sha256": sha_of[path],
                    "kept": path in group.kept,
                    "similarity": group.similarity[path],
                    **{column: group.scores[path][column] for column in SCORE_COLUMNS},
                    "reason": group.reasons[path],
                }
            )
    columns = ["group_id", "path", "sha256", "kept", "similarity", *SCORE_COLUMNS, "reason"]
    return pd.DataFrame(rows, columns=columns)


@dg.asset(
    partitions_def=subjects_partitions,
    automation_condition=eager_on_new_data(),
    deps=[raw_images, settings_source("dedup")],
    code_version=f"dedup-{ALGORITHM_VERSION}.{FEATURES_VERSION}.{DETAIL_VERSION}",
    group_name="dataset",
    kinds={"python", "parquet"},
    description="Near-duplicate groups (re-saves, rescales, thumbnails, upscales, trims, blurred "
    "copies) with the copy holding the most real detail kept; bursts are reported as similar.",
)
def deduped_images(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    run = SubjectRun.start(context, data_root)
    out = run.work_dir(STAGE)
    raw_dir = run.layout.work_dir(run.subject, "raw_images")
    manifest = pd.read_parquet(raw_dir / "manifest.parquet")
    images_dir = run.layout.images_dir(run.subject)
    photos = [
        Photo(path, images_dir / path, sha)
        for sha, path in zip(manifest["sha256"], manifest["path"], strict=True)
    ]
    progress = {stage: run.progress(stage) for stage in ("hashing", "verifying", "scoring detail")}
    result = Deduplicator(
        run.settings.dedup,
        run.settings.ingest.max_pixels,
        workers=min(4, os.cpu_count() or 1),
        cache=run.measure_cache(),
        progress=lambda stage, done, total: progress[stage](done, total),
    ).run(photos)
    for pin in result.unknown_pins:
        run.log.warning(f"[dedup] pin names {pin!r}, which is not an accepted photo of {run.subject}")
    for rejected in result.rejected:
        run.log.warning(f"could not read {rejected['path']} for dedup: {rejected['error']}")

    sha_of = dict(zip(manifest["path"], manifest["sha256"], strict=True))
    groups = groups_table(result, sha_of)
    selected = manifest[manifest["path"].isin(result.selected)].sort_values("path").reset_index(drop=True)
    similar = pd.DataFrame(result.similar, columns=["a", "b", "colour", "structure", "detail", "grid"])
    groups.to_parquet(out / "groups.parquet", index=False)
    selected.to_parquet(out / "selected.parquet", index=False)
    similar.to_parquet(out / "similar.parquet", index=False)

    sheet = contact_sheet(
        [
            Tile(thumbnail_path(raw_dir / "cache", row.sha256), row.path, "kept" if row.kept else "dropped")
            for _, members in list(groups.groupby("group_id", sort=True))[:SHEET_GROUPS]
            for row in members.head(SHEET_MEMBERS).itertuples()
        ],
        columns=SHEET_MEMBERS,
    )
    sheet.save(out / "groups_sheet.jpg", quality=85)
    dropped = groups[~groups["kept"]]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(
            hash_lines(f"{s}\t{p}" for s, p in zip(selected["sha256"], selected["path"], strict=True))[:24]
        ),
        metadata={
            "images_in": len(manifest),
            "groups": len(result.groups),
            "dropped": len(dropped) + len(result.pinned_drops),
            "selected": len(selected),
            "similar_pairs": len(similar),
            "features_computed": result.counters["features_computed"],
            "features_cached": result.counters["features_cached"],
            "details_computed": result.counters["details_computed"],
            "details_cached": result.counters["details_cached"],
            "pairs_verified": result.counters["pairs_verified"],
            "unknown_pins": dg.MetadataValue.json(result.unknown_pins),
            "groups_table": dg.MetadataValue.md(
                markdown_table(groups, ["group_id", "path", "kept", "effective_mp", "reason"])
            ),
            "similar_for_review": dg.MetadataValue.md(
                markdown_table(similar, ["a", "b", "colour", "structure"])
            ),
            "groups_sheet": dg.MetadataValue.md(
                markdown_image(sheet, "largest groups (green kept, red dropped)")
                if len(groups)
                else "_no duplicates_"
            ),
            "dagster/row_count": len(selected),
        },
    )
