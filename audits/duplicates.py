"""Duplicates: exact copies and near copies within a split, across splits
(train/test leakage), across sources and across datasets.

*Exact* duplicates share a content id (sha256 of the stored bytes). *Near*
duplicates are candidates from the 64-bit perceptual hashes (the manifest's
``phash``) at most ``max_distance`` bits apart, found by sub-quadratic
multi-index hashing (:mod:`datakit.dedup`), and confirmed by pixels (the
correlation of 32x32 grayscale thumbnails), because different small images can
hash alike: on real MNIST test digits most pHash pairs within 4 bits are
different handwritten digits. Exact copies are near copies too.

Counting never lists image pairs: images with one content id form one node,
and every count comes from a sparse product of the node adjacency matrix with
per-cell counts (cells: dataset, split, source), so a thousand copies of one
blank image cost one node, not half a million pairs.

The headline is **leakage**: how many test images have a near copy in train
(a model evaluated on them is partly tested on its training data; cf. the
CIFAR-10/100 test-set duplicates found by Barz and Denzler, "Do we train on
test data? Purging CIFAR of near-duplicates", 2020).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from audits.base import AuditResult, register_audit, skipped
from audits._common import _unique_names
from datakit.dedup import MAX_DISTANCE, near_duplicate_pairs
from datakit.errors import DatakitError
from datakit.hashing import phash
from datakit.store.dataset import Dataset

__all__ = ["duplicates", "KINDS", "OptionError"]

logger = logging.getLogger(__name__)

NAME = "duplicates"

#: How an image relates to its reported match, most serious first: ``leak`` (one in the train
#: split, the other in another split of the same dataset), ``cross_dataset``, ``cross_source``
#: (same dataset and split, different ``source``), ``cross_split`` (two non-train splits),
#: ``within_split``.
KINDS = ("leak", "cross_dataset", "cross_source", "cross_split", "within_split")

#: default ``max_cosine`` of the semantic search (see ``bench/results/semantic_duplicates.md``)
DEFAULT_MAX_COSINE = 0.08


class OptionError(DatakitError, ValueError):
    """A bad option of the ``duplicates`` audit (a :class:`DatakitError` and a ``ValueError``)."""


# ---------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------


def _load_hash(item: tuple[str, str]) -> int:
    """pHash of the image file ``root/rel`` (``item = (root, rel)``); runs in an executor worker."""
    root, rel = item
    with Image.open(Path(root) / rel) as im:
        if im.mode not in ("L", "RGB", "RGBA"):
            im = im.convert("RGB")
        return phash(np.asarray(im))


def _per_image(fn, items: list, workers: int | None, scheduler: str | None = None):
    """Map ``fn`` over ``items`` through datakit's executor (ordered; per-item errors captured)."""
    from datakit.parallel import get_executor

    with get_executor(workers, scheduler) as executor:
        return list(executor.map(fn, items, batch_size=256))


def _frame(datasets: Sequence[Dataset], notes: list[str], workers: int | None,
           scheduler: str | None = None, compute_hashes: bool = True) -> pd.DataFrame:
    """All images of all datasets in one frame, with phash filled in where missing (``compute_hashes``)."""
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
        if len(missing) and compute_hashes:
            failed = []
            paths = part["path"].to_numpy()
            results = _per_image(_load_hash, [(str(ds.root), paths[i]) for i in missing], workers, scheduler)
            for i, res in zip(missing, results):
                if res.ok:
                    hashes[i], valid[i] = res.value, True
                else:  # unreadable: recorded, not hashed
                    failed.append(f"{paths[i]}: {res.reason}: {res.detail}")
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


