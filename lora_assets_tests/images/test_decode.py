"""PNGs decoded by Wuffs: the same pixels and orientation as Pillow's decoder, and every PNG it
does not take (or cannot read) still decoded, or rejected with Pillow's reason."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lora_assets.images.decode import ImageRejected, decode_oriented, png_by_wuffs
from lora_assets.images.inventory import PhotoInventory
from lora_assets_tests.conftest import sample_photo
from lora_assets_tests.photo_factory import save_png16

PHOTO = "honey-bee-on-aster.jpg"  # 1620x1280


def _pillow(path: Path, gray: bool = False) -> np.ndarray:
    """What Pillow alone makes of `path`: oriented, RGB (alpha on white) or grey."""
    with Image.open(path) as image:
        oriented = ImageOps.exif_transpose(image)
        if oriented.mode in ("RGBA", "LA", "P"):
            rgba = oriented.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            oriented = flat
        return np.asarray(oriented.convert("L" if gray else "RGB"))


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        for kind, payload in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture
def photo() -> Image.Image:
    with Image.open(sample_photo(PHOTO)) as image:
        return image.convert("RGB").reduce(2)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_an_8_bit_png_decodes_through_Wuffs_to_pillows_pixels(tmp_path, photo, mode):
    image = photo.convert(mode)
    if mode == "RGBA":  # a soft alpha ramp, so the flattening on white is exercised
        alpha = np.tile(np.linspace(0, 255, image.width, dtype=np.uint8), (image.height, 1))
        image.putalpha(Image.fromarray(alpha))
    path = tmp_path / "photo.png"
    image.save(path)

    with Image.open(path) as opened:
        assert png_by_wuffs(opened, path) is not None
    assert np.array_equal(np.asarray(decode_oriented(path, 10**9).image), _pillow(path))
    assert np.array_equal(np.asarray(decode_oriented(path, 10**9, gray=True).image), _pillow(path, gray=True))


def test_a_png_rotated_by_exif_before_or_after_its_pixels_is_oriented(tmp_path, photo):
    before = tmp_path / "before.png"
    photo.save(before, exif=_exif(6))
    chunks = _chunks(before.read_bytes())
    assert [kind for kind, _ in chunks].index(b"eXIf") < [kind for kind, _ in chunks].index(b"IDAT")
    exif = [c for c in chunks if c[0] == b"eXIf"]
    after = tmp_path / "after.png"
    after.write_bytes(_png([c for c in chunks if c[0] not in (b"eXIf", b"IEND")] + exif + [(b"IEND", b"")]))

    for path in (before, after):
        decoded = decode_oriented(path, 10**9)
        assert decoded.native_size == (photo.height, photo.width), path.name
        assert np.array_equal(np.asarray(decoded.image), _pillow(path)), path.name
    with Image.open(before) as opened:
        assert png_by_wuffs(opened, before) is not None
    with Image.open(after) as opened:  # only Pillow's full decode reads an eXIf after the pixels
        assert png_by_wuffs(opened, after) is None


def test_16_bit_and_palette_pngs_are_left_to_pillow(tmp_path, photo):
    deep = save_png16(sample_photo(PHOTO), tmp_path / "deep.png")
    palette = tmp_path / "palette.png"
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    for path in (deep, palette):
        with Image.open(path) as opened:
            assert png_by_wuffs(opened, path) is None, path.name
    assert decode_oriented(deep, 10**9, gray=True).image.getextrema() == (0, 255)  # scaled, not clipped
    assert np.array_equal(np.asarray(decode_oriented(palette, 10**9).image), _pillow(palette))


def test_a_broken_png_is_rejected_with_pillows_reason_by_every_reader(tmp_path, photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = folder / "good.png"
    photo.save(good)
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the pixels: Wuffs alone would decode it, wrongly
    (folder / "flipped.png").write_bytes(bytes(flipped))
    zeroed = [(kind, payload[:100] + bytes(200) + payload[300:]) if kind == b"IDAT" else (kind, payload)
              for kind, payload in _chunks(data)]  # fmt: skip
    (folder / "zeroed.png").write_bytes(_png(zeroed))  # damaged, with CRCs that match

    expected = {"truncated.png": "truncated", "flipped.png": "corrupt", "zeroed.png": "corrupt"}
    for name, reason in expected.items():
        with pytest.raises(ImageRejected) as rejected:
            decode_oriented(folder / name, 10**9)
        assert rejected.value.reason == reason, name
        assert "data stream" in rejected.value.detail or "truncated" in rejected.value.detail, name
    assert decode_oriented(good, 10**9).image.size == photo.size

    scan = PhotoInventory(tmp_path / "cache", max_pixels=10**9).scan(folder)
    assert list(scan.manifest["path"]) == ["good.png"]
    assert dict(zip(scan.rejected["path"], scan.rejected["reason"], strict=True)) == expected
