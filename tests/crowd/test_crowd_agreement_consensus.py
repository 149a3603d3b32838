"""Agreement statistics, adaptive consensus, selection frequency and curation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datakit.crowd.agreement import agreement_report, fleiss_kappa, krippendorff_alpha, pairwise_cohen_kappa
from datakit.crowd.consensus import AdaptiveConsensus, ConfidenceModel, SimulatedOracle, plan_votes
from datakit.crowd.frequency import add_vote_columns, curate_by_frequency, selection_frequency
from datakit.crowd.simulate import SimulatedCrowd
from datakit.errors import DatakitError

# Fleiss (1971) as on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa = 0.210
FLEISS_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def _long_from_counts(table):
    rows = []
    for s, counts in enumerate(table):
        w = 0
        for c, n in enumerate(counts):
            for _ in range(n):
                rows.append((f"s{s}", f"w{w}", f"c{c}"))
                w += 1
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def test_fleiss_kappa_wikipedia_example():
    votes = _long_from_counts(FLEISS_TABLE)
    assert fleiss_kappa(votes) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_uses_equal_rater_counts():
    votes = _long_from_counts(FLEISS_TABLE)
    extra = pd.DataFrame({"task": ["s99", "s99"], "worker": ["w0", "w1"], "label": ["c0", "c1"]})
    # a task with only 2 ratings is left out (modal count is 14), so kappa does not change
    assert fleiss_kappa(pd.concat([votes, extra])) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_wikipedia_example():
    # Krippendorff's alpha article: 3 coders, 15 units, nominal alpha = 0.691
    data = [[None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
            [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
            [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4]]
    rows = [(f"u{u}", f"c{c}", str(v)) for c, coder in enumerate(data) for u, v in enumerate(coder) if v is not None]
    votes = pd.DataFrame(rows, columns=["task", "worker", "label"])
    assert krippendorff_alpha(votes) == pytest.approx(0.691, abs=5e-4)


def test_pairwise_cohen_kappa_hand_computed():
    a = list("yyyyynnnnn")
    b = list("yyyynnnnny")  # agree on 8 of 10; p_o = 0.8, p_e = 0.5 -> kappa 0.6
    votes = pd.DataFrame({"task": list(range(10)) * 2, "worker": ["A"] * 10 + ["B"] * 10, "label": a + b})
    pairs = pairwise_cohen_kappa(votes)
    assert pairs.to_dict("records") == [{"worker_a": "A", "worker_b": "B", "n_common": 10, "kappa": pytest.approx(0.6)}]
    assert pairwise_cohen_kappa(votes, min_common=11).empty


def test_agreement_report_overall_and_per_class():
    rng = np.random.default_rng(0)
    truth = rng.choice(["a", "b", "c"], 60)
    rows = [(t, f"w{w}", truth[t] if rng.random() < 0.8 else str(rng.choice(["a", "b", "c"])))
            for t in range(60) for w in range(5)]
    votes = pd.DataFrame(rows, columns=["task", "worker", "label"])
    rep = agreement_report(votes)
    assert rep["scope"].tolist() == ["overall", "a", "b", "c"]
    assert rep.loc[0, "n_votes"] == 300 and rep.loc[0, "cohen_pairs"] == 10
    assert 0.5 < rep.loc[0, "fleiss_kappa"] < 0.9
    perfect = votes.assign(label=[truth[t] for t in votes["task"]])
    rep_p = agreement_report(perfect)
    assert rep_p.loc[0, "fleiss_kappa"] == pytest.approx(1.0)
    assert rep_p.loc[0, "krippendorff_alpha"] == pytest.approx(1.0)
    grouped = agreement_report(votes, classes=pd.Series(["x"] * 30 + ["y"] * 30, index=range(60)))
    assert grouped["scope"].tolist() == ["overall", "x", "y"] and grouped["n_tasks"].tolist() == [60, 30, 30]


def test_confidence_model_hand_computed():
    # subset majority: two positives (9:1, 8:2), two negatives (1:9, 2:8); Laplace smoothing
    # prior = (2+1)/(4+2) = 1/2; se = (17+1)/(20+2) = 9/11; sp = 9/11
    model = ConfidenceModel().fit([9, 8, 1, 2], [1, 2, 9, 8])
    assert (model.prior_, model.sensitivity_, model.specificity_) == pytest.approx((0.5, 9 / 11, 9 / 11))
    # P(pos | y, n) = 4.5^(y-n) / (1 + 4.5^(y-n))
    assert float(model.p_positive(1, 0)) == pytest.approx(9 / 11)
    assert float(model.p_positive(3, 1)) == pytest.approx(20.25 / 21.25)
    assert model.table(4).loc[2, 0] == pytest.approx(20.25 / 21.25)
    assert np.isnan(model.table(4).loc[3, 2])  # more than 4 votes in all
    with pytest.raises(DatakitError, match="not fitted"):
        ConfidenceModel().p_positive(1, 0)


def test_plan_votes_says_how_many_more_votes():
    subset = {"s1": (9, 1), "s2": (8, 2), "s3": (1, 9), "s4": (2, 8)}
    others = {"a": (1, 0), "b": (0, 0), "c": (2, 1), "d": (2, 0), "e": (0, 2), "f": (3, 3)}
    rows = []
    for item, (y, n) in {**subset, **others}.items():
        rows += [(item, f"w{k}", "yes") for k in range(y)] + [(item, f"w{y + k}", "no") for k in range(n)]
    votes = pd.DataFrame(rows, columns=["task", "worker", "label"])
    items = pd.DataFrame({"item": list(subset) + list(others), "question": "cat"})
    # threshold 0.95 needs odds >= 19, i.e. (yes - no) >= 2 since 4.5^2 = 20.25
    plan = plan_votes(votes, items, min_subset=4).set_index("item")
    assert plan.loc[["a", "b", "c", "d", "e", "f"], "more_votes"].tolist() == [1, 2, 1, 0, 0, 2]
    assert plan.loc[["d", "e", "s1", "s3"], "decision"].tolist() == ["accepted", "rejected", "accepted", "rejected"]
    capped = plan_votes(votes, items, max_votes=6, min_subset=4).set_index("item")
    assert capped.loc["f", "decision"] == "undecided" and capped.loc["f", "more_votes"] == 0
    fresh = plan_votes(votes[votes["task"].isin(["a", "b"])], items, subset=2, min_subset=1).set_index("item")
    # no item has 10 votes yet: a random subset of 2 must get there first
    assert (fresh["phase"] == "subset").sum() == 2
    assert set(fresh.loc[fresh["phase"] == "subset", "decision"]) == {"needs_votes"}
    assert set(fresh.loc[fresh["phase"] != "subset", "decision"]) == {"waiting"}
    # with the default min_subset of 20, four complete items are not enough to fit a table yet
    waiting = plan_votes(votes, items).set_index("item")
    assert waiting["p_positive"].isna().all() and waiting.loc[["s1", "s2", "s3", "s4"], "more_votes"].eq(0).all()
    assert (waiting.loc[waiting["phase"] == "subset", "more_votes"] > 0).sum() == 6
    with pytest.raises(ValueError, match="yes/no votes"):
        plan_votes(votes.assign(label="cat"), items)


def test_adaptive_consensus_on_simulated_crowd():
    rng = np.random.default_rng(3)
    truth = pd.Series(np.where(rng.random(300) < 0.7, "yes", "no"), index=[f"i{i}" for i in range(300)])
    items = pd.DataFrame({"item": truth.index, "question": [f"c{i % 2}" for i in range(300)]})
    crowd = SimulatedCrowd(n_workers=40, accuracy=(0.75, 0.95), seed=0)
    result = AdaptiveConsensus(threshold=0.95, seed=0).run(items, SimulatedOracle(crowd, truth))
    assert len(result) == 300 and set(result["phase"]) == {"subset", "adaptive"}
    assert (result.loc[result["phase"] == "subset", "votes"] >= 10).all()
    accepted = result[result["decision"] == "accepted"]
    precision = (truth[accepted["item"]] == "yes").mean()
    assert precision >= 0.95
    adaptive = result[result["phase"] == "adaptive"]
    assert adaptive["votes"].mean() < 5  # far fewer than the subset's 10
    decided = adaptive[adaptive["decision"] != "undecided"]
    assert (decided["p_correct"] >= 0.95).all()
    # a crowd of 3 runs dry: nobody gets more than 3 votes, and nothing hangs
    small = AdaptiveConsensus(initial_votes=10).run(items.iloc[:20], SimulatedOracle(SimulatedCrowd(n_workers=3), truth))
    assert small["votes"].max() == 3
    with pytest.raises(ValueError, match="threshold"):
        AdaptiveConsensus(threshold=0.4).run(items, SimulatedOracle(crowd, truth))


def test_selection_frequency_and_curation():
    votes = pd.DataFrame({"task": ["a", "a", "a", "a", "b", "b"], "worker": ["u", "v", "w", "u", "u", "v"],
                          "label": ["yes", "no", "yes", "no", "no", "no"]})
    freq = selection_frequency(votes)
    assert freq.loc["a"].tolist() == [3, 2, pytest.approx(2 / 3)]  # u's repeat vote ignored
    frame = pd.DataFrame({"id": list("pqrstuvw"), "label": ["x"] * 4 + ["y"] * 4,
                          "selection_frequency": [0.1, 0.3, 0.8, 0.9, 0.95, 0.2, 0.7, np.nan]})
    thr = curate_by_frequency(frame, "threshold", threshold=0.7)
    assert thr["selected"].tolist() == [False, False, True, True, True, False, True, False]
    assert thr.loc[7, "curation_reason"] == "no_selection_frequency"
    assert thr.loc[0, "curation_reason"] == "selection_frequency<0.7"
    top = curate_by_frequency(frame, "top", per_class=2)
    assert top.loc[top["selected"], "id"].tolist() == ["r", "s", "t", "v"]
    # reference: half the images below 0.5, half above -> per class one of each (bins of width 0.5)
    matched = curate_by_frequency(frame, "matched-frequency", per_class=2, reference=[0.1, 0.2, 0.8, 0.9], bins=2)
    for label, g in matched[matched["selected"]].groupby("label"):
        assert sorted(g["selection_frequency"] >= 0.5) == [False, True]
    assert matched["curation_reason"][~matched["selected"]].notna().all()
    with pytest.raises(ValueError, match="Valid values are"):
        curate_by_frequency(frame, "best")
    with pytest.raises(ValueError, match="needs reference"):
        curate_by_frequency(frame, "matched-frequency")


def test_add_vote_columns_fills_the_manifest():
    manifest = pd.DataFrame({"id": ["a", "b", "c"], "label": ["x", "x", "y"]})
    votes = pd.DataFrame({"task": ["a", "a", "a", "b"], "worker": ["u", "v", "w", "u"],
                          "label": ["yes", "no", "yes", "no"]})
    consensus = pd.DataFrame({"item": ["a", "b"], "votes": [3, 1], "selection_frequency": [2 / 3, 0.0],
                              "p_positive": [0.9, 0.2]})
    out = add_vote_columns(manifest, votes, consensus)
    assert out["votes"].tolist()[:2] == [3, 1] and pd.isna(out["votes"].iloc[2])
    assert out["selection_frequency"].tolist()[:2] == pytest.approx([2 / 3, 0.0])
    assert out["p_correct"].tolist()[:2] == [0.9, 0.2] and np.isnan(out["p_correct"].iloc[2])
    assert list(manifest.columns) == ["id", "label"]  # the input is not changed
