"""``label_agreement``: how much the crowd agreed on a dataset's labels.

Reads ``annotations.parquet`` of each dataset and reports Fleiss' kappa,
Krippendorff's alpha (nominal) and mean pairwise Cohen's kappa, overall and per
class (:func:`datakit.crowd.agreement.agreement_report`), and per image the
share of votes that disagree with the manifest label (``"no"`` votes for
yes/no verification, other classes for pick-the-class votes).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from audits.base import AuditResult, register_audit, skipped

__all__ = ["label_agreement"]

NAME = "label_agreement"


@register_audit(NAME, columns=("id", "label", "source", "votes"))
def label_agreement(datasets: Sequence, *, min_common: int = 5, flag_above: float = 0.5, **_options) -> AuditResult:
    """Inter-annotator agreement of the datasets' crowd votes.

    Parameters
    ----------
    datasets : sequence of datakit.store.Dataset
    min_common : int
        Shared tasks needed for a pair's Cohen's kappa.
    flag_above : float
        Flag an image when more than this share of its votes disagree with its label.

    Returns
    -------
    AuditResult with ``summary`` (overall figures of the first dataset with
    votes, and ``n_datasets``), ``per_image`` (``dataset, id, flag, score``,
    score = share of disagreeing votes), ``tables["agreement"]`` (one row per
    dataset and scope).
    """
    from datakit.crowd.agreement import agreement_report
    from datakit.crowd.tasks import load_annotations

    if not 0 <= flag_above <= 1:
        raise ValueError(f"flag_above must be in [0, 1], got {flag_above!r}")
    reports, per_image, missing = [], [], []
    for ds in datasets:
        votes = load_annotations(ds.root)
        if votes.empty:
            missing.append(ds.name)
            continue
        classes = None
        if set(votes["label"].astype(str)) <= {"yes", "no"}:
            classes = pd.Series(ds.manifest["label"].astype(str).to_numpy(), index=ds.manifest["id"].astype(str).to_numpy())
        rep = agreement_report(votes, classes=classes, min_common=min_common)
        rep.insert(0, "dataset", ds.name)
        reports.append(rep)
        m = ds.manifest[["id", "label"]].astype({"id": str})
        v = votes.merge(m, left_on="task", right_on="id", how="inner")
        if len(v):
            binary = set(v["label_x"].astype(str)) <= {"yes", "no"}
            disagree = (v["label_x"] == "no") if binary else (v["label_x"].astype(str) != v["label_y"].astype(str))
            score = disagree.groupby(v["id"]).mean()
            per_image.append(pd.DataFrame({"dataset": ds.name, "id": score.index, "score": score.to_numpy(),
                                           "flag": score.to_numpy() > flag_above,
                                           "votes": v.groupby("id").size().reindex(score.index).to_numpy()}))
    if not reports:
        return skipped(NAME, "no crowd votes (annotations.parquet) in " + ", ".join(missing or ["the datasets"]))
    table = pd.concat(reports, ignore_index=True)
    first = table[table["scope"] == "overall"].iloc[0]
    images = pd.concat(per_image, ignore_index=True) if per_image else None
    summary = {"fleiss_kappa": float(first["fleiss_kappa"]), "krippendorff_alpha": float(first["krippendorff_alpha"]),
               "cohen_kappa_mean": float(first["cohen_kappa_mean"]), "n_votes": int(first["n_votes"]),
               "n_datasets": len(reports),
               "flagged_images": int(images["flag"].sum()) if images is not None else 0}
    notes = [f"no votes in {', '.join(missing)}"] if missing else []
    return AuditResult(name=NAME, summary=summary, per_image=images, tables={"agreement": table},
                       info={"min_common": min_common, "flag_above": flag_above}, notes=notes)
