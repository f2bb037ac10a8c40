"""The filter stage's library: which photos are good enough to train on, their training-ready
copies (cached by content and settings) and quality flags (no Dagster here).

Copies are written into one flat folder that holds exactly the current training set: a copy that
is already there with the right size is left alone, and files no longer selected are removed.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from lora_assets.digests import hash_lines, short_version
from lora_assets.images.quality import QUALITY_VERSION, QualityMeasures, measure_quality, quality_flags
from lora_assets.images.training_copy import COPY_VERSION, copy_name, make_training_copy
from lora_assets.images.workers import ImageWorkers, Photo
from lora_assets.record_store import RecordStore
from lora_assets.settings import FilterSettings

REJECTED_COLUMNS = ["path", "sha256", "reason"]


def rejection_reason(width: int, height: int, effective_mp: float, settings: FilterSettings) -> str | None:
    """Why a photo (oriented size, effective megapixels) is not used, or None when it is."""
    short = min(width, height)
    if short < settings.min_short_side:
        return f"short side {short} px < min_short_side {settings.min_short_side} px"
    if effective_mp < settings.min_effective_mp:
        return (
            f"effective resolution {effective_mp:.2f} MP < min_effective_mp {settings.min_effective_mp} MP "
            f"(native {width * height / 1e6:.2f} MP: an upscale or a blurred copy)"
        )
    return None


@dataclass(frozen=True)
class CopyRecord:
    """A training copy (its file in the copy cache) and what was measured on it."""

    file: Path
    extension: str
    width: int
    height: int
    notes: list[str]
    measures: dict[str, Any]
    copy_sha256: str
    cached: bool


@dataclass
class FilterResult:
    """The training set (`table`: one row per copy), the photos left out, and work counters."""

    table: pd.DataFrame
    rejected: pd.DataFrame
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def data_version(self) -> str:
        """Digest of every copy's name, bytes and flags: what the caption stage reads."""
        rows = self.table.sort_values("file_name").itertuples() if len(self.table) else []
        return short_version(hash_lines(f"{r.file_name}\t{r.copy_sha256}\t{','.join(r.flags)}" for r in rows))


class TrainingSetFilter:
    """Filter one subject's selected photos into training-ready copies (see module docstring)."""

    def __init__(
        self,
        settings: FilterSettings,
        max_pixels: int,
        copy_cache: RecordStore,
        workers: ImageWorkers,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.max_pixels = max_pixels
        self.copy_cache = copy_cache
        self.workers = workers
        self.progress = progress

    def run(self, selected: pd.DataFrame, photos_dir: Path, copies_dir: Path) -> FilterResult:
        """`selected` is the dedup stage's manifest rows; copies go to `copies_dir`."""
        photos = [
            Photo(p, photos_dir / p, sha) for sha, p in zip(selected["sha256"], selected["path"], strict=True)
        ]
        details = self.workers.measure_details(photos)
        accepted, rejected = [], []
        for row in selected.itertuples():
            effective = details[row.path].effective_mp
            reason = rejection_reason(int(row.width), int(row.height), effective, self.settings)
            if reason:
                rejected.append({"path": row.path, "sha256": row.sha256, "reason": reason})
            else:
                accepted.append((row, effective))
        records = self._copies([(photos_dir / row.path, row, effective) for row, effective in accepted])
        flags = quality_flags([QualityMeasures(**record.measures) for record in records], self.settings)
        rows = [
            _table_row(row, effective, record, image_flags)
            for (row, effective), record, image_flags in zip(accepted, records, flags, strict=True)
        ]
        publish_copies(copies_dir, {row["file_name"]: r.file for row, r in zip(rows, records, strict=True)})
        table = pd.DataFrame(rows).sort_values("file_name").reset_index(drop=True) if rows else pd.DataFrame()
        return FilterResult(
            table=table,
            rejected=pd.DataFrame(rejected, columns=REJECTED_COLUMNS),
            counters={
                "copies_cached": sum(record.cached for record in records),
                "details_computed": self.workers.counters["details_computed"],
            },
        )

    def _copies(self, todo: list[tuple[Path, Any, float]]) -> list[CopyRecord]:
        """Training copies in threads (decoding and encoding release the GIL), in `todo`'s order."""
        with ThreadPoolExecutor(max_workers=self.workers.workers) as pool:
            futures = [pool.submit(self._copy, *item) for item in todo]
            records = []
            for future in futures:
                records.append(future.result())
                if self.progress:
                    self.progress(len(records), len(futures))
        return records

    def _copy(self, source: Path, row: Any, effective_mp: float) -> CopyRecord:
        """One copy and its quality measures, from the cache when (sha256, settings) ran before."""
        s = self.settings
        key = RecordStore.key_for(
            "copy", COPY_VERSION, QUALITY_VERSION, row.sha256, s.max_side, s.jpeg_quality
        )
        record = self.copy_cache.get(key)
        file = self.copy_cache.path_of(key, ".img")
        if record and file.is_file():
            return CopyRecord(file=file, cached=True, **record)
        copy = make_training_copy(source, self.max_pixels, s.max_side, s.jpeg_quality)
        jpeg_quality = None if pd.isna(row.jpeg_quality) else int(row.jpeg_quality)
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
        self.copy_cache.put_bytes(key, copy.data, ".img")
        self.copy_cache.put(key, record)
        return CopyRecord(file=file, cached=False, **record)


def _table_row(row: Any, effective_mp: float, record: CopyRecord, flags: list[str]) -> dict[str, Any]:
    return {
        "sha256": row.sha256,
        "path": row.path,
        "file_name": copy_name(row.path, row.sha256, record.extension),
        "copy_sha256": record.copy_sha256,
        "width": record.width,
        "height": record.height,
        "source_width": int(row.width),
        "source_height": int(row.height),
        "effective_mp": round(effective_mp, 3),
        "flags": flags,
        "notes": record.notes,
        "source_bytes": int(row.file_size),
        "copy_bytes": record.file.stat().st_size,
        **{f"q_{k}": v for k, v in record.measures.items() if k != "effective_mp"},
    }


def publish_copies(folder: Path, copies: dict[str, Path]) -> None:
    """Make `folder` hold exactly `copies` (name -> file in the copy cache), as hard links to
    those files (one copy of each image on disk; a copy where links are impossible); files not
    in `copies` are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in copies.items():
        target = folder / name
        if target.exists() and os.path.samefile(target, source):
            continue
        temporary = folder / f".{name}.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    for stale in folder.iterdir():
        if stale.name not in copies:
            stale.unlink()
