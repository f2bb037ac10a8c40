"""Where a model named in settings lives: a local folder/file, or a Hugging Face hub id."""

from __future__ import annotations

import os
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


def require_available(reference: str, revision: str, marker: str, setting: str) -> None:
    """A hub model must be in this machine's Hugging Face cache or the hub must answer, else one
    line saying how to use a local copy: transformers would otherwise retry for minutes and end
    with a generic error. `marker` is a file every such model has (config.json, model_index.json)."""
    if Path(reference).exists():
        return
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(reference, marker, revision=revision), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            HfApi().model_info(reference, revision=revision, timeout=10)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means: not usable from here
            reason = f"the hub did not answer: {type(exc).__name__}"
    raise ValueError(
        f"model {reference!r} is not in this machine's Hugging Face cache and {reason}. Download it "
        f"where there is internet (`huggingface-cli download {reference}`) and set {setting} to "
        "that folder (absolute, or relative to the data root)"
    )
