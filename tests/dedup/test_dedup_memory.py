"""Bounded-memory near-duplicate search on clustered hashes (heavy buckets, many equal hashes).

The caps on candidates, buffered edges and thumbnails are shrunk with
monkeypatch so that a few thousand hashes exercise every split path (a heavy
bucket cut over several pieces, components merged chunk by chunk, thumbnails
checked in batches and in blocks); every result is compared with a brute-force
reference. The caps live in :mod:`datakit.dedup._limits`, read when the code
runs, so one patch there reaches every stage (``test_shrunk_caps_take_effect``
checks that it does).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from datakit.dedup import (HashIndex, _limits, confirm, confirmed_duplicate_groups, groups, near_duplicate_groups,
                           near_duplicate_pairs, popcount64, search, tables, thumbnail, thumbnail_pixels)
from datakit.dedup.tables import _capped_expand
from datakit.dedup.thumbnails import _Normalized, _unit_rows


def clustered(n: int, distinct: int, seed: int) -> np.ndarray:
    """``n`` hashes: ``distinct`` random bases and copies of them with 0 to 3 random bits flipped."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, distinct, dtype=np.uint64)
    src = rng.integers(0, distinct, n - distinct)
    flips = np.zeros(n - distinct, dtype=np.uint64)
    n_flips = rng.integers(0, 4, n - distinct)
    for k in range(3):
        bit = rng.integers(0, 64, n - distinct).astype(np.uint64)
        flips ^= np.where(n_flips > k, np.uint64(1) << bit, np.uint64(0))
    out = np.concatenate([base, base[src] ^ flips])
    return out[rng.permutation(n)]


