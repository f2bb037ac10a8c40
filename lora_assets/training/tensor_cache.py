"""Tensors cached on disk by content: VAE latents and text-encoder outputs.

Latents are keyed by (image sha256, VAE identity, bucket, flip), text embeddings by (caption,
text-encoder identity, clip skip), so a retrain on the same images encodes nothing, and a new
VAE or bucket setting encodes again instead of reusing stale tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_assets.record_store import RecordStore, write_atomic


class TensorCache:
    """One tensor per key, stored as a .safetensors file under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    @staticmethod
    def key(*parts: Any) -> str:
        return RecordStore.key_for(*parts)

    def get(self, key: str) -> Any | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            tensor = load_file(path)["tensor"]
        except Exception:  # noqa: BLE001 - a truncated cache file is a miss, not a failure
            self.misses += 1
            return None
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: Any) -> None:
        from safetensors.torch import save

        write_atomic(self._path(key), save({"tensor": tensor.detach().cpu().contiguous()}))
