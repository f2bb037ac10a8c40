import pandas as pd

from lora_assets_tests import photo_factory as pf
from lora_assets_tests.conftest import add_subject, sample_photo, snapshot


def make_subject(graph, settings=""):
    images = add_subject(graph.layout, "alice", ["citrus-slices.jpg", "portrait-grace-hopper.jpg"], settings)
    pf.variant_downscale(sample_photo("citrus-slices.jpg"), images / "citrus-web.jpg", 0.5, quality=70)
    pf.variant_upscale(sample_photo("portrait-grace-hopper.jpg"), images / "hopper-upscaled.jpg", 3)
    pf.variant_exposure(sample_photo("citrus-slices.jpg"), images / "citrus-darker.jpg", -1.0)
    graph.register("alice")
    return images


def test_deduped_images_groups_keeps_best_and_reports(graph):
    images = make_subject(graph)
    before = snapshot(images)
    result = graph.materialize("raw_images,deduped_images", "alice")
    meta = graph.metadata(result, "deduped_images")
    assert meta["images_in"] == 5 and meta["groups"] == 2 and meta["dropped"] == 2 and meta["selected"] == 3
    assert meta["similar_pairs"] >= 1
    assert meta["groups_sheet"].startswith("![largest groups")
    assert "hopper-upscaled.jpg" in meta["groups_table"]

    work = graph.layout.work_dir("alice", "deduped_images")
    groups = pd.read_parquet(work / "groups.parquet")
    kept = set(groups.loc[groups["kept"], "path"])
    assert kept == {"citrus-slices.jpg", "portrait-grace-hopper.jpg"}
    assert (
        groups.set_index("path")
        .loc["hopper-upscaled.jpg", "reason"]
        .startswith("dropped: duplicate of portrait-grace-hopper.jpg")
    )
    selected = pd.read_parquet(work / "selected.parquet")
    assert sorted(selected["path"]) == ["citrus-darker.jpg", "citrus-slices.jpg", "portrait-grace-hopper.jpg"]
    assert {"sha256", "width", "height", "jpeg_quality"} <= set(selected.columns)
    assert snapshot(images) == before


def test_rerun_uses_the_per_image_cache_and_keeps_the_version(graph):
    make_subject(graph)
    graph.materialize("raw_images,deduped_images", "alice")
    version = graph.data_version("deduped_images", "alice")
    meta = graph.metadata(graph.materialize("deduped_images", "alice"), "deduped_images")
    assert meta["features_computed"] == 0 and meta["features_cached"] == 5
    assert meta["details_computed"] == 0 and meta["details_cached"] == 4
    assert graph.data_version("deduped_images", "alice") == version


def test_pins_in_subject_toml_win_and_unknown_pins_are_reported(graph):
    settings = """
[dedup]
keep = ["citrus-web.jpg"]
not_duplicates = [["hopper-upscaled.jpg", "portrait-grace-hopper.jpg"]]
drop = ["nope.jpg"]
"""
    make_subject(graph, settings)
    meta = graph.metadata(graph.materialize("raw_images,deduped_images", "alice"), "deduped_images")
    selected = set(
        pd.read_parquet(graph.layout.work_dir("alice", "deduped_images") / "selected.parquet")["path"]
    )
    assert "citrus-web.jpg" in selected and "citrus-slices.jpg" not in selected
    assert {"hopper-upscaled.jpg", "portrait-grace-hopper.jpg"} <= selected
    assert meta["unknown_pins"] == ["nope.jpg"]


def test_changing_only_dedup_settings_leaves_raw_images_fresh(graph):
    make_subject(graph)
    graph.observe()
    graph.materialize("raw_images,deduped_images", "alice")
    graph.layout.settings_file("alice").write_text('[dedup]\nsimilarity = "high"\n')
    graph.observe()
    assert graph.stale_status("raw_images", "alice") == "FRESH"
    assert graph.stale_status("deduped_images", "alice") == "STALE"


def test_web_copies_are_grouped_with_the_clean_copy_first_and_the_reason_named(graph):
    images = add_subject(graph.layout, "alice", ["citrus-slices.jpg"])
    source = sample_photo("citrus-slices.jpg")
    pf.variant_banner(source, images / "citrus-banner.jpg", fraction=0.12, top=True)
    pf.variant_bw(source, images / "citrus-bw.jpg", mode="L")
    pf.variant_mirror(source, images / "citrus-mirror.jpg", quality=88)
    graph.register("alice")

    meta = graph.metadata(graph.materialize("raw_images,deduped_images", "alice"), "deduped_images")

    assert meta["groups"] == 1 and meta["selected"] == 1
    groups = pd.read_parquet(graph.layout.work_dir("alice", "deduped_images") / "groups.parquet")
    assert groups["path"].iloc[0] == "citrus-slices.jpg" and bool(groups["kept"].iloc[0])
    reasons = groups.set_index("path")["reason"]
    assert "banner" in reasons["citrus-banner.jpg"] and "% of the frame" in reasons["citrus-banner.jpg"]
    assert "black-and-white" in reasons["citrus-bw.jpg"]
    assert "citrus-mirror.jpg" in meta["groups_table"]
