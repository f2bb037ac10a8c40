"""Everything one training run needs, as plain JSON (it crosses the Pipes boundary).

The options are the subject's `[training]` settings themselves (declared once, in `settings.py`);
dataset options (buckets, caption shuffling, flips, repeats) come from the zip's
`dataset_config.toml`. What is added here is only what a run needs besides settings: where
things are, the resolved model files, and the names that go into the LoRA.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lora_assets.settings import TrainingSettings


class ModelFiles(BaseModel):
    """`[training] base_model`, `vae`, `base_config` resolved to local paths (or a hub id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str
    vae: str | None = None
    base_config: str | None = None


class SyncSpec(BaseModel):
    """A URL data root: the training process pulls its inputs and publishes checkpoints and the
    LoRA itself, so it can run where the step's files are not (a GPU pod)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_root: str
    subject: str


class TrainConfig(BaseModel):
    """One LoRA run. Paths are absolute strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_zip: str
    work_dir: str = Field(description="checkpoints, caches and the unzipped dataset")
    output_file: str
    log_file: str = Field(description="training_log.json")
    samples_dir: str
    diffusers_dir: str = Field(description="where `export_diffusers` writes its copy")
    output_name: str
    trigger: str
    class_token: str
    models: ModelFiles
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    sample_resolution: int | None = Field(None, description="default: the dataset's resolution")
    training_key: str = ""
    sync: SyncSpec | None = None
    extra_metadata: dict[str, str] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From the JSON a Pipes launcher or `--config` sent; unknown keys are an error."""
        return cls.model_validate(values)

    def sample_prompts(self) -> list[str]:
        """`[training] sample_prompts` with {trigger} and {class_token} filled in."""
        return [
            prompt.format(trigger=self.trigger, class_token=self.class_token)
            for prompt in self.training.sample_prompts
        ]
