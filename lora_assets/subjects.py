"""Subjects: validated names and the listing of a subject's photo folder.

A subject name becomes a Dagster partition key and a folder name, so it is restricted to
letters, digits, `-` and `_` and must start with a letter or digit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lora_assets.digests import hash_lines

SUBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


class InvalidSubjectName(ValueError):
    """A subject name that cannot be a partition key or folder name."""


def validate_subject_name(name: str) -> str:
    """Return `name` unchanged if valid, else raise with what is allowed."""
    if not SUBJECT_NAME_RE.match(name):
        raise InvalidSubjectName(
            f"invalid subject name {name!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit (it becomes a partition key and a folder name)"
        )
    return name


@dataclass(frozen=True)
class PhotoFile:
    """One candidate photo as the file system sees it (no pixels read). `version` changes when
    the file is replaced: its mtime (ns) on a local disk, its ETag on object storage."""

    path: Path
    relpath: str
    size: int
    version: str


def list_photo_files(images_dir: Path) -> list[PhotoFile]:
    """Every file with an image extension under `images_dir`, recursively, sorted by relative path.

    Hidden files and folders (".DS_Store", ".thumbnails") are skipped; links are followed. A
    folder on object storage (a `UPath`) is listed with its sizes and ETags, nothing read.
    """
    if not isinstance(images_dir, Path) or getattr(images_dir, "protocol", "") not in ("", "file", "local"):
        return _list_remote(images_dir)
    found: list[PhotoFile] = []
    if not images_dir.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(images_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not _is_photo_name(name):
                continue
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            relpath = path.relative_to(images_dir).as_posix()
            found.append(PhotoFile(path, relpath, stat.st_size, str(stat.st_mtime_ns)))
    found.sort(key=lambda f: f.relpath)
    return found


def _is_photo_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _list_remote(images_dir: Path) -> list[PhotoFile]:
    from lora_assets.remote import PARTIAL, remote_errors

    base = images_dir.path.rstrip("/")
    with remote_errors(str(images_dir)):
        found = images_dir.fs.find(base, detail=True) if images_dir.fs.exists(base) else {}
    photos = []
    for key, info in found.items():
        relpath = key[len(base) + 1 :]
        parts = relpath.split("/")
        if (
            any(part.startswith(".") for part in parts)
            or PARTIAL in parts[-1]
            or not _is_photo_name(parts[-1])
        ):
            continue
        version = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "").strip('"')
        photos.append(PhotoFile(images_dir / relpath, relpath, int(info.get("size") or 0), version))
    return sorted(photos, key=lambda f: f.relpath)


def folder_fingerprint(images_dir: Path) -> str:
    """Digest of (relative path, size, version) of every photo: changes when files are added,
    removed or replaced, without reading any file's bytes."""
    return hash_lines(f"{f.relpath}\t{f.size}\t{f.version}" for f in list_photo_files(images_dir))
