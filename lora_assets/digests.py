"""Content digests: the identities every cache and data version in the project is built from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
VERSION_CHARS = 24  # 96 bits: data and settings versions shown in the UI


def short_version(hexdigest: str) -> str:
    """A data or settings version from a hex digest: short enough to read in the UI, long enough
    never to collide among one subject's versions."""
    return hexdigest[:VERSION_CHARS]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks so 100 MB photos do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stable_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces), so equal values always hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any) -> str:
    """Hex sha256 of a JSON-able value's canonical form."""
    return hashlib.sha256(stable_json(value).encode("utf-8")).hexdigest()


def hash_lines(lines: Iterable[str]) -> str:
    """Hex sha256 over lines joined by newlines: cheap digest of a sorted listing."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
