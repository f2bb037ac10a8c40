"""Training checkpoints that are either complete or not there.

A checkpoint is saved into a temporary folder, given a manifest (`progress.json`: epoch, step and
every file with its size) and renamed into place, so a crash mid-save leaves no `epoch-*` folder
behind. On object storage the manifest is published after the files it lists. Resuming takes the
newest checkpoint whose manifest is present and whose files all match it; an incomplete one (a
crash during its publication, a disk that filled up) is passed over, never fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_assets import crash

MANIFEST = "progress.json"
PARTIAL = ".partial-"


def save_checkpoint(folder: Path, epoch: int, global_step: int, save: Callable[[Path], None]) -> Path:
    """`save(temporary folder)` writes the state; the manifest is added and the folder renamed
    to `folder/epoch-NNNN`. Returns the checkpoint."""
    final = folder / f"epoch-{epoch:04d}"
    temporary = folder / f".epoch-{epoch:04d}{PARTIAL}{uuid.uuid4().hex[:8]}"
    save(temporary)
    crash.moment("checkpoint-save")  # state written, manifest not yet: the fault suite kills here
    files = {
        p.relative_to(temporary).as_posix(): p.stat().st_size for p in temporary.rglob("*") if p.is_file()
    }
    manifest = {"epoch": epoch, "global_step": global_step, "files": files}
    (temporary / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    return final


def manifest_of(checkpoint: Path) -> dict[str, Any] | None:
    """The manifest of a complete checkpoint, else None (missing, unreadable or incomplete)."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
        for name, size in manifest["files"].items():
            if (checkpoint / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


def complete_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints under `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("epoch-*")) if manifest_of(p) is not None]


def remove_stale(folder: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older ones, incomplete ones and
    temporary folders a crash left."""
    if not folder.is_dir():
        return
    complete = complete_checkpoints(folder)
    keep_set = set(complete[-keep:])
    for path in folder.iterdir():
        if path.is_dir() and path not in keep_set:
            shutil.rmtree(path, ignore_errors=True)
