"""Faults on the multi-host set-up: the S3 server killed during a dataset-zip upload and during a
LoRA upload, the GPU worker killed mid-training. Each time the run fails with a clear error,
nothing half-written is published, and a rerun (after the restart) completes, reusing the
per-image caches and resuming training from the checkpoint in object storage."""

from __future__ import annotations

import shutil
import subprocess
import time

import dagster as dg
import pytest

from lora_assets.remote import RemoteRoot
from lora_assets_tests.conftest import SAMPLE_IMAGES, tiny_settings
from lora_assets_tests.scale.cluster import Cluster, NamespaceHost
from lora_assets_tests.scale.multi_host import cluster_env, upload_subject

UP_TO_CAPTIONS = "raw_images,deduped_images,filtered_images,captions"


def run_of(cluster: Cluster, subject: str, select: str) -> tuple[int, str]:
    process = cluster.materialize(subject, select)
    output = process.communicate(timeout=900)[0].decode(errors="replace")
    return process.returncode, output


def succeeds(cluster: Cluster, subject: str, select: str) -> None:
    """The run completes; if not, the failure shows the run's own last lines and events."""
    code, output = run_of(cluster, subject, select)
    if code != 0:
        failures = latest_run_failures(subject)
        raise AssertionError(f"{select} of {subject} failed ({code}):\n{output[-4000:]}\n{failures}")


def wait_for(condition, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def step_started(subject: str, step: str) -> bool:
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": subject}), limit=1):
            starts = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START)
            if any(e.step_key == step for e in starts):
                return True
    return False


def latest_run(subject: str) -> dg.DagsterRun:
    with dg.DagsterInstance.get() as instance:
        return instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": subject}), limit=1)[
            0
        ].dagster_run


def latest_run_failures(subject: str) -> str:
    """The step failures of the subject's latest run, with their errors."""
    with dg.DagsterInstance.get() as instance:
        run = latest_run(subject)
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        return "\n".join(
            f"{e.step_key}: {e.dagster_event.event_specific_data.error.to_string()}"  # type: ignore[union-attr]
            for e in events
            if e.dagster_event
        )


def metadata(subject: str, asset: str) -> dict:
    with dg.DagsterInstance.get() as instance:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[subject]), limit=1
        ).records
        return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def kill_s3_during(cluster: Cluster, subject: str, step: str, after: float) -> subprocess.Popen:
    """Start the step's run, stop the S3 server `after` seconds into the step (a slow uplink
    makes the upload last far longer), and return the run's process."""
    process = cluster.materialize(subject, step)
    wait_for(lambda: step_started(subject, step), 300, f"{step} starting")
    time.sleep(after)
    cluster.stack.s3.stop()
    return process


@pytest.fixture
def slow_cpu_host(cluster):
    """The CPU workers replaced by one on another machine with a 2 Mbit/s uplink."""
    host = cluster.hosts.setdefault("cpu", NamespaceHost("cpu").create())
    for name in ("cpu1", "cpu2"):
        cluster.stop_worker(name)
    cluster.start_worker("cpu3", "dagster", host)
    cluster.wait_for_workers()
    yield host
    host.shape(None)
    cluster.stop_worker("cpu3")
    for name in ("cpu1", "cpu2"):
        cluster.start_worker(name, "dagster")
    cluster.wait_for_workers()


