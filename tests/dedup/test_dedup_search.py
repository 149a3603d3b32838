"""Near-duplicate search (datakit.dedup) against a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from datakit.dedup import (HashIndex, exact_duplicate_groups, near_duplicate_groups, near_duplicate_pairs,
                           nearest_neighbors, popcount64)
from datakit.dedup.plan import _block_radii, _blocks
from datakit.dedup.search import _search_tables


def flip_bits(h: int, d: int, rng: np.random.Generator) -> np.uint64:
    """``h`` with exactly ``d`` distinct bits flipped."""
    out = int(h)
    for b in rng.choice(64, size=d, replace=False):
        out ^= 1 << int(b)
    return np.uint64(out)


def planted(n: int, max_d: int, seed: int) -> np.ndarray:
    """``n`` random hashes plus near copies of some of them at every distance 0..max_d+2."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, n, dtype=np.uint64)
    copies = [flip_bits(base[rng.integers(n)], d, rng) for d in range(max_d + 3) for _ in range(max(2, n // 40))]
    out = np.concatenate([base, np.array(copies, dtype=np.uint64)])
    return out[rng.permutation(len(out))]


def brute(a: np.ndarray, r: int, b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference: every pair by the Python int popcount."""
    rows = []
    if b is None:
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                d = (int(a[i]) ^ int(a[j])).bit_count()
                if d <= r:
                    rows.append((i, j, d))
    else:
        for i in range(len(a)):
            for j in range(len(b)):
                d = (int(a[i]) ^ int(b[j])).bit_count()
                if d <= r:
                    rows.append((i, j, d))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return arr[:, :2], arr[:, 2]


@pytest.mark.parametrize("r", [0, 1, 2, 3, 4, 6, 8, 12])
def test_pairs_within_match_brute_force(r):
    h = planted(300, r, seed=r)
    want_pairs, want_d = brute(h, r)
    pairs, d = near_duplicate_pairs(h, r, return_distances=True)
    assert pairs.dtype == np.int64 and pairs.shape == (len(want_pairs), 2)
    np.testing.assert_array_equal(pairs, want_pairs)
    np.testing.assert_array_equal(d, want_d)
    # planted copies at distance exactly r exist, so the boundary is exercised
    assert (d == r).any()
    assert (pairs[:, 0] < pairs[:, 1]).all()


@pytest.mark.parametrize("r", [0, 2, 5, 8])
def test_pairs_other_match_brute_force(r):
    rng = np.random.default_rng(100 + r)
    a = rng.integers(0, 2**64, 200, dtype=np.uint64)
    b = np.concatenate([rng.integers(0, 2**64, 150, dtype=np.uint64),
                        [flip_bits(a[k], k % (r + 2), rng) for k in range(60)]])
    want_pairs, want_d = brute(a, r, b)
    pairs, d = near_duplicate_pairs(a, r, other=b, return_distances=True)
    np.testing.assert_array_equal(pairs, want_pairs)
    np.testing.assert_array_equal(d, want_d)
    assert len(want_pairs) >= sum(k % (r + 2) <= r for k in range(60))  # the planted copies within r


@pytest.mark.parametrize("m", [3, 4, 5, 8])
@pytest.mark.parametrize("self_join", [True, False])
@pytest.mark.parametrize("r", [2, 6, 7])
def test_multi_index_any_block_count_is_exact(m, self_join, r):
    """The table search (not the brute-force fallback) gives the brute-force answer for any block layout,
    with one radius per block (r // m) or the sharper per-block radii."""
    h = planted(400, r, seed=m)
    other = h if self_join else planted(300, r, seed=m + 50) ^ np.uint64(1)
    want_pairs, want_d = brute(h, r, None if self_join else other)
    for radii in (r // m, _block_radii(r, m)):
        pairs, d = _search_tables(h, other, r, _blocks(m), radii, self_join)
        np.testing.assert_array_equal(pairs, want_pairs)
        np.testing.assert_array_equal(d, want_d)


def test_block_radii_cover_the_radius():
    assert _block_radii(8, 3) == [2, 2, 2]
    assert _block_radii(6, 3) == [2, 1, 1]
    assert _block_radii(1, 3) == [0, 0, -1]
    for r in range(0, 33):
        for m in range(1, 12):
            radii = _block_radii(r, m)
            # the smallest total distance that escapes every block's radius is r + 1
            assert sum(s + 1 for s in radii) == r + 1


def test_large_input_uses_index_and_matches_sampled_brute_force():
    """10k hashes: the planner picks the multi-index; every planted pair is found, nothing beyond r."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**64, 10_000, dtype=np.uint64)
    src = rng.choice(10_000, 500, replace=False)
    copies = np.array([flip_bits(base[s], int(k % 9), rng) for k, s in enumerate(src)], dtype=np.uint64)
    h = np.concatenate([base, copies])
    pairs, d = near_duplicate_pairs(h, 8, return_distances=True)
    found = set(map(tuple, pairs.tolist()))
    for k, s in enumerate(src):
        assert (int(s), 10_000 + k) in found
    np.testing.assert_array_equal(d, popcount64(h[pairs[:, 0]] ^ h[pairs[:, 1]]))
    assert d.max() <= 8
    # exact on a subsample against the reference
    sub = h[:1500]
    np.testing.assert_array_equal(near_duplicate_pairs(sub, 8), brute(sub, 8)[0])


def test_edge_cases():
    empty = np.zeros(0, dtype=np.uint64)
    assert near_duplicate_pairs(empty, 4).shape == (0, 2)
    assert near_duplicate_pairs(np.array([5], dtype=np.uint64), 4).shape == (0, 2)
    assert near_duplicate_pairs(empty, 4, other=np.array([1], dtype=np.uint64)).shape == (0, 2)
    assert near_duplicate_groups(empty, 3).shape == (0,)
    same = np.full(6, 0xDEADBEEF, dtype=np.uint64)
    pairs = near_duplicate_pairs(same, 0)
    assert len(pairs) == 15
    np.testing.assert_array_equal(pairs, np.array([(i, j) for i in range(6) for j in range(i + 1, 6)]))
    np.testing.assert_array_equal(near_duplicate_groups(same, 0), np.zeros(6, dtype=np.int64))
    # distance 0 keeps only identical hashes
    h = np.array([1, 3, 1, 2**64 - 1, 3], dtype=np.uint64)
    np.testing.assert_array_equal(near_duplicate_pairs(h, 0), [[0, 2], [1, 4]])
    # all 64 bits differ: only found at radius 64, which is out of range; 32 finds nothing
    assert len(near_duplicate_pairs(np.array([0, 2**64 - 1], dtype=np.uint64), 32)) == 0


def test_groups_are_connected_components_with_smallest_index():
    h = np.array([0b0000, 0xFF00, 0b0001, 0b0011, 0xFF01, 0x0F0F0F0F00000000], dtype=np.uint64)
    # chain 0-2-3 (distance 1 steps; 0 and 3 are 2 apart), pair 1-4, singleton 5
    np.testing.assert_array_equal(near_duplicate_groups(h, 1), [0, 1, 0, 0, 1, 5])
    np.testing.assert_array_equal(near_duplicate_groups(h, 0), [0, 1, 2, 3, 4, 5])
    h = planted(300, 4, seed=11)
    groups = near_duplicate_groups(h, 4)
    # reference: union-find over brute-force pairs
    parent = list(range(len(h)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in brute(h, 4)[0]:
        a, b = find(int(i)), find(int(j))
        parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(h))])
    want = np.array([np.flatnonzero(roots == roots[i]).min() for i in range(len(h))])
    np.testing.assert_array_equal(groups, want)
    assert len(np.unique(groups)) < len(h)  # the planted copies were grouped


def test_exact_duplicate_groups():
    np.testing.assert_array_equal(exact_duplicate_groups(["b", "a", "b", None, "a", None]), [0, 1, 0, 3, 1, 5])
    assert exact_duplicate_groups([]).shape == (0,)
    with pytest.raises(TypeError, match="sequence of content ids"):
        exact_duplicate_groups("abc")


def test_nearest_neighbors_and_index():
    h = np.array([0, 3, 1, 0xFFFF, 0xFFFE], dtype=np.uint64)
    idx, d = nearest_neighbors(h, 2)
    np.testing.assert_array_equal(idx, [2, 2, 0, 4, 3])
    np.testing.assert_array_equal(d, [1, 1, 1, 1, 1])
    idx, d = nearest_neighbors(h, 0)
    np.testing.assert_array_equal(idx, [-1] * 5)
    rng = np.random.default_rng(5)
    base = planted(500, 6, seed=21)
    queries = np.array([flip_bits(base[k], k % 8, rng) for k in range(100)], dtype=np.uint64)
    index = HashIndex(max_distance=6).fit(base)
    for r in (6, 3):
        np.testing.assert_array_equal(index.query(queries, r), brute(queries, r, base)[0])
    near, dist = index.nearest(queries)
    ref_pairs, ref_d = brute(queries, 6, base)
    for q in range(100):
        rows = ref_pairs[:, 0] == q
        if rows.any():
            assert dist[q] == ref_d[rows].min()
            assert near[q] == ref_pairs[rows][ref_d[rows] == ref_d[rows].min(), 1].min()
        else:
            assert near[q] == -1 and dist[q] == -1


def test_errors():
    h = np.arange(4, dtype=np.uint64)
    with pytest.raises(TypeError, match="uint64"):
        near_duplicate_pairs(np.arange(4, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="1-D"):
        near_duplicate_pairs(h.reshape(2, 2), 2)
    with pytest.raises(ValueError, match=r"0\.\.32"):
        near_duplicate_pairs(h, 33)
    with pytest.raises(ValueError, match=r"0\.\.32"):
        near_duplicate_groups(h, -1)
    with pytest.raises(TypeError, match="max_distance must be an int"):
        near_duplicate_pairs(h, 2.5)
    with pytest.raises(TypeError, match="other must be a 1-D uint64"):
        near_duplicate_pairs(h, 2, other=np.array([1.0]))
    with pytest.raises(NotFittedError, match="not fitted"):
        HashIndex().query(h)
    with pytest.raises(ValueError, match="exceeds the index's max_distance"):
        HashIndex(max_distance=2).fit(h).query(h, 5)


def test_threads_give_the_same_answer():
    h = planted(3000, 8, seed=99)
    one = near_duplicate_pairs(h, 8, return_distances=True)
    two = near_duplicate_pairs(h, 8, return_distances=True, n_jobs=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(near_duplicate_groups(h, 8, n_jobs=-1), near_duplicate_groups(h, 8))
    index = HashIndex(max_distance=8, n_jobs=2).fit(h[:2000])
    np.testing.assert_array_equal(index.query(h[2000:]), near_duplicate_pairs(h[2000:], 8, other=h[:2000]))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n_jobs must be None, -1 or a positive int"):
            near_duplicate_pairs(h, 8, n_jobs=bad)
