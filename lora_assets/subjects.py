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

SUBJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # always fullmatch: `$` accepts "a\n"
# GIF (first frame) and AVIF are read by Pillow itself, HEIC/HEIF through pillow-heif.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".heic", ".heif"}
)
CAPTION_EXTENSION = ".txt"


class InvalidSubjectName(ValueError):
    """A subject name that cannot be a partition key or folder name."""

    RULE = "names are 1-64 letters, digits, '-' or '_', starting with a letter or digit"


def is_subject_name(name: str) -> bool:
    return isinstance(name, str) and SUBJECT_NAME_RE.fullmatch(name) is not None


def validate_subject_name(name: str) -> str:
    """Return `name` unchanged if valid, else raise with what is allowed."""
    if not is_subject_name(name):
        raise InvalidSubjectName(
            f"invalid subject name {name!r}: {InvalidSubjectName.RULE} "
            "(it becomes a partition key and a folder name)"
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

    Hidden files and folders (".DS_Store", ".thumbnails") are skipped. Links are followed (and
    only read) once each: a folder reached again through a link, or a link loop, is not listed
    again. A folder on object storage (a `UPath`) is listed with its sizes and ETags, nothing read.
    """
    return [f for f in list_files(images_dir) if _is_photo_name(f.relpath.rsplit("/", 1)[-1])]


def list_other_files(images_dir: Path) -> list[PhotoFile]:
    """The files under `images_dir` that are neither photos nor caption files: they are listed
    as rejected, so nothing the user put there goes without a trace."""
    return [
        f
        for f in list_files(images_dir, include_hidden=True)
        if not _is_photo_name(name := f.relpath.rsplit("/", 1)[-1])
        and not (name.lower().endswith(CAPTION_EXTENSION) and not name.startswith("."))
    ]


def list_files(images_dir: Path, include_hidden: bool = False) -> list[PhotoFile]:
    """Every file under `images_dir` (see `list_photo_files`)."""
    if not isinstance(images_dir, Path) or getattr(images_dir, "protocol", "") not in ("", "file", "local"):
        return _list_remote(images_dir, include_hidden)
    found: list[PhotoFile] = []
    if not images_dir.is_dir():
        return found
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(images_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if include_hidden or not d.startswith("."))
        for name in filenames:
            if name.startswith(".") and not include_hidden:
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


def _list_remote(images_dir: Path, include_hidden: bool) -> list[PhotoFile]:
    from lora_assets.remote import PARTIAL, remote_errors

    base = images_dir.path.rstrip("/")
    with remote_errors(str(images_dir)):
        found = images_dir.fs.find(base, detail=True) if images_dir.fs.exists(base) else {}
    files = []
    for key, info in found.items():
        relpath = key[len(base) + 1 :]
        parts = relpath.split("/")
        if PARTIAL in parts[-1] or (not include_hidden and any(part.startswith(".") for part in parts)):
            continue
        version = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "").strip('"')
        files.append(PhotoFile(images_dir / relpath, relpath, int(info.get("size") or 0), version))
    return sorted(files, key=lambda f: f.relpath)


def folder_fingerprint(images_dir: Path) -> str:
    """Digest of (relative path, size, version) of every photo: changes when files are added,
    removed or replaced, without reading any file's bytes."""
    return hash_lines(f"{f.relpath}\t{f.size}\t{f.version}" for f in list_photo_files(images_dir))
