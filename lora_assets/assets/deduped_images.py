"""`deduped_images`: near-duplicate groups of a subject's photos, keeping the copy with the most
real detail; `subject.toml` pins (`keep`, `drop`, `not_duplicates`) always win."""

import dagster as dg
import pandas as pd

from lora_assets.assets.metadata import markdown_table
from lora_assets.assets.raw_images import raw_images
from lora_assets.assets.stage_asset import stage_asset
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.digests import hash_lines, short_version
from lora_assets.images.contact_sheet import Tile, contact_sheet, markdown_image
from lora_assets.images.dedup import DEDUP_STAGES, Deduplicator, DedupResult
from lora_assets.images.detail import DETAIL_VERSION
from lora_assets.images.features import FEATURES_VERSION
from lora_assets.images.inventory import thumbnail_path
from lora_assets.images.workers import Photo
from lora_assets.layout import SubjectFiles

ALGORITHM_VERSION = 2
SHEET_GROUPS = 6
SHEET_MEMBERS = 6
DEDUP_COUNTERS = (
    "features_computed",
    "features_cached",
    "details_computed",
    "details_cached",
    "details_from_hashing_decode",
    "pairs_verified",
)


def groups_sheet(files: SubjectFiles, groups: pd.DataFrame) -> str:
    """The largest groups as a contact sheet (saved beside the tables), as markdown."""
    if not len(groups):
        return "_no duplicates_"
    sheet = contact_sheet(
        [
            Tile(thumbnail_path(files.raw_cache, row.sha256), row.path, "kept" if row.kept else "dropped")
            for _, members in list(groups.groupby("group_id", sort=True))[:SHEET_GROUPS]
            for row in members.head(SHEET_MEMBERS).itertuples()
        ],
        columns=SHEET_MEMBERS,
    )
    sheet.save(files.dedup_sheet, quality=85)
    return markdown_image(sheet, "largest groups (green kept, red dropped)")


def run_dedup(run: SubjectRun, manifest: pd.DataFrame) -> DedupResult:
    """The dedup library over the subject's accepted photos, progress in the run's log."""
    photos = [
        Photo(path, run.files.photos / path, sha)
        for sha, path in zip(manifest["sha256"], manifest["path"], strict=True)
    ]
    progress = {stage: run.progress(stage) for stage in DEDUP_STAGES}
    result = Deduplicator(
        run.settings.dedup.rules(),
        run.settings.ingest.max_pixels,
        workers=run.workers,
        cache=run.measure_cache(),
        progress=lambda stage, done, total: progress[stage](done, total),
    ).run(photos)
    for pin in result.unknown_pins:
        run.log.warning(f"[dedup] pin names {pin!r}, which is not an accepted photo of {run.subject}")
    for rejected in result.rejected:
        run.log.warning(f"could not read {rejected['path']} for dedup: {rejected['error']}")
    return result


@stage_asset(
    "dedup",
    raw_images,
    code_version=f"dedup-{ALGORITHM_VERSION}.{FEATURES_VERSION}.{DETAIL_VERSION}",
    kinds={"python", "parquet"},
    description="Near-duplicate groups (re-saves, rescales, thumbnails, upscales, trims, blurred, "
    "mirrored, graded, black-and-white, captioned, bannered and watermarked copies) with the clean "
    "copy holding the most real detail kept, and why; bursts and brackets are reported as similar.",
)
def deduped_images(run: SubjectRun) -> dg.MaterializeResult:
    files = run.files
    manifest = pd.read_parquet(files.raw_manifest)
    result = run_dedup(run, manifest)
    groups = result.groups_table(dict(zip(manifest["path"], manifest["sha256"], strict=True)))
    selected = manifest[manifest["path"].isin(result.selected)].sort_values("path").reset_index(drop=True)
    similar = result.similar_table()
    groups.to_parquet(files.dedup_groups, index=False)
    selected.to_parquet(files.dedup_selected, index=False)
    similar.to_parquet(files.dedup_similar, index=False)
    version = hash_lines(f"{s}\t{p}" for s, p in zip(selected["sha256"], selected["path"], strict=True))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(short_version(version)),
        metadata={
            "images_in": len(manifest),
            "groups": len(result.groups),
            "dropped": int((~groups["kept"]).sum()) + len(result.pinned_drops),
            "selected": len(selected),
            "similar_pairs": len(similar),
            **{name: result.counters[name] for name in DEDUP_COUNTERS},
            "unknown_pins": dg.MetadataValue.json(result.unknown_pins),
            "groups_table": dg.MetadataValue.md(
                markdown_table(groups, ["group_id", "path", "kept", "effective_mp", "reason"])
            ),
            "similar_for_review": dg.MetadataValue.md(
                markdown_table(similar, ["a", "b", "colour", "structure"])
            ),
            "groups_sheet": dg.MetadataValue.md(groups_sheet(files, groups)),
            "dagster/row_count": len(selected),
        },
    )