def test_s3_killed_during_the_zip_upload(cluster, slow_cpu_host, tmp_path, tiny_blip, tiny_sd):
    photos = sorted(SAMPLE_IMAGES.rglob("*.jpg"))
    with cluster_env(cluster):
        upload_subject(cluster, "zipfault", photos, tiny_settings(tiny_blip, tiny_sd), tmp_path)
        cluster.register()
        succeeds(cluster, "zipfault", UP_TO_CAPTIONS)
        slow_cpu_host.shape("2mbit")
        failed = kill_s3_during(cluster, "zipfault", "dataset_zip", after=3.0)
        output = failed.communicate(timeout=600)[0].decode(errors="replace")
        assert failed.returncode != 0
        assert latest_run("zipfault").status == dg.DagsterRunStatus.FAILURE
        assert f"data root {cluster.data_root}" in output
        cluster.stack.s3.start(restart=True)
        slow_cpu_host.shape(None)
        stored = RemoteRoot(cluster.data_root).listing("work/zipfault/dataset_zip")
        assert stored == {}, stored  # no zip, no temporary key
        succeeds(cluster, "zipfault", UP_TO_CAPTIONS + ",dataset_zip")
        assert metadata("zipfault", "raw_images")["files_decoded"] == 0
        assert metadata("zipfault", "deduped_images")["features_computed"] == 0
        assert metadata("zipfault", "captions")["generated"] == 0
        assert "work/zipfault/dataset_zip/zipfault.zip" in RemoteRoot(cluster.data_root).listing(
            "work/zipfault"
        )


def test_s3_killed_during_the_lora_upload(cluster, tmp_path, tiny_blip, tiny_sd):
    settings = tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=1, epochs=2)
    with cluster_env(cluster):
        upload_subject(cluster, "lorafault", sorted(SAMPLE_IMAGES.rglob("*.jpg"))[:4], settings, tmp_path)
        cluster.register()
        succeeds(cluster, "lorafault", "raw_images,deduped_images,filtered_images,captions,dataset_zip")
        cluster.gpu.shape("256kbit")
        remote = RemoteRoot(cluster.data_root)
        process = cluster.materialize("lorafault", "lora")
        wait_for(
            lambda: any(
                k.endswith("epoch-0002/progress.json") for k in remote.listing("work/lorafault/lora")
            ),
            600,
            "the last checkpoint",
        )
        time.sleep(1.0)  # the end of the run's publication: caches, then the LoRA folder
        cluster.stack.s3.stop()
        output = process.communicate(timeout=600)[0].decode(errors="replace")
        assert process.returncode != 0 and f"data root {cluster.data_root}" in output
        cluster.stack.s3.start(restart=True)
        cluster.gpu.shape(None)
        assert "loras/lorafault/lorafault.safetensors" not in remote.listing("loras/lorafault")
        assert not [k for k in remote.listing("") if ".partial-" in k]
        succeeds(cluster, "lorafault", "lora")
        assert metadata("lorafault", "lora")["resumed_from_epoch"] == 2  # nothing trained again


def test_gpu_worker_killed_mid_training(cluster, tmp_path, tiny_blip, tiny_sd):
    settings = tiny_settings(tiny_blip, tiny_sd, max_bucket=64, repeats=3, epochs=8)
    with cluster_env(cluster):
        upload_subject(cluster, "gpufault", sorted(SAMPLE_IMAGES.rglob("*.jpg"))[:6], settings, tmp_path)
        cluster.register()
        succeeds(cluster, "gpufault", "raw_images,deduped_images,filtered_images,captions,dataset_zip")
        cluster.start_daemon()
        remote = RemoteRoot(cluster.data_root)
        process = cluster.materialize("gpufault", "lora")
        wait_for(
            lambda: any(k.endswith("epoch-0001/progress.json") for k in remote.listing("work/gpufault/lora")),
            600,
            "the first checkpoint",
        )
        cluster.stop_worker("gpu1", kill=True)
        output = process.communicate(timeout=300)[0].decode(errors="replace")
        assert process.returncode != 0 and "stopped answering" in output
        assert latest_run("gpufault").status == dg.DagsterRunStatus.FAILURE
        with dg.DagsterInstance.get() as instance:
            wait_for(
                lambda: not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots,
                120,
                "slot freed",
            )
        assert (
            subprocess.run(
                ["pgrep", "-f", "lora_assets.training.pipes_entry"], capture_output=True
            ).returncode
            == 1
        )
        cluster.start_worker("gpu1", "gpu")
        cluster.wait_for_workers()
        succeeds(cluster, "gpufault", "lora")
        assert metadata("gpufault", "lora")["resumed_from_epoch"] >= 1
        cluster.stop_daemon()
    assert shutil.which("pgrep")
