"""The duplicates audit's counting: relations, pair counts and reported matches, without listing image pairs.

Images with one content id form one node (:func:`_nodes`); every count comes
from a sparse product of the node adjacency matrix with per-cell counts
(cells: dataset, split, source; :class:`_Neighbors`), so a thousand copies of
one blank image cost one node, not half a million pairs. :class:`_Graph` holds
what the pHash and the semantic searches share and turns one set of node
edges into the per-image frame, the summary counts and the tables.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from datakit.dedup.hashes import _index_dtype

__all__ = ["KINDS"]

#: How an image relates to its reported match, most serious first: ``leak`` (one in the train
#: split, the other in another split of the same dataset), ``cross_dataset``, ``cross_source``
#: (same dataset and split, different ``source``), ``cross_split`` (two non-train splits),
#: ``within_split``.
KINDS = ("leak", "cross_dataset", "cross_source", "cross_split", "within_split")

#: summary keys that do not depend on the near-copy search (the same for pHash and semantic)
_EXACT_KEYS = ("exact_within", "leakage_exact_test_in_train", "n_test", "exact_across_splits", "exact_pairs")


class _Neighbors:
    """Adjacency over groups of images (equal hash / equal id) and per-cell counts.

    ``group`` maps each image to a node; ``adjacency`` (nodes x nodes, with the
    identity) says which nodes are near each other. For a labelling of images
    into cells, ``count(labels)[x, c]`` is the number of images ``y`` in cell
    ``c`` adjacent to ``x`` (``x`` itself included when it is in ``c``).
    """

    def __init__(self, group: np.ndarray, n_nodes: int, adjacency: sparse.csr_matrix | None) -> None:
        """``adjacency=None``: the identity (exact copies only)."""
        self.group, self.n_nodes, self.adjacency = group, n_nodes, adjacency

    def _by_cell(self, labels: np.ndarray, n_cells: int):
        """Nodes x cells: images of each node in each cell; dense int64 while that stays small (64 MB), else
        sparse (a sparse matrix with a million rows, and fancy indexing into it, cost several times more)."""
        if self.n_nodes * n_cells <= _DENSE_CELLS:
            flat = np.bincount(self.group * n_cells + labels, minlength=self.n_nodes * n_cells)
            return flat.reshape(self.n_nodes, n_cells)
        ones = np.ones(len(labels), dtype=np.int64)
        return sparse.csr_matrix((ones, (self.group, labels)), shape=(self.n_nodes, n_cells))

    def reach(self, labels: np.ndarray, n_cells: int):
        """Nodes x cells: images of each cell adjacent to each node (dense array or sparse matrix)."""
        by_cell = self._by_cell(labels, n_cells)
        if self.adjacency is None:
            return by_cell
        out = self.adjacency @ by_cell
        return out if isinstance(out, np.ndarray) else sparse.csr_matrix(out)

    def lookup(self, reach, cells: np.ndarray) -> np.ndarray:
        """Per image: ``reach[group[x], cells[x]]`` (0 where ``cells`` is -1)."""
        out = np.zeros(len(cells), dtype=np.int64)
        ok = cells >= 0
        if ok.any():
            out[ok] = np.asarray(reach[self.group[ok], cells[ok]]).ravel()
        return out

    def pair_matrix(self, labels: np.ndarray, n_cells: int) -> np.ndarray:
        """Cells x cells ordered pair counts (each image paired with itself on the diagonal)."""
        by_cell = self._by_cell(labels, n_cells)
        reach = by_cell if self.adjacency is None else self.adjacency @ by_cell
        out = by_cell.T @ reach
        return np.asarray(out.todense() if sparse.issparse(out) else out, dtype=np.int64)


#: largest nodes x cells count table kept dense (int64: 64 MB)
_DENSE_CELLS = 1 << 23


def _hex_id_codes(ids) -> tuple[np.ndarray, int] | None:
    """Codes (in order of first appearance) of ids that are all 64 hex digits (content sha256s), or None.

    Equal ids are found through their first 16 hex digits as a uint64 (8 bytes a row, where factorizing
    the strings held a second copy of them: about 70 MB at a million images), and every group of equal
    prefixes is then checked on all 64 digits (any difference: None, and the caller factorizes).
    """
    import pyarrow as pa

    arrow = getattr(getattr(ids, "array", None), "_pa_array", None)
    if arrow is None or arrow.null_count or len(arrow) == 0:
        return None
    arr = arrow.chunk(0) if arrow.num_chunks == 1 else arrow.combine_chunks()
    if arr.type not in (pa.string(), pa.large_string()):
        return None
    n = len(arr)
    width = np.int64 if arr.type == pa.large_string() else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset:arr.offset + n + 1]
    if not (np.diff(offsets) == 64).all():
        return None
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(n, 64)
    lut = np.full(256, 255, dtype=np.uint8)
    lut[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
    lut[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
    lut[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
    nibbles = lut[data[:, :16]]
    if (nibbles == 255).any():
        return None
    prefix = np.zeros(n, dtype=np.uint64)
    for k in range(16):
        prefix = (prefix << np.uint64(4)) | nibbles[:, k].astype(np.uint64)
    del nibbles
    _, first, inverse = np.unique(prefix, return_index=True, return_inverse=True)
    del prefix
    inverse = inverse.ravel()
    shared = np.flatnonzero(np.bincount(inverse)[inverse] > 1)  # rows whose prefix another row has
    if len(shared) and not (data[shared] == data[first[inverse[shared]]]).all():
        return None  # two ids share 16 digits but differ: leave it to the exact factorization
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse], len(first)


def _nodes(f: pd.DataFrame) -> tuple[np.ndarray, int, np.ndarray]:
    """Images with the same content id share a node. Returns node per image, node count, first row per node."""
    fast = _hex_id_codes(f["id"])
    if fast is not None:
        codes, n_nodes = fast
    else:
        codes, uniques = pd.factorize(f["id"])  # Arrow strings: no Python string per row
        codes = codes.astype(np.int64)
        missing = codes < 0  # no id: a node of its own
        codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    n_nodes = int(codes.max()) + 1 if len(codes) else 0
    first = np.full(n_nodes, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    return codes, n_nodes, first


def _identity_neighbors(node: np.ndarray, n_nodes: int) -> _Neighbors:
    return _Neighbors(node, n_nodes, None)


def _edge_neighbors(node: np.ndarray, n_nodes: int, u: np.ndarray, v: np.ndarray) -> _Neighbors:
    index = np.int32 if n_nodes < 2**31 else np.int64
    rows = np.concatenate([u, v, np.arange(n_nodes)]).astype(index, copy=False)
    cols = np.concatenate([v, u, np.arange(n_nodes)]).astype(index, copy=False)
    adjacency = sparse.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(n_nodes, n_nodes))
    del rows, cols
    return _Neighbors(node, n_nodes, adjacency)


def _relations(nb: _Neighbors, f: pd.DataFrame, train_cell: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Per-image counts of near (or exact) copies by relation."""
    ds, cell, src = f["_ds"].to_numpy(), f["_cell"].to_numpy(), f["_src"].to_numpy()
    n_ds, n_cell, n_src = int(ds.max()) + 1, int(cell.max()) + 1, int(src.max()) + 1
    small = np.int32 if len(ds) < 2**31 else np.int64  # counts of images: int32 halves 12 per-image columns

    def count(values: np.ndarray) -> np.ndarray:
        return values.astype(small, copy=False)

    reach_ds = nb.reach(ds, n_ds)
    total = count(np.asarray(reach_ds.sum(axis=1)).ravel()[nb.group] - 1)
    same_ds = count(nb.lookup(reach_ds, ds) - 1)
    del reach_ds
    reach_cell = nb.reach(cell, n_cell)  # once, for the within-split and the in-train counts
    same_cell = count(nb.lookup(reach_cell, cell) - 1)
    tcell = train_cell[ds]
    in_train = count(nb.lookup(reach_cell, tcell) - (cell == tcell))
    del reach_cell
    same_src = count(nb.lookup(nb.reach(src, n_src), src) - 1)
    return {
        f"{prefix}_total": total,
        f"{prefix}_within_split": same_cell,
        f"{prefix}_cross_split": same_ds - same_cell,
        f"{prefix}_in_train": np.where(tcell >= 0, in_train, 0).astype(small, copy=False),
        f"{prefix}_cross_dataset": total - same_ds,
        f"{prefix}_cross_source": same_ds - same_src,
    }


