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

from lora_assets.remote import RemoteRoot, is_url, local_root, storage_options
from lora_assets.subjects import is_subject_name, validate_subject_name

DATA_ROOT_ENV = "LORA_ASSETS_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"
SETTINGS_FILE = "subject.toml"


def default_data_root() -> str:
    """The data root (a path or a URL) from the environment, else `./data`."""
    return os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)


def working_layout(root: str) -> DataLayout:
    """Where stages read and write files: the root itself, or this machine's mirror of a URL root
    (see `remote.py`)."""
    return DataLayout(RemoteRoot(root).mirror) if is_url(root) else DataLayout(local_root(root))


def view_layout(root: str) -> DataLayout:
    """The root as it is, for listings and small reads: a URL root is read in place (no mirror)."""
    if not is_url(root):
        return DataLayout(local_root(root))
    from upath import UPath

    return DataLayout(UPath(root, **storage_options(root)))


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
        return sorted(name for name in self._folders() if is_subject_name(name))

    def invalid_subject_folders(self) -> list[str]:
        """Folders under `subjects/` whose names cannot be subjects (reported, never used)."""
        return sorted(name for name in self._folders() if not is_subject_name(name))

    def _folders(self) -> list[str]:
        if not self.subjects_dir.is_dir():
            return []
        return [c.name for c in self.subjects_dir.iterdir() if c.is_dir() and not c.name.startswith(".")]


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject, by what they are (folders are created by `stage_dir`)."""

    layout: DataLayout
    name: str

    def synced(self, asset: str) -> tuple[list[Path], list[Path]]:
        """(what the stage of `asset` reads, what it writes): on a URL root both are pulled into
        the mirror before it runs, and what it writes is published after. A final `*.ext`
        component narrows a folder to one kind of file. (Training publishes its own work: see
        `TrainingWork.synced`.)"""
        stage = self.layout.work_dir(self.name, asset)
        thumbs = self.raw_cache / "thumbs"
        reads: dict[str, list[Path]] = {
            "raw_images": [self.photos],
            "deduped_images": [self.photos, self.raw_manifest, thumbs],
            "filtered_images": [self.photos, self.dedup_selected, thumbs],
            "captions": [self.photos / "*.txt", self.filter_table, self.training_copies],
            "dataset_zip": [self.captions_table, self.training_copies],
            "lora": [self.dataset_zip, self.layout.loras_dir(self.name)],
        }
        writes: dict[str, list[Path]] = {
            "deduped_images": [stage, self.measure_cache],
            "filtered_images": [stage, self.measure_cache],
            "lora": [],
        }
        return [self.settings, *reads.get(asset, [])], writes.get(asset, [stage])

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
        """Checkpoints, latent and text caches, the unzipped dataset (see `TrainingWork`)."""
        return self.layout.work_dir(self.name, "lora")

    @property
    def lora_file(self) -> Path:
        return self.layout.loras_dir(self.name) / f"{self.name}.safetensors"

    def disk_bytes(self) -> int:
        """What the subject costs on disk besides its photos: `work/<s>/` and `loras/<s>/`, each
        file counted once however many hard links it has."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for folder in (self.layout.root / "work" / self.name, self.layout.loras_dir(self.name)):
            for path in folder.rglob("*") if folder.is_dir() else []:
                stat = path.lstat()
                if path.is_file() and (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_size
        return total

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


@dataclass(frozen=True)
class TrainingWork:
    """The training stage's work folder: one checkpoint folder per training key, the latent and
    text-encoder caches, the compiler cache and the unzipped dataset."""

    root: Path

    def run(self, key: str) -> Path:
        return self.root / "runs" / (key or "default")

    @property
    def latents(self) -> Path:
        return self.root / "cache" / "latents"

    @property
    def text(self) -> Path:
        return self.root / "cache" / "text"

    @property
    def inductor(self) -> Path:
        """torch.compile's cache: machine-specific, never published."""
        return self.root / "cache" / "inductor"

    @property
    def dataset(self) -> Path:
        """The unzipped dataset: re-made from the zip, never published."""
        return self.root / "dataset"

    def synced(self, key: str, files: SubjectFiles) -> tuple[list[Path], list[Path]]:
        """What a training run pulls (the zip, its checkpoints, the caches) and publishes
        (checkpoints, caches, the LoRA folder) on a URL root."""
        work = [self.run(key), self.latents, self.text]
        return [files.dataset_zip, *work], [*work, files.layout.loras_dir(files.name)]
