"""Bad input, as users produce it: each case is named in a clear error or reported and skipped,
and nothing the user owns is touched."""

from __future__ import annotations

import shutil
import time
import zipfile

import pandas as pd
import pillow_heif
import pytest
from click.testing import CliRunner
from PIL import Image

from lora_assets.cli import main
from lora_assets.dataset.kohya_zip import DatasetError, DatasetImage, DatasetOptions, build_zip
from lora_assets.settings import DatasetSettings, SettingsError, TrainingSettings, parse_subject_settings
from lora_assets.subjects import InvalidSubjectName, list_photo_files, validate_subject_name
from lora_assets_tests.conftest import add_subject, sample_photo, snapshot, tiny_settings

CHAIN = "raw_images,deduped_images,filtered_images,captions,dataset_zip"


def test_a_newline_in_a_photo_name_is_shown_escaped_and_fails_nothing(graph):
    images = add_subject(graph.layout, "alice", ["citrus-slices.jpg"], '[captions]\ncaptioner = "template"\n')
    shutil.copy2(sample_photo("honey-bee-on-aster.jpg"), images / "bee\nsecond line.jpg")
    graph.register("alice")
    result = graph.materialize(CHAIN, "alice")
    manifest = pd.read_parquet(graph.layout.subject("alice").raw_manifest)
    assert "bee\nsecond line.jpg" in set(manifest["path"])  # stored as it is
    sheet = graph.metadata(result, "raw_images")["contact_sheet"]
    assert sheet.startswith("![alice photos](data:image/jpeg;base64,")
    copies = [p.name for p in graph.layout.subject("alice").training_copies.iterdir()]
    assert all("\n" not in name for name in copies) and len(copies) == 2


def test_subject_names_must_match_entirely(layout):
    with pytest.raises(InvalidSubjectName):
        validate_subject_name("trail\n")
    (layout.subjects_dir / "trail\n" / "images").mkdir(parents=True)
    (layout.subjects_dir / "fine" / "images").mkdir(parents=True)
    listed = CliRunner().invoke(
        main, ["--data-root", str(layout.root), "subjects", "list"], env={"DAGSTER_HOME": ""}
    )
    assert listed.output.splitlines()[-1].startswith("fine")
    assert "subjects/'trail\\n' is not a subject" in listed.output
    added = CliRunner().invoke(main, ["--data-root", str(layout.root), "subjects", "add", "trail\n"])
    assert added.exit_code != 0 and "invalid subject name" in added.output


@pytest.mark.parametrize("trigger", ["../../../evil", "a/b", "ohwx\nman", "x,y", ".."])
def test_a_trigger_that_could_leave_the_zip_folder_is_refused(trigger):
    with pytest.raises(SettingsError, match="trigger"):
        parse_subject_settings({"trigger": trigger}, "alice", source="subject.toml")


def test_zip_entries_never_leave_their_folder_whatever_the_input(tmp_path):
    options = DatasetOptions.from_settings(DatasetSettings(), TrainingSettings())
    image = DatasetImage(sample_photo("citrus-slices.jpg"), "ok.jpg", "caption")
    with pytest.raises(DatasetError, match="unsafe zip entry"):
        build_zip([image], options, "../../evil", "man", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_captions_in_windows_1252_are_read_with_a_warning_and_other_bytes_name_file_and_offset(graph, caplog):
    images = add_subject(
        graph.layout,
        "alice",
        ["citrus-slices.jpg", "honey-bee-on-aster.jpg"],
        '[captions]\ncaptioner = "template"\n',
    )
    (images / "citrus-slices.txt").write_bytes("caf\xe9 on the table".encode("cp1252"))
    graph.register("alice")
    result = graph.materialize(CHAIN, "alice")
    table = pd.read_parquet(graph.layout.subject("alice").captions_table)
    assert "café on the table" in table.set_index("path").loc["citrus-slices.jpg", "caption"]
    assert graph.metadata(result, "captions")["overrides"] == 1
    (images / "honey-bee-on-aster.txt").write_bytes(b"bad \x81 byte")
    failed = graph.materialize("captions", "alice", expect_success=False)
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "honey-bee-on-aster.txt" in message and "offset 4" in message and "0x81" in message


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"dataset": {"min_bucket_reso": 1024, "max_bucket_reso": 256}}, "[dataset]"),
        ({"dataset": {"resolution": 2048}}, "[dataset]"),
        ({"dataset": {"bucket_reso_steps": 12}}, "[dataset]"),
        ({"dedup": {"keep": ["a.jpg"], "drop": ["a.jpg"]}}, "[dedup]"),
        ({"training": {"lr_warmup_steps": 10}}, "[training]"),
        ({"captions": {"min_words": 50, "max_words": 10}}, "[captions]"),
    ],
)
def test_every_cross_field_constraint_is_checked(document, key):
    with pytest.raises(SettingsError) as error:
        parse_subject_settings(document, "alice", source="subject.toml")
    assert key in str(error.value)


