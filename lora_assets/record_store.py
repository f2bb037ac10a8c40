"""Per-key records on disk (JSON or raw bytes): the per-image caches of every stage.

One small file per key, written to a temporary name and renamed, so parallel runs and crashes
never leave a half-written record, and a cache can be cleared with `rm -r`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lora_assets.digests import stable_hash


class RecordStore:
    """Records addressed by a string key (or by the stable hash of a structured key)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key_for(*parts: Any) -> str:
        """A file-name-safe key from any JSON-able parts (image sha, settings, model id...)."""
        return stable_hash(list(parts))

    def path_of(self, key: str, suffix: str = ".bin") -> Path:
        """Where the record of `key` lives (it may not exist)."""
        return self.root / key[:2] / f"{key}{suffix}"

    def _path(self, key: str, suffix: str = ".json") -> Path:
        return self.path_of(key, suffix)

    def get_bytes(self, key: str, suffix: str = ".bin") -> bytes | None:
        """Raw bytes stored under `key` (arrays, thumbnails), or None."""
        try:
            return self._path(key, suffix).read_bytes()
        except OSError:
            return None

    def put_bytes(self, key: str, data: bytes, suffix: str = ".bin") -> None:
        """Store raw bytes under `key` atomically."""
        write_atomic(self._path(key, suffix), data)

    def get(self, key: str) -> dict[str, Any] | None:
        """The record for `key`, or None when missing or unreadable (a broken record is a miss)."""
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as handle:
                value = json.load(handle)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store `value` under `key` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(value, sort_keys=True).encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