def _nodes(f: pd.DataFrame) -> tuple[np.ndarray, int, np.ndarray]:
    """Images with the same content id share a node. Returns node per image, node count, first row per node."""
    codes, uniques = pd.factorize(pd.Series(f["id"].to_numpy(), dtype=object))
    codes = codes.astype(np.int64)
    missing = codes < 0  # no id: a node of its own
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    n_nodes = int(codes.max()) + 1 if len(codes) else 0
    first = np.full(n_nodes, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    return codes, n_nodes, first


def _thumbnail(item: tuple[str, str]) -> np.ndarray:
    """32x32 grayscale copy of ``root/rel`` (``item = (root, rel)``), float32, shape (1024,)."""
    root, rel = item
    with Image.open(Path(root) / rel) as im:
        im = im.convert("L")
        if im.size != (32, 32):
            im = im.resize((32, 32), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32).ravel()


def _similarity(f: pd.DataFrame, roots: list, first: np.ndarray, u: np.ndarray, v: np.ndarray,
                workers: int | None, chunk: int = 8192, scheduler: str | None = None) -> np.ndarray:
    """Pearson correlation of the 32x32 grayscale thumbnails of node pairs ``(u, v)``, shape (K,).

    Correlation ignores brightness and contrast changes; two flat images count
    as similar (1.0) when their gray levels are within 8 of 255, else 0.
    """
    nodes = np.unique(np.concatenate([u, v]))
    slot = np.full(int(nodes.max()) + 1 if len(nodes) else 0, -1, dtype=np.int64)
    slot[nodes] = np.arange(len(nodes))
    thumbs = np.zeros((len(nodes), 1024), dtype=np.float32)
    means = np.zeros(len(nodes), dtype=np.float32)
    ok = np.ones(len(nodes), dtype=bool)
    ds, paths = f["_ds"].to_numpy(), f["path"].to_numpy()
    rows = first[nodes]
    results = _per_image(_thumbnail, [(str(roots[ds[r]]), paths[r]) for r in rows], workers, scheduler)
    for k, res in enumerate(results):
        if not res.ok:  # unreadable: never confirmed
            logger.warning("duplicates: cannot read %s (%s); its pairs are not confirmed", paths[rows[k]], res.reason)
            ok[k] = False
            continue
        t = res.value
        means[k] = t.mean()
        t = t - means[k]
        norm = float(np.linalg.norm(t))
        thumbs[k] = t / norm if norm > 1e-3 else 0.0
    out = np.zeros(len(u), dtype=np.float32)
    for lo in range(0, len(u), chunk):
        a, b = slot[u[lo:lo + chunk]], slot[v[lo:lo + chunk]]
        c = np.einsum("ij,ij->i", thumbs[a], thumbs[b])
        flat_a, flat_b = ~thumbs[a].any(1), ~thumbs[b].any(1)
        both_flat = flat_a & flat_b
        c[both_flat] = (np.abs(means[a] - means[b]) <= 8.0)[both_flat].astype(np.float32)
        c[~(ok[a] & ok[b])] = 0.0
        out[lo:lo + chunk] = c
    return out


def _identity_neighbors(node: np.ndarray, n_nodes: int) -> _Neighbors:
    return _Neighbors(node, n_nodes, sparse.identity(n_nodes, dtype=np.int64, format="csr"))


def _edge_neighbors(node: np.ndarray, n_nodes: int, u: np.ndarray, v: np.ndarray) -> _Neighbors:
    rows = np.concatenate([u, v, np.arange(n_nodes)])
    cols = np.concatenate([v, u, np.arange(n_nodes)])
    adjacency = sparse.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(n_nodes, n_nodes))
    return _Neighbors(node, n_nodes, adjacency)


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


def _kind_codes(f: pd.DataFrame, x: np.ndarray, y: np.ndarray, train_split: str) -> np.ndarray:
    """Index into :data:`KINDS` of the relation between images ``x`` and ``y`` (arrays of rows)."""
    ds, split, src = f["_ds"].to_numpy(), f["split"].to_numpy(), f["source"].to_numpy()
    return np.where(ds[x] != ds[y], 1,
                    np.where(split[x] != split[y],
                             np.where((split[x] == train_split) != (split[y] == train_split), 0, 3),
                             np.where(src[x] != src[y], 2, 4)))


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
    n = len(f)
    cell3 = pd.factorize(pd.Series(list(zip(f["_ds"], f["split"], f["source"]))))[0]
    members = pd.DataFrame({"node": node, "cell": cell3, "row": np.arange(n)})
    members["rank"] = members.groupby(["node", "cell"]).cumcount()
    members = members[members["rank"] < 2]
    size = np.bincount(node, minlength=int(node.max()) + 1)
    multi = np.flatnonzero(size > 1)
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


