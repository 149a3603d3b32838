"""A folder of bad and awkward images: the build completes and nothing is lost.

Each file is either kept (and its normalized pixels are right) or listed in
rejected.parquet with its exact reason; kept + rejected == inputs.
"""
from __future__ import annotations

import io
import struct
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

import datakit
from datakit.build import build_dataset


def _ink() -> np.ndarray:
    """An asymmetric dark glyph on a light page, shape (60, 40) uint8 (a '7' with a bar)."""
    a = np.full((60, 40), 250, np.uint8)
    a[8:14, 6:34] = 10
    a[8:52, 28:34] = 10
    a[30:34, 14:30] = 10
    return a


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side white pixels (900 megapixels), about 100 kB compressed."""
    row = b"\x00" + b"\xff" * (side // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    d = root / "images" / "seven"
    d.mkdir(parents=True)
    ink = _ink()
    upright = Image.fromarray(ink)
    full = _jpeg(upright)
    (d / "truncated.jpg").write_bytes(full[: len(full) * 6 // 10])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("this is a text file with a .png name\n")
    (d / "bomb.png").write_bytes(_bomb_png())
    (d / "cmyk.jpg").write_bytes(_jpeg(upright.convert("CMYK")))
    ink16 = ink.astype(np.uint16) * 257
    ink16[40:44, 28:34] = 90 * 257  # lighter ink here, so it does not duplicate the palette image exactly
    Image.fromarray(ink16).save(d / "gray16.png")
    pal = Image.fromarray((ink < 128).astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black: only transparency shows the glyph
    pal.save(d / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored pixels rotated 90 degrees clockwise
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(ink, 1)))
    (d / "exif_rotated.jpg").write_bytes(_jpeg(stored, exif=exif.tobytes()))
    recipe = root / "bad.toml"
    recipe.write_text(textwrap.dedent("""
        name = "bad-inputs"
        [[sources]]
        name = "bad"
        kind = "folder"
        path = "images"
        [normalize]
        style = "mnist"
        [splits]
        train = 1.0
        val = 0.0
        test = 0.0
    """))
    return root, recipe, ink, np.asarray(stored)


EXPECTED_REJECTED = {
    "seven/truncated.jpg": ("decode", "truncated"),
    "seven/empty.png": ("decode", "empty_file"),
    "seven/notes.png": ("decode", "not_an_image"),
    "seven/bomb.png": ("decode", "decompression_bomb"),
}
EXPECTED_KEPT = ["seven/cmyk.jpg", "seven/gray16.png", "seven/palette.png", "seven/exif_rotated.jpg"]


def _corr(a, b):
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_bad_input_folder_builds_and_accounts_for_every_file(bad_folder):
    root, recipe, ink, stored = bad_folder
    result = build_dataset(recipe, root / "out", data_root=root, workers=0)
    ds = datakit.open_dataset(result.out)
    m, rej = ds.manifest, ds.rejected
    assert result.kept + result.rejected == 8
    assert len(m) + len(rej) == 8
    got = {r.source_ref: (r.stage, r.reason) for r in rej.itertuples()}
    assert got == EXPECTED_REJECTED
    assert sorted(m["source_ref"]) == sorted(EXPECTED_KEPT)
    assert rej["detail"].str.len().gt(0).all()

    from datakit.normalize import get_normalizer

    norm = get_normalizer("mnist")
    reference = norm(ink)
    unrotated = norm(stored)
    assert _corr(reference, unrotated) < 0.5  # the EXIF check below can fail
    for ref in EXPECTED_KEPT:
        row = m[m["source_ref"] == ref].iloc[0]
        pixels = np.asarray(Image.open(result.out / row["path"]))
        assert pixels.shape == (28, 28)
        c = _corr(pixels, reference)
        assert c > 0.95, (ref, c)
    assert (m["label"] == "seven").all()
