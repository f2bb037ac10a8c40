"""Scan a subject's photo folder: hash, fully decode once, measure, and sort into accepted/rejected.

Two caches make a rerun on an unchanged folder read no pixels and no bytes:
(relative path, size, mtime) -> sha256, and sha256 -> measurements (plus a small thumbnail).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageCms, ImageOps

from lora_assets.digests import hash_lines, sha256_file, short_version
from lora_assets.images.decode import (
    ImageRejected,
    decode_fully,
    exif_orientation,
    open_checked,
    oriented_size,
    to_rgb,
)
from lora_assets.images.jpeg_quality import estimate_jpeg_quality
from lora_assets.record_store import RecordStore, write_atomic
from lora_assets.subjects import IMAGE_EXTENSIONS, PhotoFile, list_other_files, list_photo_files

# Bump when what is measured changes: cached measurements are then recomputed.
MEASUREMENT_VERSION = 1
THUMB_SIDE = 256

MANIFEST_COLUMNS = [
    "sha256", "path", "format", "width", "height", "mode", "icc_profile",
    "file_size", "jpeg_quality", "exif_orientation",
]  # fmt: skip
REJECTED_COLUMNS = ["path", "sha256", "reason", "detail", "file_size"]

Progress = Callable[[int, int], None]


@dataclass
class InventoryResult:
    """Accepted photos (`manifest`), rejects with reasons (`rejected`) and cache counters."""

    manifest: pd.DataFrame
    rejected: pd.DataFrame
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def data_version(self) -> str:
        """Digest of (content hash, relative path) of every accepted photo."""
        rows = sorted(zip(self.manifest["sha256"], self.manifest["path"], strict=True))
        return short_version(hash_lines(f"{sha}\t{path}" for sha, path in rows))


class PhotoInventory:
    """Measures photos with a per-subject path index and a content-addressed measurement store."""

    def __init__(self, cache_dir: Path, max_pixels: int) -> None:
        self.cache_dir = cache_dir
        self.max_pixels = max_pixels
        self.records = RecordStore(cache_dir / "measurements")
        self._index_path = cache_dir / "path_index.json"

    def thumbnail_path(self, sha256: str) -> Path:
        """Where the small oriented RGB thumbnail of a photo lives (written on first measurement)."""
        return thumbnail_path(self.cache_dir, sha256)

    def scan(self, images_dir: Path, workers: int = 4, progress: Progress | None = None) -> InventoryResult:
        """Measure every photo under `images_dir`; never raises for a single bad file."""
        files = list_photo_files(images_dir)
        index = self._load_index()
        counters = {"files": len(files), "hash_cache_hits": 0, "measure_cache_hits": 0, "decoded": 0}
        rows: list[dict[str, Any]] = []
        new_index: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for photo, (row, events) in zip(
                files, pool.map(lambda f: self._measure_file(f, index.get(f.relpath)), files), strict=True
            ):
                rows.append(row)
                for name in events:
                    counters[name] += 1
                if row["sha256"]:
                    new_index[photo.relpath] = {"stamp": _stamp(photo), "sha256": row["sha256"]}
                if progress:
                    progress(len(rows), len(files))
        write_atomic(self._index_path, json.dumps(new_index, sort_keys=True).encode("utf-8"))
        accepted = [r for r in rows if r["ok"]]
        rejected = [r for r in rows if not r["ok"]] + [_not_a_photo(f) for f in list_other_files(images_dir)]
        manifest = pd.DataFrame(accepted, columns=MANIFEST_COLUMNS)
        manifest = manifest.astype({"width": "int64", "height": "int64", "file_size": "int64"})
        manifest["jpeg_quality"] = manifest["jpeg_quality"].astype("Int64")
        manifest["exif_orientation"] = manifest["exif_orientation"].astype("int64")
        return InventoryResult(
            manifest=manifest.reset_index(drop=True),
            rejected=pd.DataFrame(rejected, columns=REJECTED_COLUMNS).reset_index(drop=True),
            counters=counters,
        )

    def _measure_file(
        self, photo: PhotoFile, entry: dict[str, Any] | None
    ) -> tuple[dict[str, Any], list[str]]:
        """One file's row and the cache events it caused (counted by the caller's thread)."""
        base = {"path": photo.relpath, "file_size": photo.size}
        events: list[str] = []
        try:
            if entry and entry.get("stamp") == _stamp(photo):
                sha = entry["sha256"]
                events.append("hash_cache_hits")
            else:
                sha = sha256_file(photo.path)
        except OSError as exc:
            return {**base, "ok": False, "sha256": None, "reason": "unreadable", "detail": str(exc)}, events
        key = RecordStore.key_for("measure", MEASUREMENT_VERSION, sha, self.max_pixels)
        record = self.records.get(key)
        if record is not None and (record["ok"] is False or self.thumbnail_path(sha).exists()):
            events.append("measure_cache_hits")
        else:
            record = self._measure_pixels(photo.path, sha)
            events.append("decoded")
            self.records.put(key, record)
        return {**base, **record, "sha256": sha}, events

    def _measure_pixels(self, path: Path, sha: str) -> dict[str, Any]:
        """Fully decode one file and measure it; the only place ingest reads pixels."""
        try:
            with open_checked(path, self.max_pixels) as image:
                fmt, mode = image.format, image.mode
                width, height = oriented_size(image)
                orientation = exif_orientation(image)
                tables = getattr(image, "quantization", None) if fmt == "JPEG" else None
                quality = estimate_jpeg_quality(tables)
                icc = _icc_name(image.info.get("icc_profile"))
                decode_fully(image)
                self._write_thumbnail(image, sha)
        except ImageRejected as exc:
            return {"ok": False, "reason": exc.reason, "detail": exc.detail}
        return {
            "ok": True, "format": fmt, "width": width, "height": height, "mode": mode,
            "icc_profile": icc, "jpeg_quality": quality, "exif_orientation": orientation,
        }  # fmt: skip

    def _write_thumbnail(self, image: Image.Image, sha: str) -> None:
        thumb = to_rgb(ImageOps.exif_transpose(image))
        thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=85)
        write_atomic(self.thumbnail_path(sha), buffer.getvalue())

    def _load_index(self) -> dict[str, Any]:
        try:
            return json.loads(self._index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def thumbnail_path(cache_dir: Path, sha256: str) -> Path:
    """The thumbnail of a measured photo under an inventory cache folder (for contact sheets)."""
    return cache_dir / "thumbs" / sha256[:2] / f"{sha256}.jpg"


def _not_a_photo(file: PhotoFile) -> dict[str, Any]:
    """The rejection row of a file that is not a photo (so every file is accounted for)."""
    name = file.relpath.rsplit("/", 1)[-1]
    if name.startswith("."):
        reason, detail = "hidden file", "files whose name starts with '.' are not read"
    else:
        suffix = Path(name).suffix.lower() or "(no extension)"
        reason = "not a photo"
        detail = f"{suffix} is not a photo type; supported: {', '.join(sorted(IMAGE_EXTENSIONS))}"
    return {"path": file.relpath, "sha256": None, "reason": reason, "detail": detail, "file_size": file.size}


def _stamp(photo: PhotoFile) -> str:
    return f"{photo.size}:{photo.version}"


def _icc_name(profile: bytes | None) -> str | None:
    """The embedded ICC profile's description ("sRGB IEC61966-2.1", "Adobe RGB (1998)")."""
    if not profile:
        return None
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip()
    except (OSError, ImageCms.PyCMSError):
        return "unreadable profile"
