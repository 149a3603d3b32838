"""Duplicates: exact copies and near copies within a split, across splits
(train/test leakage), across sources and across datasets.

*Exact* duplicates share a content id (sha256 of the stored bytes). *Near*
duplicates have 64-bit perceptual hashes (the manifest's ``phash``) at most
``max_distance`` bits apart; exact copies are near copies at distance 0. The
search is sub-quadratic (:mod:`datakit.dedup`), and every count is computed
without listing image pairs: equal hashes are collapsed first, and counts come
from a sparse product of the hash-adjacency matrix with per-cell counts, so a
thousand copies of one blank image cost one row, not half a million pairs.

The headline is **leakage**: how many test images have a near copy in train
(a model evaluated on them is partly tested on its training data; cf. the
CIFAR-10/100 test-set duplicates found by Barz and Denzler, "Do we train on
test data?", 2020).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from audits.base import AuditResult, register_audit, skipped
from datakit.dedup import MAX_DISTANCE, near_duplicate_pairs
from datakit.errors import DatakitError
from datakit.hashing import phash
from datakit.store.dataset import Dataset

__all__ = ["duplicates", "KINDS"]

logger = logging.getLogger(__name__)

NAME = "duplicates"

#: How an image relates to its reported match, most serious first: ``leak`` (one in the train
#: split, the other in another split of the same dataset), ``cross_dataset``, ``cross_source``
#: (same dataset and split, different ``source``), ``cross_split`` (two non-train splits),
#: ``within_split``.
KINDS = ("leak", "cross_dataset", "cross_source", "cross_split", "within_split")


# ---------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _load_hash(root, rel: str) -> int:
    with Image.open(root / rel) as im:
        if im.mode not in ("L", "RGB", "RGBA"):
            im = im.convert("RGB")
        return phash(np.asarray(im))


def _frame(datasets: Sequence[Dataset], notes: list[str]) -> pd.DataFrame:
    """All images of all datasets in one frame, with phash filled in where missing."""
    names = _unique_names([ds.name for ds in datasets])
    parts = []
    for k, (ds, name) in enumerate(zip(datasets, names)):
        m = ds.manifest
        n = len(m)
        part = pd.DataFrame({
            "dataset": name, "_ds": k, "_row": np.arange(n),
            "id": m["id"].astype("object").to_numpy() if "id" in m else np.full(n, None, object),
            "path": m["path"].astype("object").to_numpy(),
            "split": m["split"].astype("object").fillna("(none)").to_numpy() if "split" in m else "(none)",
            "source": m["source"].astype("object").fillna("(none)").to_numpy() if "source" in m else "(none)",
            "label": m["label"].astype("object").to_numpy() if "label" in m else np.full(n, None, object),
        })
        hashes = np.zeros(n, dtype=np.uint64)
        valid = np.zeros(n, dtype=bool)
        if "phash" in m.columns:
            col = m["phash"]
            valid = np.array(col.notna(), dtype=bool)  # a writable copy
            hashes[valid] = col[valid].to_numpy().astype(np.uint64)
        missing = np.flatnonzero(~valid)
        if len(missing):
            failed = []
            for i in missing:
                try:
                    hashes[i] = _load_hash(ds.root, part.at[i, "path"])
                    valid[i] = True
                except (OSError, ValueError, TypeError) as exc:  # unreadable: recorded, not hashed
                    failed.append(f"{part.at[i, 'path']}: {type(exc).__name__}: {exc}")
            notes.append(f"{name}: the manifest has no phash for {len(missing)} of {n} images; "
                         f"computed it from the image files (datakit.hashing.phash)")
            if failed:
                notes.append(f"{name}: {len(failed)} images could not be read and are left out of the near-"
                             f"duplicate search (e.g. {failed[0]})")
        part["phash"] = hashes
        part["_hashed"] = valid
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame


# ---------------------------------------------------------------------------
# counting without listing pairs
# ---------------------------------------------------------------------------


class _Neighbors:
    """Adjacency over groups of images (equal hash / equal id) and per-cell counts.

    ``group`` maps each image to a node; ``adjacency`` (nodes x nodes, with the
    identity) says which nodes are near each other. For a labelling of images
    into cells, ``count(labels)[x, c]`` is the number of images ``y`` in cell
    ``c`` adjacent to ``x`` (``x`` itself included when it is in ``c``).
    """

    def __init__(self, group: np.ndarray, n_nodes: int, adjacency: sparse.csr_matrix) -> None:
        self.group, self.n_nodes, self.adjacency = group, n_nodes, adjacency

    def _by_cell(self, labels: np.ndarray, n_cells: int) -> sparse.csr_matrix:
        ones = np.ones(len(labels), dtype=np.int64)
        return sparse.csr_matrix((ones, (self.group, labels)), shape=(self.n_nodes, n_cells))

    def reach(self, labels: np.ndarray, n_cells: int) -> sparse.csr_matrix:
        """Nodes x cells: images of each cell adjacent to each node."""
        return (self.adjacency @ self._by_cell(labels, n_cells)).tocsr()

    def lookup(self, reach: sparse.csr_matrix, cells: np.ndarray) -> np.ndarray:
        """Per image: ``reach[group[x], cells[x]]`` (0 where ``cells`` is -1)."""
        out = np.zeros(len(cells), dtype=np.int64)
        ok = cells >= 0
        if ok.any():
            out[ok] = np.asarray(reach[self.group[ok], cells[ok]]).ravel()
        return out

    def pair_matrix(self, labels: np.ndarray, n_cells: int) -> np.ndarray:
        """Cells x cells ordered pair counts (each image paired with itself on the diagonal)."""
        by_cell = self._by_cell(labels, n_cells)
        return np.asarray((by_cell.T @ (self.adjacency @ by_cell)).todense(), dtype=np.int64)


def _near_structure(hashes: np.ndarray, max_distance: int, n_jobs: int | None):
    unique, inverse = np.unique(hashes, return_inverse=True)
    pairs, dist = near_duplicate_pairs(unique, max_distance, return_distances=True, n_jobs=n_jobs)
    n = len(unique)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    adjacency = sparse.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(n, n))
    return _Neighbors(inverse.ravel().astype(np.int64), n, adjacency), unique, pairs, dist


def _exact_structure(ids: np.ndarray) -> _Neighbors:
    codes, uniques = pd.factorize(pd.Series(ids, dtype=object))
    codes = codes.astype(np.int64)
    missing = codes < 0  # no id: a node of its own
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    n = int(codes.max()) + 1 if len(codes) else 0
    return _Neighbors(codes, n, sparse.identity(n, dtype=np.int64, format="csr"))


def _relations(nb: _Neighbors, f: pd.DataFrame, train_cell: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Per-image counts of near (or exact) copies by relation."""
    ds, cell, src = f["_ds"].to_numpy(), f["_cell"].to_numpy(), f["_src"].to_numpy()
    n_ds, n_cell, n_src = int(ds.max()) + 1, int(cell.max()) + 1, int(src.max()) + 1
    reach_ds = nb.reach(ds, n_ds)
    total = np.asarray(reach_ds.sum(axis=1)).ravel()[nb.group] - 1
    same_ds = nb.lookup(reach_ds, ds) - 1
    same_cell = nb.lookup(nb.reach(cell, n_cell), cell) - 1
    same_src = nb.lookup(nb.reach(src, n_src), src) - 1
    tcell = train_cell[ds]
    in_train = nb.lookup(nb.reach(cell, n_cell), tcell) - (cell == tcell)
    return {
        f"{prefix}_total": total,
        f"{prefix}_within_split": same_cell,
        f"{prefix}_cross_split": same_ds - same_cell,
        f"{prefix}_in_train": np.where(tcell >= 0, in_train, 0),
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


def _nearest(pairs: np.ndarray, dist: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row ``pairs[:, 0]`` (0..n-1): nearest ``pairs[:, 1]`` (smallest index on ties), or -1."""
    index = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int64)
    if len(pairs):
        order = np.lexsort((pairs[:, 1], dist, pairs[:, 0]))
        i, j, d = pairs[order, 0], pairs[order, 1], dist[order]
        first = np.ones(len(i), dtype=bool)
        first[1:] = i[1:] != i[:-1]
        index[i[first]], distance[i[first]] = j[first], d[first]
    return index, distance


def _match_in(h: np.ndarray, queries: np.ndarray, targets: np.ndarray, r: int, match: np.ndarray,
              distance: np.ndarray) -> None:
    """Set ``match``/``distance`` of ``queries`` to their nearest image among ``targets``."""
    if len(queries) == 0 or len(targets) == 0:
        return
    pairs, dist = near_duplicate_pairs(h[queries], r, other=h[targets], return_distances=True)
    idx, d = _nearest(pairs, dist, len(queries))
    found = idx >= 0
    match[queries[found]] = targets[idx[found]]
    distance[queries[found]] = d[found]


def _matches(f: pd.DataFrame, nb: _Neighbors, upairs: np.ndarray, udist: np.ndarray, rel: dict, r: int,
             train_cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each flagged image's reported match: a train copy for leaked images, else a copy in another
    dataset, else the nearest image anywhere (smallest row on ties). -1 where none."""
    n = len(f)
    h = f["phash"].to_numpy()
    hashed = f["_hashed"].to_numpy()
    ds, cell = f["_ds"].to_numpy(), f["_cell"].to_numpy()
    match = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int64)
    is_train = cell == train_cell[ds]
    for k in np.unique(ds):
        tc = train_cell[k]
        if tc < 0:
            continue
        leaked = np.flatnonzero((ds == k) & ~is_train & (rel["near_in_train"] > 0) & hashed)
        _match_in(h, leaked, np.flatnonzero((cell == tc) & hashed), r, match, distance)
    for k in np.unique(ds):
        cross = np.flatnonzero((ds == k) & (match < 0) & (rel["near_cross_dataset"] > 0) & hashed)
        _match_in(h, cross, np.flatnonzero((ds != k) & hashed), r, match, distance)
    # Anywhere: from the collapsed hashes. Images of one hash node: the smallest other member.
    rows = np.flatnonzero(hashed)
    if len(rows) == 0:
        return match, distance
    group = nb.group[rows]
    order = np.lexsort((rows, group))
    g_sorted, r_sorted = group[order], rows[order]
    start = np.searchsorted(g_sorted, np.arange(nb.n_nodes), side="left")
    size = np.bincount(group, minlength=nb.n_nodes)
    first = np.where(size > 0, r_sorted[np.minimum(start, len(r_sorted) - 1)], -1)
    second = np.where(size > 1, r_sorted[np.minimum(start + 1, len(r_sorted) - 1)], -1)
    todo = (match[rows] < 0) & (rel["near_total"][rows] > 0)
    x, g = rows[todo], group[todo]
    same = size[g] > 1
    match[x[same]] = np.where(first[g[same]] == x[same], second[g[same]], first[g[same]])
    distance[x[same]] = 0
    unode, ud = _nearest(np.concatenate([upairs, upairs[:, ::-1]]), np.concatenate([udist, udist]), nb.n_nodes)
    rest = x[~same]
    match[rest] = first[unode[g[~same]]]
    distance[rest] = ud[g[~same]]
    return match, distance


def _kind(f: pd.DataFrame, match: np.ndarray, train_split: str) -> np.ndarray:
    kind = np.full(len(f), None, dtype=object)
    has = match >= 0
    x, y = np.flatnonzero(has), match[has]
    ds, split, src = f["_ds"].to_numpy(), f["split"].to_numpy(), f["source"].to_numpy()
    k = np.where(ds[x] != ds[y], "cross_dataset",
                 np.where(split[x] != split[y],
                          np.where((split[y] == train_split) != (split[x] == train_split), "leak", "cross_split"),
                          np.where(src[x] != src[y], "cross_source", "within_split")))
    kind[x] = k
    return kind


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------


def _example_rows(per: pd.DataFrame, n_examples: int) -> pd.DataFrame:
    """Up to ``n_examples`` distinct pairs, round-robin over kinds (most serious first), each kind's
    picks spread over its distances."""
    flagged = per[per["flag"]].copy()
    if flagged.empty or n_examples <= 0:
        return flagged.iloc[:0]
    a, b = flagged["_row"].to_numpy(), flagged["_match"].to_numpy()
    flagged["_key"] = [(min(p, q), max(p, q)) for p, q in zip(a, b)]
    flagged["_rank"] = flagged["kind"].map({k: i for i, k in enumerate(KINDS)})
    flagged["_eval"] = flagged["leak"]  # show a leaked pair from its test side
    flagged = flagged.sort_values(["_rank", "_eval", "_row"], ascending=[True, False, True]).drop_duplicates("_key")
    queues = []
    for kind in KINDS:
        part = flagged[flagged["kind"] == kind].sort_values(["distance", "_row"])
        if len(part) > n_examples:
            part = part.iloc[np.unique(np.linspace(0, len(part) - 1, n_examples).astype(int))]
        queues.append(list(part.index))
    picked: list = []
    while len(picked) < n_examples and any(queues):
        for q in queues:
            if q and len(picked) < n_examples:
                picked.append(q.pop(0))
    return flagged.loc[picked]


def _open(frame: pd.DataFrame, roots: list, row: int) -> np.ndarray | None:
    try:
        with Image.open(roots[int(frame.at[row, "_ds"])] / frame.at[row, "path"]) as im:
            return np.asarray(im.convert("L") if im.mode in ("L", "1", "I", "I;16", "F", "LA") else im.convert("RGB"))
    except OSError:
        return None


def _pairs_figure(frame: pd.DataFrame, examples: pd.DataFrame, roots: list, max_distance: int) -> bytes:
    from audits._common import fig_to_png, pyplot

    plt = pyplot()
    n = len(examples)
    fig, axes = plt.subplots(n, 2, figsize=(3.4, 1.6 * n + 0.5), squeeze=False, layout="constrained")
    for r, (_, ex) in enumerate(examples.iterrows()):
        for c, row in enumerate((int(ex["_row"]), int(ex["_match"]))):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = _open(frame, roots, row)
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{frame.at[row, 'dataset']}/{frame.at[row, 'split']}"[:28], fontsize=7)
        kind = str(ex["kind"]).replace("_", " ")
        axes[r][0].set_ylabel(f"d={int(ex['distance'])}\n{kind}" + (" (exact)" if ex["exact"] else ""), fontsize=7)
    fig.suptitle(f"Near-duplicate pairs (pHash distance <= {max_distance} of 64 bits)", fontsize=8)
    return fig_to_png(fig)


def _histogram_figure(per: pd.DataFrame, max_distance: int) -> bytes:
    from audits._common import fig_to_png, pyplot

    plt = pyplot()
    flagged = per[per["flag"]]
    fig, ax = plt.subplots(figsize=(5, 2.8))
    bottom = np.zeros(max_distance + 1)
    for kind in KINDS:
        d = flagged.loc[flagged["kind"] == kind, "distance"].astype(int)
        counts = np.bincount(d, minlength=max_distance + 1)[:max_distance + 1]
        if counts.sum():
            ax.bar(np.arange(max_distance + 1), counts, bottom=bottom, label=kind.replace("_", " "))
            bottom += counts
    ax.set_xlabel("pHash distance to the nearest copy (bits)")
    ax.set_ylabel("images")
    ax.set_xticks(np.arange(max_distance + 1))
    if bottom.sum():
        ax.legend(fontsize=7)
    ax.set_title("Images with a near copy, by distance and kind", fontsize=9)
    return fig_to_png(fig)


# ---------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------


def _int_option(value, name: str, lo: int, hi: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise DatakitError(f"duplicates: {name} must be an integer in {lo}..{hi}, got {value!r}") from None
    if isinstance(value, float) and value != out or not lo <= out <= hi:
        raise DatakitError(f"duplicates: {name} must be an integer in {lo}..{hi}, got {value!r}")
    return out


@register_audit(NAME)
def duplicates(datasets: Sequence[Dataset], *, max_distance: int = 4, train_split: str = "train",
               test_split: str = "test", n_examples: int = 8, max_listed: int = 1000,
               n_jobs: int | None = None) -> AuditResult:
    """Exact and near duplicates within splits, across splits, sources and datasets.

    Parameters
    ----------
    datasets : sequence of Dataset
        One or more datasets (opened with :func:`datakit.open_dataset`).
    max_distance : int, default 4
        Largest pHash Hamming distance (bits of 64) that counts as a near copy,
        0..32. 4 catches re-encodings, small brightness and crop changes; 8 and
        above starts to pair different but similar-looking images (e.g. two
        plain "1" digits).
    train_split, test_split : str
        Split names for the leakage headline (``leakage_test_in_train``).
        Every other non-train split is also checked (``tables["leakage"]``).
    n_examples : int, default 8
        Pairs shown side by side in the ``examples`` figure.
    max_listed : int, default 1000
        Rows kept in ``tables["pairs"]`` (the flagged images, most serious first).
    n_jobs : int, optional
        Threads for the hash search (None: 1; -1: one per core).

    Returns
    -------
    AuditResult
        ``per_image``: one row per image: ``dataset, id, split, source, label,
        flag`` (has a near copy), ``score`` (``(max_distance + 1 - d) /
        (max_distance + 1)`` for the nearest copy at distance ``d``: 1 for an
        exact copy, 0 without a copy), ``distance``, ``match_dataset,
        match_id, match_split`` (a train copy for a leaked image, else a copy
        in another dataset, else the nearest), ``kind`` (one of :data:`KINDS`),
        ``exact`` (match has the same content id), ``leak`` (an image outside
        train with a near copy in train), ``n_near`` (near copies anywhere).
        ``summary``: image counts (``exact_within``, ``near_within``,
        ``exact_across_splits``, ``near_across_splits``,
        ``leakage_test_in_train``, ``leakage_exact_test_in_train``,
        ``leakage_fraction``, ``cross_dataset_images``, ``cross_source_images``)
        and pair counts (``near_pairs``, ``exact_pairs``,
        ``cross_dataset_pairs``, ``cross_source_pairs``, ``train_test_pairs``).
        ``tables``: ``leakage`` (per dataset and non-train split),
        ``by_kind`` (pairs and images per relation), ``pairs`` (listed
        matches). ``figures``: ``examples`` (pairs side by side),
        ``distances`` (histogram).

    Raises
    ------
    DatakitError
        If ``max_distance``, ``n_examples``, ``max_listed`` or ``n_jobs`` is out of range.
    """
    r = _int_option(max_distance, "max_distance", 0, MAX_DISTANCE)
    n_examples = _int_option(n_examples, "n_examples", 0, 100)
    max_listed = _int_option(max_listed, "max_listed", 0, 10**7)
    if n_jobs is not None:
        n_jobs = _int_option(n_jobs, "n_jobs", -1, 1024)
        if n_jobs == 0:
            raise DatakitError("duplicates: n_jobs must be -1 (every core) or a positive integer, got 0")
    if not datasets:
        return skipped(NAME, "no dataset given")
    notes: list[str] = []
    f = _frame(datasets, notes)
    if f.empty:
        return skipped(NAME, "the datasets have no images")
    n = len(f)
    f["_cell"] = pd.factorize(f["_ds"].astype(str) + "\x00" + f["split"].astype(str))[0]
    f["_src"] = pd.factorize(f["_ds"].astype(str) + "\x00" + f["source"].astype(str))[0]
    n_ds = len(datasets)
    cell_of = {(int(d), s): int(c) for d, s, c in f[["_ds", "split", "_cell"]].drop_duplicates().itertuples(index=False)}
    train_cell = np.array([cell_of.get((k, train_split), -1) for k in range(n_ds)], dtype=np.int64)
    test_cell = np.array([cell_of.get((k, test_split), -1) for k in range(n_ds)], dtype=np.int64)

    # Exact duplicates: nodes are content ids.
    exact = _exact_structure(f["id"].to_numpy())
    rel = _relations(exact, f, train_cell, "exact")
    exact_pairs = _pair_counts(exact, f, train_cell, test_cell)

    # Near duplicates: nodes are distinct hashes; unhashed images are isolated nodes of their own.
    hashed = f["_hashed"].to_numpy()
    h = f["phash"].to_numpy()
    near_nb, unique, upairs, udist = _near_structure(h[hashed], r, n_jobs)
    group = np.empty(n, dtype=np.int64)
    group[hashed] = near_nb.group
    group[~hashed] = near_nb.n_nodes + np.arange(int((~hashed).sum()))
    n_nodes = near_nb.n_nodes + int((~hashed).sum())
    adjacency = sparse.block_diag([near_nb.adjacency, sparse.identity(n_nodes - near_nb.n_nodes, dtype=np.int64)],
                                  format="csr")
    near_nb = _Neighbors(group, n_nodes, adjacency)
    rel.update(_relations(near_nb, f, train_cell, "near"))
    near_pairs = _pair_counts(near_nb, f, train_cell, test_cell)

    match, distance = _matches(f, near_nb, upairs, udist, rel, r, train_cell)
    flag = match >= 0
    kind = _kind(f, match, train_split)
    mrow = np.where(flag, match, 0)
    is_train = f["_cell"].to_numpy() == train_cell[f["_ds"].to_numpy()]
    ids = f["id"].to_numpy()
    per = pd.DataFrame({
        "dataset": f["dataset"], "id": f["id"], "split": f["split"], "source": f["source"], "label": f["label"],
        "flag": flag,
        "score": np.where(flag, (r + 1 - distance) / (r + 1), 0.0),
        "distance": pd.Series(distance, dtype="Int64").mask(~flag),
        "match_dataset": np.where(flag, f["dataset"].to_numpy()[mrow], None),
        "match_id": np.where(flag, ids[mrow], None),
        "match_split": np.where(flag, f["split"].to_numpy()[mrow], None),
        "kind": kind,
        "exact": flag & (ids == ids[mrow]),
        "leak": ~is_train & (train_cell[f["_ds"].to_numpy()] >= 0) & (rel["near_in_train"] > 0),
        "n_near": rel["near_total"],
        "_row": np.arange(n), "_match": match, "_ds": f["_ds"],
    })

    # Leakage per dataset and non-train split.
    leak_rows = []
    for k in range(n_ds):
        if train_cell[k] < 0:
            continue
        sub = f["_ds"].to_numpy() == k
        for split in sorted(set(f.loc[sub, "split"]) - {train_split}):
            m = sub & (f["split"].to_numpy() == split)
            near_in = int((rel["near_in_train"][m] > 0).sum())
            leak_rows.append({"dataset": f.loc[m, "dataset"].iloc[0], "split": split, "images": int(m.sum()),
                              "exact_in_train": int((rel["exact_in_train"][m] > 0).sum()),
                              "near_in_train": near_in, "fraction": near_in / int(m.sum())})
    leakage = pd.DataFrame(leak_rows, columns=["dataset", "split", "images", "exact_in_train", "near_in_train",
                                               "fraction"])
    test = np.isin(f["_cell"].to_numpy(), test_cell[test_cell >= 0]) & (train_cell[f["_ds"].to_numpy()] >= 0)
    n_test = int(test.sum())
    leaked = int((rel["near_in_train"][test] > 0).sum())
    if not (train_cell >= 0).any() or not (test_cell >= 0).any():
        notes.append(f"no dataset has both a {train_split!r} and a {test_split!r} split: leakage is reported as 0 "
                     f"(set train_split= / test_split= to the split names used)")

    def images(key: str) -> int:
        return int((rel[key] > 0).sum())

    summary = {
        "n_images": n,
        "max_distance": r,
        "exact_within": images("exact_within_split"),
        "near_within": images("near_within_split"),
        "exact_across_splits": images("exact_cross_split"),
        "near_across_splits": images("near_cross_split"),
        "leakage_test_in_train": leaked,
        "leakage_exact_test_in_train": int((rel["exact_in_train"][test] > 0).sum()),
        "leakage_fraction": leaked / n_test if n_test else 0.0,
        "n_test": n_test,
        "cross_dataset_images": images("near_cross_dataset"),
        "cross_source_images": images("near_cross_source"),
        "near_pairs": near_pairs["total"],
        "exact_pairs": exact_pairs["total"],
        "cross_dataset_pairs": near_pairs["cross_dataset"],
        "cross_source_pairs": near_pairs["cross_source"],
        "train_test_pairs": near_pairs["train_test"],
        "flagged_images": int(flag.sum()),
    }
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
    listed = per[per["flag"]].assign(_rank=lambda d: d["kind"].map(rank)).sort_values(["_rank", "distance", "_row"])
    tables = {
        "leakage": leakage,
        "by_kind": by_kind,
        "pairs": listed.head(max_listed)[["dataset", "id", "split", "match_dataset", "match_id", "match_split",
                                          "distance", "kind", "exact"]].reset_index(drop=True),
    }
    figures = {}
    examples = _example_rows(per, n_examples)
    roots = [ds.root for ds in datasets]
    if len(examples):
        figures["examples"] = _pairs_figure(f, examples, roots, r)
        figures["distances"] = _histogram_figure(per, r)
    info = {
        "max_distance": r, "train_split": train_split, "test_split": test_split,
        "datasets": list(pd.unique(f["dataset"])), "distinct_hashes": int(len(unique)),
        "hash": "64-bit DCT pHash (datakit.hashing)", "search": "multi-index hashing (datakit.dedup)",
        "examples": examples[["dataset", "id", "match_dataset", "match_id", "distance", "kind"]].to_dict("records"),
    }
    per = per.drop(columns=["_row", "_match", "_ds"])
    return AuditResult(NAME, summary=summary, per_image=per, tables=tables, figures=figures, info=info, notes=notes)
