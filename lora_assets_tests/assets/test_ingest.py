import pandas as pd

from lora_assets_tests.conftest import add_subject, sample_photo, snapshot
from lora_assets_tests.photo_factory import save_cmyk_jpeg, save_png16, save_rotated_jpeg, save_truncated_jpeg

PHOTOS = ["honey-bee-on-aster.jpg", "citrus-slices.jpg", "portrait-grace-hopper.jpg"]


def make_messy_subject(layout, name="alice"):
    images = add_subject(layout, name, PHOTOS)
    (images / "trip").mkdir()
    save_rotated_jpeg(sample_photo("dogs-at-window.jpg"), images / "trip" / "rotated.jpg")
    save_cmyk_jpeg(sample_photo("citrus-slices.jpg"), images / "cmyk.jpg")
    save_png16(sample_photo("portrait-grace-hopper.jpg"), images / "gray16.png")
    save_truncated_jpeg(sample_photo("dogs-at-window.jpg"), images / "cut.jpg")
    (images / "zero.jpg").write_bytes(b"")
    (images / "readme.jpg").write_text("not a photo")
    return images


def test_raw_images_materializes_manifest_rejects_and_metadata(graph):
    images = make_messy_subject(graph.layout)
    before = snapshot(graph.layout.subject_dir("alice"))
    graph.register("alice")
    result = graph.materialize("raw_images", "alice")
    meta = graph.metadata(result, "raw_images")

    assert meta["images"] == 6 and meta["rejected"] == 3 and meta["files_decoded"] == 9
    assert "cut.jpg | truncated" in meta["rejects"] and "zero.jpg | empty file" in meta["rejects"]
    assert "readme.jpg | not an image" in meta["rejects"]
    assert meta["contact_sheet"].startswith("![alice photos](data:image/jpeg;base64,")

    work = graph.layout.work_dir("alice", "raw_images")
    manifest = pd.read_parquet(work / "manifest.parquet")
    assert set(manifest["path"]) == {*PHOTOS, "trip/rotated.jpg", "cmyk.jpg", "gray16.png"}
    rotated = manifest.set_index("path").loc["trip/rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (3088, 2056)  # stored 2056x3088, EXIF orientation 6
    rejected = pd.read_parquet(work / "rejected.parquet")
    assert set(rejected["path"]) == {"cut.jpg", "zero.jpg", "readme.jpg"}
    assert (work / "contact_sheet.jpg").stat().st_size > 0

    assert snapshot(graph.layout.subject_dir("alice")) == before
    assert not list(images.glob("*.tmp"))


def test_second_run_on_unchanged_folder_reads_no_pixels_and_keeps_data_version(graph):
    make_messy_subject(graph.layout)
    graph.register("alice")
    graph.materialize("raw_images", "alice")
    first_version = graph.data_version("raw_images", "alice")

    meta = graph.metadata(graph.materialize("raw_images", "alice"), "raw_images")
    assert meta["files_decoded"] == 0
    assert meta["hash_cache_hits"] == 9 and meta["measure_cache_hits"] == 9
    assert graph.data_version("raw_images", "alice") == first_version


def test_bad_settings_file_fails_with_the_files_message(graph):
    add_subject(graph.layout, "alice", PHOTOS[:1], settings="[ingest]\nmax_pixel = 5\n")
    graph.register("alice")
    result = graph.materialize("raw_images", "alice", expect_success=False)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    failure = error.message + (error.cause.message if error.cause else "")
    assert "subject.toml" in failure and "[ingest] max_pixel: unknown key" in failure
