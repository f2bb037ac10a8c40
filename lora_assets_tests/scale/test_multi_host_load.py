"""The whole graph across hosts, under load: subjects of 30 photos, all at once (a backfill through
the run queue), on two CPU workers here and one GPU worker in its own network namespace that sees
none of this side's folders. Every run succeeds; the Postgres event log shows the CPU steps on the
CPU workers and `captions` and `lora` on the GPU worker, trainings never overlapping, and every
event of every run; every LoRA is in the bucket.

20 subjects by default, as a studio would; `LORA_ASSETS_LOAD_SUBJECTS` sets fewer (CI: 5, to keep
it within its time budget on 2 cores; the 20-subject figures are in the README)."""

from __future__ import annotations

import itertools
import os
import time

import dagster as dg
import pytest

from lora_assets.remote import RemoteRoot
from lora_assets_tests.conftest import tiny_settings
from lora_assets_tests.scale.multi_host import (
    cluster_env,
    small_photos,
    step_spans,
    step_workers,
    upload_subject,
)

SUBJECTS = [f"load{number:02d}" for number in range(int(os.environ.get("LORA_ASSETS_LOAD_SUBJECTS", "20")))]
CPU_STEPS = {"raw_images", "deduped_images", "filtered_images", "dataset_zip"}
ASSETS = {"raw_images", "deduped_images", "filtered_images", "captions", "dataset_zip", "lora"}


@pytest.mark.timeout(1800)
def test_subjects_at_once_across_hosts(cluster, tmp_path, tiny_blip, tiny_sd):
    settings = (
        tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=1, epochs=1)
        + "sample_prompts = []\n[filter]\nmin_short_side = 256\n"
    )
    with cluster_env(cluster):
        for number, name in enumerate(SUBJECTS):
            upload_subject(cluster, name, small_photos(tmp_path / "photos", 30, number), settings, tmp_path)
        cluster.register()
        cluster.start_daemon()
        started = time.monotonic()
        cluster.backfill("training_chain", SUBJECTS)
        with dg.DagsterInstance.get() as instance:
            runs = wait_for_runs(instance, SUBJECTS, timeout=1500)
            seconds = time.monotonic() - started
            print(f"{len(SUBJECTS)} subjects x 30 photos through the run queue: {seconds:.0f} s")
            assert sorted(r.tags["dagster/partition"] for r in runs) == SUBJECTS
            assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
            for run in runs:
                kinds = [e.dagster_event_type for e in instance.all_logs(run.run_id) if e.dagster_event_type]
                assert (
                    kinds.count(dg.DagsterEventType.RUN_START)
                    == kinds.count(dg.DagsterEventType.RUN_SUCCESS)
                    == 1
                )
                assert kinds.count(dg.DagsterEventType.ASSET_MATERIALIZATION) == len(ASSETS)
                assert kinds.count(dg.DagsterEventType.ASSET_CHECK_EVALUATION) == 3
            run_ids = {r.run_id for r in runs}
            trainings = [span for span in step_spans(instance, "lora") if span[2] in run_ids]
            placed = step_workers(instance)
        cluster.stop_daemon()
        stored = RemoteRoot(cluster.data_root).listing("loras")
    assert len(trainings) == len(SUBJECTS)
    for (_, end, _), (start, _, _) in itertools.pairwise(trainings):
        assert start >= end, "two trainings overlapped on the GPU worker"
    for name in SUBJECTS:
        assert {placed[name, step] for step in CPU_STEPS} <= {"cpu1", "cpu2"}, placed
        assert {placed[name, "captions"], placed[name, "lora"]} == {"gpu1"}, placed
        assert f"loras/{name}/{name}.safetensors" in stored


def wait_for_runs(instance: dg.DagsterInstance, subjects: list[str], timeout: float) -> list[dg.DagsterRun]:
    """The runs of `subjects` once every one has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [
            r.dagster_run
            for r in instance.get_run_records()
            if r.dagster_run.tags.get("dagster/partition") in subjects
        ]
        if len(runs) >= len(subjects) and all(r.is_finished for r in runs):
            return runs
        time.sleep(5)
    raise TimeoutError(f"runs of {len(subjects)} subjects not finished within {timeout:.0f} s")
