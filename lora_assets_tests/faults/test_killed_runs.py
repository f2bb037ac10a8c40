"""kill -9 at chosen moments, then a plain rerun that completes with no manual step.

Mid-epoch: `dagster asset materialize` killed while `lora` trains: the dead run is failed and
its `gpu` slot freed, by the daemon's sensor or by the next run itself, no orphan keeps training,
and the rerun resumes from the last checkpoint. Mid-checkpoint and mid-zip: the writing process
kills itself at that moment (`LORA_ASSETS_KILL_AT`, lora_assets/crash.py), then a plain rerun.
A half-written checkpoint of the old layout (the issue's FileNotFoundError) is recreated as such.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from lora_assets.crash import KILL_AT_ENV
from lora_assets.digests import sha256_file
from lora_assets.layout import DataLayout
from lora_assets.recovery import dead_runs_sensor
from lora_assets.training.checkpoints import complete_checkpoints
from lora_assets_tests.conftest import REPO, add_subject, tiny_settings

BIN = Path(sys.executable).parent
UPSTREAM = "raw_images,deduped_images,filtered_images,captions,dataset_zip"


@pytest.fixture
def deployment(tmp_path, tiny_blip, tiny_sd, monkeypatch):
    """A one-machine deployment (SQLite instance, local data root) driven through the CLI."""
    home, root = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    layout = DataLayout(root)
    settings = (
        tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=4, epochs=40) + "sample_prompts = []\n"
    )
    add_subject(
        layout,
        "alice",
        ["citrus-slices.jpg", "honey-bee-on-aster.jpg", "suspension-bridge-night.jpg"],
        settings,
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LORA_ASSETS_DATA_ROOT": str(root),
        "OMP_NUM_THREADS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    subprocess.run([str(BIN / "lora-assets"), "subjects", "sync"], env=env, check=True, capture_output=True)
    assert (
        dagster(env, "job", "execute", "-m", "lora_assets.definitions", "-j", "observe_subject_inputs").wait()
        == 0
    )
    assert materialize(env, UPSTREAM).wait(600) == 0
    return env, layout


def dagster(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "dagster"), *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def materialize(env: dict, select: str) -> subprocess.Popen:
    return dagster(
        env,
        "asset",
        "materialize",
        "-m",
        "lora_assets.definitions",
        "--select",
        select,
        "--partition",
        "alice",
    )


def kill_mid_training(env: dict, layout: DataLayout) -> None:
    """Start `lora`, wait for its first checkpoint, kill -9 the CLI (only it), and wait for the
    orphaned step and its training process to stop by themselves."""
    process = materialize(env, "lora")
    runs = layout.subject("alice").training_work / "runs"
    deadline = time.monotonic() + 300
    while not any(complete_checkpoints(run / "checkpoints") for run in runs.glob("*")):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 60
    while training_processes(str(layout.root)):
        assert time.monotonic() < deadline, "the training process outlived its run"
        time.sleep(0.5)
    assert not layout.subject("alice").lora_file.exists(), "an orphan finished the training"


def training_processes(data_root: str) -> list[int]:
    """Training processes of this test's deployment (tests on other workers train too)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"lora_assets.training.pipes_entry" in cmdline and f"={data_root}".encode() in environ:
            found.append(int(proc.name))
    return found


def lora_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "alice"}))
    return next(
        r.dagster_run
        for r in records
        if "lora" in {k.to_user_string() for k in r.dagster_run.asset_selection or []}
    )


def resumed_epoch(instance: dg.DagsterInstance) -> int:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("lora"), asset_partitions=["alice"]), limit=1
    ).records
    return record.asset_materialization.metadata["resumed_from_epoch"].value


def test_a_killed_run_is_failed_by_the_daemon_sensor_and_a_rerun_resumes(deployment):
    env, layout = deployment
    kill_mid_training(env, layout)
    with dg.DagsterInstance.get() as instance:
        dead = lora_run(instance)
        assert dead.status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        dead_runs_sensor(dg.build_sensor_context(instance=instance))
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        assert materialize(env, "lora").wait(600) == 0
        assert resumed_epoch(instance) >= 1


