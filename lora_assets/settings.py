"""Per-subject settings: one pydantic model per stage, defaults, strict parsing and stable hashes.

`data/subjects/<s>/subject.toml` holds only what a subject overrides:

    class_token = "man"
    trigger = "ohwx"
    [captions]
    max_words = 60

Each stage's *effective* settings (defaults + overrides, plus the subject-wide fields the stage
uses) hash to that stage's settings version, which Dagster sees through one observable source
asset per stage, so editing `[captions]` marks only captions and what is below it stale.
"""

from __future__ import annotations

import tomllib
import types
import typing
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from lora_assets.digests import short_version, stable_hash, stable_json
from lora_assets.images.rules import MAX_PIXELS, DedupRules, similarity_threshold
from lora_assets.models.references import CHECKPOINT_SUFFIXES
from lora_assets.stages import STAGES


def _safe_word(value: str) -> str:
    """A trigger or class token names the zip's folder (`10_ohwx man/`) and starts every caption:
    no commas (caption parts), no path separators or `..` (the folder), no control characters."""
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise ValueError(f"must not contain control characters such as newlines or tabs (got {value!r})")
    if "," in value or "/" in value or "\\" in value:
        raise ValueError(f"must not contain commas or path separators (got {value!r})")
    if ".." in value or value.strip() != value or not value.strip():
        raise ValueError(f"must not contain '..' or start or end with spaces (got {value!r})")
    return value


Word = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_safe_word)]
# Marks a field that changes how or when a stage runs, never what it produces (batch sizes,
# compilation, automation): it is left out of the stage's settings version, so editing it reruns
# nothing. `lora_assets_tests/test_settings_reach.py` proves each such field still takes effect.
UNVERSIONED: dict[str, Any] = {"versioned": False}


