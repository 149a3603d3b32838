"""An offline search pool from Debian's Fashion-MNIST, with noisy captions.

Web image search returns many wrong images: ImageNet found only about 10% of
its raw candidates correct. This module builds a local pool that behaves like
search results with *known* ground truth: real product photos (Fashion-MNIST,
Zalando Research, MIT license) saved as PNGs with uninformative file names
and sidecar JSON captions written in a shop's vocabulary ("slim pants",
"knit jumper"), of which a configurable share is wrong or carries an extra
wrong tag. The truth stays in ``ground_truth.csv`` so the precision of raw
candidates can be measured, and the crowd stage can be checked against it.

The ten classes map to WordNet 3.0 synsets as :data:`FASHION_SYNSETS` records,
with the reason for each choice.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from datakit.errors import DatakitError

__all__ = ["FASHION_MNIST_DIR", "FASHION_SYNSETS", "CAPTION_TERMS", "make_fashion_pool", "candidate_precision",
           "load_fashion_mnist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Fashion-MNIST class -> WordNet 3.0 synset, with the reason for the choice.
FASHION_SYNSETS: list[dict] = [
    {"class": 0, "name": "T-shirt/top", "synset": "jersey.n.03", "wnid": "n03595614",
     "reason": "lemmas jersey, T-shirt, tee_shirt: 'a close-fitting pullover shirt'. WordNet puts it under "
               "shirt.n.01, so it overlaps class 6 (Shirt); Fashion-MNIST treats them as siblings."},
    {"class": 1, "name": "Trouser", "synset": "trouser.n.01", "wnid": "n04489008",
     "reason": "lemmas trouser, pant: 'a garment extending from the waist to the knee or ankle'."},
    {"class": 2, "name": "Pullover", "synset": "pullover.n.01", "wnid": "n04021028",
     "reason": "lemmas pullover, slipover: 'a sweater that is put on by pulling it over the head' "
               "(its parent sweater.n.01 would also cover cardigans)."},
    {"class": 3, "name": "Dress", "synset": "dress.n.01", "wnid": "n03236735",
     "reason": "lemmas dress, frock: 'a one-piece garment for a woman; has skirt and bodice'."},
    {"class": 4, "name": "Coat", "synset": "coat.n.01", "wnid": "n03057021",
     "reason": "'an outer garment that has sleeves and covers the body from shoulder down'."},
    {"class": 5, "name": "Sandal", "synset": "sandal.n.01", "wnid": "n04133789",
     "reason": "'a shoe consisting of a sole fastened by straps to the foot'."},
    {"class": 6, "name": "Shirt", "synset": "shirt.n.01", "wnid": "n04197391",
     "reason": "'a garment worn on the upper half of the body'; an ancestor of jersey.n.03 (class 0), "
               "so the pair breaks ILSVRC's no-ancestor rule."},
    {"class": 7, "name": "Sneaker", "synset": "gym_shoe.n.01", "wnid": "n03472535",
     "reason": "lemmas gym_shoe, sneaker, tennis_shoe: 'a canvas shoe with a pliable rubber sole' "
               "(sneaker.n.01 resolves to it)."},
    {"class": 8, "name": "Bag", "synset": "bag.n.04", "wnid": "n02774152",
     "reason": "lemmas bag, handbag, pocketbook, purse: the carried accessory; bag.n.01 is any flexible container."},
    {"class": 9, "name": "Ankle boot", "synset": "boot.n.01", "wnid": "n02872752",
     "reason": "WordNet 3.0 has no 'ankle boot'; boot.n.01 'footwear that covers the whole foot and lower leg' "
               "is the closest (bootee.n.01 is a baby's slipper)."},
]

#: Words a shop would use for each class in captions and tags (class index -> terms).
CAPTION_TERMS: dict[int, list[str]] = {
    0: ["t-shirt", "tee shirt", "top", "jersey"],
    1: ["trousers", "pants", "slacks", "chinos"],
    2: ["pullover", "sweater", "jumper", "knit sweater"],
    3: ["dress", "frock", "summer dress", "gown"],
    4: ["coat", "jacket", "parka", "overcoat"],
    5: ["sandal", "sandals", "strappy sandal", "flip-flop"],
    6: ["shirt", "blouse", "button-down shirt", "flannel shirt"],
    7: ["sneaker", "sneakers", "trainers", "tennis shoe"],
    8: ["bag", "handbag", "purse", "tote bag"],
    9: ["ankle boot", "boots", "chelsea boot", "bootie"],
}
_ADJECTIVES = ["classic", "casual", "slim", "vintage", "new", "basic", "elegant", "sporty", "women's", "men's",
               "unisex", "lightweight", "comfortable", "trendy", "everyday"]
_GENERIC = ["new arrival", "best seller", "limited offer", "spring collection", "free shipping", "great price"]


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images.

    Returns
    -------
    images : ndarray, shape (70000, 28, 28), uint8
    labels : ndarray, shape (70000,), int64
    splits : ndarray of str, shape (70000,) (``"train"`` then ``"test"``)
    """
    from datakit.sources.idx import read_idx

    root = Path(root)
    parts = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = root / f"{prefix}-images-idx3-ubyte.gz"
        lab = root / f"{prefix}-labels-idx1-ubyte.gz"
        if not img.exists() or not lab.exists():
            raise DatakitError(f"Fashion-MNIST not found at {root} (need {img.name} and {lab.name}); "
                               "install it with `apt-get install dataset-fashion-mnist`.")
        x, y = read_idx(img), read_idx(lab)
        parts.append((x, y.astype(np.int64), np.full(len(y), split)))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def make_fashion_pool(out: str | os.PathLike, n: int | None = 1000, seed: int = 0, wrong_share: float = 0.10,
                      extra_share: float = 0.15, generic_share: float = 0.05,
                      root: str | os.PathLike = FASHION_MNIST_DIR,
                      progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Write a noisy-captioned pool of Fashion-MNIST PNGs; return (and write) the ground truth.

    Each image gets ``item_NNNNNN.png`` (no class in the name) and
    ``item_NNNNNN.json`` with ``caption``, ``tags``, ``license`` and
    ``attribution``. Per image, independently (seeded):

    * with probability ``wrong_share`` the caption names a *wrong* class;
    * else with probability ``generic_share`` it names no class at all;
    * else it names the true class in one of the shop's words;
    * and with probability ``extra_share`` an extra tag of another class is added.

    Parameters
    ----------
    out : path
        Pool directory (created).
    n : int or None
        Number of images, sampled (seeded) from all 70,000; None for all.
    seed : int

    Returns
    -------
    DataFrame, also written to ``out/ground_truth.csv``, with columns
    ``file, source_ref, id, index, source_split, true_class, true_name, true_wnid, true_label,
    caption_class, extra_class, noise, caption``: ``source_ref`` is the absolute path the
    ``local`` backend records and ``id`` the content id (sha256) ``candidates.parquet``
    uses, so either joins candidates to their truth; ``true_label`` repeats ``true_wnid``.
    """
    from datakit.store.atomic import atomic_write
    from datakit.store.images import content_id, encode_png

    for share in (wrong_share, extra_share, generic_share):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"shares must be in [0, 1], got {share}")
    images, labels, splits = load_fashion_mnist(root)
    rng = random.Random(seed)
    order = list(range(len(labels)))
    rng.shuffle(order)
    if n is not None:
        if n < 1 or n > len(order):
            raise ValueError(f"n must be in [1, {len(order)}], got {n}")
        order = sorted(order[:n])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {c["class"]: c for c in FASHION_SYNSETS}
    rows = []
    for k, i in enumerate(order):
        true = int(labels[i])
        others = [c for c in range(10) if c != true]
        u = rng.random()
        if u < wrong_share:
            caption_class, noise = rng.choice(others), "wrong"
        elif u < wrong_share + generic_share:
            caption_class, noise = None, "generic"
        else:
            caption_class, noise = true, "clean"
        extra = rng.choice([c for c in others if c != caption_class]) if rng.random() < extra_share else None
        if extra is not None:
            noise = f"{noise}+extra"
        words = []
        if caption_class is not None:
            term = rng.choice(CAPTION_TERMS[caption_class])
            caption = f"{rng.choice(_ADJECTIVES)} {term}, {rng.choice(_GENERIC)}"
            words.append(term)
        else:
            caption = f"{rng.choice(_ADJECTIVES)} item, {rng.choice(_GENERIC)}"
        tags = words + ([rng.choice(CAPTION_TERMS[extra])] if extra is not None else []) + ["fashion", "product"]
        stem = f"item_{k:06d}"
        png = encode_png(images[i])
        (out / f"{stem}.png").write_bytes(png)
        (out / f"{stem}.json").write_text(json.dumps({
            "caption": caption, "tags": tags, "license": "MIT",
            "attribution": "Fashion-MNIST, Zalando Research (Xiao, Rasul & Vollgraf 2017)"}) + "\n")
        rows.append({"file": f"{stem}.png", "source_ref": str((out / f"{stem}.png").resolve()),
                     "id": content_id(png), "index": i, "source_split": str(splits[i]), "true_class": true,
                     "true_name": names[true]["name"], "true_wnid": names[true]["wnid"],
                     "true_label": names[true]["wnid"],
                     "caption_class": caption_class, "extra_class": extra, "noise": noise, "caption": caption})
        if progress:
            progress(1)
    truth = pd.DataFrame(rows)
    truth["caption_class"] = truth["caption_class"].astype("Int64")
    truth["extra_class"] = truth["extra_class"].astype("Int64")
    with atomic_write(out / "ground_truth.csv", "w") as fh:
        truth.to_csv(fh, index=False)
    with atomic_write(out / "synsets.json", "w") as fh:
        json.dump(FASHION_SYNSETS, fh, indent=2)
    return truth


def candidate_precision(candidates: pd.DataFrame, pool: str | os.PathLike) -> pd.DataFrame:
    """Precision (and recall) of raw candidates per synset, against the pool's ground truth.

    Parameters
    ----------
    candidates : DataFrame
        ``candidates.parquet`` of a ``local`` run over ``pool``.
    pool : path
        The pool directory holding ``ground_truth.csv``.

    Returns
    -------
    DataFrame with ``synset, name, candidates, correct, precision, pool_images, recall``,
    one row per synset plus an ``all`` row (micro average).
    """
    pool = Path(pool).resolve()
    truth = pd.read_csv(pool / "ground_truth.csv")
    truth_by_file = dict(zip(truth["file"], truth["true_wnid"]))
    per_class = truth.groupby("true_wnid").size().to_dict()
    c = candidates.copy()
    c["file"] = [Path(r).name for r in c["source_ref"]]
    unknown = set(c["file"]) - set(truth_by_file)
    if unknown:
        raise DatakitError(f"{len(unknown)} candidate(s) are not in {pool}/ground_truth.csv "
                           f"(e.g. {sorted(unknown)[:3]}); was the run made over this pool?")
    c["correct"] = [truth_by_file[f] == s for f, s in zip(c["file"], c["synset"])]
    rows = []
    for synset, g in c.groupby("synset", sort=False):
        n_ok = int(g["correct"].sum())
        rows.append({"synset": synset, "name": g["name"].iloc[0], "candidates": len(g), "correct": n_ok,
                     "precision": n_ok / len(g), "pool_images": per_class.get(synset, 0),
                     "recall": n_ok / per_class[synset] if per_class.get(synset) else float("nan")})
    total_ok = int(c["correct"].sum())
    rows.append({"synset": "all", "name": "", "candidates": len(c), "correct": total_ok,
                 "precision": total_ok / len(c) if len(c) else float("nan"), "pool_images": len(truth),
                 "recall": total_ok / len(truth) if len(truth) else float("nan")})
    return pd.DataFrame(rows)