def _pairs_figure(frame: pd.DataFrame, examples: pd.DataFrame, roots: list, title: str,
                  label=lambda d: f"d={int(d)}") -> bytes:
    """Each example pair side by side; ``label(distance)`` names the distance on the row."""
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
        axes[r][0].set_ylabel(f"{label(ex['distance'])}\n{kind}" + (" (exact)" if ex["exact"] else ""), fontsize=7)
    fig.suptitle(title, fontsize=8)
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
    ax.set_xlabel("pHash distance to the reported copy (bits)")
    ax.set_ylabel("images")
    ax.set_xticks(np.arange(max_distance + 1))
    if bottom.sum():
        ax.legend(fontsize=7)
    ax.set_title("Images with a near copy, by distance and kind", fontsize=9)
    return fig_to_png(fig)


# ---------------------------------------------------------------------------
# near-copy results for one set of pairs (pHash or semantic)
# ---------------------------------------------------------------------------

#: summary keys that do not depend on the near-copy search (the same for pHash and semantic)
_EXACT_KEYS = ("exact_within", "leakage_exact_test_in_train", "n_test", "exact_across_splits", "exact_pairs")


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
    flag = np.zeros(n, dtype=bool)
    match = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=dt)
    nearest = np.full(n, -1, dtype=dt)
    kind = np.full(n, None, dtype=object)
    rows = best["row"].to_numpy(dtype=np.int64)
    flag[rows] = True
    match[rows] = best["match"].to_numpy(dtype=np.int64)
    distance[rows] = best["distance"].to_numpy(dtype=dt)
    nearest[rows] = best["nearest"].to_numpy(dtype=dt)
    kind[rows] = np.array(KINDS, dtype=object)[best["kind"].to_numpy(dtype=np.int64)]
    mrow = np.where(flag, match, 0)
    is_train = f["_cell"].to_numpy() == train_cell[f["_ds"].to_numpy()]
    ids = f["id"].to_numpy()
    per = pd.DataFrame({
        "dataset": f["dataset"], "id": f["id"], "split": f["split"], "source": f["source"], "label": f["label"],
        "flag": flag,
        "score": np.where(flag, score(nearest), 0.0),
        "distance": (pd.Series(distance, dtype="Int64").mask(~flag) if integer else np.where(flag, distance, np.nan)),
        "match_dataset": np.where(flag, f["dataset"].to_numpy()[mrow], None),
        "match_id": np.where(flag, ids[mrow], None),
        "match_split": np.where(flag, f["split"].to_numpy()[mrow], None),
        "kind": kind,
        "exact": flag & (node == node[mrow]),
        "leak": ~is_train & (train_cell[f["_ds"].to_numpy()] >= 0) & (rel["near_in_train"] > 0),
        "n_near": rel["near_total"],
        "_row": np.arange(n), "_match": match, "_ds": f["_ds"],
    })
    return per, rel, near_pairs