def test_a_killed_run_is_recovered_by_the_next_run_without_the_daemon(deployment):
    env, layout = deployment
    kill_mid_training(env, layout)
    with dg.DagsterInstance.get() as instance:
        dead = lora_run(instance)
        assert materialize(env, "lora").wait(600) == 0  # no manual step, no daemon
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert resumed_epoch(instance) >= 1


def test_a_kill_in_the_middle_of_a_checkpoint_save_is_passed_over_and_the_rerun_resumes(deployment):
    env, layout = deployment
    assert materialize({**env, KILL_AT_ENV: "checkpoint-save:3"}, "lora").wait(600) != 0
    (run_folder,) = (layout.subject("alice").training_work / "runs").iterdir()
    checkpoints = run_folder / "checkpoints"
    assert [p.name for p in complete_checkpoints(checkpoints)] == ["epoch-0001", "epoch-0002"]
    assert list(checkpoints.glob(".epoch-0003.partial-*")), "the kill did not happen mid-save"
    assert not layout.subject("alice").lora_file.exists()
    with dg.DagsterInstance.get() as instance:
        assert materialize(env, "lora").wait(600) == 0
        assert resumed_epoch(instance) == 2
    assert layout.subject("alice").lora_file.is_file()
    assert not list(checkpoints.glob(".*.partial-*")), "the half-written checkpoint stayed"


def test_a_kill_in_the_middle_of_the_zip_write_keeps_the_old_zip_and_the_rerun_completes(deployment):
    env, layout = deployment
    zip_path = layout.subject("alice").dataset_zip
    before = sha256_file(zip_path)
    (layout.images_dir("alice") / "citrus-slices.txt").write_text("ohwx man, a new caption\n")
    assert materialize({**env, KILL_AT_ENV: "zip-write"}, "captions,dataset_zip").wait(600) != 0
    (leftover,) = zip_path.parent.glob(f".{zip_path.name}.*.partial")
    assert leftover.stat().st_size > 0, "the kill did not happen mid-write"
    assert sha256_file(zip_path) == before, "a crash damaged the earlier zip"
    with dg.DagsterInstance.get() as instance:
        assert materialize(env, "captions,dataset_zip").wait(600) == 0
        runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "alice"}))
        assert not [r for r in runs if r.dagster_run.status == dg.DagsterRunStatus.STARTED]
    assert sha256_file(zip_path) != before and not leftover.exists()


def test_a_checkpoint_half_written_by_a_crash_is_passed_over(graph, tiny_blip, tiny_sd):
    settings = tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=1, epochs=2) + "sample_prompts = []\n"
    add_subject(graph.layout, "alice", ["citrus-slices.jpg", "honey-bee-on-aster.jpg"], settings)
    graph.register("alice")
    graph.materialize(UPSTREAM + ",lora", "alice")
    (run_folder,) = (graph.layout.subject("alice").training_work / "runs").iterdir()
    checkpoints = run_folder / "checkpoints"
    # What a crash during the save of epoch 3 leaves: the old layout's folder without all its
    # files (the error of the issue), and the new layout's temporary folder.
    shutil.copytree(checkpoints / "epoch-0002", checkpoints / "epoch-0003")
    (checkpoints / "epoch-0003" / "lora_text_encoder.safetensors").unlink()
    shutil.copytree(checkpoints / "epoch-0002", checkpoints / ".epoch-0003.partial-dead")
    settings_file = graph.layout.settings_file("alice")
    settings_file.write_text(settings_file.read_text().replace("epochs = 2", "epochs = 4"))
    result = graph.materialize("lora", "alice")  # another training key: trains anew ...
    assert graph.metadata(result, "lora")["resumed_from_epoch"] == 0
    result = graph.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=graph.instance,
        partition_key="alice",
        asset_selection=[dg.AssetKey("lora")],
        run_config={"ops": {"lora": {"config": {"force_retrain": True}}}},
    )  # ... and force_retrain over its own complete checkpoints resumes from the newest
    assert graph.metadata(result, "lora")["resumed_from_epoch"] == 4
