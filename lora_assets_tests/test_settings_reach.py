"""Every setting reaches the code that uses it, and changes what it claims to change.

For each field of each stage's table (and the subject-wide `trigger` and `class_token`), a probe
changes that one value in a context where it matters, runs the stage's own asset code (invoked
directly, on real photos with tiny models) and compares with the run without the change:
- a versioned field must change the stage's settings version *and* its output;
- an `UNVERSIONED` field (how or when, not what) must leave the version alone and still show its
  effect (the batch size BLIP ran at, the checkpoints kept, gradient checkpointing, automation);
- what only a GPU exercises (mixed precision, 8-bit AdamW, compilation) must change the
  trainer's decision for a CUDA device; the CPU here trains in fp32 with AdamW, uncompiled.
Fields that other values make irrelevant must leave the version alone (`INACTIVE`). A field added
to the settings without a probe fails `test_every_field_has_a_probe`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import tomli_w
from PIL import Image

from lora_assets.assets.captions import captions
from lora_assets.assets.dataset_zip import dataset_zip
from lora_assets.assets.deduped_images import deduped_images
from lora_assets.assets.filtered_images import filtered_images
from lora_assets.assets.lora import resolve_models, train_config, training_key
from lora_assets.assets.raw_images import raw_images
from lora_assets.assets.subject_run import SubjectRun
from lora_assets.automation import subject_training_mode
from lora_assets.digests import sha256_file, stable_hash
from lora_assets.layout import DataLayout
from lora_assets.settings import (
    SubjectSettings,
    load_subject_settings,
    parse_subject_settings,
    unversioned_fields,
)
from lora_assets.stages import PIPELINE, STAGES
from lora_assets.storage import DataRoot
from lora_assets.training.speed import compile_plan, optimizer_for, precision_for
from lora_assets.training.trainer import Trainer
from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import sample_photo

SUBJECT = "alice"
ASSET_FUNCTIONS = {
    "ingest": raw_images,
    "dedup": deduped_images,
    "filter": filtered_images,
    "captions": captions,
    "dataset": dataset_zip,
}
# Metadata that changes from run to run whatever the settings.
VOLATILE_METADATA = ("ss_training_started_at", "ss_training_finished_at", "modelspec.date", "ss_session_id")
# Captions with several comma-separated parts (quality tags) and buckets that depend on aspect.
TRAINING_CONTEXT = {"filter.artifact_quality": 100, "filter.low_resolution_mp": 100.0}


@dataclass(frozen=True)
class Probe:
    """A changed value, the other values it is tried with (dotted names), and what must change:
    "output" (versioned), "effect" (unversioned) or "cuda" (the trainer's decision on a GPU)."""

    value: Any
    context: dict[str, Any] = field(default_factory=dict)
    expect: str = "output"


def probes(models: dict[str, Path], tmp: Path) -> dict[str, Probe]:
    every_flag = {
        "filter.artifact_quality": 100,
        "filter.low_resolution_mp": 100.0,
        "filter.noise_sigma": 0.01,
        "filter.blur_ratio": 0.99,
        "captions.captioner": "template",
    }
    template = {"captions.captioner": "template"}
    return {
        "class_token": Probe("woman", template),
        "trigger": Probe("zkx", template),
        "ingest.max_pixels": Probe(1_500_000),
        "dedup.similarity": Probe(1.0),
        "dedup.crop_tolerant": Probe(False),
        "dedup.drop_similar": Probe(True),
        "dedup.keep": Probe(["bee-web.jpg"]),
        "dedup.drop": Probe(["bridge.jpg"]),
        "dedup.not_duplicates": Probe([["bee.jpg", "bee-web.jpg"]]),
        "filter.min_short_side": Probe(1000),
        "filter.min_effective_mp": Probe(100.0),
        "filter.max_side": Probe(512),
        "filter.jpeg_quality": Probe(80),
        "filter.blur_ratio": Probe(0.99),
        "filter.artifact_quality": Probe(100),
        "filter.low_resolution_mp": Probe(100.0),
        "filter.noise_sigma": Probe(0.01),
        "captions.captioner": Probe("template"),
        "captions.model_id": Probe(str(models["blip-2"])),
        "captions.revision": Probe("v2"),  # a local model: refused, not silently ignored
        "captions.batch_size": Probe(1, expect="effect"),
        "captions.num_beams": Probe(2),
        "captions.min_words": Probe(8),
        "captions.max_words": Probe(6),
        "captions.repetition_penalty": Probe(2.5),
        "captions.no_repeat_ngram_size": Probe(1),
        "captions.prompt": Probe("a photo of"),
        "captions.template": Probe("{trigger} {class_token} on a table", template),
        **{
            f"captions.quality_tags.{flag}": Probe(f"tagged {flag}", every_flag)
            for flag in ("blurry", "jpeg_artifacts", "low_resolution", "monochrome", "noisy")
        },
        "captions.overrides": Probe({"citrus.jpg": "a bowl of citrus"}, template),
        "dataset.repeats": Probe(3),
        "dataset.resolution": Probe(128),
        "dataset.min_bucket_reso": Probe(128, {"dataset.resolution": 256, "dataset.max_bucket_reso": 256}),
        "dataset.max_bucket_reso": Probe(256),
        "dataset.bucket_reso_steps": Probe(32),
        "dataset.remote_uri": Probe(f"file://{tmp}/remote/"),
        "training.base_model": Probe(str(models["sd-2"])),
        "training.revision": Probe("v2"),  # a local model: refused, not silently ignored
        "training.base_config": Probe(
            str(models["v-prediction-config"]),
            {
                "training.base_model": str(models["sd"] / "tiny-sd.safetensors"),
                "training.base_config": str(models["sd"]),
            },
        ),
        "training.vae": Probe(str(models["sd-2"] / "tiny-vae.safetensors")),
        "training.network_dim": Probe(8),
        "training.network_alpha": Probe(4.0),
        "training.train_text_encoder": Probe(False),
        "training.text_encoder_dim": Probe(8),
        "training.text_encoder_alpha": Probe(4.0),
        "training.unet_lr": Probe(1e-3),
        "training.text_encoder_lr": Probe(1e-3),
        "training.optimizer": Probe("AdamW", expect="cuda"),
        "training.lr_scheduler": Probe("linear"),
        "training.lr_warmup_steps": Probe(2, {"training.lr_scheduler": "cosine"}),
        "training.epochs": Probe(3),
        "training.batch_size": Probe(1),
        "training.gradient_accumulation_steps": Probe(2),
        "training.mixed_precision": Probe("bf16", expect="cuda"),
        "training.seed": Probe(7),
        "training.clip_skip": Probe(2),
        "training.min_snr_gamma": Probe(5.0),
        "training.noise_offset": Probe(0.1),
        "training.gradient_checkpointing": Probe(True, expect="effect"),
        "training.shuffle_caption": Probe(True),
        "training.keep_tokens": Probe(2, {"training.shuffle_caption": True}),
        "training.flip_aug": Probe(True),
        "training.bucket_no_upscale": Probe(
            False, {"dataset.resolution": 128, "dataset.max_bucket_reso": 128}
        ),
        "training.save_every_n_epochs": Probe(2),
        "training.keep_last_checkpoints": Probe(1, expect="effect"),
        "training.sample_prompts": Probe(["{trigger} {class_token} on a beach"]),
        "training.sample_steps": Probe(2),
        "training.compile_unet": Probe(True, expect="cuda"),
        "training.compile_mode": Probe("default", {"training.compile_unet": True}, expect="cuda"),
        "training.export_diffusers": Probe(True),
        "training.automation": Probe("eager", expect="effect"),
    }


# (field, value, context): the value is irrelevant in that context, so the version must not move.
INACTIVE = [
    ("captions.num_beams", 2, {"captions.captioner": "template"}),
    ("captions.template", "{trigger} somewhere", {}),
    ("training.text_encoder_lr", 1e-3, {"training.train_text_encoder": False}),
    ("training.sample_steps", 2, {"training.sample_prompts": []}),
    ("training.base_config", "/elsewhere", {}),
]


def leaf_fields(model: type | None = SubjectSettings, prefix: str = "") -> list[str]:
    """Every setting by dotted name; nested tables (quality tags) are walked into."""
    names = []
    for name, info in model.model_fields.items():
        nested = info.annotation if isinstance(info.annotation, type) else None
        if nested is not None and hasattr(nested, "model_fields"):
            names += leaf_fields(nested, f"{prefix}{name}.")
        else:
            names.append(f"{prefix}{name}")
    return names


def with_values(document: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a subject.toml document with dotted names set."""
    document = copy.deepcopy(document)
    for dotted, value in values.items():
        *tables, key = dotted.split(".")
        holder = document
        for table in tables:
            holder = holder.setdefault(table, {})
        holder[key] = value
    return document


def stage_of(dotted: str) -> str:
    """The stage a field belongs to; subject-wide fields are checked where captions use them."""
    first = dotted.split(".")[0]
    return first if first in STAGES else "captions"


@dataclass
class Outcome:
    version: str
    output: str
    effect: dict[str, Any]


class StageRunner:
    """Runs the stages of one subject from a subject.toml document, each stage on a copy of a
    data root prepared by the stages before it (memoised by their settings versions)."""

    def __init__(self, tmp: Path, photos: Path, instance: dg.DagsterInstance) -> None:
        self.tmp, self.photos, self.instance = tmp, photos, instance
        self.prepared: dict[str, Path] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.runs = 0

    def settings(self, document: dict[str, Any]) -> SubjectSettings:
        return parse_subject_settings(document, SUBJECT, source="probe")

    def root_before(self, document: dict[str, Any], index: int) -> Path:
        """A data root where the stages before `index` ran with `document`'s settings."""
        settings = self.settings(document)
        key = stable_hash([index, [settings.stage_version(s) for s in STAGES[:index]]])
        if key not in self.prepared:
            if index == 0:
                root = self.tmp / "roots" / key
                shutil.copytree(self.photos, root / "subjects" / SUBJECT / "images")
            else:
                root = self._copy(self.root_before(document, index - 1), key)
                self._run(root, document, STAGES[index - 1])
            self.prepared[key] = root
        return self.prepared[key]

    def _copy(self, source: Path, key: str) -> Path:
        target = self.tmp / "roots" / f"{key}-{self.runs}"
        self.runs += 1
        shutil.copytree(source, target)
        return target

    def outcome(self, document: dict[str, Any], stage: str) -> Outcome:
        """The stage run once with `document` (memoised: many probes share a base)."""
        key = stable_hash([document, stage])
        if key not in self.outcomes:
            self.outcomes[key] = self._outcome(document, stage)
        return self.outcomes[key]

    def _outcome(self, document: dict[str, Any], stage: str) -> Outcome:
        index = STAGES.index(stage)
        root = self._copy(self.root_before(document, index), "run")
        files = DataLayout(root).subject(SUBJECT)
        # The stage's own caches go: each run does the stage's real work.
        for cache in (files.measure_cache, files.copy_cache, files.caption_cache, files.training_work):
            shutil.rmtree(cache, ignore_errors=True)
        try:
            effect = self._run(root, document, stage)
        except Exception as exc:  # noqa: BLE001 - a refused setting is an outcome too
            return Outcome(self.settings(document).stage_version(stage), f"error: {exc}", {})
        output = stable_hash([output_digest(root, stage), effect.get("remote")])
        return Outcome(self.settings(document).stage_version(stage), output, effect)

    def _run(self, root: Path, document: dict[str, Any], stage: str) -> dict[str, Any]:
        layout = DataLayout(root)
        layout.settings_file(SUBJECT).write_text(tomli_w.dumps(document), encoding="utf-8")
        context = dg.build_asset_context(partition_key=SUBJECT, instance=self.instance)
        data_root = DataRoot(path=str(root))
        if stage == "training":
            files = layout.subject(SUBJECT)
            settings = load_subject_settings(files.settings, SUBJECT)
            return run_training(SubjectRun(SUBJECT, layout, files, settings, logging.getLogger("reach")))
        metadata = ASSET_FUNCTIONS[stage](context=context, data_root=data_root).metadata or {}
        remote = metadata.get("remote")
        return {
            "batch_size": metadata.get("batch_size"),  # captions: what BLIP ran at
            "remote": sha256_file(Path(remote.removeprefix("file://"))) if remote else None,  # dataset
        }


def run_training(run: SubjectRun) -> dict[str, Any]:
    """The `lora` asset's own config path, trained in this process; the trainer's decisions."""
    models = resolve_models(run)
    config = train_config(run, models, training_key(run, sha256_file(run.files.dataset_zip), models))
    trainer = Trainer(config, log=lambda message: None)
    gradient_checkpointing = trainer.base.unet.is_gradient_checkpointing
    trainer.run()
    s = config.training
    return {
        "gradient_checkpointing": gradient_checkpointing,
        "checkpoints": len(trainer.checkpoints()),
        "automation": subject_training_mode(run.layout, run.subject, "cron"),
        "cuda": {
            "compile": compile_plan(s.compile_unet, s.compile_mode, "cuda", planned_steps=1000),
            "precision": precision_for(s.mixed_precision, "cuda", bf16_supported=False),
            "optimizer": optimizer_for(s.optimizer, "cuda"),
        },
    }


def output_digest(root: Path, stage: str) -> str:
    """What a stage wrote (its tables' content, its files' bytes), caches and logs aside; for
    training the LoRA's tensors and metadata (timestamps aside), samples and diffusers copy."""
    files = DataLayout(root).subject(SUBJECT)
    asset = next(s.asset for s in PIPELINE if s.name == stage)
    parts = []
    if stage == "training":
        parts.append(lora_digest(files.lora_file))
        folders = [files.samples, files.diffusers_copy]
    else:
        folders = [files.stage_dir(asset)]
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "cache" not in p.parts):
            data = pd.read_parquet(path).to_json() if path.suffix == ".parquet" else path.read_bytes()
            parts.append(f"{path.relative_to(folder)}:{hashlib.sha256(str(data).encode()).hexdigest()}")
    return stable_hash(parts)


def lora_digest(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = {k: v for k, v in (handle.metadata() or {}).items() if k not in VOLATILE_METADATA}
        metadata.pop("lora_assets_training_key", None)
        tensors = {
            key: hashlib.sha256(handle.get_tensor(key).numpy().tobytes()).hexdigest()
            for key in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
        }
    return stable_hash([metadata, tensors])


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_blip, tiny_sd) -> dict[str, Path]:
    from lora_assets.models.tiny import build_tiny_blip, build_tiny_sd

    folder = tmp_path_factory.mktemp("other-models")
    v_prediction = folder / "v-prediction-config"
    shutil.copytree(tiny_sd, v_prediction, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    scheduler = v_prediction / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "v_prediction"}))
    return {
        "blip": tiny_blip,
        "sd": tiny_sd,
        "blip-2": build_tiny_blip(folder / "tiny-blip-2", seed=1),
        "sd-2": build_tiny_sd(folder / "tiny-sd-2", seed=1),
        "v-prediction-config": v_prediction,
    }


