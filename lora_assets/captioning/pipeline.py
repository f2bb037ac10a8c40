"""Captions for a subject's training copies: overrides, template or BLIP (cached per image),
then the final text with trigger, class token and quality tags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lora_assets.captioning.blip import GENERATION_FIELDS, BlipCaptioner
from lora_assets.captioning.text import assemble, clean_generated, word_count
from lora_assets.models.references import require_available
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


class CaptionFileError(ValueError):
    """A caption file that cannot be read as text; names the file and the offending byte."""


def read_caption_file(path: Path, warn: Callable[[str], None]) -> str:
    """A caption file's text. UTF-8 (with or without BOM) is expected; a file saved by an older
    Windows editor (Windows-1252) is read as such with a warning; anything else is an error."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        where = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise CaptionFileError(
                f"{path}: not text in UTF-8 or Windows-1252 ({where}): save it as UTF-8"
            ) from None
        warn(f"{path}: not UTF-8 ({where}); read as Windows-1252. Save it as UTF-8 to be sure of the text")
        return text.strip()


def read_sidecars(images_dir: Path, paths: Sequence[str], warn: Callable[[str], None]) -> dict[str, str]:
    """`<photo stem>.txt` next to each photo: the user's own caption, which always wins."""
    found = {}
    for path in paths:
        sidecar = (images_dir / path).with_suffix(SIDE_CAR)
        if sidecar.is_file():
            found[path] = read_caption_file(sidecar, warn)
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

    def cache_key(self, sha256: str) -> str:
        """The image, the model and the fields that shape generated text (not trigger, tags, …)."""
        return RecordStore.key_for(
            "caption",
            CAPTION_VERSION,
            sha256,
            self.settings.model_id,
            self.settings.revision,
            self.settings.model_dump(include=GENERATION_FIELDS),
        )

    def run(
        self, items: Sequence[CaptionItem], overrides: dict[str, str]
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """One row per item (see COLUMNS) and counters: generated, cached, overrides, template,
        and the batch size BLIP ran at (0 when nothing was generated)."""
        counters = {"generated": 0, "cached": 0, "overrides": 0, "template": 0, "batch_size": 0}
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
            generated, counters["batch_size"] = self._generate(to_generate)
            bodies.update(generated)
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

    def _generate(self, items: Sequence[CaptionItem]) -> tuple[dict[str, str], int]:
        """BLIP bodies by sha256 (cached as they are made) and the batch size used."""
        require_available(self.model_reference, self.settings.revision, "config.json", "[captions] model_id")
        captioner = self.load_blip(self.model_reference, self.settings.revision)
        s = self.settings
        raw = captioner.caption_files([item.copy_path for item in items], s, self.max_pixels, self.progress)
        bodies = {}
        for item, text in zip(items, raw, strict=True):
            body = clean_generated(text, s.prompt, s.no_repeat_ngram_size, s.max_words)
            self.cache.put(self.cache_key(item.sha256), {"text": body, "raw": text})
            bodies[item.sha256] = body
        return bodies, s.batch_size or captioner.default_batch_size