class StageSettings(BaseModel):
    """Base of every settings table: unknown keys and wrong types are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IngestSettings(StageSettings):
    """`[ingest]`: what `raw_images` accepts."""

    max_pixels: int = Field(
        MAX_PIXELS, gt=0, description="reject images with more pixels (decompression bombs)"
    )


class DedupSettings(StageSettings):
    """`[dedup]`: near-duplicate grouping and manual pins (file names relative to `images/`)."""

    similarity: Literal["low", "medium", "high"] | Annotated[float, Field(ge=0.5, le=1.0)] = Field(
        "medium", description="'low', 'medium', 'high' (0.85/0.90/0.95) or a number 0.5-1"
    )
    crop_tolerant: bool = Field(True, description="also group copies cropped by up to 10% a side")
    drop_similar: bool = Field(
        False, description="also drop 'similar' shots (bursts), not only copies of one photo"
    )
    keep: list[str] = Field(default_factory=list, description="always keep these files")
    drop: list[str] = Field(default_factory=list, description="always drop these files")
    not_duplicates: list[Annotated[list[str], Field(min_length=2)]] = Field(
        default_factory=list, description="groups of files that must never be grouped together"
    )

    @model_validator(mode="after")
    def _pins_consistent(self) -> DedupSettings:
        both = sorted(set(self.keep) & set(self.drop))
        if both:
            raise ValueError(f"in both keep and drop: {', '.join(both)}")
        return self

    @property
    def threshold(self) -> float:
        """The similarity as a number (presets resolved)."""
        return similarity_threshold(self.similarity)

    def rules(self) -> DedupRules:
        """These settings as the dedup engine takes them."""
        return DedupRules(
            threshold=self.threshold,
            crop_tolerant=self.crop_tolerant,
            drop_similar=self.drop_similar,
            keep=tuple(self.keep),
            drop=tuple(self.drop),
            not_duplicates=tuple(tuple(names) for names in self.not_duplicates),
        )


class FilterSettings(StageSettings):
    """`[filter]`: which images are good enough to train on, and the training-ready copies."""

    min_short_side: int = Field(512, ge=1, description="minimum short side in pixels (after EXIF rotation)")
    min_effective_mp: float = Field(
        0.1, ge=0, description="minimum effective (real-detail) megapixels; rejects upscales"
    )
    max_side: int = Field(2048, ge=64, description="downscale training copies above this long side")
    jpeg_quality: int = Field(95, ge=70, le=100, description="quality of training-ready JPEG copies")
    blur_ratio: float = Field(
        0.35, gt=0, lt=1, description="flag 'blurry' below this fraction of the subject's median sharpness"
    )
    artifact_quality: int = Field(
        60, ge=1, le=100, description="flag 'jpeg artifacts' below this estimated JPEG quality"
    )
    low_resolution_mp: float = Field(
        0.25, ge=0, description="flag 'low resolution' below this many effective megapixels"
    )
    noise_sigma: float = Field(
        6.0, gt=0, description="flag 'noisy' above this estimated noise level (8-bit units)"
    )


class QualityTags(StageSettings):
    """Tag text per quality flag; an empty string turns that tag off."""

    blurry: str = Field("blurry", description="tag for images flagged blurry ('' turns it off)")
    jpeg_artifacts: str = Field("jpeg artifacts", description="tag for heavy JPEG compression")
    low_resolution: str = Field("low quality", description="tag for low effective resolution")
    monochrome: str = Field("monochrome", description="tag for black-and-white images")
    noisy: str = Field("noise", description="tag for heavy sensor noise")


class CaptionSettings(StageSettings):
    """`[captions]`: the captioner, caption length in words, quality tags and manual overrides."""

    captioner: Literal["blip", "template"] = Field("blip", description="'blip' or 'template'")
    model_id: str = Field(
        "Salesforce/blip-image-captioning-large",
        description="Hugging Face repo id or local folder of a BLIP captioning model",
    )
    revision: str = Field("main", description="model revision (branch, tag or commit)")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=512,
        description="images per captioning batch (default: 64 on a GPU, 8 on a CPU)",
        json_schema_extra=UNVERSIONED,
    )
    num_beams: int = Field(3, ge=1, le=16, description="beam search width")
    min_words: int = Field(30, ge=0, description="shortest caption in words (BLIP part)")
    max_words: int = Field(100, ge=1, description="longest caption in words (BLIP part)")
    repetition_penalty: float = Field(1.3, ge=1.0, description="discourages BLIP's repetition loops")
    no_repeat_ngram_size: int = Field(3, ge=0, description="no n-gram of this size appears twice (0: off)")
    prompt: str = Field("a picture of", description="BLIP text prompt, stripped from the caption")
    template: str = Field("a photo of {trigger} {class_token}", description="the 'template' captioner's text")
    quality_tags: QualityTags = Field(default_factory=QualityTags)
    overrides: dict[str, str] = Field(
        default_factory=dict, description="file name (relative to images/) -> caption"
    )

    @model_validator(mode="after")
    def _words_in_order(self) -> CaptionSettings:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class DatasetSettings(StageSettings):
    """`[dataset]`: the Kohya DreamBooth zip."""

    repeats: int = Field(10, ge=1, description="Kohya repeats (the N in 'N_trigger class')")
    resolution: int = Field(512, ge=64, description="training resolution (sd-scripts dataset_config)")
    min_bucket_reso: int = Field(256, ge=64, description="smallest bucket side (sd-scripts)")
    max_bucket_reso: int = Field(1024, ge=64, description="largest bucket side (sd-scripts)")
    bucket_reso_steps: int = Field(64, ge=8, description="bucket side step in pixels")
    remote_uri: str | None = Field(
        None, description="also copy the zip here through fsspec (s3://..., gs://..., file://...)"
    )

    @model_validator(mode="after")
    def _buckets_consistent(self) -> DatasetSettings:
        if not self.min_bucket_reso <= self.resolution <= self.max_bucket_reso:
            raise ValueError(
                f"need min_bucket_reso ({self.min_bucket_reso}) <= resolution ({self.resolution}) "
                f"<= max_bucket_reso ({self.max_bucket_reso})"
            )
        if self.bucket_reso_steps % 8:
            raise ValueError(
                f"bucket_reso_steps ({self.bucket_reso_steps}) must be a multiple of 8 (latent size)"
            )
        return self


class TrainingSettings(StageSettings):
    """`[training]`: the LoRA run; defaults follow the user's Kohya notebook."""

    base_model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="Hugging Face repo id, local diffusers folder or single .safetensors/.ckpt file",
    )
    revision: str = Field("main", description="hub revision of base_model")
    base_config: str | None = Field(
        None, description="diffusers config folder for a single-file base_model (default: bundled SD 1.5)"
    )
    vae: str | None = Field(None, description="VAE override: .safetensors/.pt/.ckpt file or folder")
    network_dim: int = Field(32, ge=1, le=1024, description="LoRA rank of the UNet")
    network_alpha: float = Field(16.0, gt=0, description="LoRA alpha of the UNet (scale alpha/dim)")
    train_text_encoder: bool = Field(True, description="also train a text-encoder LoRA")
    text_encoder_dim: int | None = Field(None, ge=1, le=1024, description="defaults to network_dim")
    text_encoder_alpha: float | None = Field(None, gt=0, description="defaults to network_alpha")
    unet_lr: float = Field(1e-4, gt=0, description="UNet learning rate")
    text_encoder_lr: float = Field(5e-5, gt=0, description="text-encoder learning rate")
    optimizer: Literal["AdamW", "AdamW8bit"] = Field(
        "AdamW8bit", description="AdamW8bit falls back to AdamW without bitsandbytes + CUDA"
    )
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"] = Field(
        "constant", description="learning-rate schedule (diffusers get_scheduler names)"
    )
    lr_warmup_steps: int = Field(0, ge=0, description="warm-up steps of the schedule")
    epochs: int = Field(10, ge=1, description="passes over (images x repeats)")
    batch_size: int = Field(6, ge=1, description="images per step (drawn within one bucket)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches per optimizer step")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto",
        description="used on CUDA only (CPU trains in fp32); auto: bf16 where the card has it, else fp16",
    )
    seed: int = Field(42, ge=0, description="seed of the whole run (recorded in the LoRA)")
    clip_skip: int = Field(1, ge=1, le=12, description="use the N-th last text-encoder layer")
    min_snr_gamma: float | None = Field(None, gt=0, description="min-SNR loss weighting gamma (5 is usual)")
    noise_offset: float = Field(0.0, ge=0, description="noise offset (0.05-0.1 helps dark/bright images)")
    gradient_checkpointing: bool = Field(
        False, description="trade compute for memory (same result)", json_schema_extra=UNVERSIONED
    )
    shuffle_caption: bool = Field(
        False, description="shuffle comma-separated caption parts (written to dataset_config.toml)"
    )
    keep_tokens: int = Field(
        1, ge=0, description="caption parts kept first when shuffling (written to dataset_config.toml)"
    )
    flip_aug: bool = Field(False, description="random horizontal flips (written to dataset_config.toml)")
    bucket_no_upscale: bool = Field(
        True, description="never upscale an image to fit a bucket (written to dataset_config.toml)"
    )
    save_every_n_epochs: int = Field(1, ge=1, description="checkpoint + samples every N epochs")
    keep_last_checkpoints: int = Field(
        2, ge=1, description="checkpoints kept for resuming", json_schema_extra=UNVERSIONED
    )
    sample_prompts: list[str] = Field(
        default_factory=lambda: ["{trigger} {class_token}, portrait photo"],
        description="prompts rendered after each saved epoch ({trigger}/{class_token} filled in)",
    )
    sample_steps: int = Field(20, ge=1, description="inference steps of sample images")
    compile_unet: bool | Literal["auto", "regional"] = Field(
        "auto",
        description="torch.compile on CUDA: true (whole UNet, minutes per bucket shape), 'regional' (its "
        "repeated transformer block, compiled once and reused), 'auto' (regional when the run is long "
        "enough to earn it back), false",
        json_schema_extra=UNVERSIONED,
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "reduce-overhead",
        description="torch.compile mode; reduce-overhead adds CUDA graphs",
        json_schema_extra=UNVERSIONED,
    )
    export_diffusers: bool = Field(False, description="also save a diffusers/PEFT-format copy")
    automation: Literal["eager", "cron"] | None = Field(
        None,
        description="'eager': retrain as soon as the dataset changes; 'cron': at the next retrain cron "
        "tick; unset: $LORA_ASSETS_TRAINING_AUTOMATION (default 'cron')",
        json_schema_extra=UNVERSIONED,
    )

    @model_validator(mode="after")
    def _warmup_needs_a_warmup_schedule(self) -> TrainingSettings:
        if self.lr_warmup_steps and self.lr_scheduler == "constant":
            raise ValueError(
                f"lr_warmup_steps = {self.lr_warmup_steps} has no effect with lr_scheduler = 'constant': "
                "use 'constant_with_warmup' (or 'cosine', 'linear')"
            )
        return self

    @property
    def single_file_base(self) -> bool:
        """Whether `base_model` names one checkpoint file (then `base_config` applies)."""
        return self.base_model.lower().endswith(CHECKPOINT_SUFFIXES)


