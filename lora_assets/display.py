"""User-controlled names (file names, folder names) made safe to show: one line, no control
characters, in logs, tables, contact sheets and the CLI. The names themselves are stored as
they are; only their display changes."""

from __future__ import annotations

import unicodedata


def shown(name: str) -> str:
    """`name` with control characters escaped (`a\\nb.jpg`), printable everywhere."""
    if all(unicodedata.category(c)[0] != "C" for c in name):
        return name
    return "".join(c if unicodedata.category(c)[0] != "C" else repr(c)[1:-1] for c in name)
