"""A Kohya DreamBooth dataset zip, reproducible to the byte.

Layout (what sd-scripts and the Kohya notebooks expect):

    <repeats>_<trigger> <class_token>/<image>        training copies
    <repeats>_<trigger> <class_token>/<image>.txt    captions (one extension everywhere)
    dataset_config.toml                              sd-scripts dataset config: buckets, caption
                                                     shuffling, flips (what our trainer reads too)
    metadata.jsonl                                   Hugging Face `imagefolder` captions

Entries are sorted, timestamps fixed at 1980-01-01, permissions 0644, images stored and text
deflated; so the same content gives the same sha256. The zip is written under a temporary name,
re-opened and verified (CRCs, every image has a caption), then renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from lora_assets import crash
from lora_assets.digests import sha256_file

if TYPE_CHECKING:
    from lora_assets.settings import DatasetSettings, TrainingSettings

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
CONFIG_NAME = "dataset_config.toml"
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


@dataclass(frozen=True)
class DatasetOptions:
    """The options of an sd-scripts dataset config that this zip carries: written from the
    `[dataset]` and `[training]` settings, read back by the trainer (the zip is what it trains on)."""

    repeats: int
    resolution: int
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    shuffle_caption: bool
    keep_tokens: int
    flip_aug: bool

    @classmethod
    def from_settings(cls, dataset: DatasetSettings, training: TrainingSettings) -> DatasetOptions:
        return cls(
            repeats=dataset.repeats,
            resolution=dataset.resolution,
            min_bucket_reso=dataset.min_bucket_reso,
            max_bucket_reso=dataset.max_bucket_reso,
            bucket_reso_steps=dataset.bucket_reso_steps,
            bucket_no_upscale=training.bucket_no_upscale,
            shuffle_caption=training.shuffle_caption,
            keep_tokens=training.keep_tokens,
            flip_aug=training.flip_aug,
        )


def subset_folder(repeats: int, trigger: str, class_token: str) -> str:
    return f"{repeats}_{trigger} {class_token}"


def dataset_config(options: DatasetOptions, folder: str, trigger: str, class_token: str) -> str:
    """sd-scripts' dataset_config.toml for the zip's one subset (paths relative to the unzip folder)."""
    document = {
        "general": {
            "caption_extension": CAPTION_EXTENSION,
            "keep_tokens": options.keep_tokens,
            "shuffle_caption": options.shuffle_caption,
            "flip_aug": options.flip_aug,
            "enable_bucket": True,
        },
        "datasets": [
            {
                "resolution": options.resolution,
                "min_bucket_reso": options.min_bucket_reso,
                "max_bucket_reso": options.max_bucket_reso,
                "bucket_reso_steps": options.bucket_reso_steps,
                "bucket_no_upscale": options.bucket_no_upscale,
                "subsets": [
                    {
                        "image_dir": folder,
                        "class_tokens": f"{trigger} {class_token}",
                        "num_repeats": options.repeats,
                    }
                ],
            }
        ],
    }
    return tomli_w.dumps(document)


def read_dataset_config(text: str) -> DatasetOptions:
    """The options of a dataset_config.toml written by `dataset_config`, with sd-scripts'
    precedence (a subset's value over its dataset's over `[general]`)."""
    document = tomllib.loads(text)
    (dataset,) = document["datasets"]
    (subset,) = dataset["subsets"]
    values: dict[str, Any] = {
        **document.get("general", {}),
        **{k: v for k, v in dataset.items() if k != "subsets"},
        **subset,
    }
    values["repeats"] = values.pop("num_repeats")
    names = DatasetOptions.__dataclass_fields__
    return DatasetOptions(**{name: values[name] for name in names})


def build_zip(
    images: Sequence[DatasetImage], options: DatasetOptions, trigger: str, class_token: str, target: Path
) -> str:
    """Write the dataset zip to `target` atomically; returns its sha256."""
    folder = subset_folder(options.repeats, trigger, class_token)
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
    config = dataset_config(options, folder, trigger, class_token)
    entries.append((CONFIG_NAME, config.encode("utf-8"), zipfile.ZIP_DEFLATED))
    entries.append(
        ("metadata.jsonl", ("\n".join(metadata_lines) + "\n").encode("utf-8"), zipfile.ZIP_DEFLATED)
    )
    entries.sort(key=lambda entry: entry[0])
    for name, _, _ in entries:
        check_entry_name(name)

    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.partial"):  # left by a killed write
        stale.unlink(missing_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            for index, (name, data, compression) in enumerate(entries):
                if index == len(entries) // 2:
                    crash.moment("zip-write")  # half the entries written: the fault suite kills here
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.external_attr = 0o100644 << 16
                info.create_system = 3
                info.compress_type = compression
                archive.writestr(
                    info, data, compress_type=compression, compresslevel=9 if compression else None
                )
        verify_zip(Path(temporary))
        Path(temporary).chmod(0o644)
        digest = sha256_file(Path(temporary))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return digest


def check_entry_name(name: str) -> None:
    """A zip entry must stay inside the folder it is extracted into, whatever the input."""
    parts = name.split("/")
    if (
        name.startswith("/")
        or "\\" in name
        or any(p in ("", ".", "..") for p in parts)
        or not name.isprintable()
    ):
        raise DatasetError(f"unsafe zip entry name {name!r}")


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
        if CONFIG_NAME not in names or "metadata.jsonl" not in names:
            raise DatasetError(f"{path}: {CONFIG_NAME} or metadata.jsonl missing")
        return captions


def copy_to_remote(path: Path, uri: str) -> str:
    """Copy the zip to an fsspec URI (s3://, gs://, file://, memory://...); returns the URI written."""
    import fsspec

    destination = uri.rstrip("/") + "/" + path.name if uri.endswith("/") else uri
    with open(path, "rb") as source, fsspec.open(destination, "wb") as sink:
        while chunk := source.read(1 << 20):
            sink.write(chunk)
    return destination