def test_every_file_under_images_is_used_or_rejected_with_a_reason(graph):
    images = add_subject(graph.layout, "alice", ["citrus-slices.jpg"], '[captions]\ncaptioner = "template"\n')
    photo = Image.open(sample_photo("honey-bee-on-aster.jpg")).convert("RGB")
    photo.save(images / "bee.gif")
    photo.rotate(90, expand=True).save(images / "bee-rotated.avif", quality=80)
    pillow_heif.from_pillow(photo.crop((0, 0, 900, 700))).save(images / "bee-crop.heic", quality=85)
    (images / "notes.doc").write_text("not a photo")
    (images / ".DS_Store").write_bytes(b"\0\0")
    graph.register("alice")
    graph.materialize("raw_images", "alice")
    files = graph.layout.subject("alice")
    used = set(pd.read_parquet(files.raw_manifest)["path"])
    rejected = pd.read_parquet(files.raw_rejected).set_index("path")
    assert used == {"citrus-slices.jpg", "bee.gif", "bee-rotated.avif", "bee-crop.heic"}
    assert rejected.loc["notes.doc", "reason"] == "not a photo"
    assert rejected.loc[".DS_Store", "reason"] == "hidden file"


def test_the_same_photos_give_the_same_zip_bytes_in_two_fresh_data_roots(tmp_path, instance, layout):
    from lora_assets.layout import DataLayout
    from lora_assets_tests.conftest import Graph

    digests = []
    for name in ("first", "second"):
        root = DataLayout(tmp_path / name)
        add_subject(
            root,
            "alice",
            ["citrus-slices.jpg", "portrait-grace-hopper.jpg"],
            '[captions]\ncaptioner = "template"\n',
        )
        graph = Graph(root, instance)
        graph.register("alice")
        digests.append(graph.metadata(graph.materialize(CHAIN, "alice"), "dataset_zip")["sha256"])
        time.sleep(1.1)  # a different second: the old sRGB profile carried its creation time
    assert digests[0] == digests[1]


def test_a_link_loop_lists_each_photo_once(tmp_path):
    images = tmp_path / "images"
    (images / "day").mkdir(parents=True)
    shutil.copy2(sample_photo("citrus-slices.jpg"), images / "a.jpg")
    shutil.copy2(sample_photo("dahlia-orange.jpg"), images / "day" / "b.jpg")
    (images / "day" / "loop").symlink_to(images, target_is_directory=True)
    assert [f.relpath for f in list_photo_files(images)] == ["a.jpg", "day/b.jpg"]


def test_a_hub_model_without_network_fails_fast_with_one_line(graph, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(graph.layout.root / "empty-hf-cache"))
    add_subject(
        graph.layout, "alice", ["citrus-slices.jpg"]
    )  # no subject.toml settings: BLIP-large from the hub
    graph.register("alice")
    graph.materialize("raw_images,deduped_images,filtered_images", "alice")
    started = time.monotonic()
    failed = graph.materialize("captions", "alice", expect_success=False)
    assert time.monotonic() - started < 30
    message = str(failed.get_step_failure_events()[0].event_specific_data.error).splitlines()
    assert any(
        "Salesforce/blip-image-captioning-large" in line and "[captions] model_id" in line for line in message
    )


def test_training_copies_are_stored_once_and_the_unzipped_dataset_goes_after_training(
    graph, tiny_blip, tiny_sd
):
    images = add_subject(
        graph.layout, "alice", ["citrus-slices.jpg", "dahlia-orange.jpg"], tiny_settings(tiny_blip, tiny_sd)
    )
    before = snapshot(images)
    graph.register("alice")
    result = graph.materialize(CHAIN + ",lora", "alice")
    files = graph.layout.subject("alice")
    for copy in files.training_copies.iterdir():
        assert copy.stat().st_nlink == 2  # the training copy is the cached copy
    assert not (files.training_work / "dataset").exists()
    assert graph.metadata(result, "lora")["subject_disk_mb"] > 0
    assert snapshot(images) == before
    with zipfile.ZipFile(files.dataset_zip) as archive:
        assert archive.testzip() is None
