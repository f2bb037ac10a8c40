"""filtered_images -> captions -> dataset_zip through Dagster, with the tiny BLIP."""

import hashlib
import zipfile

import pandas as pd
import pytest
from PIL import Image

from lora_assets.dataset.kohya_zip import verify_zip
from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import add_subject, sample_photo, snapshot

CHAIN = "raw_images,deduped_images,filtered_images,captions,dataset_zip"
TAG_TEXT = {"blurry": "blurry", "jpeg_artifacts": "jpeg artifacts", "monochrome": "monochrome"}


def settings(tiny_blip, extra=""):
    return f"""
class_token = "woman"
trigger = "ohwx"
[captions]
model_id = "{tiny_blip}"
min_words = 8
max_words = 16
num_beams = 1
batch_size = 4
{extra}
"""


@pytest.fixture
def subject(graph, tiny_blip):
    photos = [
        "citrus-slices.jpg",
        "honey-bee-on-aster.jpg",
        "suspension-bridge-night.jpg",
        "dahlia-orange.jpg",
    ]
    images = add_subject(graph.layout, "alice", photos, settings(tiny_blip))
    pf.variant_blur(sample_photo("dogs-at-window.jpg"), images / "blurred.jpg", 6.0)
    pf.variant_reencode(sample_photo("fig-in-red-bowl.jpg"), images / "heavy.jpg", quality=25)
    Image.open(sample_photo("drum-and-wine-interior.jpg")).convert("L").save(images / "gray.jpg", quality=92)
    graph.register("alice")
    return images


def read(graph, stage, name):
    return pd.read_parquet(graph.layout.work_dir("alice", stage) / name)


