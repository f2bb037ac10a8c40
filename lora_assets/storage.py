"""The data root as a Dagster resource: a local path or a URL (the paths themselves are in
`layout.py`, the remote mirror in `remote.py`).

The root defaults to `./data` and is overridden by `$LORA_ASSETS_DATA_ROOT` or the resource's config.
"""

from __future__ import annotations

import dagster as dg

from lora_assets.layout import DEFAULT_DATA_ROOT, DataLayout, view_layout, working_layout
from lora_assets.remote import RemoteRoot, is_url


class DataRoot(dg.ConfigurableResource):
    """The data root as a Dagster resource; `path` may be relative to the working directory, or
    any fsspec URL (`s3://bucket/prefix`)."""

    path: str = DEFAULT_DATA_ROOT

    def layout(self) -> DataLayout:
        """Where stages work: the root, or this machine's mirror of a URL root."""
        return working_layout(self.path)

    def view(self) -> DataLayout:
        """The root itself, for listings and small reads (sensors, observations)."""
        return view_layout(self.path)

    def remote(self) -> RemoteRoot | None:
        return RemoteRoot(self.path) if is_url(self.path) else None
