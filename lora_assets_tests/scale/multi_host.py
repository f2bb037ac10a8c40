"""Helpers of the multi-host tests and benchmark: subjects uploaded to the bucket, runs awaited,
and what the Postgres event log says about where each step ran."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from PIL import Image

from lora_assets.cli import main
from lora_assets.layout import view_layout
from lora_assets_tests.scale.cluster import Cluster, netns_available

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "data" / "subjects" / "sample" / "images"


def require_netns() -> None:
    if not netns_available():
        message = "the multi-host tests need root and iproute2 (ip netns, unshare)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def cluster_env(cluster: Cluster) -> Iterator[None]:
    """This process talks to the cluster's servers as a CPU-host process does."""
    saved = dict(os.environ)
    os.environ.update(cluster.orchestrator_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def upload_subject(cluster: Cluster, name: str, photos: list[Path], settings: str, folder: Path) -> None:
    """A user's folder of photos added with the CLI to the cluster's s3:// data root."""
    source = folder / name
    source.mkdir(parents=True)
    for photo in photos:
        shutil.copy2(photo, source / photo.name)
    args = ["--data-root", cluster.data_root, "subjects", "add", name, "--from", str(source)]
    result = CliRunner().invoke(main, args, env={"DAGSTER_HOME": ""}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    view_layout(cluster.data_root).settings_file(name).write_text(settings)


def small_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` distinct real photos of 640 px: quadrants of the bundled sample photos (different
    parts of a photo are not duplicates of each other)."""
    sources = sorted(p for p in SHARED_PHOTOS.rglob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        number = index + seed * count
        image = Image.open(sources[number % len(sources)]).convert("RGB")
        width, height = image.size
        left, top = (number // len(sources)) % 2 * width // 2, (number // len(sources) // 2) % 2 * height // 2
        crop = image.crop((left, top, left + width // 2, top + height // 2))
        path = folder / f"photo-{seed:02d}-{index:03d}.jpg"
        crop.resize((640, max(1, 640 * crop.height // crop.width))).save(path, quality=90)
        made.append(path)
    return made


def wait(processes: list[subprocess.Popen], timeout: float) -> list[str]:
    """Every process's output; fails with the output of any that failed."""
    outputs = []
    for process in processes:
        output = process.communicate(timeout=timeout)[0].decode(errors="replace")
        assert process.returncode == 0, output[-4000:]
        outputs.append(output)
    return outputs


def step_workers(instance: dg.DagsterInstance) -> dict[tuple[str, str], str]:
    """(run's partition, step) -> the Celery worker that executed it, from the event log."""
    placed = {}
    for record in instance.get_run_records():
        partition = record.dagster_run.tags.get("dagster/partition")
        for entry in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            data = entry.dagster_event.engine_event_data if entry.dagster_event else None
            worker = data.metadata.get("Celery worker") if data else None
            if worker is not None:
                placed[partition, entry.step_key] = worker.value.split("@")[0]
    return placed


def step_spans(instance: dg.DagsterInstance, step: str) -> list[tuple[float, float, str]]:
    """(start, end, run id) of every execution of `step`, from its STEP_START and end events."""
    spans = []
    for record in instance.get_run_records():
        run_id = record.dagster_run.run_id
        starts = [
            e.timestamp
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
            if e.step_key == step
        ]
        ends = [
            e.timestamp
            for kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
            for e in instance.all_logs(run_id, of_type=kind)
            if e.step_key == step
        ]
        spans += [
            (start, min((end for end in ends if end >= start), default=float("inf")), run_id)
            for start in starts
        ]
    return sorted(spans)
