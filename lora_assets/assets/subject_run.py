"""What every partitioned asset starts from: the subject, its files, its parsed settings, a logger;
on a URL data root, the pull of what the stage reads and the publication of what it wrote."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from lora_assets.images.workers import MeasureCache
from lora_assets.layout import DataLayout, SubjectFiles
from lora_assets.remote import RemoteRoot
from lora_assets.settings import SubjectSettings, load_subject_settings
from lora_assets.storage import DataRoot

MAX_WORKERS = 4  # per-image work in one step; several subjects' steps may run at once
Context = dg.AssetExecutionContext | dg.AssetCheckExecutionContext


@dataclass(frozen=True)
class SubjectRun:
    """One asset's view of one subject partition."""

    subject: str
    layout: DataLayout
    files: SubjectFiles
    settings: SubjectSettings
    log: dg.DagsterLogManager
    remote: RemoteRoot | None = None

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, context: Context, data_root: DataRoot, asset: str, publish: bool = True
    ) -> Iterator[SubjectRun]:
        """The subject of `context`, with the files of `asset`'s stage in place: pulled first on a
        URL root, and what the stage wrote published when it returns (not when it raises).
        A bad `subject.toml` fails the step with the file's own message."""
        layout, remote = data_root.layout(), data_root.remote()
        files = layout.subject(context.partition_key)
        reads, writes = files.synced(asset)
        if remote:
            fetched = remote.pull([remote.relative(p) for p in [*reads, *writes]])
            context.log.info(f"pulled {fetched / 1e6:.1f} MB from {remote.url} for {asset}")
        settings = load_subject_settings(files.settings, files.name)
        files.stage_dir(asset)
        yield cls(files.name, layout, files, settings, context.log, remote)
        if remote and publish:
            sent = remote.push([remote.relative(p) for p in writes])
            context.log.info(f"published {sent / 1e6:.1f} MB of {asset} to {remote.url}")

    def pull(self, paths: list[Path]) -> None:
        """Bring more files into the mirror (a URL root); nothing to do on a local root."""
        if self.remote:
            self.remote.pull([self.remote.relative(p) for p in paths])

    @property
    def trigger(self) -> str:
        return self.settings.trigger or self.subject

    @property
    def workers(self) -> int:
        return min(MAX_WORKERS, os.cpu_count() or 1)

    def measure_cache(self) -> MeasureCache:
        """Per-image hashes and detail measures by sha256, shared by dedup and filter."""
        return MeasureCache(self.files.measure_cache)

    def progress(self, what: str, every_seconds: float = 10.0) -> Callable[[int, int], None]:
        """A `(done, total)` callback that logs at most every `every_seconds` and at the end."""
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] >= every_seconds:
                last[0] = now
                self.log.info(f"{what}: {done}/{total}")

        return report
