"""Per-image work on all cores, cached by content: the process pool and the measure cache that
the dedup and filter stages share (no Dagster here)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from lora_assets.images.decode import ImageRejected
from lora_assets.images.detail import DETAIL_VERSION, DetailMeasure, measure_detail
from lora_assets.images.features import FEATURES_VERSION, ImageFeatures, compute_features
from lora_assets.images.forkserver import worker_context
from lora_assets.images.similarity import PairScore, compare
from lora_assets.record_store import RecordStore

Progress = Callable[[str, int, int], None]
# The grey decodes of PNGs (formats decoded in full to be hashed) kept for the detail stage, over
# all workers: 512 MB is a hundred 5 MP photos.
SCRATCH_BYTES = 512 * 2**20
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Photo:
    """An image to deduplicate: `key` is its name in results and pins (path relative to the
    folder), `sha256` (optional) addresses the cache and marks byte-identical copies."""

    key: str
    path: Path
    sha256: str | None = None


class MeasureCache:
    """Per-image features (hashes) and detail measures on disk, addressed by content sha256:
    dedup computes both, the filter stage reads the detail measures again."""

    def __init__(self, root: Path) -> None:
        self.store = RecordStore(root)

    @staticmethod
    def _key(kind: str, version: int, sha: str) -> str:
        return RecordStore.key_for(kind, version, sha)

    def features(self, sha: str) -> ImageFeatures | None:
        data = self.store.get_bytes(self._key("features", FEATURES_VERSION, sha), ".npz")
        return ImageFeatures.from_bytes(data) if data else None

    def put_features(self, sha: str, value: ImageFeatures) -> None:
        self.store.put_bytes(self._key("features", FEATURES_VERSION, sha), value.to_bytes(), ".npz")

    def detail(self, sha: str) -> DetailMeasure | None:
        data = self.store.get_bytes(self._key("detail", DETAIL_VERSION, sha), ".npz")
        return DetailMeasure.from_bytes(data) if data else None

    def put_detail(self, sha: str, value: DetailMeasure) -> None:
        self.store.put_bytes(self._key("detail", DETAIL_VERSION, sha), value.to_bytes(), ".npz")


def _one_thread() -> None:
    """Workers are as many as cores: a BLAS thread pool in each would oversubscribe them (10x
    slower here), so each worker's numpy runs single-threaded."""
    threadpool_limits(limits=1)


def features_job(args: tuple[Path, int, Path | None]) -> ImageFeatures | ImageRejected:
    path, max_pixels, keep_gray = args
    try:
        return compute_features(path, max_pixels, None if keep_gray is None else _gray_keeper(keep_gray))
    except ImageRejected as exc:
        return exc


def detail_job(args: tuple[Path, int, bool, Path | None]) -> DetailMeasure | ImageRejected:
    path, max_pixels, window, kept_gray = args
    try:
        return measure_detail(path, max_pixels, window, _kept_gray(kept_gray))
    except ImageRejected as exc:
        return exc


def _gray_keeper(target: Path) -> Callable[[Image.Image], None]:
    """Saves a full decode's grey to `target` (a .npy in the run's scratch folder) while the
    folder holds less than SCRATCH_BYTES: a PNG's decode is most of what measuring it costs."""

    def keep(image: Image.Image) -> None:
        partial = target.with_suffix(".part")
        try:
            used = sum(entry.stat().st_size for entry in os.scandir(target.parent))
            if used + image.width * image.height > SCRATCH_BYTES:
                return
            with partial.open("wb") as handle:
                np.save(handle, np.asarray(image.convert("L")))
            partial.replace(target)
        except OSError:  # a full or vanished temp disk: the detail stage decodes the file again
            partial.unlink(missing_ok=True)

    return keep


def _kept_gray(path: Path | None) -> Image.Image | None:
    """The grey decode `_gray_keeper` saved, or None (not kept, or unreadable: decode again)."""
    if path is None:
        return None
    try:
        return Image.fromarray(np.load(path))
    except (OSError, ValueError):
        return None


def compare_job(args: tuple[ImageFeatures, ImageFeatures, bool]) -> PairScore:
    return compare(*args)


