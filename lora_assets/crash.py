"""Named moments where the fault suite kills the process with SIGKILL, to show that a crash
exactly there loses nothing and the next plain run completes.

`LORA_ASSETS_KILL_AT=<moment>[:<n>]` kills the process the n-th time (default: first) it reaches
`<moment>`. Unset, as everywhere outside the fault suite, a moment costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_AT_ENV = "LORA_ASSETS_KILL_AT"
_reached: Counter[str] = Counter()


def moment(name: str) -> None:
    """Die here (kill -9, no cleanup of any kind) if the environment asks for it."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
