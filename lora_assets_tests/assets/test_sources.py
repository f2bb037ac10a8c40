from lora_assets.settings import STAGES
from lora_assets_tests.conftest import add_subject

PHOTOS = ["honey-bee-on-aster.jpg", "citrus-slices.jpg"]


def settings_versions(graph, subject):
    return {stage: graph.data_version(f"{stage}_settings", subject) for stage in STAGES}


def test_editing_captions_changes_only_that_subjects_caption_version_and_stales_no_raw_images(graph):
    for subject in ("alice", "bob"):
        add_subject(graph.layout, subject, PHOTOS, settings="[captions]\nmax_words = 80\n")
    graph.register("alice", "bob")
    graph.observe()
    for subject in ("alice", "bob"):
        graph.materialize("raw_images", subject)
        assert graph.stale_status("raw_images", subject) == "FRESH"
    alice_before, bob_before = settings_versions(graph, "alice"), settings_versions(graph, "bob")
    photos_before = graph.data_version("subject_photos", "alice")
    assert None not in alice_before.values()

    graph.layout.settings_file("alice").write_text("[captions]\nmax_words = 60\n", encoding="utf-8")
    graph.observe()

    alice_after, bob_after = settings_versions(graph, "alice"), settings_versions(graph, "bob")
    assert {s for s in STAGES if alice_after[s] != alice_before[s]} == {"captions"}
    assert bob_after == bob_before
    assert graph.data_version("subject_photos", "alice") == photos_before
    assert graph.stale_status("raw_images", "alice") == "FRESH"
    assert graph.stale_status("raw_images", "bob") == "FRESH"


def test_new_photo_makes_only_that_subjects_raw_images_stale(graph):
    for subject in ("alice", "bob"):
        add_subject(graph.layout, subject, PHOTOS)
    graph.register("alice", "bob")
    graph.observe()
    for subject in ("alice", "bob"):
        graph.materialize("raw_images", subject)
    add_subject(graph.layout, "alice", ["dogs-at-window.jpg"])
    graph.observe()
    assert graph.stale_status("raw_images", "alice") == "STALE"
    assert graph.stale_status("raw_images", "bob") == "FRESH"


def test_ingest_settings_change_stales_raw_images(graph):
    add_subject(graph.layout, "alice", PHOTOS)
    graph.register("alice")
    graph.observe()
    graph.materialize("raw_images", "alice")
    graph.layout.settings_file("alice").write_text("[ingest]\nmax_pixels = 50000000\n", encoding="utf-8")
    graph.observe()
    assert graph.stale_status("raw_images", "alice") == "STALE"


def test_broken_settings_of_one_subject_do_not_block_observing_the_others(graph):
    add_subject(graph.layout, "alice", PHOTOS, settings="[captions]\nmax_wrds = 1\n")
    add_subject(graph.layout, "bob", PHOTOS)
    graph.register("alice", "bob")
    graph.observe()
    assert graph.data_version("captions_settings", "bob") is not None
    assert graph.data_version("captions_settings", "alice") is None