class ImageWorkers:
    """A pool of `workers` processes over photos, with an optional per-image cache by sha256."""

    def __init__(
        self,
        max_pixels: int,
        workers: int | None = None,
        cache: MeasureCache | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.cache = cache
        self.progress = progress
        self.counters = {"details_computed": 0, "details_cached": 0, "details_from_hashing_decode": 0}
        self.scratch: Path | None = None  # a run's folder of kept decodes (see SCRATCH_BYTES)

    def _scratch_file(self, photo: Photo) -> Path | None:
        """Where a full decode of `photo` made while hashing is kept for the detail stage."""
        if self.scratch is None:
            return None
        name = photo.sha256 or hashlib.sha256(str(photo.path).encode()).hexdigest()
        return self.scratch / f"{name}.npy"

    def _kept_file(self, photo: Photo) -> Path | None:
        kept = self._scratch_file(photo)
        return kept if kept is not None and kept.exists() else None

    def measure_details(self, photos: Sequence[Photo]) -> dict[str, DetailMeasure]:
        """Detail measures of `photos` by key (cached by sha256); raises on an unreadable photo."""
        with self._pool() as pool:
            return self._details(list(photos), pool)

    def _pool(self) -> Executor:
        """Processes; threads where processes cannot be started (one worker, or inside a daemonic
        process such as a Celery prefork child, where decoding and numpy still release the GIL)."""
        if self.workers == 1 or multiprocessing.current_process().daemon:
            return ThreadPoolExecutor(max_workers=self.workers)
        # Not fork: the step's process has threads (Dagster's, an S3 client's event loop, OpenMP's)
        # and a child forked while one holds a lock can hang for good. A fork server starts clean
        # once, with this module imported, and forks each worker from itself.
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=worker_context(), initializer=_one_thread
        )

    def _map(self, pool: Executor, job: Callable[[T], R], items: list[T], stage: str) -> list[R]:
        results: list[R] = []
        # Small chunks: one slow file (a large PNG) at the end of a big chunk idles the other cores.
        chunk = max(1, min(8, len(items) // (self.workers * 8) or 1))
        for result in pool.map(job, items, chunksize=chunk):
            results.append(result)
            if self.progress:
                self.progress(stage, len(results), len(items))
        return results

    @staticmethod
    def _cached(photo: Photo, by_content: dict[str, Any], lookup: Callable[[str], Any] | None) -> Any:
        if not photo.sha256 or lookup is None:
            return None
        if photo.sha256 not in by_content:
            by_content[photo.sha256] = lookup(photo.sha256)
        return by_content[photo.sha256]

    def _split_cached(
        self, photos: Sequence[Photo], lookup: Callable[[str], Any] | None, counter: str
    ) -> tuple[dict[str, Any], list[Photo]]:
        """(key -> value found in the cache, photos still to compute); hits counted under `counter`."""
        found: dict[str, Any] = {}
        by_content: dict[str, Any] = {}
        todo: list[Photo] = []
        for photo in photos:
            cached = self._cached(photo, by_content, lookup)
            if cached is not None:
                found[photo.key] = cached
                self.counters[counter] += 1
            else:
                todo.append(photo)
        return found, todo

    def _details(
        self, photos: list[Photo], pool: Executor, windows: Collection[str] = ()
    ) -> dict[str, DetailMeasure]:
        """Detail measures by key; those of `windows` with their native central window and block
        steps (measured on demand: a cached measure without them is redone)."""
        lookup = self.cache.detail if self.cache else None
        details, todo = self._split_cached(photos, lookup, "details_cached")
        for photo in photos:
            if photo.key in windows and photo.key in details and not details[photo.key].native_measured:
                del details[photo.key]
                self.counters["details_cached"] -= 1
                todo.append(photo)
        jobs = [(p.path, self.max_pixels, p.key in windows, self._kept_file(p)) for p in todo]
        self.counters["details_from_hashing_decode"] += sum(job[3] is not None for job in jobs)
        results = self._map(pool, detail_job, jobs, "scoring detail")
        for photo, result in zip(todo, results, strict=True):
            if isinstance(result, ImageRejected):
                raise RuntimeError(f"{photo.key}: decoded for hashing but not for detail: {result}")
            details[photo.key] = result
            self.counters["details_computed"] += 1
            if self.cache and photo.sha256:
                self.cache.put_detail(photo.sha256, result)
        return details
