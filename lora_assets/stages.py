"""The pipeline's one table: each stage, the asset that computes it and the source of its settings.

A stage's name is its table in `subject.toml` (`[filter]`), its asset is what Dagster shows
(`filtered_images`, also the name of its folder under `work/<subject>/`), and its settings reach
Dagster through the observable source `<stage>_settings`. No Dagster import here: the CLI, the
library and the tests read this table too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline."""

    name: str
    asset: str

    @property
    def settings_source(self) -> str:
        """Asset name of the observable source versioning this stage's settings, e.g. `captions_settings`."""
        return f"{self.name}_settings"


PIPELINE: tuple[Stage, ...] = (
    Stage("ingest", "raw_images"),
    Stage("dedup", "deduped_images"),
    Stage("filter", "filtered_images"),
    Stage("captions", "captions"),
    Stage("dataset", "dataset_zip"),
    Stage("training", "lora"),
)
STAGES: tuple[str, ...] = tuple(stage.name for stage in PIPELINE)
ASSETS: tuple[str, ...] = tuple(stage.asset for stage in PIPELINE)


def stage_named(name: str) -> Stage:
    """The stage whose settings table is `name`."""
    for stage in PIPELINE:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
