"""Exact and near-duplicate search over content ids and 64-bit perceptual hashes.

Near-duplicate search is sub-quadratic **multi-index hashing** (Norouzi,
Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index Hashing",
CVPR 2012), in pure numpy, with memory bounded for clustered hashes too. One
concept a module:

* :mod:`~datakit.dedup.hashes`: :func:`popcount64`, :data:`MAX_DISTANCE` and
  the argument checks.
* :mod:`~datakit.dedup.plan`: the block layout and per-block radii, chosen
  from a cost model (or a brute-force scan when that is cheaper).
* :mod:`~datakit.dedup.tables`: the per-block CSR tables and the search tasks
  over them, with capped candidate expansion.
* :mod:`~datakit.dedup.search`: streaming the verified pairs, equal hashes
  collapsed; :func:`near_duplicate_pairs`, :func:`nearest_neighbors`.
* :mod:`~datakit.dedup.index`: :class:`HashIndex`, fitted once, queried many
  times.
* :mod:`~datakit.dedup.groups`: connected components fed chunk by chunk;
  :func:`near_duplicate_groups`, :func:`exact_duplicate_groups`.
* :mod:`~datakit.dedup.thumbnails`: :func:`thumbnail_pixels`,
  :func:`thumbnail` and the row store of the pixel check.
* :mod:`~datakit.dedup.confirm`: :func:`confirmed_duplicate_groups`, groups
  whose every edge the pixels confirm, in bounded memory.
* ``_limits``: the memory caps (candidates, edges, thumbnails, pairs a step).

Examples
--------
>>> import numpy as np
>>> h = np.array([0, 1, 3, 2**63, 0xFFFF], dtype=np.uint64)
>>> near_duplicate_pairs(h, 2)
array([[0, 1],
       [0, 2],
       [0, 3],
       [1, 2],
       [1, 3]])
>>> near_duplicate_groups(h, 1)
array([0, 0, 0, 0, 4])
>>> exact_duplicate_groups(["a", "b", "a"])
array([0, 1, 0])
"""
from __future__ import annotations

from datakit.dedup.confirm import ThumbnailBlock, candidate_pair_blocks, confirmed_duplicate_groups
from datakit.dedup.groups import exact_duplicate_groups, near_duplicate_groups
from datakit.dedup.hashes import MAX_DISTANCE, popcount64
from datakit.dedup.index import HashIndex
from datakit.dedup.search import near_duplicate_pairs, nearest_neighbors
from datakit.dedup.thumbnails import thumbnail, thumbnail_pixels

__all__ = [
    "near_duplicate_pairs",
    "near_duplicate_groups",
    "confirmed_duplicate_groups",
    "candidate_pair_blocks",
    "ThumbnailBlock",
    "thumbnail",
    "thumbnail_pixels",
    "exact_duplicate_groups",
    "nearest_neighbors",
    "HashIndex",
    "popcount64",
    "MAX_DISTANCE",
]