def _report(f: pd.DataFrame, per: pd.DataFrame, rel: dict, near_pairs: dict, exact_pairs: dict,
            train_cell: np.ndarray, test_cell: np.ndarray, train_split: str,
            max_listed: int) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Summary counts (without ``n_images`` and the threshold) and the ``leakage``, ``by_kind``, ``pairs`` tables."""
    n_ds = len(train_cell)
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
    listed = per[per["flag"]].assign(_rank=lambda d: d["kind"].map(rank)).sort_values(["_rank", "distance", "_row"])
    tables = {
        "leakage": leakage,
        "by_kind": by_kind,
        "pairs": listed.head(max_listed)[["dataset", "id", "split", "match_dataset", "match_id", "match_split",
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


# ---------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------


def _int_option(value, name: str, lo: int, hi: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise OptionError(f"duplicates: {name} must be an integer in {lo}..{hi}, got {value!r}") from None
    if isinstance(value, float) and value != out or not lo <= out <= hi:
        raise OptionError(f"duplicates: {name} must be an integer in {lo}..{hi}, got {value!r}")
    return out


@register_audit(NAME)
def duplicates(datasets: Sequence[Dataset], *, max_distance: int = 4, train_split: str = "train",
               test_split: str = "test", verify: str = "pixels", min_similarity: float = 0.98,
               n_examples: int = 8, max_listed: int = 1000, n_jobs: int | None = None,
               workers: int | None = 0, scheduler: str | None = None, mode: str = "phash",
               features="gist", max_cosine: float = DEFAULT_MAX_COSINE, center: bool = False,
               features_options: dict | None = None, weights: str | None = None,
               max_neighbors: int = 100) -> AuditResult:
    """Exact and near duplicates within splits, across splits, sources and datasets.

    Parameters
    ----------
    datasets : sequence of Dataset
        One or more datasets (opened with :func:`datakit.open_dataset`).
    max_distance : int, default 4
        Largest pHash Hamming distance (bits of 64) for a candidate near copy,
        0..32. 4 catches re-encodings, resizes, brightness and contrast
        changes. On small centred digits even distance 0 pairs different
        handwritten digits, which the pixel check (``verify``) removes.
    train_split, test_split : str
        Split names for the leakage headline (``leakage_test_in_train``).
        Every other non-train split is also checked (``tables["leakage"]``).
    verify : {"pixels", "none"}, default "pixels"
        ``"pixels"``: a pHash candidate pair of two different images counts
        only when the Pearson correlation of their 32x32 grayscale thumbnails
        is at least ``min_similarity`` (re-encodings, resizes, brightness and
        contrast changes stay above 0.98; different MNIST digits that hash
        alike have a median of 0.86). ``"none"``: trust the hash alone (no
        image is opened; for very large stores).
    min_similarity : float, default 0.98
        Correlation threshold for ``verify="pixels"``, in [-1, 1].
    n_examples : int, default 8
        Pairs shown side by side in the ``examples`` figure (0: draw no figures).
    max_listed : int, default 1000
        Rows kept in ``tables["pairs"]`` (the flagged images, most serious first).
    n_jobs : int, optional
        Threads for the hash search (None: 1; -1: one per core).
    workers : int, optional
        Worker processes for the per-image work (reading images without a
        stored ``phash``, thumbnails for the pixel check, features), through
        :func:`datakit.parallel.get_executor`: 0 (default) runs in this
        process, None uses one per core.
    scheduler : str, optional
        Run that per-image work on a Dask cluster instead (``tcp://HOST:PORT``
        or ``"local-cluster"``; ``datakit audit --scheduler``).
    mode : {"phash", "semantic", "both"}, default "phash"
        Near copies from pHash (as above), from the cosine distance between
        feature vectors (``features``: finds crops, rescales and
        recompressions that pHash misses; :mod:`audits._semantic`), or both,
        reported side by side (``semantic_*`` keys and columns) with the pairs
        only one search finds counted.
    features : str or FeatureExtractor, default "gist"
        The feature space of the semantic search: a name of
        :func:`datakit.features.list_features`, several joined by ``+``
        (``"hog+tiny"``: equal weight), or an extractor object (of a
        comma-separated list, as ``datakit audit --features`` gives, the first). GIST found
        99% of crops, rescales, JPEG-50 and brightness copies of CIFAR-10
        images at a false-positive rate of 1e-5, HOG 94%, pHash 76%
        (``bench/results/semantic_duplicates.md``).
    max_cosine : float, default 0.08
        Largest cosine distance (``1 - cos``, in (0, 1)) of a semantic near
        copy: GIST's threshold at that false-positive rate (other feature
        spaces need their own, e.g. about 0.2 for ``hog``).
    center : bool, default False
        Subtract the mean feature vector of the audited images before the
        cosine (helps ``hog+tiny`` a little, hurts ``gist`` badly).
    features_options : dict, optional
        Options of the extractor (keyed by extractor name when ``features``
        names several), e.g. ``{"size": 32}``.
    weights : str, optional
        Weights file of the ``pretrained`` extractor (same as
        ``features_options={"weights": ...}``; ignored when ``features`` has no ``pretrained``).
    max_neighbors : int, default 100
        Semantic copies kept per image (the nearest), bounding the pairs of a
        large cluster of alike images.

    Returns
    -------
    AuditResult
        ``per_image``: one row per image: ``dataset, id, split, source, label,
        flag`` (has a near copy), ``score`` (``(max_distance + 1 - d) /
        (max_distance + 1)`` for the nearest copy at distance ``d``: 1 for an
        identical hash, 0 without a copy), ``distance`` (to the reported
        match), ``match_dataset, match_id, match_split`` (the copy with the
        most serious relation, :data:`KINDS` order, then the nearest),
        ``kind`` (one of :data:`KINDS`),
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

        With ``mode="semantic"`` or ``"both"``, the semantic search adds the
        same columns, tables and summary keys (but the exact-copy ones)
        prefixed ``semantic_`` (``semantic_pairs`` for ``near_pairs``), with
        ``semantic_failed`` (images without features; the table lists the
        reasons) and figure ``semantic_examples``; ``mode="both"`` also counts
        pairs found by both searches or one (``both_pairs``,
        ``semantic_only_pairs``, ``phash_only_pairs``; ``tables["overlap"]``).
        See :func:`audits._semantic.add_semantic`.

    Raises
    ------
    DatakitError
        (also a ``ValueError``) If ``max_distance``, ``verify``, ``min_similarity``, ``n_examples``,
        ``max_listed``, ``n_jobs``, ``workers``, ``mode``, ``features``, ``max_cosine``,
        ``features_options`` or ``max_neighbors`` is out of range.
    """
    r = _int_option(max_distance, "max_distance", 0, MAX_DISTANCE)
    n_examples = _int_option(n_examples, "n_examples", 0, 100)
    max_listed = _int_option(max_listed, "max_listed", 0, 10**7)
    if workers is not None:
        workers = _int_option(workers, "workers", 0, 1024)
    if n_jobs is not None:
        n_jobs = _int_option(n_jobs, "n_jobs", -1, 1024)
        if n_jobs == 0:
            raise OptionError("duplicates: n_jobs must be -1 (every core) or a positive integer, got 0")
    if verify not in ("pixels", "none"):
        raise OptionError(f"duplicates: unknown verify={verify!r}. Valid values are {{pixels, none}}.")
    try:
        min_similarity = float(min_similarity)
    except (TypeError, ValueError):
        raise OptionError(f"duplicates: min_similarity must be a number in [-1, 1], got {min_similarity!r}") from None
    if not -1.0 <= min_similarity <= 1.0:
        raise OptionError(f"duplicates: min_similarity must be a number in [-1, 1], got {min_similarity!r}")
    from audits import _semantic  # the semantic search; imports this module's helpers

    sem = _semantic.check_options(mode=mode, features=features, max_cosine=max_cosine, center=center,
                                  features_options=features_options, weights=weights, max_neighbors=max_neighbors)
    if not datasets:
        return skipped(NAME, "no dataset given")
    notes: list[str] = []
    use_hash = mode in ("phash", "both")
    f = _frame(datasets, notes, workers, scheduler, compute_hashes=use_hash)
    if f.empty:
        return skipped(NAME, "the datasets have no images")
    n = len(f)
    f["_cell"] = pd.factorize(f["_ds"].astype(str) + "\x00" + f["split"].astype(str))[0]
    f["_src"] = pd.factorize(f["_ds"].astype(str) + "\x00" + f["source"].astype(str))[0]
    n_ds = len(datasets)
    cell_of = {(int(d), s): int(c) for d, s, c in f[["_ds", "split", "_cell"]].drop_duplicates().itertuples(index=False)}
    train_cell = np.array([cell_of.get((k, train_split), -1) for k in range(n_ds)], dtype=np.int64)
    test_cell = np.array([cell_of.get((k, test_split), -1) for k in range(n_ds)], dtype=np.int64)

    # Nodes are content ids: exact copies share one (and need no pixel check).
    node, n_nodes, first = _nodes(f)
    exact = _identity_neighbors(node, n_nodes)
    g = _Graph(f, node, n_nodes, first, _relations(exact, f, train_cell, "exact"),
               _pair_counts(exact, f, train_cell, test_cell), train_cell, test_cell, train_split)
    roots = [ds.root for ds in datasets]
    result = AuditResult(NAME, notes=notes)
    hash_edges = None
    if use_hash:
        # Near copies: pHash candidates between distinct contents, confirmed by pixels.
        node_hash, node_hashed = f["phash"].to_numpy()[first], f["_hashed"].to_numpy()[first]
        hn = np.flatnonzero(node_hashed)
        pairs, dist = near_duplicate_pairs(node_hash[hn], r, return_distances=True, n_jobs=n_jobs)
        u, v, d = hn[pairs[:, 0]], hn[pairs[:, 1]], dist
        info_verify: dict = {"hash_candidate_pairs": int(len(u))}
        if verify == "pixels" and len(u):
            sim = _similarity(f, roots, first, u, v, workers, scheduler=scheduler)
            keep = sim >= min_similarity
            info_verify.update(confirmed_pairs=int(keep.sum()), rejected_pairs=int((~keep).sum()),
                               rejected_similarity_max=float(sim[~keep].max()) if (~keep).any() else None)
            if (~keep).any():
                notes.append(f"{int((~keep).sum())} of {len(u)} pHash candidate pairs (distinct images within "
                             f"{r} bits) were rejected: thumbnail correlation below {min_similarity} (different "
                             f"images that hash alike, common for small centred digits)")
            u, v, d = u[keep], v[keep], d[keep]
        hash_edges = np.stack([u, v], axis=1)
        per, counts, result.tables = g.near(u, v, d, lambda near: (r + 1 - near) / (r + 1), max_listed)
        result.summary = {**counts, "n_images": n, "max_distance": r}
        examples = _example_rows(per, n_examples)
        if len(examples):  # n_examples=0: no figures (fast, e.g. in CI gates)
            result.figures["examples"] = _pairs_figure(f, examples, roots,
                                                       f"Near-duplicate pairs (pHash distance <= {r} of 64 bits)")
            result.figures["distances"] = _histogram_figure(per, r)
        result.info = {
            "max_distance": r, "train_split": train_split, "test_split": test_split,
            "datasets": list(pd.unique(f["dataset"])), "distinct_contents": int(n_nodes),
            "hash": "64-bit DCT pHash (datakit.hashing)", "search": "multi-index hashing (datakit.dedup)",
            "verify": verify, "min_similarity": min_similarity, **info_verify,
            "examples": examples[["dataset", "id", "match_dataset", "match_id", "distance", "kind"]].to_dict("records"),
        }
        result.per_image = per
    if not (train_cell >= 0).any() or not (test_cell >= 0).any():
        notes.append(f"no dataset has both a {train_split!r} and a {test_split!r} split: leakage is reported as 0 "
                     f"(set train_split= / test_split= to the split names used)")
    if mode != "phash":
        _semantic.add_semantic(result, g, datasets, sem, hash_edges=hash_edges, n_examples=n_examples,
                               max_listed=max_listed, workers=workers, scheduler=scheduler)
    result.per_image = result.per_image.drop(columns=["_row", "_match", "_ds"], errors="ignore")
    return result
