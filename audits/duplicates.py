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

The audit's parts live in private modules next to it: the image frame
(:mod:`audits._duplicates_frame`), the pixel check
(:mod:`audits._duplicates_pixels`), the counting without pair lists
(:mod:`audits._duplicates_graph`) and the figures
(:mod:`audits._duplicates_figures`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

# _EXACT_KEYS, _example_rows, _Graph and _pairs_figure are also imported from here by audits._semantic
from audits._duplicates_figures import _example_rows, _histogram_figure, _pairs_figure
from audits._duplicates_frame import _frame
from audits._duplicates_graph import _EXACT_KEYS, KINDS, _Graph, _identity_neighbors, _nodes, _pair_counts, _relations
from audits._duplicates_pixels import _confirmed_pairs
from audits.base import AuditResult, register_audit, skipped
from datakit.dedup import MAX_DISTANCE, near_duplicate_pairs
from datakit.dedup.hashes import _index_dtype
from datakit.errors import DatakitError
from datakit.store.dataset import Dataset

__all__ = ["duplicates", "KINDS", "OptionError"]

NAME = "duplicates"

#: default ``max_cosine`` of the semantic search (see ``bench/results/semantic_duplicates.md``)
DEFAULT_MAX_COSINE = 0.08


class OptionError(DatakitError, ValueError):
    """A bad option of the ``duplicates`` audit (a :class:`DatakitError` and a ``ValueError``)."""


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


@register_audit(NAME, columns=("id", "path", "label", "split", "source", "phash", "rank", "width", "height"))
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
    from datakit._memory import release_memory

    f = _frame(datasets, notes, workers, scheduler, compute_hashes=use_hash)
    release_memory()  # the manifest read's buffers, before the per-image arrays are built
    if f.empty:
        return skipped(NAME, "the datasets have no images")
    n = len(f)
    # (dataset, split) and (dataset, source) cells from integer codes (no string per row)
    ds_code = f["_ds"].to_numpy(np.int64)
    for key, col in (("_cell", "split"), ("_src", "source")):
        codes, uniques = pd.factorize(f[col])
        cells = pd.factorize(ds_code * (len(uniques) + 1) + codes)[0]
        f[key] = cells.astype(_index_dtype(len(cells)))  # int32: half of int64, held to the end
    n_ds = len(datasets)
    cell_of = {(int(d), s): int(c) for d, s, c in f[["_ds", "split", "_cell"]].drop_duplicates().itertuples(index=False)}
    train_cell = np.array([cell_of.get((k, train_split), -1) for k in range(n_ds)], dtype=np.int64)
    test_cell = np.array([cell_of.get((k, test_split), -1) for k in range(n_ds)], dtype=np.int64)

    # Nodes are content ids: exact copies share one (and need no pixel check).
    node, n_nodes, first = _nodes(f)
    exact = _identity_neighbors(node, n_nodes)
    g = _Graph(f, node, n_nodes, first, _relations(exact, f, train_cell, "exact"),
               _pair_counts(exact, f, train_cell, test_cell), train_cell, test_cell, train_split)
    release_memory()  # the exact-copy counts' working set
    result = AuditResult(NAME, notes=notes)
    hash_edges = None
    if use_hash:
        # Near copies: pHash candidates between distinct contents, confirmed by pixels.
        node_hash, node_hashed = f["phash"].to_numpy()[first], f["_hashed"].to_numpy()[first]
        hn = np.flatnonzero(node_hashed)
        if verify == "pixels":
            # candidates stream out with their thumbnails, one batch at a time; only confirmed pairs are kept
            u, v, d, info_verify = _confirmed_pairs(f, datasets, first[hn], node_hash[hn], r, min_similarity, workers,
                                                    scheduler=scheduler, n_jobs=n_jobs)
            u, v = hn[u], hn[v]
            if info_verify["rejected_pairs"]:
                notes.append(f"{info_verify['rejected_pairs']} of {info_verify['hash_candidate_pairs']} pHash "
                             f"candidate pairs (distinct images within {r} bits) were rejected: thumbnail "
                             f"correlation below {min_similarity} (different images that hash alike, common for "
                             f"small centred digits)")
        else:
            pairs, dist = near_duplicate_pairs(node_hash[hn], r, return_distances=True, n_jobs=n_jobs)
            u, v, d = hn[pairs[:, 0]], hn[pairs[:, 1]], dist
            info_verify = {"hash_candidate_pairs": int(len(u))}
        hash_edges = np.stack([u, v], axis=1)
        per, counts, result.tables = g.near(u, v, d, lambda near: (r + 1 - near) / (r + 1), max_listed)
        result.summary = {**counts, "n_images": n, "max_distance": r}
        examples = _example_rows(per, n_examples)
        if len(examples):  # n_examples=0: no figures (fast, e.g. in CI gates)
            result.figures["examples"] = _pairs_figure(f, examples, datasets,
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
