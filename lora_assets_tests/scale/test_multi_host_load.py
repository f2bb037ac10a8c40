"""Load on the multi-host set-up: 20 subjects of 30 photos, all at once, on two CPU workers and one
GPU worker; every run succeeds, trainings never overlap, Postgres holds every event."""

from __future__ import annotations

import itertools
import time

import dagster as dg
import pytest

from lora_assets_tests.conftest import tiny_settings
from lora_assets_tests.scale.multi_host import (
    cluster_env,
    small_photos,
    step_spans,
    step_workers,
    upload_subject,
)

SUBJECTS = [f"load{number:02d}" for number in range(20)]
ASSETS = {"raw_images", "deduped_images", "filtered_images", "captions", "dataset_zip", "lora"}


@pytest.mark.timeout(1800)
def test_twenty_subjects_at_once(cluster, tmp_path, tiny_blip, tiny_sd):
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
            print(f"20 subjects x 30 photos through the run queue: {time.monotonic() - started:.0f} s")
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
    assert len(trainings) == 20
    for (_, end, _), (start, _, _) in itertools.pairwise(trainings):
        assert start >= end, "two trainings overlapped on the GPU worker"
    assert {placed[name, "lora"] for name in SUBJECTS} == {"gpu1"}


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