# The `[captions]` fields only the BLIP captioner reads.
BLIP_FIELDS = frozenset(
    {
        "model_id",
        "revision",
        "batch_size",
        "num_beams",
        "min_words",
        "max_words",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "prompt",
    }
)


def inactive_fields(settings: SubjectSettings, stage: str) -> set[str]:
    """Fields of a stage's table that the other values make irrelevant (the template when BLIP
    captions, the text-encoder options when it is frozen…): left out of the settings version, so
    editing them reruns nothing."""
    if stage == "captions":
        return {"template"} if settings.captions.captioner == "blip" else set(BLIP_FIELDS)
    if stage != "training":
        return set()
    t, inactive = settings.training, set()
    if not t.train_text_encoder:
        inactive |= {"text_encoder_dim", "text_encoder_alpha", "text_encoder_lr"}
    if not t.sample_prompts:
        inactive.add("sample_steps")
    if not t.single_file_base:
        inactive.add("base_config")
    return inactive


# Fields of other tables a stage's output depends on: the captions, the zip's folder and the
# LoRA's metadata name the trigger; the zip's dataset_config.toml carries the [training] options
# that sd-scripts reads from a dataset config (and our trainer reads them back from the zip).
BORROWED_FIELDS: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "dedup": (),
    "filter": (),
    "captions": ("class_token", "trigger"),
    "dataset": (
        "class_token",
        "trigger",
        "training.shuffle_caption",
        "training.keep_tokens",
        "training.flip_aug",
        "training.bucket_no_upscale",
    ),
    "training": ("class_token", "trigger"),
}


