"""What every partitioned asset starts from: the subject, its files, its parsed settings, a logger."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from lora_assets.images.workers import MeasureCache
from lora_assets.layout import DataLayout, SubjectFiles
from lora_assets.settings import SubjectSettings, load_subject_settings
from lora_assets.storage import DataRoot

MAX_WORKERS = 4  # per-image work in one step; several subjects' steps may run at once


@dataclass(frozen=True)
class SubjectRun:
    """One asset's view of one subject partition."""

    subject: str
    layout: DataLayout
    files: SubjectFiles
    settings: SubjectSettings
    log: dg.DagsterLogManager

    @classmethod
    def start(
        cls, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, data_root: DataRoot
    ) -> SubjectRun:
        """Parse the subject's settings (a bad `subject.toml` fails the step with the file's own
        message) and, for an asset, create its work folder."""
        layout = data_root.layout()
        files = layout.subject(context.partition_key)
        settings = load_subject_settings(files.settings, files.name)
        if isinstance(context, dg.AssetExecutionContext):
            files.stage_dir(context.asset_key.path[-1])
        return cls(files.name, layout, files, settings, context.log)

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
