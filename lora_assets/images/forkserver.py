"""The image workers' fork server, named in one light module: the CLI starts it before importing
the image stack, and the process pool forks its workers from it.

A fork server starts clean once (the step's process may hold threads whose locks a forked child
would inherit), imports what the workers need, and forks each worker from itself.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

# What every worker needs imported. (Not SciPy: `features.perceptual_hash` spares its 0.2-0.35 s.)
PRELOAD = ["lora_assets.images.workers"]


def worker_context() -> ForkServerContext:
    """The forkserver context, with PRELOAD."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_early() -> None:
    """Start the fork server now, so that it imports the image stack while this process does."""
    worker_context()
    forkserver.ensure_running()