def unversioned_fields(model: type[BaseModel]) -> set[str]:
    """Names of `model`'s fields marked `UNVERSIONED`."""
    return {
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("versioned") is False
    }


class SubjectSettings(StageSettings):
    """The whole `subject.toml`: subject-wide fields and one table per stage."""

    class_token: Word = Field("man", description="class word after the trigger (Kohya 'class')")
    trigger: Word | None = Field(None, description="trigger word; defaults to the subject name")
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    captions: CaptionSettings = Field(default_factory=CaptionSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)

    def stage(self, stage: str) -> dict[str, Any]:
        """A stage's effective settings as plain data: its table (without `UNVERSIONED` and
        inactive fields) plus the fields of other tables it uses (`BORROWED_FIELDS`, by dotted name)."""
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        table = getattr(self, stage)
        excluded = unversioned_fields(type(table)) | inactive_fields(self, stage)
        values = table.model_dump(mode="json", exclude=excluded)
        for dotted in BORROWED_FIELDS[stage]:
            holder: Any = self
            for part in dotted.split("."):
                holder = getattr(holder, part)
            values[dotted] = holder
        return values

    def stage_version(self, stage: str) -> str:
        """Hash of a stage's effective settings: its Dagster data version."""
        return short_version(stable_hash({"stage": stage, "settings": self.stage(stage)}))


