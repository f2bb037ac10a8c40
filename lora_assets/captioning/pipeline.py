"""Captions for a subject's training copies: overrides, template or BLIP (cached per image),
then the final text with trigger, class token and quality tags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from lora_assets.captioning.blip import BlipCaptioner, GenerationSettings
from lora_assets.captioning.text import assemble, clean_generated, word_count
from lora_assets.record_store import RecordStore
from lora_assets.settings import CaptionSettings

CAPTION_VERSION = 1
SIDE_CAR = ".txt"
COLUMNS = [
    "sha256", "file_name", "path", "caption", "source", "model_id", "word_count",
    "caption_words", "quality_tags", "settings_hash",
]  # fmt: skip


@dataclass(frozen=True)
class CaptionItem:
    """One training image: its content hash, copy file, source path (relative to images/) and flags."""

    sha256: str
    file_name: str
    path: str
    copy_path: Path
    flags: tuple[str, ...] = ()


def read_sidecars(images_dir: Path, paths: Sequence[str]) -> dict[str, str]:
    """`<photo stem>.txt` next to each photo: the user's own caption, which always wins."""
    found = {}
    for path in paths:
        sidecar = (images_dir / path).with_suffix(SIDE_CAR)
        if sidecar.is_file():
            found[path] = sidecar.read_text(encoding="utf-8").strip()
    return found


def sidecar_digest_lines(images_dir: Path) -> list[str]:
    """(relative path, text) of every .txt under images/, for the caption settings version."""
    if not images_dir.is_dir():
        return []
    return [
        f"{p.relative_to(images_dir).as_posix()}\t{p.read_text(encoding='utf-8', errors='replace').strip()}"
        for p in sorted(images_dir.rglob(f"*{SIDE_CAR}"))
        if p.is_file() and not p.name.startswith(".")
    ]


@dataclass
class Captioner:
    """Everything needed to caption one subject."""

    settings: CaptionSettings
    trigger: str
    class_token: str
    settings_hash: str
    model_reference: str
    cache: RecordStore
    max_pixels: int
    progress: Callable[[int, int], None] | None = None
    load_blip: Callable[[str, str], BlipCaptioner] = BlipCaptioner.load

    def generation(self) -> GenerationSettings:
        s = self.settings
        return GenerationSettings(
            min_words=s.min_words,
            max_words=s.max_words,
            num_beams=s.num_beams,
            repetition_penalty=s.repetition_penalty,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            prompt=s.prompt,
        )

    def cache_key(self, sha256: str) -> str:
        return RecordStore.key_for(
            "caption",
            CAPTION_VERSION,
            sha256,
            self.settings.model_id,
            self.settings.revision,
            asdict(self.generation()),
        )

    def run(
        self, items: Sequence[CaptionItem], overrides: dict[str, str]
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """One row per item (see COLUMNS) and counters: generated, cached, overrides, template."""
        counters = {"generated": 0, "cached": 0, "overrides": 0, "template": 0}
        bodies: dict[str, str] = {}
        to_generate: list[CaptionItem] = []
        for item in items:
            if item.path in overrides or self.settings.captioner == "template":
                continue
            cached = self.cache.get(self.cache_key(item.sha256))
            if cached is not None:
                bodies[item.sha256] = cached["text"]
                counters["cached"] += 1
            elif item.sha256 not in {i.sha256 for i in to_generate}:
                to_generate.append(item)
        if to_generate:
            bodies.update(self._generate(to_generate))
            counters["generated"] = len(to_generate)
        rows = []
        tag_text = self.settings.quality_tags.model_dump()
        for item in items:
            tags = [tag_text[flag] for flag in item.flags if tag_text.get(flag)]
            if item.path in overrides:
                text, source, tags, body = (
                    self._override(overrides[item.path]),
                    "override",
                    [],
                    overrides[item.path],
                )
                counters["overrides"] += 1
            elif self.settings.captioner == "template":
                body = self.settings.template.format(trigger=self.trigger, class_token=self.class_token)
                text, source = assemble(self.trigger, self.class_token, body, tags), "template"
                counters["template"] += 1
            else:
                body = bodies[item.sha256]
                text, source = assemble(self.trigger, self.class_token, body, tags), "blip"
            rows.append(
                {
                    "sha256": item.sha256, "file_name": item.file_name, "path": item.path, "caption": text,
                    "source": source, "model_id": self.settings.model_id if source == "blip" else None,
                    "word_count": word_count(body), "caption_words": word_count(text),
                    "quality_tags": tags, "settings_hash": self.settings_hash,
                }
            )  # fmt: skip
        return pd.DataFrame(rows, columns=COLUMNS), counters

    def _override(self, text: str) -> str:
        """The user's text, with the trigger and class put first unless the text starts with the trigger."""
        if text.lower().startswith(self.trigger.lower()):
            return text
        return assemble(self.trigger, self.class_token, text, [])

    def _generate(self, items: Sequence[CaptionItem]) -> dict[str, str]:
        captioner = self.load_blip(self.model_reference, self.settings.revision)
        generation = self.generation()
        raw = captioner.caption_files(
            [item.copy_path for item in items],
            generation,
            self.settings.batch_size,
            self.max_pixels,
            self.progress,
        )
        bodies = {}
        for item, text in zip(items, raw, strict=True):
            body = clean_generated(
                text, generation.prompt, generation.no_repeat_ngram_size, generation.max_words
            )
            self.cache.put(self.cache_key(item.sha256), {"text": body, "raw": text})
            bodies[item.sha256] = body
        return bodies
