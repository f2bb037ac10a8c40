"""Small helpers that turn tables into asset metadata Dagster renders."""

from __future__ import annotations

import pandas as pd

from lora_assets.display import shown


def markdown_table(frame: pd.DataFrame, columns: list[str], limit: int = 50) -> str:
    """A small markdown table (first `limit` rows) for asset metadata."""
    if frame.empty:
        return "_none_"
    rows = frame[columns].head(limit)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows.itertuples(index=False):
        cells = [shown(str(value)).replace("|", "\\|") for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    if len(frame) > limit:
        lines.append(f"\n… and {len(frame) - limit} more")
    return "\n".join(lines)