@pytest.fixture(scope="module")
def base_document(models) -> dict[str, Any]:
    """Tiny, fast defaults: BLIP captions of 5-10 words, 64 px buckets, two short epochs."""
    return {
        "trigger": "ohwx",
        "captions": {"model_id": str(models["blip"]), "min_words": 5, "max_words": 10, "num_beams": 1},
        "dataset": {"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128, "repeats": 1},
        "training": {
            "base_model": str(models["sd"]),
            "network_dim": 4,
            "network_alpha": 2.0,
            "epochs": 2,
            "batch_size": 2,
            "sample_steps": 1,
        },
    }


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> StageRunner:
    """Six real photos: a duplicate pair, a trimmed copy, an exposure bracket, a black-and-white
    photo, and one unique photo."""
    photos = tmp_path_factory.mktemp("photos")
    shutil.copy2(sample_photo("honey-bee-on-aster.jpg"), photos / "bee.jpg")
    pf.variant_downscale(photos / "bee.jpg", photos / "bee-web.jpg", 0.8, quality=80)
    pf.variant_crop(photos / "bee.jpg", photos / "bee-trim.jpg", 0.06)
    shutil.copy2(sample_photo("citrus-slices.jpg"), photos / "citrus.jpg")
    pf.variant_exposure(photos / "citrus.jpg", photos / "citrus-bright.jpg", 1.0)
    Image.open(sample_photo("dogs-at-window.jpg")).convert("L").save(photos / "dogs-gray.jpg", quality=92)
    shutil.copy2(sample_photo("suspension-bridge-night.jpg"), photos / "bridge.jpg")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("subjects", [SUBJECT])
        yield StageRunner(tmp_path_factory.mktemp("reach"), photos, instance)


def test_every_field_has_a_probe(tmp_path):
    names = ("blip", "sd", "blip-2", "sd-2", "v-prediction-config")
    assert set(leaf_fields()) == set(probes({name: tmp_path for name in names}, tmp_path))


@pytest.mark.parametrize("dotted", [name for name in leaf_fields() if stage_of(name) != "training"])
def test_a_data_stage_setting_changes_its_version_and_output(dotted, runner, base_document, models):
    check_probe(dotted, runner, base_document, probes(models, runner.tmp))


@pytest.mark.parametrize("dotted", [name for name in leaf_fields() if stage_of(name) == "training"])
def test_a_training_setting_changes_its_version_and_output(dotted, runner, base_document, models):
    probe = probes(models, runner.tmp)[dotted]
    context = {**TRAINING_CONTEXT, **probe.context}
    check_probe(dotted, runner, base_document, {dotted: Probe(probe.value, context, probe.expect)})


def check_probe(dotted: str, runner: StageRunner, document: dict[str, Any], table: dict[str, Probe]) -> None:
    probe, stage = table[dotted], stage_of(dotted)
    before = runner.outcome(with_values(document, probe.context), stage)
    after = runner.outcome(with_values(document, {**probe.context, dotted: probe.value}), stage)
    assert not before.output.startswith("error"), before.output
    if dotted.rsplit(".", 1)[-1] in unversioned_fields(type(getattr(SubjectSettings(), stage))):
        assert after.version == before.version, f"{dotted} is unversioned but changed the version"
    else:
        assert after.version != before.version, f"{dotted} did not change the {stage} settings version"
    if probe.expect == "effect":
        assert after.effect != before.effect, f"{dotted} had no effect: {after.effect}"
    elif probe.expect == "cuda":
        assert after.effect["cuda"] != before.effect["cuda"], f"{dotted} changed no decision for CUDA"
    else:
        assert after.output != before.output, f"{dotted} changed the version but not the output"


@pytest.mark.parametrize(("dotted", "value", "context"), INACTIVE)
def test_an_irrelevant_field_leaves_the_version_alone(dotted, value, context):
    stage = stage_of(dotted)
    before = parse_subject_settings(with_values({}, context), SUBJECT, "probe")
    after = parse_subject_settings(with_values({}, {**context, dotted: value}), SUBJECT, "probe")
    assert before.stage_version(stage) == after.stage_version(stage)
