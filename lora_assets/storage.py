"""The data root as a Dagster resource (the paths themselves are in `layout.py`).

The root defaults to `./data` and is overridden by `$LORA_ASSETS_DATA_ROOT` or the resource's config.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from lora_assets.layout import DEFAULT_DATA_ROOT, DataLayout


class DataRoot(dg.ConfigurableResource):
    """The data root as a Dagster resource; `path` may be relative to the working directory."""

    path: str = DEFAULT_DATA_ROOT

    def layout(self) -> DataLayout:
        return DataLayout(Path(self.path).expanduser().resolve())
