"""A data root that is a URL (`s3://bucket/prefix`, `gs://…`, `file://…`), reached through fsspec.

Stages compute on local files. For a remote root each stage pulls what it reads into a local
mirror of the root (under `$LORA_ASSETS_SCRATCH`, default `~/.cache/lora_assets`), runs, and
publishes what it wrote: each new or changed file is uploaded to a temporary key, its size and
sha256 are read back and checked, then it is copied to its key and the temporary key deleted,
so a reader never takes a half-written object as valid (readers skip temporary keys, and the
next push of a folder deletes any left by a crash). Files a stage removed are removed remotely.

The user's photos, the heavy reads, go through a content-keyed blob cache (keyed by the object's
ETag and size) and are hard-linked into the mirror; the cache is bounded
(`$LORA_ASSETS_SCRATCH_GB`, default 50): the photos of the least recently used other subjects
and unlinked blobs are dropped first. Everything under the scratch folder is safe to delete: it
is pulled again. No Dagster import here: the training process uses it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lora_assets.digests import sha256_file
from lora_assets.record_store import write_atomic

SCRATCH_ENV = "LORA_ASSETS_SCRATCH"
SCRATCH_LIMIT_ENV = "LORA_ASSETS_SCRATCH_GB"
DEFAULT_SCRATCH_GB = 50.0
PARTIAL = ".partial-"
# Fail in seconds, not minutes: botocore's defaults (60 s timeouts, legacy retries) and s3fs's
# own retry loop around them took 7 minutes to give up on a server that stopped answering.
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}
S3_RETRIES = 2
_CHUNK = 1 << 20
MARKERS = frozenset({"progress.json"})  # checkpoint manifests (training/checkpoints.py)


def is_url(root: str) -> bool:
    """Whether a data root names a remote store (`file://` and plain paths are local)."""
    scheme = urlparse(root).scheme
    return len(scheme) > 1 and scheme != "file"


def local_root(root: str) -> Path:
    """A local data root as a path (`file:///data` -> `/data`; `~` expanded; resolved)."""
    path = urlparse(root).path if root.startswith("file://") else root
    return Path(path).expanduser().resolve()


def default_scratch() -> Path:
    return Path(os.environ.get(SCRATCH_ENV, "~/.cache/lora_assets")).expanduser()


class RemoteError(RuntimeError):
    """A remote data root that cannot be used: one line naming the URL, never a credential."""


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies an object's content without reading it: its size and ETag (or mtime)."""

    size: int
    version: str


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for a root URL; credentials and the endpoint come from the environment
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL_S3`, …), never from here."""
    if urlparse(url).scheme in ("s3", "s3a"):
        return {"config_kwargs": S3_CONFIG, "skip_instance_cache": True}
    return {}


@contextlib.contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Turn any storage error into one `RemoteError` line naming `url` and the server's code."""
    try:
        yield
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError(describe_error(url, exc)) from exc


def describe_error(url: str, exc: BaseException) -> str:
    code = None
    for error in (exc, exc.__cause__, exc.__context__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code") or code
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"{url} (endpoint {endpoint})" if endpoint and url.startswith("s3") else url
    message = (str(exc).splitlines() or [type(exc).__name__])[0]
    hint = {
        "SignatureDoesNotMatch": "wrong secret key",
        "InvalidAccessKeyId": "unknown access key",
        "NoSuchBucket": "no such bucket",
        "AccessDenied": "access denied",
    }.get(code or "", "")
    detail = f" [{code}{': ' + hint if hint else ''}]" if code else ""
    return f"data root {where}: {type(exc).__name__}{detail}: {message}"


class RemoteRoot:
    """One remote data root and this machine's mirror of it (see module docstring)."""

    def __init__(self, url: str, scratch: Path | None = None) -> None:
        from upath import UPath

        self.url = url.rstrip("/")
        scratch = scratch or default_scratch()
        self.mirror = scratch / "mirror" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.blobs = scratch / "blobs"
        self.state_dir = self.mirror / ".sync"
        self.limit = int(float(os.environ.get(SCRATCH_LIMIT_ENV, DEFAULT_SCRATCH_GB)) * 2**30)
        with remote_errors(self.url):
            self.root = UPath(self.url, **storage_options(self.url))
            self.fs = self.root.fs
            if hasattr(self.fs, "retries"):
                self.fs.retries = S3_RETRIES  # s3fs's own retry loop, around botocore's
        self.base = self.root.path.rstrip("/")

    def key(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    def relative(self, local: Path) -> str:
        """A mirror path's key relative to the root."""
        return local.relative_to(self.mirror).as_posix()

    def check(self) -> None:
        """Fail now, with one line, when the root cannot be listed (credentials, bucket, endpoint)."""
        with remote_errors(self.url):
            self.fs.ls(self.base.split("/", 1)[0], refresh=True)

    # -- reading ------------------------------------------------------------------------------
    def listing(self, relative: str) -> dict[str, ObjectInfo]:
        """Every object under `relative` (a folder, one file, or `folder/*.ext`) by key relative
        to the root; temporary upload keys are not objects."""
        relative, suffix = _split_pattern(relative)
        with remote_errors(self.url):
            key = self.key(relative)
            if not self.fs.exists(key):
                return {}
            found = self.fs.find(key, detail=True)
        objects = {}
        for name, info in found.items():
            leaf = name.rsplit("/", 1)[-1]
            if PARTIAL in leaf or info.get("type") == "directory" or not leaf.endswith(suffix):
                continue
            objects[name[len(self.base) + 1 :]] = ObjectInfo(int(info.get("size") or 0), _version(info))
        return objects

    def pull(self, relatives: list[str]) -> int:
        """Make the mirror hold exactly the remote files under `relatives`; returns bytes fetched."""
        fetched = 0
        for relative in relatives:
            state = self._state(relative)
            remote = self.listing(relative)
            for name, info in remote.items():
                local = self.mirror / name
                if not _same(state.get(name), local, info):
                    fetched += self._download(name, info, local)
                    state[name] = _record(local, info.version)
            for name in _local_files(self.mirror, relative) - remote.keys():
                (self.mirror / name).unlink(missing_ok=True)
                state.pop(name, None)
            self._save_state(relative, {k: v for k, v in state.items() if k in remote})
        self._trim()
        return fetched

    def _download(self, name: str, info: ObjectInfo, local: Path) -> int:
        """Fetch one object; the user's photos (never written by a stage) through the blob cache."""
        local.parent.mkdir(parents=True, exist_ok=True)
        if not name.startswith("subjects/"):
            temporary = local.with_name(f".{local.name}{PARTIAL}{uuid.uuid4().hex}")
            with remote_errors(self.url):
                self.fs.get_file(self.key(name), str(temporary))
            os.replace(temporary, local)
            return info.size
        blob = self.blobs / hashlib.sha256(f"{info.version}:{info.size}".encode()).hexdigest()
        fetched = 0
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            temporary = blob.with_name(f"{blob.name}{PARTIAL}{uuid.uuid4().hex}")
            with remote_errors(self.url):
                self.fs.get_file(self.key(name), str(temporary))
            os.replace(temporary, blob)
            fetched = info.size
        link = local.with_name(f".{local.name}{PARTIAL}{uuid.uuid4().hex}")
        try:
            os.link(blob, link)
        except OSError:
            shutil.copyfile(blob, link)
        os.replace(link, local)
        return fetched

    def read_bytes(self, relative: str) -> bytes | None:
        """One small object, or None when it does not exist."""
        with remote_errors(self.url):
            try:
                return self.fs.cat_file(self.key(relative))
            except FileNotFoundError:
                return None

    # -- writing ------------------------------------------------------------------------------
    def push(self, relatives: list[str]) -> int:
        """Publish the mirror's files under `relatives` (new or changed ones; manifests last),
        delete remote files the mirror no longer has and temporary keys left by a crash; returns
        bytes sent."""
        sent = 0
        for relative in relatives:
            state = self._state(relative)
            remote = self.listing(relative)
            local_names = _local_files(self.mirror, relative)
            # A folder's manifest goes last: whoever sees it sees every file it lists.
            for name in sorted(local_names, key=lambda n: (n.rsplit("/", 1)[-1] in MARKERS, n)):
                local = self.mirror / name
                if name in remote and _same(state.get(name), local, remote[name]):
                    continue
                version = self.publish(local, name)
                sent += local.stat().st_size
                state[name] = _record(local, version)
            for name in remote.keys() - local_names:
                with remote_errors(self.url):
                    self.fs.rm_file(self.key(name))
            self._remove_partials(relative)
            self._save_state(relative, {k: v for k, v in state.items() if k in local_names})
        return sent

    def publish(self, local: Path, relative: str) -> str:
        """Upload one file atomically (temporary key, size and sha256 read back, copy, delete);
        returns the published object's version."""
        size, digest = local.stat().st_size, sha256_file(local)
        key = self.key(relative)
        temporary = f"{key}{PARTIAL}{uuid.uuid4().hex}"
        with remote_errors(f"{self.url}/{relative}"):
            try:
                self.fs.put_file(str(local), temporary)
                uploaded = self.fs.info(temporary)
                if int(uploaded.get("size") or 0) != size:
                    raise OSError(f"uploaded {uploaded.get('size')} bytes of {size}")
                if self._sha256(temporary) != digest:
                    raise OSError("the uploaded bytes differ from the local file (sha256)")
                self.fs.copy(temporary, key)
            finally:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(temporary)
            return _version(self.fs.info(key))

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Publish a small file from memory (atomically, as `publish`)."""
        local = self.mirror / relative
        write_atomic(local, data)
        self.publish(local, relative)

    def _sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(key, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _remove_partials(self, relative: str) -> None:
        with remote_errors(self.url):
            key = self.key(relative)
            if not self.fs.exists(key):
                return
            for name in self.fs.find(key):
                if PARTIAL in name.rsplit("/", 1)[-1]:
                    self.fs.rm_file(name)

    # -- mirror upkeep ------------------------------------------------------------------------
    def _state_path(self, relative: str) -> Path:
        return self.state_dir / f"{hashlib.sha256(relative.encode()).hexdigest()[:24]}.json"

    def _state(self, relative: str) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self._state_path(relative).read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, relative: str, state: dict[str, dict[str, Any]]) -> None:
        write_atomic(self._state_path(relative), json.dumps(state, sort_keys=True).encode())

    def _trim(self) -> None:
        """Keep the blob cache under its bound: unlinked blobs go first, oldest first."""
        if not self.blobs.is_dir():
            return
        blobs = sorted((p for p in self.blobs.iterdir() if p.is_file()), key=lambda p: p.stat().st_atime)
        total = sum(p.stat().st_size for p in blobs)
        for blob in blobs:
            if total <= self.limit:
                break
            if blob.stat().st_nlink == 1:
                total -= blob.stat().st_size
                blob.unlink(missing_ok=True)


def _version(info: dict[str, Any]) -> str:
    """An object's content identity from a listing: ETag (S3, GCS) or, on plain file systems,
    size and modification time."""
    for key in ("ETag", "etag", "md5Hash"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('created')}"


def _record(local: Path, version: str) -> dict[str, Any]:
    stat = local.stat()
    return {"version": version, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _same(record: dict[str, Any] | None, local: Path, info: ObjectInfo) -> bool:
    """Whether the mirror's file is the remote object as last synced, untouched since."""
    if not record or record.get("version") != info.version:
        return False
    try:
        stat = local.stat()
    except OSError:
        return False
    return stat.st_size == record["size"] == info.size and stat.st_mtime_ns == record["mtime_ns"]


def _split_pattern(relative: str) -> tuple[str, str]:
    """`folder/*.txt` -> ("folder", ".txt"); anything else -> (relative, "")."""
    folder, _, leaf = relative.rpartition("/")
    return (folder, leaf[1:]) if leaf.startswith("*.") else (relative, "")


def _local_files(mirror: Path, relative: str) -> set[str]:
    """Files of the mirror under `relative` (a folder, one file, or `folder/*.ext`), as keys
    relative to the root."""
    relative, suffix = _split_pattern(relative)
    target = mirror / relative
    if target.is_file():
        return {relative}
    if not target.is_dir():
        return set()
    return {
        p.relative_to(mirror).as_posix()
        for p in target.rglob(f"*{suffix}")
        if p.is_file() and PARTIAL not in p.name
    }