class SettingsError(ValueError):
    """A `subject.toml` that cannot be used; the message names the file, the key and what is allowed."""


def load_subject_settings(path: Path, subject: str) -> SubjectSettings:
    """Parse `path` (a missing file means all defaults); the trigger defaults to `subject`."""
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    return parse_subject_settings(raw, subject, source=str(path))


def parse_subject_settings(raw: dict[str, Any], subject: str, source: str) -> SubjectSettings:
    """Validate a parsed TOML document; `source` names it in error messages."""
    try:
        settings = SubjectSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"  - {line}" for line in _describe_errors(exc))
        raise SettingsError(f"{source}: invalid settings:\n{problems}") from None
    if settings.trigger is None:
        settings = settings.model_copy(update={"trigger": subject})
    return settings


def _describe_errors(exc: ValidationError) -> list[str]:
    """One line per bad key: `[table] key: problem (allowed ...)`, union alternatives merged."""
    merged: dict[str, list[str]] = {}
    for error in exc.errors():
        path, holder, is_table = _field_path(error["loc"])
        if error["type"] == "extra_forbidden":
            message = f"unknown key; allowed keys: {', '.join(holder.model_fields)}"
        elif error["type"] == "value_error":
            message = error["msg"].removeprefix("Value error, ")
        elif error["type"] == "string_pattern_mismatch":
            message = f"must not contain commas, tabs or newlines (got {error['input']!r})"
        else:
            message = f"{error['msg']} (got {error['input']!r})"
        table, key = ".".join(path[:-1]), (path[-1] if path else "")
        if is_table:
            where = f"[{'.'.join(path)}]"
        elif table:
            where = f"[{table}] {key}"
        else:
            where = key or "(top level)"
        messages = merged.setdefault(where, [])
        if message not in messages:
            messages.append(message)
    return [f"{where}: {' or '.join(messages)}" for where, messages in merged.items()]


def _field_path(loc: tuple[int | str, ...]) -> tuple[list[str], type[BaseModel], bool]:
    """The loc's key names (without pydantic's union-member tags), the model holding the last one,
    and whether the last one is itself a table."""
    model: type[BaseModel] | None = SubjectSettings
    holder: type[BaseModel] = SubjectSettings
    path: list[str] = []
    for part in loc:
        if isinstance(part, int):
            if path:
                path[-1] += f"[{part}]"
            continue
        if model is None:
            break
        holder = model
        path.append(part)
        if part not in model.model_fields:
            break
        model = _nested_model(model.model_fields[part].annotation)
    is_table = bool(path) and model is not None and path[-1] in holder.model_fields
    return path, holder, is_table


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside an annotation like `QualityTags` or `Optional[QualityTags]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found:
                return found
    return None


def settings_reference_markdown() -> str:
    """The `subject.toml` reference table of the README, generated from the models themselves."""
    lines = ["| key | default | meaning |", "|---|---|---|"]

    def emit(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            nested = _nested_model(field.annotation)
            if nested is not None:
                emit(nested, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            shown = "unset" if default is None else f"`{stable_json(default)}`"
            where = f"`[{prefix[:-1]}] {name}`" if prefix else f"`{name}`"
            meaning = field.description or ""
            if name in unversioned_fields(model):
                meaning += " *(how or when, not what: editing it reruns nothing)*"
            lines.append(f"| {where} | {shown} | {meaning} |")

    emit(SubjectSettings, "")
    return "\n".join(lines)
