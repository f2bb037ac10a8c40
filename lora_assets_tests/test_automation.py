"""The change matrix: for each kind of edit to subject A, exactly which (asset, subject) pairs
become stale and which the automation conditions request, with per-image work counters.

One graph of two subjects walks through every row in turn, so each row starts from a settled
graph. `settle()` plays the automation sensor: evaluate the conditions, materialize what they
request, repeat until nothing is requested.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from lora_assets.automation import TRAINING_AUTOMATION_ENV
from lora_assets.sensors import subject_folders_sensor
from lora_assets.storage import DataRoot
from lora_assets_tests.conftest import Graph, add_subject, sample_photo, tiny_settings

ASSETS = ["raw_images", "deduped_images", "filtered_images", "captions", "dataset_zip", "lora"]
SUBJECTS = ["a", "b"]
Pair = tuple[str, str]


def below(first: str, subject: str) -> set[Pair]:
    """`first` and every asset under it down to `lora`, for one subject."""
    return {(asset, subject) for asset in ASSETS[ASSETS.index(first) :]}


class Automation:
    """The two sensors and the runs they lead to, driven tick by tick."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.sensor_cursor: str | None = None
        self.cursor = None
        self.metadata: dict[Pair, dict[str, object]] = {}

    def tick_folders(self) -> None:
        """One `subject_folders` tick: new partitions, and observations of changed inputs."""
        context = dg.build_sensor_context(
            instance=self.graph.instance,
            cursor=self.sensor_cursor,
            resources={"data_root": DataRoot(path=str(self.graph.layout.root))},
        )
        result = subject_folders_sensor(context)
        for request in result.dynamic_partitions_requests:
            self.graph.register(*request.partition_keys)
        for event in result.asset_events:
            self.graph.instance.report_runless_asset_event(event)
        self.sensor_cursor = result.cursor

    def requested(self) -> set[Pair]:
        """One `lora_automation` tick: the pairs the conditions request now."""
        result = dg.evaluate_automation_conditions(
            defs=self.graph.defs, instance=self.graph.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {
            (asset, subject)
            for asset in ASSETS
            for subject in result.get_requested_partitions(dg.AssetKey(asset))
        }

    def stale(self) -> set[Pair]:
        return {
            (asset, subject)
            for asset in ASSETS
            for subject in SUBJECTS
            if self.graph.stale_status(asset, subject) != "FRESH"
        }

    def settle(self) -> set[Pair]:
        """Tick until nothing is requested; every pair requested on the way (each at most once)."""
        done: set[Pair] = set()
        self.metadata = {}
        while requested := self.requested():
            assert not requested & done, f"requested twice: {requested & done}"
            done |= requested
            for subject in sorted({subject for _, subject in requested}):
                assets = [asset for asset in ASSETS if (asset, subject) in requested]
                result = self.graph.materialize(",".join(assets), subject)
                for asset in assets:
                    self.metadata[asset, subject] = self.graph.metadata(result, asset)
        return done


@pytest.fixture
def auto(layout, instance, monkeypatch, tiny_blip, tiny_sd) -> Automation:
    monkeypatch.setenv(TRAINING_AUTOMATION_ENV, "eager")
    settings = tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=1, epochs=1) + "[dedup]\n[filter]\n"
    add_subject(
        layout,
        "a",
        ["citrus-slices.jpg", "honey-bee-on-aster.jpg", "honey-bee-on-aster-web-copy.jpg"],
        settings,
    )
    add_subject(layout, "b", ["citrus-slices.jpg", "suspension-bridge-night.jpg"], settings)
    return Automation(Graph(layout, instance))


def edit_settings(auto: Automation, subject: str, section: str, line: str) -> None:
    """Add `line` to `[section]` of a subject.toml, as a user would in an editor."""
    path = auto.graph.layout.settings_file(subject)
    text = path.read_text(encoding="utf-8")
    header = f"[{section}]\n"
    path.write_text(text.replace(header, header + line + "\n"), encoding="utf-8")


def bump_code_version(auto: Automation, asset: str) -> None:
    """The definitions as they load after a code change to one stage."""
    key = dg.AssetKey(asset)
    defs = auto.graph.defs
    assets = [
        definition.map_asset_specs(
            lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}+1")
        )
        if isinstance(definition, dg.AssetsDefinition) and definition.key == key
        else definition
        for definition in defs.assets or []
    ]
    auto.graph.defs = dg.Definitions(assets=assets, asset_checks=defs.asset_checks, resources=defs.resources)


def work(auto: Automation, subject: str) -> dict[str, int]:
    """Per-image work the last settle did for one subject (0 where a stage did not run)."""
    meta = auto.metadata
    return {
        "decoded": meta.get(("raw_images", subject), {}).get("files_decoded", 0),
        "features": meta.get(("deduped_images", subject), {}).get("features_computed", 0),
        "captioned": meta.get(("captions", subject), {}).get("generated", 0),
        "latents": meta.get(("lora", subject), {}).get("latents_encoded", 0),
    }


