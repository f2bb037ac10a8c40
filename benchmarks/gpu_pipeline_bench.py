"""The user's whole job on one GPU: 25 photos of ~12 MP to a LoRA file, every stage at its default
settings, against a reference pipeline run side by side in the same process.

    python -m benchmarks.gpu_pipeline_bench            # on a GPU: the measurement
    python -m benchmarks.gpu_pipeline_bench --quick    # anywhere: tiny models, 4 photos (a smoke run)

Ours: the Dagster graph itself (raw_images -> deduped_images -> filtered_images -> captions ->
dataset_zip -> lora) on a local data root and a temporary instance, defaults everywhere but the
model paths: BLIP-large's and SD 1.5's architectures with random weights (no hub here), training
at 512 px, batch 6, 10 repeats x 10 epochs, text encoder trained.
Reference, the workflow being replaced: serial `imagehash.phash(Image.open(p))`, BLIP captioning
one image at a time (fp32, greedy; caption_bench.reference) and the loop of diffusers'
`train_text_to_image_lora.py` (train_bench.reference: VAE and text encoder every step,
`loss.item()` every step) for the same number of steps.
Reported: wall time per stage and in total, images/s of training (steady state), peak GPU memory,
and the share of the 460 img/s physical limit (1.714 TFLOP per 512 px image on an H200).
Targets (issue 13): total >= 2.5x faster than the reference; steady training >= 115 img/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dagster as dg
import imagehash
import torch
from PIL import Image

from benchmarks import caption_bench, train_bench
from lora_assets.layout import DataLayout
from lora_assets_tests.conftest import Graph

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT_IMAGES_PER_SECOND = 460.0
CHAIN = "raw_images,deduped_images,filtered_images,captions,dataset_zip,lora"
SETTINGS = """trigger = "ohwx"
[captions]
model_id = "{blip}"
[training]
base_model = "{sd}"
sample_prompts = []
"""
QUICK = """trigger = "ohwx"
[captions]
model_id = "{blip}"
min_words = 5
max_words = 10
[dataset]
resolution = 64
min_bucket_reso = 64
max_bucket_reso = 128
repeats = 2
[training]
base_model = "{sd}"
epochs = 2
batch_size = 2
sample_prompts = []
"""


def models(folder: Path, quick: bool) -> tuple[Path, Path]:
    """(BLIP folder, SD folder): the real architectures with random weights, or the tiny ones."""
    if quick:
        from lora_assets.models.tiny import build_tiny_blip, build_tiny_sd

        return build_tiny_blip(folder / "blip"), build_tiny_sd(folder / "sd")
    from lora_assets.models.tiny import blip_processor

    blip = folder / "blip-large"
    caption_bench.blip_large().save_pretrained(blip)
    blip_processor().save_pretrained(blip)
    return blip, train_bench.random_sd15(folder / "sd15")


def stage_seconds(graph: Graph, result: dg.ExecuteInProcessResult) -> dict[str, float]:
    """Wall seconds of each asset's step, from its STEP_START and STEP_SUCCESS events."""
    starts, ends = {}, {}
    for record in graph.instance.all_logs(result.run_id):
        if record.dagster_event_type == dg.DagsterEventType.STEP_START:
            starts[record.step_key] = record.timestamp
        elif record.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS:
            ends[record.step_key] = record.timestamp
    return {step: ends[step] - starts[step] for step in CHAIN.split(",") if step in ends}


def ours(base: Path, photos: list[Path], settings: str) -> dict[str, object]:
    layout = DataLayout(base / "data")
    images = layout.images_dir("bench")
    images.mkdir(parents=True)
    for photo in photos:
        os.link(photo, images / photo.name)
    layout.settings_file("bench").write_text(settings)
    with dg.instance_for_test() as instance:
        graph = Graph(layout, instance)
        graph.register("bench")
        started = time.perf_counter()
        result = graph.materialize(CHAIN, "bench")
        total = time.perf_counter() - started
        stages = stage_seconds(graph, result)
    log = json.loads(layout.subject("bench").training_log.read_text())
    return {
        "stages": stages,
        "total": total,
        "steps": log["steps"],
        "images_per_second": log["steady_images_per_second"],
        "peak_gib": log["peak_memory_bytes"] / 2**30,
    }


def reference(
    base: Path, photos: list[Path], blip: Path, sd: Path, steps: int, quick: bool
) -> dict[str, object]:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    stages: dict[str, float] = {}
    started = time.perf_counter()
    for photo in photos:
        imagehash.phash(Image.open(photo))
    stages["hash (serial pHash)"] = time.perf_counter() - started
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = BlipForConditionalGeneration.from_pretrained(blip), BlipProcessor.from_pretrained(blip)
    started = time.perf_counter()
    caption_bench.reference(model, processor, photos, 8 if quick else 40, device)
    del model
    stages["captions (batch 1, fp32, greedy)"] = time.perf_counter() - started
    side, mixed = (64, "no") if quick else (512, "fp16")
    (base / "ref-zip").mkdir()
    zip_path = train_bench.dataset(base / "ref-zip", len(photos), side)
    started = time.perf_counter()
    rate, peak = train_bench.reference(sd, zip_path.parent, 2 if quick else 6, steps, side, mixed)
    stages["training (diffusers loop)"] = time.perf_counter() - started
    return {
        "stages": stages,
        "total": sum(stages.values()),
        "images_per_second": rate,
        "peak_gib": peak / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models and 4 photos: a smoke run anywhere")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="gpu-pipeline-", dir=RESULTS))
    count = 4 if args.quick else 25
    photos = caption_bench.make_images(base / "photos", count)
    blip, sd = models(base / "models", args.quick)
    template = QUICK if args.quick else SETTINGS
    ours_run = ours(base / "ours", photos, template.format(blip=blip, sd=sd))
    ref_run = reference(base, photos, blip, sd, int(ours_run["steps"]), args.quick)
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{count} photos of ~12 MP to a LoRA, defaults, {card}\n")
    print("| pipeline | stage | seconds |\n|---|---|---|")
    for label, run in (("lora_assets", ours_run), ("reference", ref_run)):
        for stage, seconds in run["stages"].items():
            print(f"| {label} | {stage} | {seconds:.1f} |")
        print(f"| {label} | **total** | **{run['total']:.1f}** |")
    print("\n| pipeline | training img/s | share of 460 img/s | peak GiB |\n|---|---|---|---|")
    for label, run in (("lora_assets", ours_run), ("reference", ref_run)):
        rate = float(run["images_per_second"])
        print(f"| {label} | {rate:.1f} | {rate / LIMIT_IMAGES_PER_SECOND:.1%} | {run['peak_gib']:.1f} |")
    print(
        f"\nwhole job: {ref_run['total'] / ours_run['total']:.2f}x faster than the reference (target >= 2.5x)"
    )


if __name__ == "__main__":
    main()
