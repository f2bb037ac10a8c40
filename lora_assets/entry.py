"""The `lora-assets` command. For `dedup` the image workers' fork server starts before anything
else is imported, so that its imports (NumPy, Pillow, the image code) overlap the command's own
(click) instead of following them: on 40 photos of 24 MP that start-up was a fifth of the run.
A server started for nothing (`--help`, `--workers 1`) only idles."""

from __future__ import annotations

import gc
import os
import sys


def main() -> None:
    dedup = "dedup" in sys.argv[1:]
    if dedup and (os.cpu_count() or 1) > 1:
        from lora_assets.images.forkserver import start_early

        start_early()
    from lora_assets.cli import main as command

    try:
        command()
    finally:
        if dedup:
            # The interpreter's last collection at exit walks every object the image stack made
            # (0.05 s of a one-photo run); frozen ones are skipped. Dedup leaves nothing to flush.
            gc.freeze()
