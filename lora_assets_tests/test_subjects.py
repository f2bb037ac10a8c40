import pytest

from lora_assets.subjects import (
    InvalidSubjectName,
    folder_fingerprint,
    list_photo_files,
    validate_subject_name,
)


@pytest.mark.parametrize("name", ["alice", "Bob_2", "style-1", "9lives"])
def test_valid_names(name):
    assert validate_subject_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "_x", "a b", "a/b", "..", "é", "a" * 65, "x.y"])
def test_invalid_names_explain_the_rule(name):
    with pytest.raises(InvalidSubjectName, match="letters, digits, '-' or '_'"):
        validate_subject_name(name)


def test_listing_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["b.JPG", "a.png", "sub/c.webp", "notes.txt", ".DS_Store", ".hidden/d.jpg", "e.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    assert [f.relpath for f in list_photo_files(tmp_path)] == ["a.png", "b.JPG", "e.tiff", "sub/c.webp"]


def test_fingerprint_changes_on_add_remove_replace(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"one")
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / "b.jpg").write_bytes(b"two")
    second = folder_fingerprint(tmp_path)
    assert second != first
    (tmp_path / "b.jpg").write_bytes(b"three")
    third = folder_fingerprint(tmp_path)
    assert third != second
    (tmp_path / "b.jpg").unlink()
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / "caption.txt").write_text("not a photo")
    assert folder_fingerprint(tmp_path) == first
