"""Benchmark: recall of modified copies, semantic search vs pHash, at the same false-positive rate (issue 11).

Takes ``--n`` real CIFAR-10 test images (``../shared/data/cifar10_test_jpg``,
a seeded sample over all classes) and makes one modified copy of each of
``--copies`` of them (a seeded choice), in six kinds, round-robin:

``crop``
    a random crop keeping 70-90% of the area (aspect 1), resized back to 32x32;
``rescale_down``
    32 -> 24 -> 32 pixels (bilinear);
``rescale_up``
    32 -> 64 pixels (bilinear), stored at 64x64;
``jpeg50``
    re-encoded as JPEG at quality 50;
``brightness``
    pixel values times 1 +/- 0.2-0.3 (sign and amount random), clipped;
``combined``
    crop keeping 80-90% of the area, brightness +/- 10-20%, then JPEG quality 50.

Originals go to split ``train``, copies to ``test`` of one dataset written
with :func:`datakit.store.writer.write_dataset` (PNG store, manifest pHash),
so every true pair is a train/test leak. The features are computed by
:func:`datakit.features.extract_features` on that dataset (what the audit
uses), then for every method all n(n-1)/2 pairs are scored exactly: pHash
Hamming distance on the manifest's ``phash``; cosine distance after
:func:`audits._semantic.embed` (per-extractor centering and unit length,
extractors joined by ``+`` with equal weight). Negatives are all pairs but the
true (original, copy) pairs (genuine near-duplicates inside the CIFAR-10 test
set, if any, count as false positives for every method alike).

Each method's threshold is set so that its false-positive rate among the
negatives is at most a target: ``--fpr`` (default 1e-5) and pHash's own rate at
its default distance 4. Finally the real audit runs once with
``mode="both"`` at its defaults (``features``, ``max_cosine``, ``center`` chosen from
this benchmark) and the true and false pairs it reports are counted.

Run::

    .venv/bin/python bench/semantic_duplicates.py                # n=2000, copies=500: about 20 s on 2 cores
    .venv/bin/python bench/semantic_duplicates.py --n 500 --copies 100 --features hog,tiny   # quick look
    .venv/bin/python bench/semantic_duplicates.py --scale 100000   # the blocked search alone at 100k x 512
"""
from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audits._semantic import embed  # noqa: E402
from audits.base import get_audit  # noqa: E402
from datakit import open_dataset  # noqa: E402
from datakit.dedup import popcount64  # noqa: E402
from datakit.features import extract_features, list_features  # noqa: E402
from datakit.store.writer import write_dataset  # noqa: E402

KINDS = ("crop", "rescale_down", "rescale_up", "jpeg50", "brightness", "combined")
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_test_jpg"


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))


