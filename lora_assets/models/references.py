"""Where a model named in settings lives: a local folder/file, or a Hugging Face hub id."""

from __future__ import annotations

from pathlib import Path

DEFAULT_REVISION = "main"
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES  # one file holding a whole model


def resolve_model(reference: str, data_root: Path, revision: str = DEFAULT_REVISION) -> str:
    """An existing path as given, or relative to the data root, or the working directory;
    anything else is passed on as a hub id (`org/name`). A revision other than the default only
    means something on the hub: asking for one on a local path is an error, not silently ignored."""
    candidates = [Path(reference).expanduser()]
    if not candidates[0].is_absolute():
        candidates = [data_root / reference, Path.cwd() / reference]
    for candidate in candidates:
        if candidate.exists():
            if revision != DEFAULT_REVISION:
                raise ValueError(
                    f"revision {revision!r} applies to Hugging Face hub models, but {reference!r} is a "
                    f"local path ({candidate.resolve()}): remove `revision` or name a hub id"
                )
            return str(candidate.resolve())
    return reference
