"""The duplicates audit's figures: example pairs side by side and the histogram of distances."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from audits._duplicates_graph import KINDS

__all__: list[str] = []  # private to the duplicates audit; audits._semantic draws its pairs with _pairs_figure


def _example_rows(per: pd.DataFrame, n_examples: int) -> pd.DataFrame:
    """Up to ``n_examples`` distinct pairs, round-robin over kinds (most serious first), each kind's
    picks spread over its distances."""
    if n_examples <= 0 or not per["flag"].any():
        return per.iloc[:0]
    # the few columns the choice needs (the flagged rows of every column: tens of MB at a million images)
    flagged = per.loc[per["flag"].to_numpy(), ["_row", "_match", "kind", "leak", "distance"]].copy()
    a, b = flagged["_row"].to_numpy(np.int64), flagged["_match"].to_numpy(np.int64)  # int32 rows: the key needs 64 bits
    flagged["_key"] = np.minimum(a, b) * (len(per) + 1) + np.maximum(a, b)  # the unordered pair, as one int
    flagged["_rank"] = flagged["kind"].map({k: i for i, k in enumerate(KINDS)}).astype(np.int64)
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
    return per.loc[picked]


def _open(frame: pd.DataFrame, datasets: list, row: int) -> np.ndarray | None:
    from audits._duplicates_frame import _paths

    try:
        with Image.open(_paths(frame, datasets, [row])[0]) as im:
            return np.asarray(im.convert("L") if im.mode in ("L", "1", "I", "I;16", "F", "LA") else im.convert("RGB"))
    except OSError:
        return None


def _pairs_figure(frame: pd.DataFrame, examples: pd.DataFrame, datasets: list, title: str,
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
            img = _open(frame, datasets, row)
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
    flagged = per.loc[per["flag"].to_numpy(), ["kind", "distance"]]  # two columns, not every column's flagged rows
    fig, ax = plt.subplots(figsize=(5, 2.8))
    bottom = np.zeros(max_distance + 1)
    for kind in KINDS:
        d = flagged.loc[(flagged["kind"] == kind).to_numpy(), "distance"].astype(int)
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
