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
    """`count` distinct real photos: crops of the bundled sample photos at 640 px."""
    sources = sorted(p for p in SHARED_PHOTOS.rglob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        image = Image.open(sources[(index + seed) % len(sources)]).convert("RGB")
        width, height = image.size
        step = (index + seed * 7) % 5
        box = (step * width // 20, step * height // 20, width - (4 - step) * width // 20, height)
        crop = image.crop(box).resize((640, 640 * height // width or 640))
        path = folder / f"photo-{seed:02d}-{index:03d}.jpg"
        crop.save(path, quality=90)
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
