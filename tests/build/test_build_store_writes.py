"""How the build's workers write images into the store (``datakit.build.process._put_image``)."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from datakit.build import process
from datakit.build.process import _put_image
from datakit.store.images import content_id, encode_png


@pytest.fixture(autouse=True)
def _fresh_dir_cache(monkeypatch):
    monkeypatch.setattr(process, "_MADE_DIRS", set())


def _png(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8))


def test_writes_the_bytes_under_their_sha256_with_the_umask(tmp_path):
    data = _png(0)
    old = os.umask(0o027)
    try:
        image_id, rel = _put_image(str(tmp_path), data)
    finally:
        os.umask(old)
    assert image_id == content_id(data)
    assert rel == f"images/{image_id[:2]}/{image_id}.png"
    path = tmp_path / rel
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_an_existing_copy_is_left_untouched(tmp_path):
    data = _png(1)
    _, rel = _put_image(str(tmp_path), data)
    before = (tmp_path / rel).stat()
    assert _put_image(str(tmp_path), data)[1] == rel
    after = (tmp_path / rel).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("left", [b"", b"\x89PNG\r\n", "longer"])
def test_a_partial_or_wrong_file_under_the_name_is_replaced(tmp_path, left):
    """What a worker killed mid-write leaves (or a file changed since) is not trusted."""
    data = _png(2)
    image_id = content_id(data)
    path = tmp_path / "images" / image_id[:2] / f"{image_id}.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(data + b"junk" if left == "longer" else left)
    assert _put_image(str(tmp_path), data) == (image_id, f"images/{image_id[:2]}/{image_id}.png")
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_the_folder_removed_meanwhile_is_made_again(tmp_path):
    data = _png(3)
    _, rel = _put_image(str(tmp_path), data)
    (tmp_path / rel).unlink()
    (tmp_path / rel).parent.rmdir()  # the folder is remembered as made: the write finds it gone
    assert _put_image(str(tmp_path), data)[1] == rel
    assert (tmp_path / rel).read_bytes() == data


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    data = _png(4)

    def broken(fd, view):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(process.os, "write", broken)
    with pytest.raises(OSError, match="No space"):
        _put_image(str(tmp_path), data)
    image_id = content_id(data)
    assert list((tmp_path / "images" / image_id[:2]).iterdir()) == []