def test_filter_captions_and_zip_end_to_end(graph, subject):
    before = snapshot(subject)
    result = graph.materialize(CHAIN, "alice")

    filtered = read(graph, "filtered_images", "filtered.parquet").set_index("path")
    rejected = read(graph, "filtered_images", "rejected.parquet").set_index("path")
    assert rejected.loc["dahlia-orange.jpg", "reason"] == "short side 427 px < min_short_side 512 px"
    assert "dahlia-orange.jpg" not in filtered.index and len(filtered) == 6
    assert "blurry" in filtered.loc["blurred.jpg", "flags"]
    assert "jpeg_artifacts" in filtered.loc["heavy.jpg", "flags"]
    assert "monochrome" in filtered.loc["gray.jpg", "flags"]
    assert list(filtered.loc["citrus-slices.jpg", "flags"]) == []
    copies = graph.layout.work_dir("alice", "filtered_images") / "images"
    assert sorted(p.name for p in copies.iterdir()) == sorted(filtered["file_name"])
    assert Image.open(copies / filtered.loc["suspension-bridge-night.jpg", "file_name"]).size == (1302, 953)

    captions = read(graph, "captions", "captions.parquet").set_index("path")
    for path, row in captions.iterrows():
        expected = [TAG_TEXT.get(flag, flag) for flag in filtered.loc[path, "flags"] if flag in TAG_TEXT] + [
            "low quality" for flag in filtered.loc[path, "flags"] if flag == "low_resolution"
        ]
        assert sorted(row["quality_tags"]) == sorted(expected), path
        assert row["caption"].startswith("ohwx woman, ")
        assert 8 <= row["word_count"] <= 16 and row["source"] == "blip"
        for tag in row["quality_tags"]:
            assert row["caption"].endswith(tag) or f", {tag}," in row["caption"]
    assert not [t for p, t in captions["quality_tags"].items() if p == "citrus-slices.jpg" and len(t)]

    meta = graph.metadata(result, "dataset_zip")
    archive = graph.layout.work_dir("alice", "dataset_zip") / "alice.zip"
    assert meta["folder"] == "10_ohwx woman" and meta["images"] == 6
    assert meta["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    in_zip = verify_zip(archive)
    assert {name.split("/", 1)[1]: text for name, text in in_zip.items()} == dict(
        zip(captions["file_name"], captions["caption"], strict=True)
    )
    with zipfile.ZipFile(archive) as opened:
        assert {info.date_time for info in opened.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        config = opened.read("dataset_config.toml").decode()
        assert 'caption_extension = ".txt"' in config and "keep_tokens = 1" in config
        assert "min_bucket_reso = 256" in config and "max_bucket_reso = 1024" in config
    assert snapshot(subject) == before


def test_caption_cache_and_incremental_captioning(graph, subject):
    graph.materialize(CHAIN, "alice")
    first_zip = graph.data_version("dataset_zip", "alice")
    again = graph.metadata(graph.materialize("captions,dataset_zip", "alice"), "captions")
    assert again["generated"] == 0 and again["cached"] == 6
    assert graph.data_version("dataset_zip", "alice") == first_zip  # byte-identical zip

    add_subject(
        graph.layout,
        "alice",
        ["portrait-grace-hopper.jpg"],
        settings=graph.layout.settings_file("alice").read_text(),
    )
    added = graph.metadata(graph.materialize(CHAIN, "alice"), "captions")
    assert added["generated"] == 1 and added["cached"] == 6


def test_user_captions_win(graph, subject, tiny_blip):
    (subject / "honey-bee-on-aster.txt").write_text("ohwx woman holding a bee, garden")
    graph.layout.settings_file("alice").write_text(
        settings(tiny_blip, '[captions.overrides]\n"citrus-slices.jpg" = "slices of citrus fruit"\n')
    )
    graph.materialize(CHAIN, "alice")
    captions = read(graph, "captions", "captions.parquet").set_index("path")
    assert captions.loc["honey-bee-on-aster.jpg", "caption"] == "ohwx woman holding a bee, garden"
    assert captions.loc["citrus-slices.jpg", "caption"] == "ohwx woman, slices of citrus fruit"
    assert set(captions.loc[["honey-bee-on-aster.jpg", "citrus-slices.jpg"], "source"]) == {"override"}


def test_caption_settings_change_leaves_filter_untouched_and_changes_the_zip(graph, subject, tiny_blip):
    graph.observe()
    graph.materialize(CHAIN, "alice")
    filtered_version = graph.data_version("filtered_images", "alice")
    zip_sha = hashlib.sha256(
        (graph.layout.work_dir("alice", "dataset_zip") / "alice.zip").read_bytes()
    ).digest()

    graph.layout.settings_file("alice").write_text(
        settings(tiny_blip).replace("max_words = 16", "max_words = 12")
    )
    graph.observe()
    assert graph.stale_status("filtered_images", "alice") == "FRESH"
    assert graph.stale_status("captions", "alice") == "STALE"

    graph.materialize("captions,dataset_zip", "alice")
    assert graph.data_version("filtered_images", "alice") == filtered_version
    assert (
        hashlib.sha256((graph.layout.work_dir("alice", "dataset_zip") / "alice.zip").read_bytes()).digest()
        != zip_sha
    )
    assert read(graph, "captions", "captions.parquet")["word_count"].max() <= 12


def test_sidecar_caption_edit_changes_the_caption_settings_version(graph, subject):
    graph.observe()
    before = graph.data_version("captions_settings", "alice")
    (subject / "citrus-slices.txt").write_text("my own words")
    graph.observe()
    assert graph.data_version("captions_settings", "alice") != before
    assert graph.data_version("dedup_settings", "alice") is not None


def test_zip_is_copied_to_a_remote_location(graph, subject, tiny_blip):
    import fsspec

    graph.layout.settings_file("alice").write_text(
        settings(tiny_blip) + '\n[dataset]\nremote_uri = "memory://bucket/datasets/"\n'
    )
    meta = graph.metadata(graph.materialize(CHAIN, "alice"), "dataset_zip")
    assert meta["remote"] == "memory://bucket/datasets/alice.zip"
    remote = fsspec.open(meta["remote"], "rb").open().read()
    assert remote == (graph.layout.work_dir("alice", "dataset_zip") / "alice.zip").read_bytes()


def test_the_zip_dataset_config_follows_the_training_settings(graph, subject, tiny_blip):
    training = (
        "[training]\nshuffle_caption = true\nkeep_tokens = 3\nflip_aug = true\nbucket_no_upscale = false\n"
    )
    graph.layout.settings_file("alice").write_text(
        settings(tiny_blip, "[captions.quality_tags]\n") + training
    )
    graph.materialize(CHAIN, "alice")
    with zipfile.ZipFile(graph.layout.subject("alice").dataset_zip) as opened:
        config = opened.read("dataset_config.toml").decode()
    assert "keep_tokens = 3" in config and "shuffle_caption = true" in config
    assert "flip_aug = true" in config and "bucket_no_upscale = false" in config
