"""The label_agreement audit."""
from __future__ import annotations

import pytest

from audits import get_audit, list_audits
from datakit import open_dataset
from datakit.crowd.simulate import SimulatedCrowd, truth_for_tasks
from datakit.crowd.tasks import make_binary_tasks, save_annotations


def test_label_agreement_audit(crowd_dataset, tmp_path):
    root, true_class = crowd_dataset
    assert "label_agreement" in list_audits()
    audit = get_audit("label_agreement")
    ds = open_dataset(root)
    empty = audit([ds])
    assert empty.skipped and "no crowd votes" in empty.skipped
    tasks = make_binary_tasks(ds.manifest, grid_size=6, gold_per_task=0)
    truth = truth_for_tasks(tasks, true_class)
    save_annotations(root, SimulatedCrowd(n_workers=10, accuracy=0.95, seed=0).answer_tasks(tasks, truth, assignments=5))
    result = audit([open_dataset(root)])
    assert result.skipped is None
    assert 0.5 < result.summary["fleiss_kappa"] <= 1 and result.summary["n_votes"] == 5 * 36
    table = result.tables["agreement"]
    assert table["scope"].tolist() == ["overall", "bag", "shirt", "shoe"]
    per = result.per_image.set_index("id")
    assert {"dataset", "flag", "score"} <= set(result.per_image.columns) and len(per) == 36
    # flagged images are the wrong-class candidates the crowd said "no" to
    wrong = set(truth.index[truth == "no"])
    assert set(per.index[per["flag"]]) == wrong
    with pytest.raises(ValueError, match="flag_above"):
        audit([ds], flag_above=2)