def brute(a: np.ndarray, r: int, b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the full distance matrix (rows i, columns j; i < j within one set)."""
    d = popcount64(a[:, None] ^ (a if b is None else b)[None, :]).astype(np.int64)
    ok = d <= r
    if b is None:
        ok &= np.triu(np.ones_like(ok), 1)
    i, j = np.nonzero(ok)  # row-major: sorted by i then j
    return np.stack([i, j], 1).astype(np.int64), d[i, j]


def brute_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    first = np.full(n, n)
    np.minimum.at(first, comp, np.arange(n))
    return first[comp]


@pytest.fixture
def small_caps(monkeypatch):
    """Caps small enough that a 2,000-hash clustered set splits everywhere."""
    monkeypatch.setattr(_limits, "MAX_CANDIDATES", 97)
    monkeypatch.setattr(_limits, "MAX_EDGES", 50)
    monkeypatch.setattr(_limits, "MAX_THUMBNAILS", 16)


def test_capped_expand_splits_heavy_rows_exactly():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 40, 50)
    counts[7] = 500  # one row heavier than the cap
    starts = rng.integers(0, 1000, 50)
    want = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
    want_rows = np.repeat(np.arange(50), counts)
    got, got_rows, sizes = [], [], []
    for r0, r1, c, pos in _capped_expand(starts, counts, cap=64):
        assert c.sum() == len(pos) and (c >= 0).all()
        got.append(pos)
        got_rows.append(np.repeat(np.arange(r0, r1), c))
        sizes.append(len(pos))
    np.testing.assert_array_equal(np.concatenate(got), want)
    np.testing.assert_array_equal(np.concatenate(got_rows), want_rows)
    assert max(sizes) <= 64 and len(sizes) == -(-counts.sum() // 64)


@pytest.mark.parametrize("r", [0, 2, 4, 8])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_clustered_pairs_match_brute_force_with_small_caps(small_caps, r, n_jobs):
    h = clustered(2000, 60, seed=r)  # about 33 copies per base: heavy buckets, many equal hashes
    assert len(np.unique(h)) < len(h) - 100
    want, want_d = brute(h, r)
    pairs, d = near_duplicate_pairs(h, r, return_distances=True, n_jobs=n_jobs)
    assert pairs.dtype == np.int64 and d.dtype == np.int64
    np.testing.assert_array_equal(pairs, want)
    np.testing.assert_array_equal(d, want_d)
    assert (d == 0).sum() > 100  # the equal-hash expansion was exercised
    np.testing.assert_array_equal(near_duplicate_groups(h, r, n_jobs=n_jobs), brute_groups(len(h), want))


@pytest.mark.parametrize("r", [0, 3, 8])
def test_clustered_pairs_against_other_set(small_caps, r):
    h = clustered(700, 30, seed=10 + r)
    other = clustered(500, 30, seed=10 + r)[::-1].copy()
    other[:50] = h[:50]  # equal hashes across the sets
    want, want_d = brute(h, r, other)
    pairs, d = near_duplicate_pairs(h, r, other=other, return_distances=True)
    np.testing.assert_array_equal(pairs, want)
    np.testing.assert_array_equal(d, want_d)
    index = HashIndex(max_distance=8).fit(other)
    got, got_d = index.query(h, r, return_distances=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_d, want_d)


def test_all_equal_hashes_with_small_caps(small_caps):
    h = np.full(60, 0xABCDEF, dtype=np.uint64)
    h[::7] ^= np.uint64(1)
    want, want_d = brute(h, 1)
    pairs, d = near_duplicate_pairs(h, 1, return_distances=True)
    np.testing.assert_array_equal(pairs, want)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(near_duplicate_groups(h, 0), np.where(np.arange(60) % 7 == 0, 0, 1))


def test_search_error_in_a_thread_reaches_the_caller(monkeypatch):
    def boom(self, task):
        raise RuntimeError("table lookup failed")
        yield  # pragma: no cover

    monkeypatch.setattr(tables._Search, "run", boom)
    with pytest.raises(RuntimeError, match="table lookup failed"):
        near_duplicate_pairs(clustered(3000, 300, seed=1), 4, n_jobs=2)


def confirmed_reference(h: np.ndarray, r: int, thumbs: np.ndarray, min_similarity: float) -> np.ndarray:
    pairs, _ = brute(h, r)
    a, b = thumbs[pairs[:, 0]], thumbs[pairs[:, 1]]
    keep = ((a * b).sum(1) >= min_similarity) | (~a.any(1) & ~b.any(1))
    return brute_groups(len(h), pairs[keep])


@pytest.mark.parametrize("caps", [False, True])
@pytest.mark.parametrize("pixels", [False, True])
def test_confirmed_groups_match_reference_in_batches_and_blocks(monkeypatch, caps, pixels):
    if caps:
        monkeypatch.setattr(_limits, "MAX_CANDIDATES", 97)
        monkeypatch.setattr(_limits, "MAX_EDGES", 50)
        monkeypatch.setattr(_limits, "MAX_THUMBNAILS", 16)  # components of 17+ images are cut into blocks
        monkeypatch.setattr(_limits, "PAIR_CHUNK", 7)
    rng = np.random.default_rng(3)
    h = clustered(600, 25, seed=3)
    # image "content": one random image per hash family, so thumbnails of near hashes mostly agree,
    # and every fifth image is its own (an unconfirmed hash neighbour)
    family = rng.integers(0, 256, size=(64, 1024)).astype(np.uint8)
    pix = family[(h % np.uint64(64)).astype(np.int64)]
    pix[::5] = rng.integers(0, 256, size=(len(pix[::5]), 1024))
    pix[3] = 77  # flat images: confirmed by agreeing hashes alone
    thumbs = _unit_rows(pix)
    calls = []

    def thumbnails(idx):
        calls.append(idx.copy())
        assert idx.ndim == 1 and (np.diff(idx) > 0).all()  # sorted, distinct
        return pix[idx] if pixels else thumbs[idx]

    want = confirmed_reference(h, 4, thumbs, 0.98)
    got = confirmed_duplicate_groups(h, 4, thumbnails)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) < len(h) - 50  # real groups were found
    assert (want != brute_groups(len(h), brute(h, 4)[0])).any()  # and pixels rejected some hash pairs
    asked = np.concatenate(calls)
    assert len(np.unique(asked)) == len(asked)  # every image's thumbnail is asked for once
    partners = np.unique(brute(h, 4)[0])
    np.testing.assert_array_equal(np.sort(asked), partners)  # exactly the images with a candidate partner
    if caps:
        assert len(calls) > 1 and max(len(c) for c in calls) <= 16
        assert np.bincount(want).max() > 16  # a group bigger than a batch: checked block against block
    else:
        assert len(calls) == 1


def test_thumbnail_is_the_normalized_thumbnail_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(28, 28, 3)).astype(np.uint8)
    pix = thumbnail_pixels(image)
    assert pix.dtype == np.uint8 and pix.shape == (1024,)
    t = thumbnail(image)
    assert t.dtype == np.float32 and abs(float(t @ t) - 1) < 1e-5 and abs(float(t.mean())) < 1e-6
    ref = pix.astype(np.float64) - pix.mean()
    np.testing.assert_allclose(t, ref / np.linalg.norm(ref), atol=1e-6)
    assert not thumbnail(np.full((28, 28), 9, np.uint8)).any()  # flat: all zero


def test_confirmed_groups_never_hold_the_candidate_pairs(monkeypatch):
    """2,000 equal hashes make 1,999,000 candidate pairs (16 MB as int32 pairs); they are checked as the
    search streams them, so the traced peak stays a fraction of that (with the caps shrunk to match)."""
    import tracemalloc

    monkeypatch.setattr(_limits, "MAX_CANDIDATES", 4096)
    monkeypatch.setattr(_limits, "MAX_EDGES", 4096)
    monkeypatch.setattr(_limits, "PAIR_CHUNK", 256)
    h = np.zeros(2000, dtype=np.uint64)
    pixels = np.tile(np.arange(16, dtype=np.uint8) * 9, (2000, 1))  # 16-pixel "thumbnails", all alike
    pixels[7] = pixels[7][::-1]  # one image differs: its pairs are all rejected
    tracemalloc.start()
    try:
        groups = confirmed_duplicate_groups(h, 0, lambda idx: pixels[idx])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    want = np.zeros(2000, dtype=np.int64)
    want[7] = 7
    np.testing.assert_array_equal(groups, want)
    assert peak < 4 * 2**20, f"traced peak {peak / 2**20:.1f} MiB"


def test_confirmed_groups_rejects_thumbnails_of_the_wrong_shape():
    h = np.array([5, 5, 5], dtype=np.uint64)
    with pytest.raises(ValueError, match="shape"):
        confirmed_duplicate_groups(h, 0, lambda idx: np.zeros((len(idx) - 1, 1024), np.uint8))


def test_heavy_buckets_are_split_by_the_cap(small_caps, monkeypatch):
    pieces = []
    sites = set()

    def counting(site):
        def expand(starts, counts, cap=None):
            for piece in _capped_expand(starts, counts, cap):
                pieces.append(len(piece[3]))
                sites.add(site)
                yield piece
        return expand

    # looked up in two modules: the table search (buckets) and the equal-hash expansion
    for module in (tables, search):
        monkeypatch.setattr(module, "_capped_expand", counting(module.__name__))
    h = clustered(2000, 60, seed=7)
    want, _ = brute(h, 4)
    np.testing.assert_array_equal(near_duplicate_pairs(h, 4), want)
    assert max(pieces) <= 97 and sum(p == 97 for p in pieces) > 10  # many full pieces: candidates were capped
    assert sites == {"datakit.dedup.tables", "datakit.dedup.search"}  # both patches were called


def test_shrunk_caps_take_effect(monkeypatch):
    """A cap patched in ``_limits`` is the one the code uses (a patch that did nothing would pass vacuously)."""
    merges = []
    merge = groups._Components._merge

    def counting_merge(self):
        merges.append(self._buffered)
        return merge(self)

    monkeypatch.setattr(groups._Components, "_merge", counting_merge)
    h = clustered(2000, 60, seed=5)
    want = near_duplicate_groups(h, 4)
    assert len(merges) == 1  # default cap: one merge, at the end
    merges.clear()
    monkeypatch.setattr(_limits, "MAX_EDGES", 50)
    np.testing.assert_array_equal(near_duplicate_groups(h, 4), want)
    assert len(merges) >= 3 and min(merges[:-1]) >= 50  # merged as soon as 50 edges were buffered, then at the end

    class Gathers:  # the thumbnail rows one block holds, recording each gather
        def __init__(self, rows):
            self.rows, self.sizes = rows, []

        def __getitem__(self, k):
            self.sizes.append(len(k))
            return self.rows[k]

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, size=(30, 64)).astype(np.uint8)
    pix[5:10] = pix[0]  # confirmed pairs
    block = _Normalized(pix)
    block.unit = Gathers(block.unit)
    a, b = rng.integers(0, 30, 50), rng.integers(0, 30, 50)
    monkeypatch.setattr(_limits, "PAIR_CHUNK", 7)
    keep = confirm._similar(block, a, block, b, 0.98)
    unit = _unit_rows(pix)
    np.testing.assert_array_equal(keep, (unit[a] * unit[b]).sum(1) >= 0.98)
    assert keep.sum() > 0 and block.unit.sizes == [7, 7] * 7 + [1, 1]  # 50 pairs compared 7 at a time


@pytest.mark.parametrize("caps", [False, True])
def test_candidate_pair_blocks_yield_every_pair_once_with_its_thumbnails(monkeypatch, caps):
    """The stream the build and the duplicates audit share: each candidate pair once, its distance, and the
    rows of both images, whether the component fits one batch or is cut into pairs of blocks."""
    from datakit.dedup import candidate_pair_blocks
    from datakit.dedup.hashes import popcount64

    if caps:
        monkeypatch.setattr(_limits, "MAX_CANDIDATES", 97)
        monkeypatch.setattr(_limits, "MAX_THUMBNAILS", 16)
    h = clustered(600, 25, seed=5)
    pix = np.random.default_rng(5).integers(0, 256, size=(len(h), 1024)).astype(np.uint8)
    seen, n_blocks_held = [], []
    for left, a, right, b, d in candidate_pair_blocks(h, 4, lambda idx: pix[idx]):
        i, j = left.indices[a], right.indices[b]
        np.testing.assert_array_equal(left.rows[a], pix[i])  # the rows are those images' thumbnails
        np.testing.assert_array_equal(right.rows[b], pix[j])
        np.testing.assert_array_equal(d, popcount64(h[i] ^ h[j]))
        seen.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
        n_blocks_held.append(len({id(left), id(right)}))
        if caps:
            assert len(left) <= 8 and len(right) <= 16
    got = np.unique(np.concatenate(seen), axis=0)
    assert len(got) == sum(len(s) for s in seen)  # no pair twice
    np.testing.assert_array_equal(got, np.unique(brute(h, 4)[0], axis=0))
    if caps:
        assert 2 in n_blocks_held  # pairs across two blocks of one huge component came out


def test_confirmed_groups_are_the_same_on_threads(monkeypatch):
    """n_jobs also splits the normalization and the correlations over threads: the groups do not change."""
    monkeypatch.setattr(_limits, "PAIR_CHUNK", 7)  # many pairs per call: the correlations are split
    rng = np.random.default_rng(5)
    h = clustered(3000, 40, seed=5)
    family = rng.integers(0, 256, size=(64, 1024)).astype(np.uint8)
    pix = family[(h % np.uint64(64)).astype(np.int64)]
    pix[::4] = rng.integers(0, 256, size=(len(pix[::4]), 1024))
    calls = {"threads": 0}
    real = confirm._on_threads

    def counted(*args, **kwargs):
        calls["threads"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(confirm, "_on_threads", counted)
    one = confirmed_duplicate_groups(h, 4, lambda idx: pix[idx], n_jobs=1)
    assert calls["threads"] == 0
    two = confirmed_duplicate_groups(h, 4, lambda idx: pix[idx], n_jobs=2)
    assert calls["threads"] > 0
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, confirmed_reference(h, 4, _unit_rows(pix), 0.98))
    a = _Normalized(pix, 1)
    b = _Normalized(pix, 2)
    assert np.array_equal(a.unit, b.unit) and np.array_equal(a.flat, b.flat)
