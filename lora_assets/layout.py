"""Where every file of every subject lives under a data root: the one place that names them.

    subjects/<s>/images/…              the user's photos (read only to us)
    subjects/<s>/subject.toml          per-subject settings
    work/<s>/<asset>/…                 what each stage writes (folder named after its asset)
    loras/<s>/<s>.safetensors          the LoRA, its training log, samples

`DataLayout` is the root; `SubjectFiles` names each stage's outputs for one subject, and is what
the stage that writes a file, the stages that read it, the checks and the CLI all use. No
Dagster import here (the CLI and the training process use it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lora_assets.subjects import validate_subject_name

DATA_ROOT_ENV = "LORA_ASSETS_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"
SETTINGS_FILE = "subject.toml"


def default_data_root() -> str:
    """The data root from the environment, else `./data`."""
    return os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class DataLayout:
    """Paths under one data root."""

    root: Path

    @property
    def subjects_dir(self) -> Path:
        return self.root / "subjects"

    def subject_dir(self, subject: str) -> Path:
        return self.subjects_dir / validate_subject_name(subject)

    def images_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "images"

    def settings_file(self, subject: str) -> Path:
        return self.subject_dir(subject) / SETTINGS_FILE

    def work_dir(self, subject: str, folder: str) -> Path:
        """`work/<subject>/<folder>/`: a stage's folder (named after its asset) or a shared cache."""
        return self.root / "work" / validate_subject_name(subject) / folder

    def loras_dir(self, subject: str) -> Path:
        return self.root / "loras" / validate_subject_name(subject)

    def subject(self, subject: str) -> SubjectFiles:
        """Every named file of one subject."""
        return SubjectFiles(self, validate_subject_name(subject))

    def subject_names(self) -> list[str]:
        """Folder names under `subjects/` that are valid subject names, sorted."""
        if not self.subjects_dir.is_dir():
            return []
        names = []
        for child in self.subjects_dir.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                try:
                    names.append(validate_subject_name(child.name))
                except ValueError:
                    continue
        return sorted(names)


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject, by what they are (folders are created by `stage_dir`)."""

    layout: DataLayout
    name: str

    def stage_dir(self, asset: str) -> Path:
        """The work folder of the stage computed by `asset`, created if missing."""
        path = self.layout.work_dir(self.name, asset)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _in(self, asset: str, name: str) -> Path:
        return self.layout.work_dir(self.name, asset) / name

    # -- the user's files -------------------------------------------------------------------
    @property
    def photos(self) -> Path:
        return self.layout.images_dir(self.name)

    @property
    def settings(self) -> Path:
        return self.layout.settings_file(self.name)

    # -- raw_images ---------------------------------------------------------------------------
    @property
    def raw_manifest(self) -> Path:
        """Accepted photos: sha256, path, format, oriented size, ICC, JPEG quality…"""
        return self._in("raw_images", "manifest.parquet")

    @property
    def raw_rejected(self) -> Path:
        return self._in("raw_images", "rejected.parquet")

    @property
    def raw_cache(self) -> Path:
        """Path index, per-sha256 measurements and thumbnails of the inventory."""
        return self._in("raw_images", "cache")

    @property
    def raw_contact_sheet(self) -> Path:
        return self._in("raw_images", "contact_sheet.jpg")

    @property
    def measure_cache(self) -> Path:
        """Per-sha256 hashes and detail measures, shared by dedup and filter."""
        return self.layout.work_dir(self.name, "measures")

    # -- deduped_images -----------------------------------------------------------------------
    @property
    def dedup_groups(self) -> Path:
        return self._in("deduped_images", "groups.parquet")

    @property
    def dedup_selected(self) -> Path:
        """The manifest rows that go on to filtering."""
        return self._in("deduped_images", "selected.parquet")

    @property
    def dedup_similar(self) -> Path:
        return self._in("deduped_images", "similar.parquet")

    @property
    def dedup_sheet(self) -> Path:
        return self._in("deduped_images", "groups_sheet.jpg")

    # -- filtered_images ----------------------------------------------------------------------
    @property
    def filter_table(self) -> Path:
        """One row per training copy: file name, sizes, quality measures and flags."""
        return self._in("filtered_images", "filtered.parquet")

    @property
    def filter_rejected(self) -> Path:
        return self._in("filtered_images", "rejected.parquet")

    @property
    def training_copies(self) -> Path:
        """The training-ready copies, named by `training_copy.copy_name`."""
        return self._in("filtered_images", "images")

    @property
    def copy_cache(self) -> Path:
        return self._in("filtered_images", "cache")

    # -- captions -----------------------------------------------------------------------------
    @property
    def captions_table(self) -> Path:
        return self._in("captions", "captions.parquet")

    @property
    def caption_cache(self) -> Path:
        return self._in("captions", "cache")

    # -- dataset_zip --------------------------------------------------------------------------
    @property
    def dataset_zip(self) -> Path:
        return self._in("dataset_zip", f"{self.name}.zip")

    # -- lora ---------------------------------------------------------------------------------
    @property
    def training_work(self) -> Path:
        """Checkpoints, latent and text caches, the unzipped dataset."""
        return self.layout.work_dir(self.name, "lora")

    @property
    def lora_file(self) -> Path:
        return self.layout.loras_dir(self.name) / f"{self.name}.safetensors"

    @property
    def training_log(self) -> Path:
        """Losses, timings and sample paths of the run that wrote the LoRA."""
        return self.layout.loras_dir(self.name) / "training_log.json"

    @property
    def samples(self) -> Path:
        return self.layout.loras_dir(self.name) / "samples"

    @property
    def diffusers_copy(self) -> Path:
        """The optional diffusers/PEFT-format copy (`export_diffusers`)."""
        return self.layout.loras_dir(self.name) / f"{self.name}-diffusers"