def test_each_change_recomputes_exactly_what_it_affects(auto: Automation) -> None:
    layout = auto.graph.layout
    assert auto.requested() == set()  # the automation sensor was running before the subjects came
    auto.tick_folders()
    assert auto.settle() == below("raw_images", "a") | below("raw_images", "b")
    assert work(auto, "a") == {"decoded": 3, "features": 3, "captioned": 2, "latents": 2}
    assert auto.stale() == set() and auto.requested() == set()

    # A: [dedup] similarity. At 1.0 only exact matches group, so the web copy is kept too.
    edit_settings(auto, "a", "dedup", "similarity = 1.0")
    auto.tick_folders()
    assert auto.stale() == {("deduped_images", "a")}
    assert auto.settle() == below("deduped_images", "a")
    assert work(auto, "a") == {"decoded": 0, "features": 0, "captioned": 1, "latents": 1}

    # A: [filter] min_short_side that drops the web copy (640 px) again.
    edit_settings(auto, "a", "filter", "min_short_side = 700")
    auto.tick_folders()
    assert auto.stale() == {("filtered_images", "a")}
    assert auto.settle() == below("filtered_images", "a")

    # A: a [filter] change that selects the same images: filtered reruns, nothing below it.
    edit_settings(auto, "a", "filter", "max_side = 4096")  # copies are never upscaled
    auto.tick_folders()
    assert auto.stale() == {("filtered_images", "a")}
    assert auto.settle() == {("filtered_images", "a")}
    assert auto.stale() == set()

    # A: [captions]
    edit_settings(auto, "a", "captions", 'captioner = "template"')
    auto.tick_folders()
    assert auto.stale() == {("captions", "a")}
    assert auto.settle() == below("captions", "a")
    assert work(auto, "a")["captioned"] == 0  # the template captioner runs no model

    # ... and back: BLIP captions come from the per-image cache.
    path = layout.settings_file("a")
    path.write_text(path.read_text().replace('captioner = "template"\n', ""))
    auto.tick_folders()
    assert auto.settle() == below("captions", "a")
    assert work(auto, "a")["captioned"] == 0

    # A: [training]
    edit_settings(auto, "a", "training", "unet_lr = 2e-4")
    auto.tick_folders()
    assert auto.stale() == {("lora", "a")}
    assert auto.settle() == {("lora", "a")}
    assert work(auto, "a")["latents"] == 0  # latents are cached per image

    # A: one photo added, then one photo's bytes replaced under the same name.
    shutil.copy2(sample_photo("suspension-bridge-night.jpg"), layout.images_dir("a"))
    auto.tick_folders()
    assert auto.stale() == {("raw_images", "a")}
    assert auto.settle() == below("raw_images", "a")
    assert work(auto, "a") == {"decoded": 1, "features": 1, "captioned": 1, "latents": 1}

    shutil.copy2(sample_photo("dogs-at-window.jpg"), layout.images_dir("a") / "citrus-slices.jpg")
    auto.tick_folders()
    assert auto.stale() == {("raw_images", "a")}
    assert auto.settle() == below("raw_images", "a")
    assert work(auto, "a") == {"decoded": 1, "features": 1, "captioned": 1, "latents": 1}
    assert work(auto, "b") == {"decoded": 0, "features": 0, "captioned": 0, "latents": 0}

    # A stage's code version bumped: that stage for every subject; its identical output stops there.
    bump_code_version(auto, "filtered_images")
    assert auto.stale() == {("filtered_images", "a"), ("filtered_images", "b")}
    assert auto.settle() == {("filtered_images", "a"), ("filtered_images", "b")}

    bump_code_version(auto, "lora")
    assert auto.stale() == {("lora", "a"), ("lora", "b")}
    assert auto.settle() == {("lora", "a"), ("lora", "b")}


def test_training_automation_is_chosen_per_subject(layout, instance, monkeypatch, tiny_blip, tiny_sd):
    monkeypatch.setenv(TRAINING_AUTOMATION_ENV, "cron")  # for subjects that do not say
    settings = tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=1, epochs=1)
    add_subject(layout, "a", ["citrus-slices.jpg"], settings)
    add_subject(layout, "b", ["honey-bee-on-aster.jpg"], settings)
    auto = Automation(Graph(layout, instance))
    edit_settings(auto, "a", "training", 'automation = "eager"')
    assert auto.requested() == set()  # the sensor ran before the subjects came
    auto.tick_folders()
    assert auto.settle() == below("raw_images", "a") | below("raw_images", "b") - {("lora", "b")}

    # Switching a mode is not a training change: the version stays, nothing is retrained...
    version = auto.graph.data_version("training_settings", "a")
    edit_settings(auto, "a", "training", "# now on the cron")
    path = layout.settings_file("a")
    path.write_text(path.read_text().replace('automation = "eager"', 'automation = "cron"'))
    auto.tick_folders()
    assert auto.graph.data_version("training_settings", "a") == version
    assert auto.settle() == set()
    # ... but b, switched to eager, trains what it has been waiting for.
    edit_settings(auto, "b", "training", 'automation = "eager"')
    auto.tick_folders()
    assert auto.settle() == {("lora", "b")}
