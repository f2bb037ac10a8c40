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


def added_partitions(result):
    return [key for request in result.dynamic_partitions_requests for key in request.partition_keys]


def test_new_folder_adds_a_partition_and_ingests_it(layout, instance):
    add_subject(layout, "alice", ["citrus-slices.jpg"])
    result = tick(layout, instance)
    assert added_partitions(result) == ["alice"]
    assert [r.partition_key for r in result.run_requests] == ["alice"]
    assert set(json.loads(result.cursor)) == {"alice"}


def test_changed_folder_requests_one_run_for_that_subject_and_unchanged_none(layout, instance):
    add_subject(layout, "alice", ["citrus-slices.jpg"])
    add_subject(layout, "bob", ["citrus-slices.jpg"])
    first = tick(layout, instance)
    instance.add_dynamic_partitions("subjects", added_partitions(first))

    unchanged = tick(layout, instance, first.cursor)
    assert unchanged.run_requests == [] and added_partitions(unchanged) == []

    shutil.copy2(sample_photo("dogs-at-window.jpg"), layout.images_dir("bob") / "new.jpg")
    changed = tick(layout, instance, unchanged.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["bob"]
    assert added_partitions(changed) == []

    (layout.images_dir("bob") / "new.jpg").unlink()
    removed = tick(layout, instance, changed.cursor)
    assert [r.partition_key for r in removed.run_requests] == ["bob"]

    shutil.copy2(sample_photo("dogs-at-window.jpg"), layout.images_dir("alice") / "citrus-slices.jpg")
    replaced = tick(layout, instance, removed.cursor)
    assert [r.partition_key for r in replaced.run_requests] == ["alice"]


def test_invalid_folder_names_and_empty_folders_request_nothing(layout, instance):
    (layout.subjects_dir / "not a subject").mkdir()
    (layout.subjects_dir / "empty" / "images").mkdir(parents=True)
    result = tick(layout, instance)
    assert added_partitions(result) == ["empty"]
    assert result.run_requests == []
