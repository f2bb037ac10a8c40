"""What every partitioned asset starts from: the subject, its paths, its parsed settings, a logger."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from lora_assets.images.dedup import DedupCache
from lora_assets.settings import SubjectSettings, load_subject_settings
from lora_assets.storage import DataLayout, DataRoot


@dataclass(frozen=True)
class SubjectRun:
    """One asset's view of one subject partition."""

    subject: str
    layout: DataLayout
    settings: SubjectSettings
    log: dg.DagsterLogManager

    @classmethod
    def start(cls, context: dg.AssetExecutionContext, data_root: DataRoot) -> SubjectRun:
        """Parse the subject's settings; a bad `subject.toml` fails the step with the file's own message."""
        layout = data_root.layout()
        subject = context.partition_key
        settings = load_subject_settings(layout.settings_file(subject), subject)
        return cls(subject, layout, settings, context.log)

    def measure_cache(self) -> DedupCache:
        """Per-image hashes and detail measures by sha256, shared by dedup and filter."""
        return DedupCache(self.layout.work_dir(self.subject, "measures"))

    def work_dir(self, stage: str) -> Path:
        path = self.layout.work_dir(self.subject, stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, what: str, every_seconds: float = 10.0) -> Callable[[int, int], None]:
        """A `(done, total)` callback that logs at most every `every_seconds` and at the end."""
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] >= every_seconds:
                last[0] = now
                self.log.info(f"{what}: {done}/{total}")

        return report
