import json
import shutil

import dagster as dg

from lora_assets.sensors import subject_folders_sensor
from lora_assets.storage import DataRoot
from lora_assets_tests.conftest import add_subject, sample_photo


def tick(layout, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"data_root": DataRoot(path=str(layout.root))}
    )
    return subject_folders_sensor(context)


def observed(result):
    """(subject, source) pairs the tick reported a new data version for."""
    return sorted({(e.partition, e.asset_key.to_user_string()) for e in result.asset_events})


def photos_observed(result):
    return [subject for subject, source in observed(result) if source == "subject_photos"]


def added_partitions(result):
    return [key for request in result.dynamic_partitions_requests for key in request.partition_keys]


def test_new_folder_adds_a_partition_and_observes_every_source(layout, instance):
    add_subject(layout, "alice", ["citrus-slices.jpg"])
    result = tick(layout, instance)
    assert added_partitions(result) == ["alice"]
    assert result.run_requests == []  # the automation sensor decides what runs
    assert [source for _, source in observed(result)] == [
        "captions_settings",
        "dataset_settings",
        "dedup_settings",
        "filter_settings",
        "ingest_settings",
        "subject_photos",
        "training_settings",
    ]
    assert set(json.loads(result.cursor)) == {"alice"}


def test_settings_edit_observes_only_that_stage_of_that_subject(layout, instance):
    add_subject(layout, "alice", ["citrus-slices.jpg"])
    add_subject(layout, "bob", ["citrus-slices.jpg"])
    first = tick(layout, instance)
    layout.settings_file("bob").write_text("[captions]\nnum_beams = 1\n")
    assert observed(tick(layout, instance, first.cursor)) == [("bob", "captions_settings")]
    layout.settings_file("bob").write_text("[captions]\nnum_beams = oops\n")
    broken = tick(layout, instance, first.cursor)
    assert ("bob", "captions_settings") not in observed(broken)  # logged, never a crash


def test_changed_folder_is_observed_for_that_subject_only(layout, instance):
    add_subject(layout, "alice", ["citrus-slices.jpg"])
    add_subject(layout, "bob", ["citrus-slices.jpg"])
    first = tick(layout, instance)
    instance.add_dynamic_partitions("subjects", added_partitions(first))

    unchanged = tick(layout, instance, first.cursor)
    assert observed(unchanged) == [] and added_partitions(unchanged) == []

    shutil.copy2(sample_photo("dogs-at-window.jpg"), layout.images_dir("bob") / "new.jpg")
    changed = tick(layout, instance, unchanged.cursor)
    assert photos_observed(changed) == ["bob"]
    assert added_partitions(changed) == []

    (layout.images_dir("bob") / "new.jpg").unlink()
    removed = tick(layout, instance, changed.cursor)
    assert photos_observed(removed) == ["bob"]

    shutil.copy2(sample_photo("dogs-at-window.jpg"), layout.images_dir("alice") / "citrus-slices.jpg")
    replaced = tick(layout, instance, removed.cursor)
    assert photos_observed(replaced) == ["alice"]


def test_empty_folder_is_registered_without_observations_and_invalid_names_are_ignored(layout, instance):
    (layout.subjects_dir / "not a subject").mkdir()
    (layout.subjects_dir / "empty" / "images").mkdir(parents=True)
    result = tick(layout, instance)
    assert added_partitions(result) == ["empty"]
    assert observed(result) == []
