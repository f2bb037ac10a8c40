"""`captions`: one caption per training image (BLIP, template or the user's own) in a parquet table."""

import base64
import io
from pathlib import Path

import dagster as dg
import pandas as pd
from PIL import Image

from lora_assets.assets.filtered_images import filtered_images
from lora_assets.assets.sources import stage_settings_version
from lora_assets.assets.stage_asset import stage_asset
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.captioning.pipeline import CAPTION_VERSION, Captioner, CaptionItem, read_sidecars
from lora_assets.deployment import GPU_STEP_TAGS
from lora_assets.digests import hash_lines, short_version
from lora_assets.models.references import resolve_model
from lora_assets.record_store import RecordStore

PREVIEW_ROWS = 10


def caption_preview(table: pd.DataFrame, copies_dir: Path) -> str:
    """A markdown table of small thumbnails with their captions."""
    lines = ["| image | caption | source |", "|---|---|---|"]
    for row in table.head(PREVIEW_ROWS).itertuples():
        with Image.open(copies_dir / row.file_name) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((96, 96))
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=70)
        uri = base64.b64encode(buffer.getvalue()).decode("ascii")
        caption = row.caption.replace("|", "\\|")
        lines.append(f"| ![{row.file_name}](data:image/jpeg;base64,{uri}) | {caption} | {row.source} |")
    return "\n".join(lines)


@stage_asset(
    "captions",
    filtered_images,
    op_tags=GPU_STEP_TAGS,
    code_version=f"captions-{CAPTION_VERSION}",
    kinds={"pytorch", "parquet"},
    description="BLIP captions (or the template, or the user's `<photo>.txt` / [captions.overrides]) "
    'as "{trigger} {class_token}, {caption}, {quality tags}".',
)
def captions(run: SubjectRun) -> dg.MaterializeResult:
    files = run.files
    settings = run.settings.captions
    filtered = pd.read_parquet(files.filter_table) if files.filter_table.exists() else pd.DataFrame()
    items = [
        CaptionItem(
            row.sha256, row.file_name, row.path, files.training_copies / row.file_name, tuple(row.flags)
        )
        for row in filtered.itertuples()
    ]
    sidecars = read_sidecars(files.photos, [item.path for item in items], run.log.warning)
    overrides = {**sidecars, **settings.overrides}
    unknown = sorted(set(settings.overrides) - {item.path for item in items})
    for path in unknown:
        run.log.warning(
            f"[captions.overrides] names {path!r}, which is not a training image of {run.subject}"
        )
    captioner = Captioner(
        settings=settings,
        trigger=run.trigger,
        class_token=run.settings.class_token,
        settings_hash=stage_settings_version(run.layout, run.subject, "captions"),
        model_reference=resolve_model(settings.model_id, run.layout.root, settings.revision),
        cache=RecordStore(files.caption_cache),
        max_pixels=run.settings.ingest.max_pixels,
        progress=run.progress("captioned"),
    )
    table, counters = captioner.run(items, overrides)
    table.to_parquet(files.captions_table, index=False)
    words = table["word_count"] if len(table) else pd.Series([0])
    version = hash_lines(f"{r.file_name}\t{r.caption}" for r in table.sort_values("file_name").itertuples())
    return dg.MaterializeResult(
        data_version=dg.DataVersion(short_version(version)),
        metadata={
            "images": len(table),
            **counters,
            "words_min": int(words.min()),
            "words_mean": round(float(words.mean()), 1),
            "words_max": int(words.max()),
            "tagged": int(sum(bool(tags) for tags in table["quality_tags"])) if len(table) else 0,
            "unknown_overrides": dg.MetadataValue.json(unknown),
            "model": settings.model_id if settings.captioner == "blip" else settings.captioner,
            "preview": dg.MetadataValue.md(
                caption_preview(table, files.training_copies) if len(table) else "_none_"
            ),
            "captions": dg.MetadataValue.path(str(files.captions_table)),
            "dagster/row_count": len(table),
        },
    )
