"""Where a model named in settings lives: a local folder/file, or a Hugging Face hub id."""

from __future__ import annotations

from pathlib import Path


def resolve_model(reference: str, data_root: Path) -> str:
    """An existing path as given, or relative to the data root, or the working directory;
    anything else is passed on as a hub id (`org/name`)."""
    candidates = [Path(reference).expanduser()]
    if not candidates[0].is_absolute():
        candidates = [data_root / reference, Path.cwd() / reference]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    return reference
