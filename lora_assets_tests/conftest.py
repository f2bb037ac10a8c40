"""Shared fixtures: a temporary data root with real photos, a temporary Dagster instance, and
helpers to observe sources, materialize assets and read stale status through Dagster itself."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dagster as dg
import pytest

from lora_assets.definitions import build_definitions
from lora_assets.layout import DataLayout
from lora_assets.partitions import SUBJECTS_PARTITION

REPO = Path(__file__).resolve().parents[1]
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_EVENT_POINTER_TAG = "dagster/input_event_pointer"
SAMPLE_IMAGES = REPO / "data" / "subjects" / "sample" / "images"
TEST_PHOTOS = Path(__file__).resolve().parent / "photos"  # see photos/CREDITS.csv


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    """An empty data root in a temporary folder."""
    root = tmp_path / "data"
    (root / "subjects").mkdir(parents=True)
    return DataLayout(root)


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BLIP saved to disk, loaded by the same code as the real model."""
    import torch

    from lora_assets.models.tiny import build_tiny_blip

    torch.set_num_threads(1)
    return build_tiny_blip(tmp_path_factory.mktemp("models") / "tiny-blip")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD 1.5-style pipeline: a diffusers folder with tiny-sd.safetensors and
    tiny-vae.safetensors single files beside it."""
    import torch

    from lora_assets.models.tiny import build_tiny_sd

    torch.set_num_threads(1)
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def sample_photo(name: str) -> Path:
    """A real bundled photo (see data/subjects/sample/CREDITS.csv and photos/CREDITS.csv)."""
    matches = sorted(SAMPLE_IMAGES.rglob(name)) + sorted(TEST_PHOTOS.glob(name))
    assert matches, name
    return matches[0]


def tiny_settings(
    tiny_blip: Path, tiny_sd: Path, *, max_bucket: int = 128, repeats: int = 2, epochs: int = 2
) -> str:
    """A subject.toml that captions with the tiny BLIP and trains on the tiny SD in seconds."""
    return f"""
trigger = "ohwx"
[captions]
model_id = "{tiny_blip}"
min_words = 5
max_words = 10
num_beams = 1
[dataset]
resolution = 64
min_bucket_reso = 64
max_bucket_reso = {max_bucket}
repeats = {repeats}
[training]
base_model = "{tiny_sd}"
network_dim = 4
network_alpha = 2.0
epochs = {epochs}
batch_size = 2
sample_steps = 2
"""


def add_subject(layout: DataLayout, name: str, photos: list[str], settings: str = "") -> Path:
    """A subject folder holding copies of bundled photos (and a subject.toml)."""
    images = layout.images_dir(name)
    images.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy2(sample_photo(photo), images / photo)
    layout.settings_file(name).write_text(settings, encoding="utf-8")
    return images


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime_ns) of every file under `folder`: proves the user's files were not touched."""
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Graph:
    """The project's real Definitions over a temporary data root and instance."""

    def __init__(self, layout: DataLayout, instance: dg.DagsterInstance) -> None:
        self.layout = layout
        self.instance = instance
        self.defs = build_definitions(str(layout.root))

    def register(self, *subjects: str) -> None:
        known = set(self.instance.get_dynamic_partitions(SUBJECTS_PARTITION))
        new = [s for s in subjects if s not in known]
        if new:
            self.instance.add_dynamic_partitions(SUBJECTS_PARTITION, new)

    def observe(self) -> None:
        """Run the observation job over every source, as the UI or sensor would."""
        result = self.defs.resolve_job_def("observe_subject_inputs").execute_in_process(
            instance=self.instance
        )
        assert result.success

    def materialize(
        self, selection: str, subject: str, expect_success: bool = True
    ) -> dg.ExecuteInProcessResult:
        """Materialize comma-separated selection strings (e.g. "raw_images,captions*") for one subject."""
        graph = self.defs.resolve_asset_graph()
        keys = set().union(
            *(dg.AssetSelection.from_string(part.strip()).resolve(graph) for part in selection.split(","))
        )
        job = self.defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=self.instance, partition_key=subject, asset_selection=list(keys), raise_on_error=False
        )
        assert result.success == expect_success, result.get_step_failure_events()
        return result

    def metadata(self, result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
        """Plain values of an asset's materialization metadata in `result`."""
        (event,) = [m for m in result.asset_materializations_for_node(asset)]
        return {key: getattr(value, "value", value) for key, value in event.metadata.items()}

    def data_version(self, asset: str, subject: str, before_storage_id: int | None = None) -> str | None:
        """Latest data version of a materialized asset or observed source for one subject (as of
        an event log position, when given)."""
        records_filter = dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[subject], before_storage_id=before_storage_id
        )
        records = [
            *self.instance.fetch_materializations(records_filter, limit=1).records,
            *self.instance.fetch_observations(records_filter, limit=1).records,
        ]
        latest = max(records, key=lambda r: r.storage_id) if records else None
        return latest.event_log_entry.tags.get(DATA_VERSION_TAG) if latest else None

    def stale_status(self, asset: str, subject: str) -> str:
        """FRESH / STALE / MISSING as Dagster defines it for partitions, from public records only:
        a materialization is stale when its code version changed, or when a dependency's data
        version now differs from the one it had at the event the materialization read (recorded
        in its `dagster/input_event_pointer/<dep>` tag)."""
        spec = next(s for s in self.defs.resolve_all_asset_specs() if s.key == dg.AssetKey(asset))
        records_filter = dg.AssetRecordsFilter(asset_key=spec.key, asset_partitions=[subject])
        latest = self.instance.fetch_materializations(records_filter, limit=1).records
        if not latest:
            return "MISSING"
        tags = latest[0].event_log_entry.tags
        if spec.code_version and tags.get(CODE_VERSION_TAG) != spec.code_version:
            return "STALE"
        for dep in spec.deps:
            name = dep.asset_key.to_user_string()
            pointer = tags.get(f"{INPUT_EVENT_POINTER_TAG}/{name}")
            then = self.data_version(name, subject, int(pointer) + 1) if pointer else None
            if then != self.data_version(name, subject):
                return "STALE"
        return "FRESH"


@pytest.fixture
def graph(layout: DataLayout, instance: dg.DagsterInstance) -> Graph:
    return Graph(layout, instance)
