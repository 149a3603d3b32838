"""Memory caps of the near-duplicate search and the pixel check.

They live in one module and are read as ``_limits.NAME`` when the code runs
(never copied into another module's namespace), so a test that shrinks one
with ``monkeypatch.setattr(datakit.dedup._limits, NAME, ...)`` changes it for
every stage at once.
"""
from __future__ import annotations

__all__ = ["CHUNK", "LOOKUP_CHUNK", "MAX_CANDIDATES", "MAX_EDGES", "MAX_THUMBNAILS", "PAIR_CHUNK"]

#: Target number of brute-force cells per vectorised chunk.
CHUNK = 1 << 21
#: Keys per vectorised lookup chunk (small enough to stay in cache).
LOOKUP_CHUNK = 1 << 18
#: Most candidate pairs (or expanded output pairs) materialised at once per thread; about 40 bytes
#: each in temporaries, so 2**18 candidates stay under 12 MiB however heavy a bucket is.
MAX_CANDIDATES = 1 << 18
#: Edges buffered before they are merged into the connected components (int32 pairs: 1 MiB; a merge works
#: on these roots only, about 40 bytes an edge).
MAX_EDGES = 1 << 17
#: Most thumbnails held at once by :func:`datakit.dedup.confirmed_duplicate_groups` (as 32x32 uint8 pixels,
#: 1 KiB each: 16 MiB, plus their unit-normalized float32 rows, 4 KiB each, while a batch is checked).
#: The rest wait in a temporary file.
MAX_THUMBNAILS = 1 << 14
#: Candidate pairs whose normalized thumbnails are compared at once (2 x 4 KiB of float32 each: 2 MiB,
#: so the gathered rows stay in cache: 256 pairs a step ran 1.5 to 2x faster than 2,048).
PAIR_CHUNK = 1 << 8