def _crop(a: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    h = a.shape[0]
    side = int(round(h * np.sqrt(rng.uniform(lo, hi))))
    y, x = rng.integers(0, h - side + 1, 2)
    return _resize(np.ascontiguousarray(a[y:y + side, x:x + side]), h)


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _bright(a: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    factor = 1 + rng.choice([-1, 1]) * rng.uniform(lo, hi)
    return np.clip(a.astype(np.float32) * factor, 0, 255).round().astype(np.uint8)


def modify(a: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A modified copy of ``a`` (32x32x3 uint8); see the module docstring for the kinds."""
    if kind == "crop":
        return _crop(a, rng, 0.7, 0.9)
    if kind == "rescale_down":
        return _resize(_resize(a, 24), 32)
    if kind == "rescale_up":
        return _resize(a, 64)
    if kind == "jpeg50":
        return _jpeg(a, 50)
    if kind == "brightness":
        return _bright(a, rng, 0.2, 0.3)
    if kind == "combined":
        return _jpeg(_bright(_crop(a, rng, 0.8, 0.9), rng, 0.1, 0.2), 50)
    raise ValueError(f"unknown kind {kind!r}")


def build(out: Path, n: int, copies: int, seed: int):
    """Write the benchmark dataset; returns (dataset, copy_of (n + copies,) int, kind_of (n + copies,) object)."""
    files = sorted(CIFAR.glob("*/*.jpg"))
    if len(files) < n:
        sys.exit(f"need {n} images in {CIFAR}, found {len(files)} (see shared/data/SOURCES.md)")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(files), n, replace=False))
    originals = [np.asarray(Image.open(files[i]).convert("RGB")) for i in pick]
    labels = [files[i].parent.name for i in pick]
    src = rng.choice(n, copies, replace=False)
    kinds = np.array(KINDS, dtype=object)[rng.permutation(np.arange(copies) % len(KINDS))]
    images = originals + [modify(originals[i], k, rng) for i, k in zip(src, kinds)]
    root = write_dataset(out / "cifar_semdup", images, labels + [labels[i] for i in src],
                         ["train"] * n + ["test"] * copies, source="cifar10_test", name="cifar_semdup")
    copy_of = np.concatenate([np.full(n, -1), src])
    kind_of = np.concatenate([np.full(n, None, dtype=object), kinds])
    return open_dataset(root), copy_of, kind_of


def upper(m: np.ndarray) -> np.ndarray:
    """The strict upper triangle of a square matrix, flattened (pair (i, j), i < j)."""
    i, j = np.triu_indices(len(m), 1)
    return m[i, j]


def operating_point(neg: np.ndarray, target: float, integer: bool = False) -> float:
    """The threshold t with a false-positive rate ``mean(neg <= t)`` at most ``target`` (largest such t)."""
    if integer:
        ok = [r for r in range(0, 65) if np.mean(neg <= r) <= target]
        return float(max(ok)) if ok else -1.0
    k = int(np.floor(target * len(neg) + 1e-6))  # a rate computed from a count gives back that count
    s = np.partition(neg, k)[k] if k < len(neg) else np.inf  # k negatives are strictly below s
    return float(np.nextafter(s, -np.inf))


def scale(n: int, d: int = 512, seed: int = 0) -> None:
    """Time :func:`audits._semantic.cosine_pairs` on ``n`` random unit vectors with ``n // 20`` planted copies."""
    import resource

    from audits._semantic import cosine_pairs

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[n // 2: n // 2 + n // 20] = x[: n // 20] + rng.normal(scale=0.1, size=(n // 20, d)).astype(np.float32)
    t, c = time.perf_counter(), time.process_time()
    pairs, _, truncated = cosine_pairs(embed([x]), 0.1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"n={n:,} d={d}: {len(pairs):,} pairs (planted {n // 20:,}), wall {time.perf_counter() - t:.1f} s, "
          f"CPU {time.process_time() - c:.1f} s, peak RSS {rss:.0f} MiB, load {os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="originals")
    p.add_argument("--copies", type=int, default=500, help="modified copies (of distinct originals)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fpr", type=float, default=1e-5, help="false-positive rate of the main operating point")
    p.add_argument("--features", default="hog,gist,color_hist,tiny", help="extractors (those registered)")
    p.add_argument("--combos", default="pairs", help="'pairs' (every pair), 'none', or a,b+c,...")
    p.add_argument("--out", default=None, help="folder for the dataset (default: a temporary one)")
    p.add_argument("--scale", type=int, default=0, metavar="N",
                   help="only time the blocked search on N synthetic 512-d vectors (5%% planted near copies)")
    args = p.parse_args(argv)
    if args.scale:
        return scale(args.scale, seed=args.seed)

    load = os.getloadavg()
    print(f"command: .venv/bin/python bench/semantic_duplicates.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="semdup-"))
    t0 = time.perf_counter()
    ds, copy_of, kind_of = build(out, args.n, args.copies, args.seed)
    n_all = len(copy_of)
    print(f"dataset: {n_all} images ({args.n} originals, {args.copies} copies) in {out}, "
          f"built in {time.perf_counter() - t0:.1f} s")
    assert ds.manifest["id"].nunique() == n_all, "a copy is byte-identical to its original"

    pos_i = np.flatnonzero(copy_of >= 0)
    pos = (copy_of[pos_i], pos_i)  # (original, copy): original < copy
    truth = np.zeros((n_all, n_all), dtype=bool)
    truth[pos] = True
    neg_mask = ~upper(truth)
    pos_kind = kind_of[pos_i]

    # pHash: Hamming distance of the manifest hashes
    h = ds.manifest["phash"].to_numpy().astype(np.uint64)
    ham = upper(popcount64(h[:, None] ^ h[None, :]).astype(np.int16))
    ham_pos = popcount64(h[pos[0]] ^ h[pos[1]]).astype(int)

    available = set(list_features())
    singles = [x for x in args.features.split(",") if x]
    missing = [x for x in singles if x not in available]
    if missing:
        print(f"not registered (skipped): {missing}; registered: {sorted(available)}")
    singles = [x for x in singles if x in available]
    feats, seconds = {}, {}
    for name in singles:
        t = time.perf_counter()
        fm = extract_features(ds, name, cache=False)
        seconds[name] = time.perf_counter() - t
        if len(fm.failed):
            print(f"{name}: {len(fm.failed)} images failed, e.g. {fm.failed['reason'].iloc[0]}")
        feats[name] = fm.values
        print(f"features {fm.info['description']}: dim {fm.values.shape[1]}, {seconds[name]:.1f} s")
    if args.combos == "pairs":
        spaces = singles + ["+".join(c) for c in itertools.combinations(singles, 2)]
        if len(singles) > 2:
            spaces.append("+".join(singles))
    elif args.combos == "none":
        spaces = list(singles)
    else:
        spaces = singles + [c for c in args.combos.split(",") if c]

    dists = {}
    for space in spaces:
        for center in (True, False):
            x = embed([feats[k] for k in space.split("+")], center=center)
            s = x @ x.T
            dists[(space, center)] = (upper(1.0 - s).astype(np.float32), (1.0 - s[pos]).astype(np.float64))

    f4 = float(np.mean(ham[neg_mask] <= 4))
    targets = [("fpr", args.fpr), ("phash4", f4)]
    n_neg = int(neg_mask.sum())
    print(f"\npairs: {len(neg_mask):,} ({len(pos_i)} true, {n_neg:,} negatives); "
          f"pHash distance <= 4 has FPR {f4:.3g} ({round(f4 * n_neg)} false pairs)")

    def row(method, thr, neg, d_pos, fmt):
        fp = int(np.sum(neg <= thr))
        hit = d_pos <= thr
        per = [f"{hit[pos_kind == k].mean():.2f}" for k in KINDS]
        return f"| {method} | {fmt(thr)} | {fp / n_neg:.2g} | {fp} | **{hit.mean():.3f}** | " + " | ".join(per) + " |"

    header = ("| method | threshold | FPR | false pairs | recall | " + " | ".join(KINDS) + " |\n"
              "|---|---|---|---|---|" + "---|" * len(KINDS))
    best = {}
    for label, target in targets:
        title = (f"FPR <= {target:g}" if label == "fpr"
                 else f"FPR <= {target:.3g} (pHash's rate at its default distance 4)")
        print(f"\n### {title}\n\n{header}")
        neg = ham[neg_mask]
        r = operating_point(neg, target, integer=True) if label == "fpr" else 4
        print(row("pHash (Hamming)", r, neg, ham_pos, lambda t: f"d <= {int(t)}"))
        scored = []
        for space in spaces:
            for center in (True, False):
                neg_d, pos_d = dists[(space, center)]
                neg_d = neg_d[neg_mask]
                t = operating_point(neg_d, target)
                scored.append(((pos_d <= t).mean(), space, center, t))
                print(row(f"{space}{' (centered)' if center else ''}", t, neg_d, pos_d,
                          lambda t: f"cos <= {t:.4f}"))
        best[label] = max(scored, key=lambda x: x[0])

    # The real audit at its defaults (what a user gets with mode=both).
    recall, space, center, t = best["fpr"]
    print(f"\nbest at FPR {args.fpr:g}: {space}, center={center} (recall {recall:.3f}, cos <= {t:.4f})")
    t1 = time.perf_counter()
    res = get_audit("duplicates")([ds], mode="both", n_examples=0, max_listed=10**7, workers=None)
    secs = time.perf_counter() - t1
    space, center, max_cos = ("+".join(d.split("(")[0] for d in res.info["semantic_features"]),
                              res.info["semantic_center"], res.info["semantic_max_cosine"])
    s = res.summary
    row_of = {k: i for i, k in enumerate(ds.manifest["id"])}
    ov = res.tables["overlap"]
    a = ov["id"].map(row_of).to_numpy()
    b = ov["match_id"].map(row_of).to_numpy()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    found_true = truth[lo, hi]
    print(f"\naudit with its defaults, mode=both (features={space}, max_cosine={max_cos}, center={center}): "
          f"{secs:.1f} s (features computed again, cached in the dataset)\n")
    print("| search | pairs | true pairs found | false pairs | " + " | ".join(KINDS) + " |\n|---|---|---|---|"
          + "---|" * len(KINDS))
    for label, sel in (("pHash d <= 4 + pixel check (audit default)", ov["found_by"].isin(["phash", "both"])),
                       (f"semantic {space} cos <= {max_cos}{' centered' if center else ''}",
                        ov["found_by"].isin(["semantic", "both"]))):
        sel = sel.to_numpy()
        hits = np.zeros(len(pos_i), bool)
        hit_copy = hi[sel & found_true]
        hits[np.isin(pos_i, hit_copy)] = True
        per = [f"{hits[pos_kind == k].mean():.2f}" for k in KINDS]
        print(f"| {label} | {int(sel.sum())} | {int(hits.sum())} / {len(pos_i)} | {int((sel & ~found_true).sum())} | "
              + " | ".join(per) + " |")
    print(f"\nsummary: leakage_test_in_train={s['leakage_test_in_train']} "
          f"semantic_leakage_test_in_train={s['semantic_leakage_test_in_train']} both_pairs={s['both_pairs']} "
          f"semantic_only_pairs={s['semantic_only_pairs']} phash_only_pairs={s['phash_only_pairs']}")
    print("feature seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
          + f"; total {time.perf_counter() - t0:.1f} s")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
