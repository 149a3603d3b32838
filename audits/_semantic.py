"""Semantic near-duplicate search for the ``duplicates`` audit: cosine distance in a feature space.

pHash misses near copies whose low-frequency DCT signs change: crops,
strong rescales, some recompressions. Here every distinct image (one node per
content id) is described by one or more extractors of :mod:`datakit.features`;
each extractor's vectors are (optionally) centered on their mean over all
the audited images and scaled to unit length, the blocks are concatenated with
equal weight, and two images are a candidate copy when the cosine distance
``1 - x·y`` is at most ``max_cosine``.

The search is exact: rows are compared block by block with one numpy matmul
per block (each block holds at most ``block_elems`` similarities, 64 MiB by
default), so 100,000 images never need an n x n matrix; each row keeps at most
``max_neighbors`` neighbours under the threshold.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._duplicates_frame import _paths
from audits.base import AuditResult
from audits.duplicates import _EXACT_KEYS, OptionError, _example_rows, _Graph, _pairs_figure
from datakit.errors import DatakitError

__all__ = ["MODES", "SemanticOptions", "parse_features", "check_options", "node_features", "embed",
           "cosine_pairs", "overlap_pairs", "add_semantic"]

logger = logging.getLogger(__name__)

#: valid values of the audit's ``mode`` option
MODES = ("phash", "semantic", "both")
#: per-image columns of a near-copy search, prefixed ``semantic_`` for the semantic one
_COLUMNS = ["flag", "score", "distance", "match_dataset", "match_id", "match_split", "kind", "exact", "leak", "n_near"]


@dataclass(frozen=True)
class SemanticOptions:
    """The checked options of the semantic search (from :func:`check_options`)."""

    mode: str
    features: list = field(default_factory=list)
    max_cosine: float = 0.08
    center: bool = False
    options: dict = field(default_factory=dict)
    max_neighbors: int = 100

    @property
    def name(self) -> str:
        """The feature space, e.g. ``"hog"`` or ``"hog+color_hist"``."""
        return "+".join(x if isinstance(x, str) else x.name for x in self.features)


def parse_features(features) -> list:
    """Extractor names (or :class:`~datakit.features.FeatureExtractor` objects) from ``features``.

    ``"hog"``, ``"hog+color_hist"`` and ``["hog", "color_hist"]`` are accepted. A comma-separated
    list (``datakit audit --features hog,gist``, given to every audit) means one space per entry:
    the semantic search uses the first.

    Raises
    ------
    OptionError
        Empty, repeated or non-string names.
    """
    from datakit.features import FeatureExtractor

    if isinstance(features, str) and "," in features:
        features = features.split(",")[0]
    items = features.split("+") if isinstance(features, str) else (
        [features] if isinstance(features, FeatureExtractor) else list(features or []))
    out = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                raise OptionError(f"duplicates: empty extractor name in features={features!r} "
                                  f"(e.g. features='hog' or features='hog+color_hist')")
        elif not isinstance(item, FeatureExtractor):
            raise OptionError(f"duplicates: features must be extractor names, got {item!r}")
        out.append(item)
    if not out:
        raise OptionError(f"duplicates: features must name at least one extractor, got {features!r}")
    names = [x if isinstance(x, str) else x.name for x in out]
    if len(set(names)) != len(names):
        raise OptionError(f"duplicates: features={features!r} repeats an extractor")
    return out


def check_options(*, mode: str, features, max_cosine, center, features_options, weights,
                  max_neighbors) -> SemanticOptions:
    """Validate the semantic options of the ``duplicates`` audit (before any work).

    Raises
    ------
    OptionError
        Unknown ``mode``, bad ``features``, ``max_cosine`` outside (0, 1),
        ``center`` not a bool, ``max_neighbors`` < 1, or ``features_options``
        that is not a mapping.
    """
    if mode not in MODES:
        raise OptionError(f"duplicates: unknown mode={mode!r}. Valid values are {{{', '.join(MODES)}}}.")
    try:
        cos = float(max_cosine)
    except (TypeError, ValueError):
        raise OptionError(f"duplicates: max_cosine must be a number in (0, 1), got {max_cosine!r}") from None
    if not 0.0 < cos < 1.0:
        raise OptionError(f"duplicates: max_cosine must be a number in (0, 1), got {max_cosine!r}")
    try:
        k = int(max_neighbors)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or isinstance(max_neighbors, bool) or isinstance(max_neighbors, float) and k != max_neighbors:
        raise OptionError(f"duplicates: max_neighbors must be a positive integer, got {max_neighbors!r}")
    if not isinstance(center, bool):
        raise OptionError(f"duplicates: center must be true or false, got {center!r}")
    opts = {} if features_options is None else features_options
    if not isinstance(opts, Mapping):
        raise OptionError(f"duplicates: features_options must be a mapping of extractor options "
                          f"(on the command line JSON, e.g. '{{\"size\": 32}}'), got {features_options!r}")
    opts = dict(opts)
    feats = parse_features(features) if mode != "phash" else []
    if weights is not None and "pretrained" in feats:  # else ignored (datakit audit --weights goes to every audit)
        if len(feats) == 1:
            opts["weights"] = str(weights)
        else:
            opts["pretrained"] = {**dict(opts.get("pretrained") or {}), "weights": str(weights)}
    return SemanticOptions(mode=mode, features=feats, max_cosine=cos, center=center, options=opts,
                           max_neighbors=k)


def _extractors(features: Sequence, options: dict, datasets: Sequence) -> list:
    """Built and prepared extractors; ``options`` go to a single extractor, or are keyed by extractor name."""
    from datakit.features import get_extractor

    names = [x for x in features if isinstance(x, str)]
    if len(features) > 1 and options and not set(options) <= set(names):
        raise OptionError(f"duplicates: with several extractors, features_options must be keyed by extractor "
                          f"name ({{{', '.join(names)}}}), got keys {sorted(options)}")
    out = []
    for item in features:
        if not isinstance(item, str):
            out.append(item)  # an extractor object, already prepared by the caller
            continue
        opts = options if len(features) == 1 else dict(options.get(item) or {})
        out.append(get_extractor(item, **opts).prepare(list(datasets)))
    return out


def node_features(datasets: Sequence, frame: pd.DataFrame, first: np.ndarray, features: Sequence,
                  options: dict, workers: int | None = None,
                  scheduler: str | None = None) -> tuple[list[np.ndarray], pd.DataFrame, list[str]]:
    """Feature vectors of one representative image per node, from each extractor.

    Parameters
    ----------
    datasets : sequence of Dataset
    frame : DataFrame
        The audit's image frame (``_ds``, ``_row``, ``dataset``, ``id``, ``path``), N rows.
    first : ndarray, shape (n_nodes,), int64
        Frame row of each node's representative.
    features : sequence of str or FeatureExtractor
        From :func:`parse_features`.
    options : dict
        Extractor options (see :func:`check_options`).
    workers, scheduler
        Passed to :func:`datakit.features.extract_features`.

    Returns
    -------
    blocks : list of ndarray, each shape (n_nodes, d_k), float32
        NaN rows where that node's image could not be described.
    failed : DataFrame
        ``dataset, id, path, extractor, reason``: one row per node and extractor that failed.
    descriptions : list of str
        One line per extractor (name and settings).
    """
    from datakit.features import extract_features

    extractors = _extractors(features, options, datasets)
    ds_of, rows = frame["_ds"].to_numpy()[first], frame["_row"].to_numpy()[first]
    blocks, failed = [], []
    for ext in extractors:
        parts = []
        for k, ds in enumerate(datasets):
            nodes = np.flatnonzero(ds_of == k)
            if not len(nodes):
                continue
            fm = extract_features(ds, ext, positions=rows[nodes], workers=workers, scheduler=scheduler)
            parts.append((nodes, fm.values))
            where = dict(zip(rows[nodes].tolist(), nodes.tolist()))
            for pos, reason in zip(fm.failed["position"].tolist(), fm.failed["reason"].tolist()):
                r = int(first[where[int(pos)]])
                failed.append({"dataset": frame["dataset"].iat[r], "id": frame["id"].iat[r],
                               "path": _paths(frame, datasets, [r], relative=True)[0], "extractor": ext.name,
                               "reason": reason})
        dims = sorted({v.shape[1] for _, v in parts if v.shape[1]})
        if len(dims) > 1:
            raise DatakitError(f"duplicates: extractor {ext.describe()} gave {dims} dimensions on different datasets")
        block = np.full((len(first), dims[0] if dims else 0), np.nan, np.float32)
        for nodes, values in parts:
            if values.shape[1]:
                block[nodes] = values
        blocks.append(block)
    failed_df = pd.DataFrame(failed, columns=["dataset", "id", "path", "extractor", "reason"])
    return blocks, failed_df, [ext.describe() for ext in extractors]


def embed(blocks: Sequence[np.ndarray], center: bool = False) -> np.ndarray:
    """Unit vectors whose dot products are the mean per-extractor cosine similarity.

    Parameters
    ----------
    blocks : sequence of ndarray, each shape (M, d_k)
        Finite rows only (drop failed rows first).
    center : bool, default False
        Subtract each block's mean row before normalizing (on CIFAR-10 copies
        this helps ``hog+tiny`` a little and hurts ``gist`` badly: see
        ``bench/results/semantic_duplicates.md``).

    Returns
    -------
    ndarray, shape (M, sum d_k), float32
        Rows of norm 1 (all-zero rows stay zero: such an image matches nothing).
    """
    parts = []
    for b in blocks:
        b = np.array(b, dtype=np.float32)  # a copy, normalized in place
        if center and len(b):
            b -= b.mean(axis=0, dtype=np.float64).astype(np.float32)
        norm = np.linalg.norm(b, axis=1, keepdims=True)
        np.divide(b, norm, out=b, where=norm > 1e-12)
        b[norm[:, 0] <= 1e-12] = 0.0
        parts.append(b)
    if len(parts) == 1:
        return parts[0]
    x = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32)
    x *= np.float32(1.0 / np.sqrt(max(len(parts), 1)))
    return x


def cosine_pairs(x: np.ndarray, max_cosine: float, *, max_neighbors: int = 100,
                 block_elems: int = 1 << 24) -> tuple[np.ndarray, np.ndarray, int]:
    """All pairs of rows within ``max_cosine`` cosine distance, by exact blocked search.

    Parameters
    ----------
    x : ndarray, shape (M, d), float32
        Unit rows (from :func:`embed`).
    max_cosine : float
        Largest cosine distance ``1 - x_i·x_j`` of a reported pair.
    max_neighbors : int
        Each row keeps at most this many of its later rows (the nearest), so a
        large cluster of alike images costs ``M * max_neighbors`` pairs at most.
    block_elems : int
        Similarities computed at once (memory: 4 bytes each, plus a mask).

    Returns
    -------
    pairs : ndarray, shape (K, 2), int64
        ``i < j``, sorted by ``i`` then ``j``.
    distances : ndarray, shape (K,), float64
        Cosine distances, clipped to [0, 2].
    truncated : int
        Rows that had more than ``max_neighbors`` later rows under the threshold.

    Examples
    --------
    >>> x = embed([np.array([[1, 0], [0.99, 0.1], [0, 1]])], center=False)
    >>> pairs, d, _ = cosine_pairs(x, 0.01)
    >>> pairs.tolist(), d.round(3).tolist()
    ([[0, 1]], [0.005])
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    m = len(x)
    thr = np.float32(1.0 - max_cosine)
    rows = max(1, min(m, block_elems // max(m, 1)))
    out_i, out_j, out_s = [], [], []
    truncated = 0
    for lo in range(0, m, rows):
        hi = min(m, lo + rows)
        s = x[lo:hi] @ x[lo:].T  # (hi - lo, m - lo): column c is row lo + c
        r, c = np.nonzero(s >= thr)
        keep = c > r
        r, c = r[keep], c[keep]
        sim = s[r, c]
        counts = np.bincount(r, minlength=hi - lo)
        if len(r) and counts.max() > max_neighbors:
            order = np.lexsort((-sim, r))
            r, c, sim = r[order], c[order], sim[order]
            rank = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
            keep = rank < max_neighbors
            r, c, sim = r[keep], c[keep], sim[keep]
            truncated += int((counts > max_neighbors).sum())
            order = np.lexsort((c, r))
            r, c, sim = r[order], c[order], sim[order]
        out_i.append(lo + r)
        out_j.append(lo + c)
        out_s.append(sim)
    i = np.concatenate(out_i) if out_i else np.zeros(0, np.int64)
    j = np.concatenate(out_j) if out_j else np.zeros(0, np.int64)
    sim = np.concatenate(out_s).astype(np.float64) if out_s else np.zeros(0)
    return np.stack([i, j], axis=1).astype(np.int64), np.clip(1.0 - sim, 0.0, 2.0), truncated


def overlap_pairs(a: np.ndarray, b: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which unordered node pairs are in ``a`` only, in both, in ``b`` only.

    Parameters
    ----------
    a, b : ndarray, shape (K_a, 2) and (K_b, 2), int64
        Node pairs (either order; no self pairs, no repeats).
    n_nodes : int

    Returns
    -------
    only_a, both, only_b : ndarray, each shape (K, 2), int64
        Pairs as ``(min, max)``, sorted.
    """
    def keys(p):
        p = np.asarray(p, np.int64).reshape(-1, 2)
        return np.unique(np.minimum(p[:, 0], p[:, 1]) * n_nodes + np.maximum(p[:, 0], p[:, 1]))

    def unkey(k):
        return np.stack([k // n_nodes, k % n_nodes], axis=1) if len(k) else np.zeros((0, 2), np.int64)

    ka, kb = keys(a), keys(b)
    return unkey(np.setdiff1d(ka, kb)), unkey(np.intersect1d(ka, kb)), unkey(np.setdiff1d(kb, ka))


def describe_failed(failed: pd.DataFrame, n_nodes: int, features: str) -> str:
    """One note line for the images the semantic search could not use."""
    first = failed.iloc[0]
    return (f"{failed['id'].nunique()} of {n_nodes} distinct images could not be described by {features} and are "
            f"left out of the semantic search (e.g. {first['dataset']}/{first['path']}: {first['reason']}); "
            f"see tables['semantic_failed']")


def overlap_table(g: _Graph, groups: dict, slot: np.ndarray, emb: np.ndarray, max_listed: int) -> pd.DataFrame:
    """Node pairs by the search that found them (``found_by``: semantic, phash, both; one-search pairs first).

    ``slot`` (n_nodes,) gives each node's row in ``emb`` (M, D) or -1; at most ``max_listed`` rows.
    """
    from datakit.dedup import popcount64

    f, first = g.f, g.first
    node_hash = f["phash"].to_numpy().astype(np.uint64)[first]
    hashed = f["_hashed"].to_numpy()[first]
    parts = []
    for found_by in ("semantic", "phash", "both"):
        p = groups[found_by][:max(0, max_listed - sum(len(x) for x in parts))]
        a, b = first[p[:, 0]], first[p[:, 1]]
        ok_h = hashed[p[:, 0]] & hashed[p[:, 1]]
        ham = popcount64(node_hash[p[:, 0]] ^ node_hash[p[:, 1]]).astype(np.int64)
        sa, sb = slot[p[:, 0]], slot[p[:, 1]]
        ok_e = (sa >= 0) & (sb >= 0)
        cos = np.full(len(p), np.nan)
        if ok_e.any():
            cos[ok_e] = np.clip(1.0 - np.einsum("ij,ij->i", emb[sa[ok_e]], emb[sb[ok_e]]), 0.0, 2.0)
        col = lambda name, rows: f[name].to_numpy()[rows]  # noqa: E731
        parts.append(pd.DataFrame({
            "dataset": col("dataset", a), "id": col("id", a), "split": col("split", a),
            "match_dataset": col("dataset", b), "match_id": col("id", b), "match_split": col("split", b),
            "found_by": found_by, "phash_distance": pd.Series(ham, dtype="Int64").mask(~ok_h),
            "cosine_distance": cos}))
    return pd.concat(parts, ignore_index=True)


def add_semantic(result: AuditResult, g: _Graph, datasets: Sequence, opts: SemanticOptions, *,
                 hash_edges: np.ndarray | None, n_examples: int, max_listed: int, workers: int | None,
                 scheduler: str | None) -> AuditResult:
    """Run the semantic search and add its results to ``result`` (in place; also returned).

    Adds per-image columns ``semantic_flag``, ``semantic_score`` (``1 - d / (2 max_cosine)`` for the
    nearest copy at cosine distance ``d``: 1 for an exact copy, at least 0.5 when flagged, 0 without a
    copy), ``semantic_distance`` (cosine distance to the reported match), ``semantic_match_dataset``,
    ``semantic_match_id``, ``semantic_match_split``, ``semantic_kind``, ``semantic_exact``,
    ``semantic_leak``, ``semantic_n_near``; summary keys ``semantic_leakage_test_in_train``,
    ``semantic_leakage_fraction``, ``semantic_cross_dataset_images``, ``semantic_near_within``,
    ``semantic_near_across_splits``, ``semantic_cross_source_images``, ``semantic_flagged_images``,
    ``semantic_pairs``, ``semantic_train_test_pairs``, ``semantic_cross_dataset_pairs``,
    ``semantic_cross_source_pairs``, ``semantic_max_cosine``, ``semantic_failed``; tables
    ``semantic_leakage``, ``semantic_by_kind``, ``semantic_pairs``, ``semantic_failed`` (``dataset, id,
    path, extractor, reason``); figure ``semantic_examples``.

    ``mode="semantic"``: the summary is the semantic one (with the exact-copy keys, ``n_images``) and
    ``flag``/``score`` are the semantic ones. ``mode="both"``: ``flag`` is either search, ``score`` the
    larger (``phash_flag``, ``phash_score`` keep pHash's), and ``both_pairs``, ``semantic_only_pairs``,
    ``phash_only_pairs`` count image pairs of distinct contents (``both + phash_only = near_pairs -
    exact_pairs``, ``both + semantic_only = semantic_pairs - exact_pairs``); ``tables["overlap"]`` lists
    such node pairs with both distances.

    Parameters
    ----------
    result : AuditResult
        The pHash results (``mode="both"``; ``hash_edges`` are its confirmed node pairs, shape (K, 2)),
        or an empty result (``mode="semantic"``, ``hash_edges=None``).
    g : _Graph
        The frame, nodes and exact-copy counts of the audit.
    """
    f, n_nodes = g.f, g.n_nodes
    blocks, failed, descriptions = node_features(datasets, f, g.first, opts.features, opts.options, workers,
                                                 scheduler)
    ok_nodes = np.flatnonzero(np.all([np.isfinite(b).all(axis=1) & (b.shape[1] > 0) for b in blocks], axis=0))
    emb = embed([b[ok_nodes] for b in blocks], center=opts.center)
    pairs, dist, truncated = cosine_pairs(emb, opts.max_cosine, max_neighbors=opts.max_neighbors)
    u, v = ok_nodes[pairs[:, 0]], ok_nodes[pairs[:, 1]]
    per, counts, tables = g.near(u, v, dist, lambda near: 1.0 - 0.5 * near / opts.max_cosine, max_listed)
    summary = {k if k in _EXACT_KEYS else "semantic_pairs" if k == "near_pairs" else f"semantic_{k}": v
               for k, v in counts.items()}
    extra = {"semantic_max_cosine": opts.max_cosine,
             "semantic_failed": int(f["id"].isin(set(failed["id"])).sum()) if len(failed) else 0}
    if hash_edges is None:
        result.summary = {**summary, "n_images": len(f), **extra}
    else:
        result.summary.update({k: x for k, x in summary.items() if k not in _EXACT_KEYS}, **extra)
    result.tables.update({f"semantic_{k}": t for k, t in tables.items()}, semantic_failed=failed)
    if len(failed):
        result.notes.append(describe_failed(failed, n_nodes, opts.name))
    if truncated:
        result.notes.append(f"{truncated} images had more than {opts.max_neighbors} semantic near copies under "
                            f"max_cosine={opts.max_cosine}; only the {opts.max_neighbors} nearest were kept "
                            f"(max_neighbors=)")
    examples = _example_rows(per, n_examples)
    if len(examples):
        title = f"Semantic near-duplicate pairs ({opts.name}, cosine distance <= {opts.max_cosine:g})"
        result.figures["semantic_examples"] = _pairs_figure(f, examples, datasets, title,
                                                            label=lambda d: f"cos={float(d):.3f}")
    result.info.update({
        "mode": opts.mode, "train_split": g.train_split, "datasets": list(pd.unique(f["dataset"])),
        "distinct_contents": int(n_nodes), "semantic_features": descriptions, "semantic_center": opts.center,
        "semantic_max_cosine": opts.max_cosine, "semantic_candidate_pairs": int(len(u)),
        "semantic_truncated_rows": truncated, "semantic_max_neighbors": opts.max_neighbors,
        "semantic_search": "exact cosine search, blocked numpy matmul (audits._semantic)",
        "semantic_examples": examples[["dataset", "id", "match_dataset", "match_id", "distance",
                                       "kind"]].to_dict("records")})
    sem_cols = per[_COLUMNS].rename(columns={c: f"semantic_{c}" for c in _COLUMNS})
    if hash_edges is None:
        result.per_image = per[["dataset", "id", "split", "source", "label", "flag", "score"]].join(sem_cols)
        return result
    groups = dict(zip(("phash", "both", "semantic"), overlap_pairs(hash_edges, np.stack([u, v], 1), n_nodes)))
    size = np.bincount(g.node, minlength=n_nodes)
    images = {k: int((size[p[:, 0]] * size[p[:, 1]]).sum()) for k, p in groups.items()}
    result.summary.update(both_pairs=images["both"], semantic_only_pairs=images["semantic"],
                          phash_only_pairs=images["phash"])
    slot = np.full(n_nodes, -1, np.int64)
    slot[ok_nodes] = np.arange(len(ok_nodes))
    result.tables["overlap"] = overlap_table(g, groups, slot, emb, max_listed)
    hp = result.per_image
    per = hp.assign(phash_flag=hp["flag"], phash_score=hp["score"], **{c: sem_cols[c] for c in sem_cols})
    per["flag"] = per["phash_flag"] | per["semantic_flag"]
    per["score"] = np.maximum(per["phash_score"], per["semantic_score"])
    result.per_image = per
    return result