def _pair_counts(nb: _Neighbors, f: pd.DataFrame, train_cell: np.ndarray, test_cell: np.ndarray) -> dict[str, int]:
    """Unordered image pairs by relation."""
    ds, cell, src = f["_ds"].to_numpy(), f["_cell"].to_numpy(), f["_src"].to_numpy()
    n = len(f)
    p_ds = nb.pair_matrix(ds, int(ds.max()) + 1)
    p_cell = nb.pair_matrix(cell, int(cell.max()) + 1)
    p_src = nb.pair_matrix(src, int(src.max()) + 1)
    intra_ds = (np.trace(p_ds) - n) // 2
    within = (np.trace(p_cell) - n) // 2
    leak = sum(int(p_cell[t, s]) for t, s in zip(train_cell, test_cell) if t >= 0 and s >= 0)
    return {
        "total": int((p_ds.sum() - n) // 2),
        "within_split": int(within),
        "cross_split": int(intra_ds - within),
        "train_test": int(leak),
        "cross_dataset": int((p_ds.sum() - np.trace(p_ds)) // 2),
        "cross_source": int((np.trace(p_ds) - np.trace(p_src)) // 2),
    }


# ---------------------------------------------------------------------------
# the reported match of each image
# ---------------------------------------------------------------------------


def _kind_codes(f: pd.DataFrame, x: np.ndarray, y: np.ndarray, train_split: str) -> np.ndarray:
    """Index into :data:`KINDS` of the relation between images ``x`` and ``y`` (arrays of rows)."""
    ds = f["_ds"].to_numpy()
    sx, sy = f["split"].to_numpy()[x], f["split"].to_numpy()[y]
    cx, cy = f["source"].to_numpy()[x], f["source"].to_numpy()[y]
    return np.where(ds[x] != ds[y], 1,
                    np.where(sx != sy, np.where((sx == train_split) != (sy == train_split), 0, 3),
                             np.where(cx != cy, 2, 4)))


def _matches(f: pd.DataFrame, node: np.ndarray, u: np.ndarray, v: np.ndarray, d: np.ndarray, flagged: np.ndarray,
             train_split: str) -> pd.DataFrame:
    """The reported match of each flagged image: its most serious relation (:data:`KINDS` order), then
    the smallest distance, then the smallest row. Also the distance to its nearest copy.

    Only two representatives per (node, dataset, split, source) are expanded, so a thousand exact
    copies of one image do not make a million rows.
    """
    cols = ["row", "match", "distance", "kind", "nearest"]
    x = np.flatnonzero(flagged)
    if len(x) == 0:
        return pd.DataFrame(columns=cols)
    size = np.bincount(node, minlength=int(node.max()) + 1)
    multi = np.flatnonzero(size > 1)
    # the members of the nodes an edge reaches (not of every node: a million-row frame and its groupby)
    needed = np.zeros(len(size), dtype=bool)
    needed[u] = needed[v] = needed[multi] = True
    rows = np.flatnonzero(needed[node])
    del needed
    # (dataset, split, source) cells from the (dataset, split) and (dataset, source) codes, without tuples per row
    cell3 = f["_cell"].to_numpy(np.int64)[rows] * (int(f["_src"].max()) + 1) + f["_src"].to_numpy(np.int64)[rows]
    members = pd.DataFrame({"node": node[rows], "cell": cell3, "row": rows})
    members["rank"] = members.groupby(["node", "cell"]).cumcount()
    members = members[members["rank"] < 2]
    edges = pd.DataFrame({"u": np.concatenate([u, v, multi]), "v": np.concatenate([v, u, multi]),
                          "distance": np.concatenate([d, d, np.zeros(len(multi), dtype=np.int64)])})
    cand = pd.DataFrame({"row": x, "u": node[x]}).merge(edges, on="u").merge(
        members[["node", "row"]].rename(columns={"node": "v", "row": "match"}), on="v")
    cand = cand[cand["match"] != cand["row"]]
    if cand.empty:
        return pd.DataFrame(columns=cols)
    cand["kind"] = _kind_codes(f, cand["row"].to_numpy(), cand["match"].to_numpy(), train_split)
    nearest = cand.groupby("row")["distance"].min()
    best = cand.sort_values(["row", "kind", "distance", "match"]).drop_duplicates("row")
    best["nearest"] = nearest.loc[best["row"]].to_numpy()
    return best[cols].reset_index(drop=True)


def _near_frame(f: pd.DataFrame, node: np.ndarray, n_nodes: int, u: np.ndarray, v: np.ndarray, d: np.ndarray,
                rel_exact: dict, train_cell: np.ndarray, test_cell: np.ndarray, train_split: str,
                score) -> tuple[pd.DataFrame, dict, dict]:
    """Per-image near-copy columns, relation counts and pair counts for node edges ``(u, v)`` at distances ``d``.

    ``score(nearest)`` maps the distance to the nearest copy (array, shape (N,)) to the 0-1 score.
    """
    n = len(f)
    near_nb = _edge_neighbors(node, n_nodes, u, v)
    rel = dict(rel_exact)
    rel.update(_relations(near_nb, f, train_cell, "near"))
    near_pairs = _pair_counts(near_nb, f, train_cell, test_cell)
    best = _matches(f, node, u, v, d, rel["near_total"] > 0, train_split)
    integer = np.issubdtype(np.asarray(d).dtype, np.integer)
    dt = np.int64 if integer else np.float64
    index = _index_dtype(n)  # row numbers in int32: half of int64 (4 MB a column at a million images)
    flag = np.zeros(n, dtype=bool)
    match = np.full(n, -1, dtype=index)
    distance = np.full(n, -1, dtype=dt)
    nearest = np.full(n, -1, dtype=dt)
    kind_code = np.full(n, -1, dtype=np.int8)  # a categorical over KINDS (1 byte a row, not an object pointer)
    rows = best["row"].to_numpy(dtype=np.int64)
    flag[rows] = True
    match[rows] = best["match"].to_numpy(dtype=np.int64)
    distance[rows] = best["distance"].to_numpy(dtype=dt)
    nearest[rows] = best["nearest"].to_numpy(dtype=dt)
    kind_code[rows] = best["kind"].to_numpy(dtype=np.int8)
    del best
    mrow = np.where(flag, match, 0)
    is_train = f["_cell"].to_numpy() == train_cell[f["_ds"].to_numpy()]
    fill_match = np.where(flag, match, -1)  # the match's row, -1 (missing) for images without a copy
    # copy=False: the columns are not copied into one block (about 80 MB at a million images)
    per = pd.DataFrame(copy=False, data={
        "dataset": f["dataset"], "id": f["id"], "split": f["split"], "source": f["source"], "label": f["label"],
        "flag": flag,
        "score": np.where(flag, score(nearest), 0.0),
        "distance": (pd.Series(distance, dtype="Int64").mask(~flag) if integer else np.where(flag, distance, np.nan)),
        "match_dataset": f["dataset"].array.take(fill_match, allow_fill=True),
        "match_id": f["id"].array.take(fill_match, allow_fill=True),
        "match_split": f["split"].array.take(fill_match, allow_fill=True),
        "kind": pd.Categorical.from_codes(kind_code, categories=list(KINDS)),
        "exact": flag & (node == node[mrow]),
        "leak": ~is_train & (train_cell[f["_ds"].to_numpy()] >= 0) & (rel["near_in_train"] > 0),
        "n_near": rel["near_total"].astype(np.int64),
        "_row": np.arange(n, dtype=index), "_match": match, "_ds": f["_ds"],
    })
    return per, rel, near_pairs


def _report(f: pd.DataFrame, per: pd.DataFrame, rel: dict, near_pairs: dict, exact_pairs: dict,
            train_cell: np.ndarray, test_cell: np.ndarray, train_split: str,
            max_listed: int) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Summary counts (without ``n_images`` and the threshold) and the ``leakage``, ``by_kind``, ``pairs`` tables."""
    n_ds = len(train_cell)
    leak_rows = []
    # splits as integer codes (comparing a million-row column of strings made an object array per split)
    split_code, split_names = pd.factorize(f["split"])
    ds_of = f["_ds"].to_numpy()
    for k in range(n_ds):
        if train_cell[k] < 0:
            continue
        sub = ds_of == k
        present = {str(split_names[c]): int(c) for c in np.unique(split_code[sub]) if c >= 0}
        for split in sorted(set(present) - {train_split}):
            m = sub & (split_code == present[split])
            near_in = int((rel["near_in_train"][m] > 0).sum())
            leak_rows.append({"dataset": f["dataset"].iloc[int(np.argmax(m))], "split": split, "images": int(m.sum()),
                              "exact_in_train": int((rel["exact_in_train"][m] > 0).sum()),
                              "near_in_train": near_in, "fraction": near_in / int(m.sum())})
    leakage = pd.DataFrame(leak_rows, columns=["dataset", "split", "images", "exact_in_train", "near_in_train",
                                               "fraction"])
    test = np.isin(f["_cell"].to_numpy(), test_cell[test_cell >= 0]) & (train_cell[f["_ds"].to_numpy()] >= 0)
    n_test = int(test.sum())
    leaked = int((rel["near_in_train"][test] > 0).sum())

    def images(key: str) -> int:
        return int((rel[key] > 0).sum())

    counts = {  # headline first: the terminal summary shows the first few
        "leakage_test_in_train": leaked,
        "leakage_fraction": leaked / n_test if n_test else 0.0,
        "cross_dataset_images": images("near_cross_dataset"),
        "near_within": images("near_within_split"),
        "exact_within": images("exact_within_split"),
        "leakage_exact_test_in_train": int((rel["exact_in_train"][test] > 0).sum()),
        "n_test": n_test,
        "near_across_splits": images("near_cross_split"),
        "exact_across_splits": images("exact_cross_split"),
        "cross_source_images": images("near_cross_source"),
        "flagged_images": int(per["flag"].sum()),
        "near_pairs": near_pairs["total"],
        "exact_pairs": exact_pairs["total"],
        "train_test_pairs": near_pairs["train_test"],
        "cross_dataset_pairs": near_pairs["cross_dataset"],
        "cross_source_pairs": near_pairs["cross_source"],
    }
    is_train = f["_cell"].to_numpy() == train_cell[f["_ds"].to_numpy()]
    relations = ["within_split", "cross_split", "train_test", "cross_dataset", "cross_source"]
    image_key = {"within_split": "within_split", "cross_split": "cross_split", "train_test": "in_train",
                 "cross_dataset": "cross_dataset", "cross_source": "cross_source"}
    by_kind = pd.DataFrame({
        "relation": relations,
        "exact_pairs": [exact_pairs[k] for k in relations],
        "near_pairs": [near_pairs[k] for k in relations],
        "exact_images": [int(((rel[f"exact_{image_key[k]}"] > 0) & (~is_train if k == "train_test" else True)).sum())
                         for k in relations],
        "near_images": [int(((rel[f"near_{image_key[k]}"] > 0) & (~is_train if k == "train_test" else True)).sum())
                        for k in relations],
    })
    rank = {k: i for i, k in enumerate(KINDS)}
    # the listed rows are ordered on three slim columns, then only they are taken from the per-image frame
    flagged = np.flatnonzero(per["flag"].to_numpy())
    order = pd.DataFrame({"_rank": per["kind"].iloc[flagged].map(rank).to_numpy(np.int64),
                          "distance": per["distance"].iloc[flagged].to_numpy(),
                          "_row": per["_row"].iloc[flagged].to_numpy()}).sort_values(["_rank", "distance", "_row"])
    listed = per.iloc[flagged[order.index.to_numpy()[:max_listed]]]
    tables = {
        "leakage": leakage,
        "by_kind": by_kind,
        "pairs": listed[["dataset", "id", "split", "match_dataset", "match_id", "match_split",
                         "distance", "kind", "exact"]].reset_index(drop=True),
    }
    return counts, tables


@dataclass
class _Graph:
    """What both near-copy searches share: the image frame, content nodes, exact-copy counts, split cells."""

    f: pd.DataFrame
    node: np.ndarray
    n_nodes: int
    first: np.ndarray
    rel_exact: dict
    exact_pairs: dict
    train_cell: np.ndarray
    test_cell: np.ndarray
    train_split: str

    def near(self, u: np.ndarray, v: np.ndarray, d: np.ndarray, score, max_listed: int):
        """``(per, counts, tables)`` for node edges ``(u, v)``: :func:`_near_frame` then :func:`_report`."""
        per, rel, pairs = _near_frame(self.f, self.node, self.n_nodes, u, v, d, self.rel_exact, self.train_cell,
                                      self.test_cell, self.train_split, score)
        counts, tables = _report(self.f, per, rel, pairs, self.exact_pairs, self.train_cell, self.test_cell,
                                 self.train_split, max_listed)
        return per, counts, tables
