import shutil

import dagster as dg
from click.testing import CliRunner

from lora_assets.cli import main
from lora_assets_tests.conftest import sample_photo, snapshot


def run(layout, *args, env=None):
    result = CliRunner().invoke(
        main, ["--data-root", str(layout.root), *args], env=env, catch_exceptions=False
    )
    return result


def test_subjects_add_copies_photos_and_captions_without_touching_the_source(layout, tmp_path):
    source = tmp_path / "incoming"
    (source / "day2").mkdir(parents=True)
    shutil.copy2(sample_photo("citrus-slices.jpg"), source / "a.jpg")
    shutil.copy2(sample_photo("dogs-at-window.jpg"), source / "day2" / "b.jpg")
    (source / "a.txt").write_text("my caption")
    (source / "notes.doc").write_text("ignored")
    before = snapshot(source)

    result = run(layout, "subjects", "add", "alice", "--from", str(source), env={"DAGSTER_HOME": ""})
    assert result.exit_code == 0, result.output
    images = layout.images_dir("alice")
    assert sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()) == [
        "a.jpg", "a.txt", "day2/b.jpg",
    ]  # fmt: skip
    assert 'trigger = "alice"' in layout.settings_file("alice").read_text()
    assert snapshot(source) == before

    listed = run(layout, "subjects", "list", env={"DAGSTER_HOME": ""})
    assert listed.output.strip() == "alice\t2 photos"


def test_invalid_subject_name_is_a_clear_error(layout):
    result = CliRunner().invoke(main, ["--data-root", str(layout.root), "subjects", "add", "bad name"])
    assert result.exit_code != 0
    assert "invalid subject name 'bad name'" in result.output


def test_sync_registers_every_folder_in_the_dagster_home_instance(layout, tmp_path):
    for name in ("alice", "bob"):
        (layout.images_dir(name)).mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    result = run(layout, "subjects", "sync", env={"DAGSTER_HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert "registered 2 new: alice, bob" in result.output
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert sorted(instance.get_dynamic_partitions("subjects")) == ["alice", "bob"]
    again = run(layout, "subjects", "sync", env={"DAGSTER_HOME": str(home)})
    assert "registered 0 new" in again.output


def test_settings_show_prints_effective_settings_and_versions(layout):
    layout.images_dir("alice").mkdir(parents=True)
    layout.settings_file("alice").write_text('class_token = "woman"\n[captions]\nmax_words = 60\n')
    result = run(layout, "settings", "show", "alice")
    assert result.exit_code == 0, result.output
    assert 'class_token = "woman"' in result.output and 'trigger = "alice"' in result.output
    assert "max_words = 60" in result.output and "min_words = 30" in result.output
    assert "# captions settings version: " in result.output

    layout.settings_file("alice").write_text("[captions]\nmax_wrds = 60\n")
    bad = CliRunner().invoke(main, ["--data-root", str(layout.root), "settings", "show", "alice"])
    assert bad.exit_code != 0 and "[captions] max_wrds: unknown key" in bad.output


def _dedup_folder(tmp_path):
    """A photo with a half-size copy in a subfolder, a lone photo and a broken file."""
    from lora_assets_tests import photo_factory as pf

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy2(sample_photo("citrus-slices.jpg"), folder / "citrus.jpg")
    pf.variant_downscale(sample_photo("citrus-slices.jpg"), folder / "sub" / "citrus-small.jpg", 0.5)
    shutil.copy2(sample_photo("dogs-at-window.jpg"), folder / "dogs.jpg")
    (folder / "broken.jpg").write_text("not a jpeg")
    return folder


def test_dedup_command_prints_the_documented_json_and_touches_nothing(tmp_path):
    import json

    folder = _dedup_folder(tmp_path)
    before = snapshot(folder)
    result = CliRunner().invoke(
        main, ["dedup", str(folder), "--json", "--workers", "1"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) >= {"groups", "unique", "rejected"}
    (group,) = document["groups"]
    assert group["keep"] == str(folder / "citrus.jpg")
    assert group["drop"] == [str(folder / "sub" / "citrus-small.jpg")]
    assert group["reason"].startswith("kept: ")
    assert set(group["scores"]) == {group["keep"], *group["drop"]}
    assert set(group["reasons"]) == {group["keep"], *group["drop"]}
    assert group["reasons"][group["drop"][0]].startswith("dropped: duplicate of citrus.jpg; ")
    assert document["unique"] == [str(folder / "dogs.jpg")]
    assert document["rejected"] == [
        {"path": str(folder / "broken.jpg"), "error": document["rejected"][0]["error"]}
    ]
    assert document["rejected"][0]["error"].startswith("not an image")
    assert snapshot(folder) == before

    table = CliRunner().invoke(main, ["dedup", str(folder), "--similarity", "high"], catch_exceptions=False)
    assert "group 1: keep" in table.output and "4 files: 1 duplicate groups, 1 to drop" in table.output

    bad = CliRunner().invoke(main, ["dedup", str(folder), "--similarity", "1.5"])
    assert bad.exit_code != 0 and "similarity must be low, medium, high or a number" in bad.output


def test_the_installed_command_dedups_on_worker_processes_as_one_worker_does(tmp_path):
    """`lora-assets` as installed: its entry point starts the workers' fork server before the CLI
    loads, and two worker processes decide exactly as one in-process worker."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    folder = _dedup_folder(tmp_path)
    one = CliRunner().invoke(main, ["dedup", str(folder), "--json", "--workers", "1"], catch_exceptions=False)
    command = [
        str(Path(sys.executable).with_name("lora-assets")),
        "dedup",
        str(folder),
        "--json",
        "--workers",
        "2",
    ]
    two = subprocess.run(command, capture_output=True, text=True, check=True)
    documents = [json.loads(one.stdout), json.loads(two.stdout)]
    assert documents[0]["groups"] == documents[1]["groups"] and len(documents[0]["groups"]) == 1
    assert documents[0]["unique"] == documents[1]["unique"] == [str(folder / "dogs.jpg")]


def test_the_dedup_command_loads_without_pydantic():
    """`lora-assets dedup` builds its `DedupRules` directly: pydantic and the settings models were
    a third of its start-up, which is on every run's critical path."""
    import subprocess
    import sys

    probe = (
        "import sys, lora_assets.cli, lora_assets.images.dedup; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'dagster')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
