"""The training data, read from the dataset zip (the artefact a Kohya user uploads), batched
within aspect buckets in an order that depends only on (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted one would."""

from __future__ import annotations

import random
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lora_assets.dataset.kohya_zip import (
    CAPTION_EXTENSION,
    CONFIG_NAME,
    IMAGE_EXTENSIONS,
    DatasetOptions,
    read_dataset_config,
)
from lora_assets.digests import sha256_file
from lora_assets.training.buckets import Bucket, assign_bucket

SUBSET_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class TrainImage:
    """One image of the dataset: where it was extracted, its content hash, caption and bucket."""

    path: Path
    sha256: str
    caption: str
    repeats: int
    folder: str
    bucket: Bucket
    size: tuple[int, int]  # (width, height) of the image as stored in the zip


def extract_dataset(zip_path: Path, target: Path) -> Path:
    """Unzip once per zip content (a marker holds the zip's sha256); returns the folder."""
    digest = sha256_file(zip_path)
    marker = target / ".zip-sha256"
    if marker.exists() and marker.read_text() == digest:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for old in sorted(target.rglob("*"), reverse=True):
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            old.rmdir()
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            destination = (target / member.filename).resolve()
            if target.resolve() not in destination.parents:
                raise ValueError(f"{zip_path}: entry {member.filename!r} points outside the dataset folder")
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.read(member))
    marker.write_text(digest)
    return target


@dataclass(frozen=True)
class Dataset:
    """An unzipped dataset: its images and the options of its dataset_config.toml."""

    images: list[TrainImage]
    options: DatasetOptions


def read_dataset(folder: Path) -> Dataset:
    """Every `<repeats>_<name>/<image>` with its `.txt` caption, sorted by path, bucketed as the
    folder's dataset_config.toml says."""
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise ValueError(f"{folder}: no {CONFIG_NAME} (buckets and caption options come from it)")
    options = read_dataset_config(config.read_text(encoding="utf-8"))
    images = []
    for subset in sorted(p for p in folder.iterdir() if p.is_dir()):
        match = SUBSET_FOLDER.match(subset.name)
        if not match:
            continue
        repeats = int(match.group(1))
        for path in sorted(subset.iterdir()):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            caption_file = path.with_suffix(CAPTION_EXTENSION)
            if not caption_file.exists():
                raise ValueError(f"{path}: no caption file {caption_file.name}")
            with Image.open(path) as image:
                width, height = image.size
            bucket = assign_bucket(
                width,
                height,
                options.resolution,
                options.min_bucket_reso,
                options.max_bucket_reso,
                options.bucket_reso_steps,
                options.bucket_no_upscale,
            )
            images.append(
                TrainImage(
                    path=path,
                    sha256=sha256_file(path),
                    caption=caption_file.read_text(encoding="utf-8").strip(),
                    repeats=repeats,
                    folder=subset.name,
                    bucket=bucket,
                    size=(width, height),
                )
            )
    if not images:
        raise ValueError(f"{folder}: no `<repeats>_<name>/` folder with images and captions")
    return Dataset(images, options)


def epoch_batches(images: list[TrainImage], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Kohya-style batches for one epoch: every image `repeats` times, shuffled, grouped within
    its bucket, then the batches shuffled; a function of (seed, epoch) only."""
    rng = random.Random(f"{seed}:{epoch}")
    by_bucket: dict[Bucket, list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        by_bucket[image.bucket].extend([index] * image.repeats)
    batches = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        rng.shuffle(members)
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    rng.shuffle(batches)
    return batches


def shuffle_caption(caption: str, keep_tokens: int, seed: str) -> str:
    """Shuffle the comma-separated parts after the first `keep_tokens` (the trigger stays first)."""
    parts = [p.strip() for p in caption.split(",") if p.strip()]
    head, tail = parts[:keep_tokens], parts[keep_tokens:]
    random.Random(seed).shuffle(tail)
    return ", ".join(head + tail)
