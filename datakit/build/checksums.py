"""Checksums of the files a build writes."""
from __future__ import annotations

import hashlib
from pathlib import Path

from datakit.store.manifest import manifest_checksum


__all__ = ["_manifest_checksum", "_file_sha256"]


def _manifest_checksum(path: Path) -> str:
    """:attr:`Dataset.checksum` of a manifest file, read one column and row group at a time."""
    return manifest_checksum(path)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
