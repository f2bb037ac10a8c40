"""Incremental benchmark: what a change costs compared with a cold run of the whole graph.

    python -m benchmarks.incremental_bench [--subjects 3] [--photos 30]

Three subjects of ~30 photos (the shared photos, downscaled to <=1600 px so the run stays a few
minutes on 2 cores), tiny BLIP and tiny SD, training eager. The graph is driven the way the
deployed sensors drive it (folder sensor -> observations -> automation conditions -> runs,
until nothing is requested), in one process on one Dagster instance:
  (a) cold: every subject from nothing;
  (b) no-op: a sensor tick and an automation tick over unchanged folders (nothing may run), and,
      for reference, a forced rerun of every asset of every subject (all cache hits);
  (c) one `[captions]` change in one subject: must train exactly one LoRA.
Targets: (b) <= 5 % of (a), (c) <= 40 % of (a).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["LORA_ASSETS_TRAINING_AUTOMATION"] = "eager"

import dagster as dg
import torch
from PIL import Image

from benchmarks.dedup_dataset import source_photos
from lora_assets.layout import DataLayout
from lora_assets.models.tiny import build_tiny_blip, build_tiny_sd
from lora_assets_tests.conftest import Graph
from lora_assets_tests.test_automation import ASSETS, Automation

SETTINGS = """trigger = "{name}"
[captions]
model_id = "{blip}"
min_words = 5
max_words = 12
num_beams = 1
[dataset]
resolution = 64
min_bucket_reso = 64
max_bucket_reso = 128
repeats = 1
[training]
base_model = "{sd}"
network_dim = 4
network_alpha = 2.0
epochs = 2
batch_size = 4
sample_steps = 2
"""


def make_subjects(layout: DataLayout, count: int, photos: int, blip: Path, sd: Path) -> list[str]:
    sources = [path for path, _ in source_photos()]
    names = [f"subject{i}" for i in range(count)]
    for index, name in enumerate(names):
        images = layout.images_dir(name)
        images.mkdir(parents=True)
        for k in range(photos):
            source = sources[(index * 7 + k) % len(sources)]
            with Image.open(source) as image:
                image = image.convert("RGB")
                image.thumbnail((1600 - 37 * (k // len(sources)), 1600))
                image.save(images / f"{k:02d}-{source.stem}.jpg", quality=92)
        layout.settings_file(name).write_text(SETTINGS.format(name=name, blip=blip, sd=sd))
    return names


def timed(label: str, fn, rows: list[tuple[str, float, str]], note: str = "") -> float:
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    rows.append((label, seconds, note(result) if callable(note) else note))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--photos", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        root = Path(tmp)
        blip, sd = build_tiny_blip(root / "models" / "tiny-blip"), build_tiny_sd(root / "models" / "tiny-sd")
        layout = DataLayout(root / "data")
        (layout.root / "subjects").mkdir(parents=True)
        auto = Automation(Graph(layout, instance))
        auto.requested()  # the automation sensor runs before the subjects arrive
        names = make_subjects(layout, args.subjects, args.photos, blip, sd)
        rows: list[tuple[str, float, str]] = []

        def settle() -> set[tuple[str, str]]:
            auto.tick_folders()
            return auto.settle()

        def loras(done: set[tuple[str, str]]) -> str:
            trained = [s for (a, s) in done if a == "lora" and not auto.metadata[a, s]["cache_hit"]]
            return f"{len(done)} (asset, subject) runs, LoRAs trained: {len(trained)}"

        cold = timed("(a) cold run, all subjects", settle, rows, loras)
        timed("(b) no-op: sensor + automation tick", settle, rows, lambda d: f"{len(d)} runs requested")

        def rerun_all() -> int:
            for name in names:
                auto.graph.materialize(",".join(ASSETS), name)
            assert auto.requested() == set()  # the automation tick after them: same data versions
            return len(names)

        timed("(b') forced rerun of every asset", rerun_all, rows, "all cache hits")
        path = layout.settings_file(names[0])
        path.write_text(path.read_text().replace("max_words = 12", "max_words = 10"))
        changed: dict[str, set] = {}

        def caption_change() -> set[tuple[str, str]]:
            changed["done"] = settle()
            return changed["done"]

        timed(f"(c) [captions] change in {names[0]}", caption_change, rows, loras)

    print(f"\n{args.subjects} subjects x {args.photos} photos, tiny models, CPU, 1 thread\n")
    print(f"| {'step':40} | {'seconds':>8} | {'of cold':>8} | what ran")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|---------")
    for label, seconds, note in rows:
        print(f"| {label:40} | {seconds:8.1f} | {seconds / cold:8.1%} | {note}")
    trained = [s for (a, s) in changed["done"] if a == "lora"]
    print(f"\n(c) trained LoRAs of: {trained}; targets (b) <= 5 %, (c) <= 40 % of (a)")


if __name__ == "__main__":
    main()
