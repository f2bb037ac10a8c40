"""Contact sheets: a grid of small thumbnails with labels, as a file and as a markdown image."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lora_assets.display import shown

MARK_COLOURS = {"kept": (46, 160, 67), "dropped": (207, 34, 46), "similar": (191, 135, 0)}


@dataclass(frozen=True)
class Tile:
    """One cell: a thumbnail file, a short label, and an optional mark ("kept", "dropped", ...)."""

    image_path: Path
    label: str
    mark: str | None = None


def contact_sheet(tiles: Sequence[Tile], tile_side: int = 128, columns: int = 6) -> Image.Image:
    """Lay tiles out on a grid; unreadable thumbnails become grey cells rather than errors."""
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    label_height = 14
    cell_w, cell_h = tile_side + 4, tile_side + label_height + 4
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, tile in enumerate(tiles):
        x, y = (index % columns) * cell_w + 2, (index // columns) * cell_h + 2
        try:
            with Image.open(tile.image_path) as thumb:
                thumb = thumb.convert("RGB")
                thumb.thumbnail((tile_side, tile_side))
        except OSError:
            thumb = Image.new("RGB", (tile_side, tile_side), (90, 90, 90))
        sheet.paste(thumb, (x + (tile_side - thumb.width) // 2, y + (tile_side - thumb.height) // 2))
        if tile.mark in MARK_COLOURS:
            draw.rectangle(
                [x - 2, y - 2, x + tile_side + 1, y + tile_side + 1], outline=MARK_COLOURS[tile.mark], width=3
            )
        label = _fit(shown(tile.label), tile_side, font, draw)
        draw.text((x, y + tile_side + 1), label, fill=(230, 230, 230), font=font)
    return sheet


def _fit(text: str, width: int, font: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> str:
    """Shorten `text` with an ellipsis in the middle until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 4 and draw.textlength(text, font=font) > width:
        middle = len(text) // 2
        text = text[: middle - 2] + "…" + text[middle + 1 :]
    return text


def markdown_image(image: Image.Image, alt: str, max_side: int = 900, quality: int = 80) -> str:
    """A markdown image with an inline JPEG data URI (what Dagster's metadata panel renders)."""
    image = image.copy()
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{alt}](data:image/jpeg;base64,{encoded})"
