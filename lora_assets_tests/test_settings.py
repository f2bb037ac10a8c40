from pathlib import Path

import pytest

from lora_assets.images.rules import DedupRules
from lora_assets.settings import STAGES, SettingsError, load_subject_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subject.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_overrides_and_defaults(tmp_path):
    path = write(
        tmp_path,
        """
class_token = "woman"
trigger = "ohwx"
[dedup]
similarity = 0.93
keep = ["a.jpg"]
not_duplicates = [["b.jpg", "c.jpg"]]
[captions]
max_words = 60
[captions.overrides]
"a.jpg" = "ohwx woman, smiling"
""",
    )
    settings = load_subject_settings(path, "alice")
    assert settings.class_token == "woman" and settings.trigger == "ohwx"
    assert settings.dedup.threshold == pytest.approx(0.93)
    assert settings.dedup.not_duplicates == [["b.jpg", "c.jpg"]]
    assert settings.dedup.rules() == DedupRules(
        threshold=0.93, keep=("a.jpg",), not_duplicates=(("b.jpg", "c.jpg"),)
    )
    assert settings.captions.max_words == 60 and settings.captions.min_words == 30
    assert settings.captions.overrides == {"a.jpg": "ohwx woman, smiling"}
    assert settings.filter.min_short_side == 512


def test_missing_file_means_defaults_with_subject_as_trigger(tmp_path):
    settings = load_subject_settings(tmp_path / "absent.toml", "bob")
    assert settings.trigger == "bob" and settings.class_token == "man"
    assert settings.dedup.threshold == pytest.approx(0.90)


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = write(tmp_path, "[captions]\nmax_wrds = 60\n")
    with pytest.raises(SettingsError) as error:
        load_subject_settings(path, "alice")
    message = str(error.value)
    assert str(path) in message
    assert "[captions] max_wrds: unknown key" in message
    assert "max_words" in message and "min_words" in message


def test_unknown_table_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match=r"caption: unknown key; allowed keys: .*captions"):
        load_subject_settings(write(tmp_path, "[caption]\nmax_words = 60\n"), "alice")


def test_wrong_type_names_key_and_allowed_values(tmp_path):
    with pytest.raises(SettingsError) as error:
        load_subject_settings(write(tmp_path, '[dedup]\nsimilarity = "very"\n'), "alice")
    message = str(error.value)
    assert "[dedup] similarity" in message
    assert "'low', 'medium' or 'high'" in message and "'very'" in message

    with pytest.raises(SettingsError, match=r"\[training\] epochs: Input should be a valid integer"):
        load_subject_settings(write(tmp_path, '[training]\nepochs = "ten"\n'), "alice")


def test_invalid_toml_and_inconsistent_values(tmp_path):
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_subject_settings(write(tmp_path, "[captions\n"), "alice")
    with pytest.raises(SettingsError, match=r"\[captions\]: min_words \(80\) is above max_words \(50\)"):
        load_subject_settings(write(tmp_path, "[captions]\nmin_words = 80\nmax_words = 50\n"), "alice")


def test_stage_versions_change_only_for_the_edited_stage(tmp_path):
    before = load_subject_settings(write(tmp_path, "[filter]\nmax_side = 1536\n"), "alice")
    after = load_subject_settings(
        write(tmp_path, "[filter]\nmax_side = 1536\n[captions]\nmax_words = 60\n"), "alice"
    )
    changed = {stage for stage in STAGES if before.stage_version(stage) != after.stage_version(stage)}
    assert changed == {"captions"}


def test_trigger_change_reaches_captions_dataset_and_training_only(tmp_path):
    before = load_subject_settings(write(tmp_path, ""), "alice")
    after = load_subject_settings(write(tmp_path, 'trigger = "ohwx"\n'), "alice")
    changed = {stage for stage in STAGES if before.stage_version(stage) != after.stage_version(stage)}
    assert changed == {"captions", "dataset", "training"}
