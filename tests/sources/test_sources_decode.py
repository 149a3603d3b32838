"""Safe decoding: every bad input kind gets its reason; odd-but-valid inputs decode correctly."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.errors import ImageRejected
from datakit.sources.base import SourceItem
from datakit.sources.decode import item_to_image, load_image, scale_to_uint8, sniff_format, to_array


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit grayscale PNG of side x side pixels (about 110 kB on disk, 900 Mpx decoded)."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.compress(row * (side % 1000))
    body += comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
                     + _png_chunk(b"IEND", b""))
    return path


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- rejections

def test_zero_byte_file_is_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageRejected, match="empty_file") as exc:
        load_image(p)
    assert exc.value.reason == "empty_file"


def test_text_named_png_is_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not a picture\n" * 10)
    with pytest.raises(ImageRejected, match="not_an_image") as exc:
        load_image(p)
    assert exc.value.reason == "not_an_image"


def test_truncated_jpeg_is_truncated(tmp_path):
    data = _jpeg_bytes(_gradient(256, 256))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected, match="truncated") as exc:
        load_image(p)
    assert exc.value.reason == "truncated"


def test_truncated_png_is_truncated():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    with pytest.raises(ImageRejected) as exc:
        load_image(data[: len(data) // 2])
    assert exc.value.reason == "truncated"


def test_30000_square_png_is_a_decompression_bomb(tmp_path):
    p = write_bomb_png(tmp_path / "bomb.png")
    assert p.stat().st_size < 1_000_000
    with pytest.raises(ImageRejected, match="decompression_bomb") as exc:
        load_image(p)
    assert exc.value.reason == "decompression_bomb"
    assert Image.MAX_IMAGE_PIXELS is not None  # the global guard stays finite


def test_max_pixels_is_per_call():
    buf = io.BytesIO()
    Image.new("L", (100, 100)).save(buf, "PNG")
    with pytest.raises(ImageRejected, match="decompression_bomb"):
        load_image(buf.getvalue(), max_pixels=9_999)
    assert load_image(buf.getvalue(), max_pixels=10_000).size == (100, 100)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(buf.getvalue(), max_pixels=0)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(ImageRejected, match="unreadable: file not found"):
        load_image(tmp_path / "nope.png")


def test_corrupt_png_body_is_rejected_with_a_reason():
    buf = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    mid = len(data) // 2
    data[mid:mid + 40] = b"\xff" * 40  # garble the compressed stream, keep the length
    with pytest.raises(ImageRejected) as exc:
        load_image(bytes(data))
    assert exc.value.reason in {"truncated", "unreadable"}
    assert exc.value.detail


def test_image_rejected_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(ImageRejected("truncated", "x.jpg: cut")))
    assert (err.reason, err.detail) == ("truncated", "x.jpg: cut")


def test_load_image_rejects_non_path_types():
    with pytest.raises(TypeError, match="path or bytes"):
        load_image(12345)


# --------------------------------------------------------------------------- odd but valid

def test_cmyk_jpeg_decodes_to_the_right_colors(tmp_path):
    im = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # pure red in CMYK
    p = tmp_path / "cmyk.jpg"
    p.write_bytes(_jpeg_bytes(im))
    loaded = load_image(p)
    assert loaded.mode == "CMYK"
    rgb = to_array(loaded, "RGB")
    assert rgb.shape == (16, 32, 3)
    r, g, b = rgb.reshape(-1, 3).mean(0)
    assert r > 230 and g < 30 and b < 30
    gray = to_array(loaded, "L")
    assert gray.shape == (16, 32) and 60 < gray.mean() < 90  # luma of red is about 76


def test_16bit_png_is_scaled_from_its_actual_range(tmp_path):
    ramp = np.linspace(1000, 5000, 40 * 30).reshape(30, 40).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(ramp).save(p)
    loaded = load_image(p)
    assert loaded.mode.startswith("I")
    a = to_array(loaded, "L")
    assert a.dtype == np.uint8 and a.shape == (30, 40)
    assert a.min() == 0 and a.max() == 255
    assert np.all(np.diff(a.ravel().astype(int)) >= 0)  # the ramp stays monotone


def test_palette_png_with_transparency_is_composited_over_white(tmp_path):
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.paste(1, (10, 0, 20, 10))  # right half red, left half index 0 = transparent
    im.info["transparency"] = 0
    p = tmp_path / "pal.png"
    im.save(p, transparency=0)
    loaded = load_image(p)
    assert loaded.mode == "P" and "transparency" in loaded.info
    rgb = to_array(loaded, "RGB")
    assert rgb[:, :10].min() == 255  # transparent -> white, not black
    assert tuple(rgb[5, 15]) == (255, 0, 0)


def test_rgba_and_la_are_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0
    rgba[0, 0] = (0, 0, 0, 255)
    rgba[1, 1] = (0, 0, 0, 128)
    out = to_array(Image.fromarray(rgba, "RGBA"), "L")
    assert out[0, 0] == 0 and out[2, 2] == 255 and 120 < out[1, 1] < 135
    la = Image.fromarray(np.dstack([np.zeros((3, 3), np.uint8), np.full((3, 3), 0, np.uint8)]), "LA")
    assert to_array(la, "L").min() == 255
    assert to_array(rgba, "L")[0, 0] == 0  # arrays with an alpha channel too


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall; a white block at the left end
    a[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rotated.jpg"
    Image.fromarray(a).save(p, exif=exif.tobytes(), quality=95)
    with Image.open(p) as raw:
        assert raw.size == (40, 20)
    loaded = load_image(p)
    assert loaded.size == (20, 40)  # displayed upright: 20 wide, 40 tall
    g = to_array(loaded, "L")
    assert g[:10].mean() > 200 and g[-10:].mean() < 50  # the block is now at the top


def test_one_bit_and_float_modes():
    one = Image.fromarray(np.array([[0, 1], [1, 0]], bool))
    assert to_array(one).tolist() == [[0, 255], [255, 0]]
    f = Image.fromarray(np.array([[0.0, 2.0], [4.0, 8.0]], np.float32), "F")
    assert to_array(f).tolist() == [[0, 64], [128, 255]]


def test_to_array_modes_and_errors():
    assert to_array(np.zeros((5, 6), np.uint8), "RGB").shape == (5, 6, 3)
    assert to_array(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6)
    assert to_array(np.array([[0.0, 1.0]])).tolist() == [[0, 255]]
    with pytest.raises(ValueError, match="Valid values are"):
        to_array(np.zeros((2, 2), np.uint8), "CMYK")
    with pytest.raises(ValueError, match="not an image"):
        to_array(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(TypeError, match="PIL image or ndarray"):
        to_array([[0, 1]])


def test_sniff_format():
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "WEBP")
    assert sniff_format(buf.getvalue()) == "webp"
    for fmt, name in (("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")):
        buf = io.BytesIO()
        Image.new("RGB", (2, 2)).save(buf, fmt)
        assert sniff_format(buf.getvalue()) == name
    assert sniff_format(b"") is None
    assert sniff_format(b"%PDF-1.4") is None


def test_item_to_image_maps_value_ranges():
    arr = np.array([[-1.0, 0.0], [0.5, 1.0]], np.float32)
    out = item_to_image(SourceItem("x#0", array=arr, meta={"value_range": (-1, 1)}))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 128], [191, 255]]
    digits = np.array([[0, 8], [16, 4]], np.float64)
    assert item_to_image(SourceItem("d#0", array=digits, meta={"value_range": (0, 16)})).tolist() == [[0, 128], [255, 64]]
    u8 = np.array([[1, 2]], np.uint8)
    assert item_to_image(SourceItem("u#0", array=u8)) is u8
    assert item_to_image(SourceItem("f#0", array=np.array([[0.0, 1.0]]))).tolist() == [[0, 255]]


def test_item_to_image_decodes_paths_and_bytes(tmp_path):
    p = tmp_path / "a.png"
    Image.new("L", (3, 2), 7).save(p)
    assert item_to_image(SourceItem("a.png", path=str(p))).size == (3, 2)
    assert item_to_image(SourceItem("a.png", data=p.read_bytes())).size == (3, 2)
    with pytest.raises(ImageRejected, match="empty_file"):
        item_to_image(SourceItem("e", data=b""))
    with pytest.raises(ValueError, match="carries no pixels"):
        item_to_image(SourceItem("nothing"))


def test_scale_to_uint8_edges():
    assert scale_to_uint8(np.array([3.0, 3.0])).tolist() == [255, 255]
    assert scale_to_uint8(np.array([0.0, 0.0])).tolist() == [0, 0]
    with pytest.raises(ValueError, match="empty"):
        scale_to_uint8(np.array([1.0]), 2.0, 1.0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_cut_or_damaged_files_are_decoded_or_rejected_never_crash(fmt, recwarn):
    """Every prefix / byte-flip of a real encoded image: either pixels or an ImageRejected with a reason."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    variants = [data[:c] for c in range(0, len(data), max(1, len(data) // 40))]
    for _ in range(40):
        d = bytearray(data)
        d[int(rng.integers(0, len(d)))] ^= 0xFF
        variants.append(bytes(d))
    reasons = set()
    for v in variants:
        try:
            to_array(load_image(v))
            reasons.add("ok")
        except ImageRejected as exc:
            assert exc.reason in {"empty_file", "not_an_image", "truncated", "unreadable"}
            assert exc.detail
            reasons.add(exc.reason)
    assert "empty_file" in reasons and ("truncated" in reasons or "unreadable" in reasons)
    assert not [w for w in recwarn if "PIL" in str(w.filename)]  # Pillow's warnings are logged, not raised
