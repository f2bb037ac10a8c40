"""The dedup engine's rules as plain values: the similarity presets, the pixel limit and
`DedupRules`. `settings.DedupSettings` validates a subject's `[dedup]` table into these; the
`lora-assets dedup` command builds them from its options without pydantic, whose import and
models were a third of the command's start-up (0.13 s before the first photo was hashed)."""

from __future__ import annotations

from dataclasses import dataclass

SIMILARITY_PRESETS: dict[str, float] = {"low": 0.85, "medium": 0.90, "high": 0.95}
# The default of `[ingest] max_pixels`: larger images are rejected as decompression bombs.
MAX_PIXELS = 120_000_000


def parse_similarity(text: str) -> str | float:
    """A `--similarity` value: a preset name or a number from 0.5 to 1."""
    if text in SIMILARITY_PRESETS:
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.5 <= value <= 1.0:
        raise ValueError(f"similarity must be low, medium, high or a number from 0.5 to 1, not {text!r}")
    return value


def similarity_threshold(similarity: str | float) -> float:
    """A similarity setting as a number (presets resolved)."""
    return SIMILARITY_PRESETS[similarity] if isinstance(similarity, str) else float(similarity)


@dataclass(frozen=True)
class DedupRules:
    """How photos are grouped and which are pinned (file names relative to the folder)."""

    threshold: float = SIMILARITY_PRESETS["medium"]
    crop_tolerant: bool = True
    drop_similar: bool = False
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    not_duplicates: tuple[tuple[str, ...], ...] = ()
