"""Where every stage of every subject keeps its files (see DESIGN.md, "Data root").

`DataLayout` is the plain path logic (used by the CLI and the library); `DataRoot` is the Dagster
resource that hands one to assets, sensors and schedules. The root defaults to `./data` and is
overridden by the `LORA_ASSETS_DATA_ROOT` environment variable or the resource's config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from lora_assets.subjects import validate_subject_name

DATA_ROOT_ENV = "LORA_ASSETS_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"
SETTINGS_FILE = "subject.toml"


def default_data_root() -> str:
    """The data root from the environment, else `./data`."""
    return os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class DataLayout:
    """Paths under one data root: `subjects/<s>/` (the user's, read only), `work/<s>/<stage>/`,
    `loras/<s>/`."""

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

    def work_dir(self, subject: str, stage: str) -> Path:
        return self.root / "work" / validate_subject_name(subject) / stage

    def loras_dir(self, subject: str) -> Path:
        return self.root / "loras" / validate_subject_name(subject)

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


class DataRoot(dg.ConfigurableResource):
    """The data root as a Dagster resource; `path` may be relative to the working directory."""

    path: str = DEFAULT_DATA_ROOT

    def layout(self) -> DataLayout:
        return DataLayout(Path(self.path).expanduser().resolve())
