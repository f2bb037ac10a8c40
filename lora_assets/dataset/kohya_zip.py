"""A Kohya DreamBooth dataset zip, reproducible to the byte.

Layout (what sd-scripts and the Kohya notebooks expect):

    <repeats>_<trigger> <class_token>/<image>        training copies
    <repeats>_<trigger> <class_token>/<image>.txt    captions (one extension everywhere)
    dataset_config.toml                              sd-scripts dataset config (buckets 256-1024/64)
    metadata.jsonl                                   Hugging Face `imagefolder` captions

Entries are sorted, timestamps fixed at 1980-01-01, permissions 0644, images stored and text
deflated; so the same content gives the same sha256. The zip is written under a temporary name,
re-opened and verified (CRCs, every image has a caption), then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tomli_w

if TYPE_CHECKING:  # settings need pydantic; training processes (GPU nodes) only read zips
    from lora_assets.settings import DatasetSettings

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
CAPTION_EXTENSION = ".txt"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class DatasetImage:
    """One training image: its copy on disk, the file name it gets in the zip, its caption."""

    source: Path
    name: str
    caption: str


class DatasetError(ValueError):
    """A zip that fails verification."""


def subset_folder(repeats: int, trigger: str, class_token: str) -> str:
    return f"{repeats}_{trigger} {class_token}"


def dataset_config(settings: DatasetSettings, folder: str, trigger: str, class_token: str) -> str:
    """sd-scripts' dataset_config.toml for the zip's one subset (paths relative to the unzip folder)."""
    document = {
        "general": {
            "caption_extension": CAPTION_EXTENSION,
            "keep_tokens": 1,
            "shuffle_caption": False,
            "enable_bucket": True,
        },
        "datasets": [
            {
                "resolution": settings.resolution,
                "min_bucket_reso": settings.min_bucket_reso,
                "max_bucket_reso": settings.max_bucket_reso,
                "bucket_reso_steps": settings.bucket_reso_steps,
                "bucket_no_upscale": True,
                "subsets": [
                    {
                        "image_dir": folder,
                        "class_tokens": f"{trigger} {class_token}",
                        "num_repeats": settings.repeats,
                    }
                ],
            }
        ],
    }
    return tomli_w.dumps(document)


def build_zip(
    images: Sequence[DatasetImage], settings: DatasetSettings, trigger: str, class_token: str, target: Path
) -> str:
    """Write the dataset zip to `target` atomically; returns its sha256."""
    folder = subset_folder(settings.repeats, trigger, class_token)
    names = [image.name for image in images]
    if len(set(names)) != len(names):
        raise DatasetError("two training images share a file name")
    entries: list[tuple[str, bytes, int]] = []
    metadata_lines = []
    for image in sorted(images, key=lambda i: i.name):
        stem = image.name.rsplit(".", 1)[0]
        entries.append((f"{folder}/{image.name}", image.source.read_bytes(), zipfile.ZIP_STORED))
        entries.append(
            (f"{folder}/{stem}{CAPTION_EXTENSION}", image.caption.encode("utf-8"), zipfile.ZIP_DEFLATED)
        )
        metadata_lines.append(
            json.dumps({"file_name": f"{folder}/{image.name}", "text": image.caption}, ensure_ascii=False)
        )
    config = dataset_config(settings, folder, trigger, class_token)
    entries.append(("dataset_config.toml", config.encode("utf-8"), zipfile.ZIP_DEFLATED))
    entries.append(
        ("metadata.jsonl", ("\n".join(metadata_lines) + "\n").encode("utf-8"), zipfile.ZIP_DEFLATED)
    )
    entries.sort(key=lambda entry: entry[0])

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            for name, data, compression in entries:
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.external_attr = 0o100644 << 16
                info.create_system = 3
                info.compress_type = compression
                archive.writestr(
                    info, data, compress_type=compression, compresslevel=9 if compression else None
                )
        verify_zip(Path(temporary))
        Path(temporary).chmod(0o644)
        digest = hashlib.sha256(Path(temporary).read_bytes()).hexdigest()
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return digest


def verify_zip(path: Path) -> dict[str, str]:
    """Re-open a dataset zip: CRCs must check out and every image must have its caption.
    Returns {image entry: caption}."""
    with zipfile.ZipFile(path) as archive:
        broken = archive.testzip()
        if broken is not None:
            raise DatasetError(f"{path}: CRC error in {broken}")
        names = set(archive.namelist())
        captions = {}
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                caption = name.rsplit(".", 1)[0] + CAPTION_EXTENSION
                if caption not in names:
                    raise DatasetError(f"{path}: {name} has no caption ({caption})")
                captions[name] = archive.read(caption).decode("utf-8")
        if "dataset_config.toml" not in names or "metadata.jsonl" not in names:
            raise DatasetError(f"{path}: dataset_config.toml or metadata.jsonl missing")
        return captions


def copy_to_remote(path: Path, uri: str) -> str:
    """Copy the zip to an fsspec URI (s3://, gs://, file://, memory://...); returns the URI written."""
    import fsspec

    destination = uri.rstrip("/") + "/" + path.name if uri.endswith("/") else uri
    with open(path, "rb") as source, fsspec.open(destination, "wb") as sink:
        while chunk := source.read(1 << 20):
            sink.write(chunk)
    return destination
