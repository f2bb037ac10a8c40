"""The object-storage data root against a real S3 server: mirror pulls and atomic publishing,
content-keyed photo cache, and one clear error line for what users get wrong."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from lora_assets.remote import RemoteError, RemoteRoot
from lora_assets_tests.conftest import sample_photo


def test_push_publishes_changed_files_only_and_pull_mirrors_exactly(s3_root, tmp_path, monkeypatch):
    writer = RemoteRoot(s3_root)
    stage = writer.mirror / "work" / "alice" / "raw_images"
    stage.mkdir(parents=True)
    (stage / "manifest.parquet").write_bytes(b"table-1")
    (stage / "cache").mkdir()
    (stage / "cache" / "a.json").write_text("{}")
    assert writer.push(["work/alice/raw_images"]) == 9
    assert writer.push(["work/alice/raw_images"]) == 0  # nothing changed: nothing sent
    (stage / "manifest.parquet").write_bytes(b"table-2")
    (stage / "cache" / "a.json").unlink()
    assert writer.push(["work/alice/raw_images"]) == 7
    assert sorted(writer.listing("work/alice/raw_images")) == ["work/alice/raw_images/manifest.parquet"]

    monkeypatch.setenv("LORA_ASSETS_SCRATCH", str(tmp_path / "other-machine"))
    reader = RemoteRoot(s3_root)
    stale = reader.mirror / "work" / "alice" / "raw_images" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a crashed run")
    assert reader.pull(["work/alice/raw_images"]) == 7
    assert (reader.mirror / "work/alice/raw_images/manifest.parquet").read_bytes() == b"table-2"
    assert not stale.exists()
    assert reader.pull(["work/alice/raw_images"]) == 0


def test_photos_go_through_a_content_keyed_cache_that_is_safe_to_delete(s3_root):
    root = RemoteRoot(s3_root)
    photo = sample_photo("citrus-slices.jpg")
    root.publish(photo, "subjects/alice/images/a.jpg")
    root.publish(photo, "subjects/bob/images/same.jpg")
    fetched = root.pull(["subjects/alice/images", "subjects/bob/images"])
    assert fetched == photo.stat().st_size  # the same content is fetched once
    local = root.mirror / "subjects/bob/images/same.jpg"
    assert hashlib.sha256(local.read_bytes()).digest() == hashlib.sha256(photo.read_bytes()).digest()
    shutil.rmtree(root.mirror.parent.parent)  # the whole scratch folder
    assert root.pull(["subjects/alice/images"]) == photo.stat().st_size


def test_wrong_secret_missing_bucket_and_unreachable_endpoint_are_one_line_naming_the_url(
    stack, s3_env, monkeypatch, tmp_path
):
    monkeypatch.setenv("LORA_ASSETS_SCRATCH", str(tmp_path))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-1234")
    with pytest.raises(RemoteError) as wrong:
        RemoteRoot(f"s3://{stack.s3.bucket}/x").check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.s3.secret_key)
    with pytest.raises(RemoteError) as bucket:
        RemoteRoot("s3://no-such-bucket/x").check()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(RemoteError) as unreachable:
        RemoteRoot(f"s3://{stack.s3.bucket}/x").check()
    for error, expected in (
        (wrong, "SignatureDoesNotMatch"),
        (bucket, "no-such-bucket"),
        (unreachable, "127.0.0.1:9"),
    ):
        message = str(error.value)
        assert "\n" not in message and "s3://" in message and expected in message, message
        assert "not-the-secret-1234" not in message and stack.s3.secret_key not in message
