import hashlib
import zipfile

import pytest

from lora_assets.dataset.kohya_zip import (
    DatasetError,
    DatasetImage,
    DatasetOptions,
    build_zip,
    read_dataset_config,
    verify_zip,
)
from lora_assets.settings import DatasetSettings, TrainingSettings
from lora_assets_tests.conftest import sample_photo


def images():
    return [
        DatasetImage(sample_photo("citrus-slices.jpg"), "b-citrus.jpg", "ohwx man, citrus"),
        DatasetImage(sample_photo("honey-bee-on-aster.jpg"), "a-bee.jpg", "ohwx man, a bee, blurry"),
    ]


def options(
    dataset: DatasetSettings | None = None, training: TrainingSettings | None = None
) -> DatasetOptions:
    return DatasetOptions.from_settings(dataset or DatasetSettings(), training or TrainingSettings())


def test_same_content_gives_the_same_bytes_and_every_caption_loads_back(tmp_path):
    first = build_zip(images(), options(DatasetSettings(repeats=5)), "ohwx", "man", tmp_path / "one.zip")
    second = build_zip(
        list(reversed(images())), options(DatasetSettings(repeats=5)), "ohwx", "man", tmp_path / "two.zip"
    )
    assert first == second == hashlib.sha256((tmp_path / "one.zip").read_bytes()).hexdigest()
    assert verify_zip(tmp_path / "one.zip") == {
        "5_ohwx man/a-bee.jpg": "ohwx man, a bee, blurry",
        "5_ohwx man/b-citrus.jpg": "ohwx man, citrus",
    }
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        assert archive.namelist() == sorted(archive.namelist())
        assert {info.external_attr >> 16 for info in archive.infolist()} == {0o100644}
    assert not list(tmp_path.glob("*.partial"))


def test_verification_catches_an_image_without_caption(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("10_x y/a.jpg", b"jpeg")
        archive.writestr("dataset_config.toml", "")
        archive.writestr("metadata.jsonl", "")
    with pytest.raises(DatasetError, match=r"a\.jpg has no caption"):
        verify_zip(path)


def test_a_failed_build_leaves_no_zip_under_the_final_name(tmp_path):
    broken = [DatasetImage(tmp_path / "missing.jpg", "missing.jpg", "x")]
    with pytest.raises(FileNotFoundError):
        build_zip(broken, options(), "ohwx", "man", tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists() and not list(tmp_path.glob("*.partial"))


def test_dataset_config_follows_the_training_settings_and_reads_back(tmp_path):
    training = TrainingSettings(keep_tokens=2, shuffle_caption=True, flip_aug=True, bucket_no_upscale=False)
    dataset = DatasetSettings(repeats=3, resolution=640, min_bucket_reso=320, max_bucket_reso=960)
    written = options(dataset, training)
    build_zip(images(), written, "ohwx", "man", tmp_path / "set.zip")
    with zipfile.ZipFile(tmp_path / "set.zip") as archive:
        text = archive.read("dataset_config.toml").decode()
    assert "keep_tokens = 2" in text and "shuffle_caption = true" in text
    assert "flip_aug = true" in text and "bucket_no_upscale = false" in text
    assert read_dataset_config(text) == written
