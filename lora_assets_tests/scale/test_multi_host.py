"""Two subjects through Postgres + S3 + Celery, with the GPU steps executed on a GPU worker in
its own network namespace that cannot see this side's folders."""

from __future__ import annotations

import dagster as dg

from lora_assets.remote import RemoteRoot
from lora_assets_tests.conftest import tiny_settings
from lora_assets_tests.scale.multi_host import (
    cluster_env,
    small_photos,
    step_workers,
    upload_subject,
    wait,
)

CPU_STEPS = {"raw_images", "deduped_images", "filtered_images", "dataset_zip"}
GPU_STEPS = {"captions", "lora"}


def test_the_whole_graph_for_two_subjects_runs_across_hosts(cluster, tmp_path, tiny_blip, tiny_sd):
    settings = tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=1, epochs=2)
    with cluster_env(cluster):
        for number, name in enumerate(("alice", "bob")):
            upload_subject(cluster, name, small_photos(tmp_path / "photos", 4, number), settings, tmp_path)
        cluster.register()
        wait([cluster.materialize("alice"), cluster.materialize("bob")], timeout=900)
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_run_records()
            assert {r.dagster_run.status for r in runs if "dagster/partition" in r.dagster_run.tags} == {
                dg.DagsterRunStatus.SUCCESS
            }
            placed = step_workers(instance)
        stored = RemoteRoot(cluster.data_root).listing("loras")
    for subject in ("alice", "bob"):
        assert {placed[subject, step] for step in CPU_STEPS} <= {"cpu1", "cpu2"}, placed
        assert {placed[subject, step] for step in GPU_STEPS} == {"gpu1"}, placed
        assert f"loras/{subject}/{subject}.safetensors" in stored
