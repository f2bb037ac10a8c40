"""Scale-out benchmark: the same cold run on one machine and on the multi-host set-up, side by side.

    python -m benchmarks.scale_bench [--subjects 3] [--photos 20]      (as root: network namespaces)

(a) one machine: SQLite instance (the project's dagster.yaml), local data root, multiprocess
    executor, training as a subprocess;
(b) multi-host: Postgres instance (deploy/dagster.postgres.yaml), s3:// data root on SeaweedFS,
    Celery executor with two CPU workers here and a GPU worker in its own network namespace
    (lora_assets_tests/scale/cluster.py), Pipes through S3.
Each: a cold run of every subject at once (one `dagster asset materialize` per subject), then a
no-op tick (the folder sensor over unchanged folders and one automation evaluation; nothing may
be requested). Targets: cold (b) <= 1.5 x cold (a); the no-op tick <= 5 % of cold on both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dagster as dg
from PIL import Image

from benchmarks.dedup_dataset import source_photos
from lora_assets.definitions import build_definitions
from lora_assets.models.tiny import build_tiny_blip, build_tiny_sd
from lora_assets.sensors import subject_folders_sensor
from lora_assets.storage import DataRoot
from lora_assets_tests.conftest import tiny_settings
from lora_assets_tests.scale.cluster import REPO, VENV_BIN, Cluster
from lora_assets_tests.scale.multi_host import cluster_env, upload_subject, wait

RESULTS = Path(__file__).resolve().parent / "results"


def photo_sets(folder: Path, subjects: int, photos: int) -> dict[str, list[Path]]:
    """Distinct real photos per subject (the shared photos, <= 1024 px)."""
    sources = [path for path, _ in source_photos()]
    sets = {}
    for number in range(subjects):
        made = []
        for index in range(photos):
            source = sources[(number * photos + index) % len(sources)]
            image = Image.open(source).convert("RGB")
            image.thumbnail((1024, 1024))
            path = folder / f"s{number}" / f"{index:03d}-{source.stem}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=92)
            made.append(path)
        sets[f"bench{number}"] = made
    return sets


def no_op_tick(instance: dg.DagsterInstance, data_root: str) -> float:
    """Seconds of one folder-sensor tick and one automation evaluation over unchanged inputs;
    fails if either would start anything."""
    defs = build_definitions(data_root)
    context = dg.build_sensor_context(instance=instance, resources={"data_root": DataRoot(path=data_root)})
    first = subject_folders_sensor(context)  # the cursor a running sensor holds
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    started = time.perf_counter()
    context = dg.build_sensor_context(
        instance=instance, cursor=first.cursor, resources={"data_root": DataRoot(path=data_root)}
    )
    tick = subject_folders_sensor(context)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    seconds = time.perf_counter() - started
    assert not tick.asset_events and not tick.dynamic_partitions_requests, "the no-op tick observed a change"
    assert result.total_requested == 0, "the no-op tick requested runs"
    return seconds


def one_machine(base: Path, sets: dict[str, list[Path]], settings: str) -> tuple[float, float]:
    home, root = base / "home", base / "data"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    for name, photos in sets.items():
        images = root / "subjects" / name / "images"
        images.mkdir(parents=True)
        for photo in photos:
            shutil.copy2(photo, images / photo.name)
        (root / "subjects" / name / "subject.toml").write_text(settings)
    env = {**os.environ, "DAGSTER_HOME": str(home), "LORA_ASSETS_DATA_ROOT": str(root)}
    for name in ("LORA_ASSETS_CELERY_BROKER", "LORA_ASSETS_PIPES_BUCKET"):
        env.pop(name, None)

    def dagster(*args: str) -> subprocess.Popen:
        return subprocess.Popen([str(VENV_BIN / "dagster"), *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    subprocess.run(
        [str(VENV_BIN / "lora-assets"), "subjects", "sync"], env=env, check=True, capture_output=True
    )
    wait([dagster("job", "execute", "-m", "lora_assets.definitions", "-j", "observe_subject_inputs")], 600)
    started = time.perf_counter()
    module = ["-m", "lora_assets.definitions", "--select", "*"]
    wait([dagster("asset", "materialize", *module, "--partition", name) for name in sets], 3600)
    cold = time.perf_counter() - started
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with dg.DagsterInstance.get() as instance:
            tick = no_op_tick(instance, str(root))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return cold, tick


def multi_host(base: Path, sets: dict[str, list[Path]], settings: str) -> tuple[float, float]:
    with Cluster(base / "cluster") as cluster, cluster_env(cluster):
        for name, photos in sets.items():
            upload_subject(cluster, name, photos, settings, base / "upload")
        cluster.register()
        started = time.perf_counter()
        wait([cluster.materialize(name) for name in sets], 3600)
        cold = time.perf_counter() - started
        with dg.DagsterInstance.get() as instance:
            tick = no_op_tick(instance, cluster.data_root)
    return cold, tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="scale-bench-", dir=RESULTS))
    blip, sd = build_tiny_blip(base / "models" / "blip"), build_tiny_sd(base / "models" / "sd")
    settings = (
        tiny_settings(blip, sd, max_bucket=64, repeats=1, epochs=2) + "[filter]\nmin_short_side = 256\n"
    )
    sets = photo_sets(base / "photos", args.subjects, args.photos)
    one_cold, one_tick = one_machine(base / "one", sets, settings)
    multi_cold, multi_tick = multi_host(base / "multi", sets, settings)
    print(f"\n{args.subjects} subjects x {args.photos} photos, tiny models, {os.cpu_count()} cores\n")
    print("| set-up | cold run (s) | no-op tick (s) | tick / cold |")
    print("|---|---|---|---|")
    rows = [
        ("one machine: SQLite + local files + subprocess", one_cold, one_tick),
        ("multi-host: Postgres + S3 + Celery (GPU worker in a netns)", multi_cold, multi_tick),
    ]
    for label, cold, tick in rows:
        print(f"| {label} | {cold:.1f} | {tick:.2f} | {tick / cold:.1%} |")
    print(f"\nmulti-host / one machine (cold): {multi_cold / one_cold:.2f}x (target <= 1.5x)")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
