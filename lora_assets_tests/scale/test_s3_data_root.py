"""The whole graph on an `s3://` data root (a real S3 server): photos, settings and every stage's
outputs live in the bucket; a second machine with an empty scratch folder sees the same state."""

from __future__ import annotations

import shutil

import dagster as dg
from click.testing import CliRunner

from lora_assets.cli import main
from lora_assets.layout import view_layout
from lora_assets.remote import RemoteRoot
from lora_assets.sensors import subject_folders_sensor
from lora_assets.storage import DataRoot
from lora_assets_tests.conftest import Graph, sample_photo, snapshot, tiny_settings

CHAIN = "raw_images,deduped_images,filtered_images,captions,dataset_zip,lora"
PHOTOS = ["citrus-slices.jpg", "honey-bee-on-aster.jpg", "suspension-bridge-night.jpg"]


def upload_subject(s3_root: str, tmp_path, settings: str) -> dict:
    """A user's folder added with the CLI, as `lora-assets --data-root s3://… subjects add`."""
    source = tmp_path / "incoming"
    source.mkdir()
    for name in PHOTOS:
        shutil.copy2(sample_photo(name), source / name)
    (source / "citrus-slices.txt").write_text("my own caption of citrus")
    before = snapshot(source)
    result = CliRunner().invoke(
        main,
        ["--data-root", s3_root, "subjects", "add", "alice", "--from", str(source)],
        env={"DAGSTER_HOME": ""},
    )
    assert result.exit_code == 0, result.output
    view_layout(s3_root).settings_file("alice").write_text(settings)
    return before


def test_the_whole_graph_runs_on_object_storage_and_a_new_machine_sees_its_state(
    s3_root, tmp_path, instance, monkeypatch, tiny_blip, tiny_sd
):
    before = upload_subject(s3_root, tmp_path, tiny_settings(tiny_blip, tiny_sd))
    graph = Graph(view_layout(s3_root), instance)
    graph.register("alice")
    graph.observe()
    first = graph.materialize(CHAIN, "alice")
    assert graph.metadata(first, "lora")["cache_hit"] is False

    remote = RemoteRoot(s3_root)
    stored = remote.listing("")
    for key in (
        "work/alice/raw_images/manifest.parquet",
        "work/alice/deduped_images/selected.parquet",
        "work/alice/filtered_images/filtered.parquet",
        "work/alice/captions/captions.parquet",
        "work/alice/dataset_zip/alice.zip",
        "loras/alice/alice.safetensors",
        "loras/alice/training_log.json",
    ):
        assert key in stored, key
    assert any(k.startswith("work/alice/lora/runs/") and k.endswith("progress.json") for k in stored)
    assert not [k for k in stored if ".partial-" in k]
    captions = graph.metadata(first, "captions")
    assert captions["overrides"] == 1  # the caption file next to the photo, read from the bucket

    # Another machine: an empty scratch folder, the same bucket. Everything is a cache hit.
    monkeypatch.setenv("LORA_ASSETS_SCRATCH", str(tmp_path / "second-machine"))
    again = graph.materialize(CHAIN, "alice")
    assert graph.metadata(again, "raw_images")["files_decoded"] == 0
    assert graph.metadata(again, "deduped_images")["features_computed"] == 0
    assert graph.metadata(again, "captions")["generated"] == 0
    assert graph.metadata(again, "lora")["cache_hit"] is True
    assert snapshot(tmp_path / "incoming") == before


def test_the_folder_sensor_lists_object_storage(s3_root, tmp_path, instance):
    upload_subject(s3_root, tmp_path, "")
    context = dg.build_sensor_context(instance=instance, resources={"data_root": DataRoot(path=s3_root)})
    first = subject_folders_sensor(context)
    assert [k for r in first.dynamic_partitions_requests for k in r.partition_keys] == ["alice"]
    instance.add_dynamic_partitions("subjects", ["alice"])

    RemoteRoot(s3_root).publish(sample_photo("dogs-at-window.jpg"), "subjects/alice/images/new.jpg")
    context = dg.build_sensor_context(
        instance=instance, cursor=first.cursor, resources={"data_root": DataRoot(path=s3_root)}
    )
    second = subject_folders_sensor(context)
    assert {(e.partition, e.asset_key.to_user_string()) for e in second.asset_events} == {
        ("alice", "subject_photos")
    }
