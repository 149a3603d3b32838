"""Aggregators: hand-computed EM steps, tie rule, gold, spammers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datakit.crowd.aggregation import AGGREGATORS, DawidSkene, MajorityVote, OneCoinDawidSkene, get_aggregator
from datakit.crowd.quality import worker_quality
from datakit.crowd.simulate import SimulatedCrowd
from datakit.errors import DatakitError


@pytest.fixture
def toy():
    # t1: A yes, B yes, C yes; t2: A yes, B no, C yes; t3: A no, B no, C yes
    return pd.DataFrame({"task": ["t1"] * 3 + ["t2"] * 3 + ["t3"] * 3, "worker": list("ABC") * 3,
                         "label": ["yes", "yes", "yes", "yes", "no", "yes", "no", "no", "yes"]})


def test_dawid_skene_one_em_round_matches_hand_computation(toy):
    # Start (majority-vote shares): P(yes) = t1 1, t2 2/3, t3 1/3.
    # M-step: priors yes = (1 + 2/3 + 1/3) / 3 = 2/3.
    #   A | true yes: yes 1 + 2/3, no 1/3 -> (no 1/6, yes 5/6); true no: yes 1/3, no 2/3 -> (2/3, 1/3)
    #   B | true yes: yes 1, no 2/3 + 1/3 -> (1/2, 1/2);    true no: no 1/3 + 2/3 -> (1, 0)
    #   C | always yes -> (0, 1) in both rows
    # E-step: t1 yes ∝ 2/3*5/6*1/2*1 = 5/18, no ∝ 1/3*1/3*0*1 = 0       -> P(yes) = 1
    #         t2 yes ∝ 2/3*5/6*1/2*1 = 5/18, no ∝ 1/3*1/3*1*1 = 2/18    -> 5/7
    #         t3 yes ∝ 2/3*1/6*1/2*1 = 1/18, no ∝ 1/3*2/3*1*1 = 4/18    -> 1/5
    ds = DawidSkene(n_iter=1).fit(toy)
    assert ds.probas_["yes"].tolist() == pytest.approx([1.0, 5 / 7, 1 / 5], abs=1e-12)
    assert ds.priors_["yes"] == pytest.approx(2 / 3)
    assert ds.errors_.loc[("A", "yes")].tolist() == pytest.approx([1 / 6, 5 / 6])
    assert ds.errors_.loc[("A", "no")].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert ds.errors_.loc[("B", "yes")].tolist() == pytest.approx([1 / 2, 1 / 2])
    assert ds.errors_.loc[("B", "no")].tolist() == pytest.approx([1.0, 0.0])
    assert ds.labels_.to_dict() == {"t1": "yes", "t2": "yes", "t3": "no"}
    assert ds.n_iter_ == 1


def test_dawid_skene_gold_is_clamped_hand_computation(toy):
    # gold t3 = no: start P(yes) = 1, 2/3, 0; priors yes = 5/9.
    #   A | true yes: yes 5/3, no 0 -> (0, 1); true no: yes 1/3, no 1 -> (3/4, 1/4)
    #   B | true yes: yes 1, no 2/3 -> (2/5, 3/5); true no: no 4/3 -> (1, 0)
    #   C | (0, 1) in both rows
    # t2: yes ∝ 5/9*1*2/5*1 = 2/9, no ∝ 4/9*1/4*1*1 = 1/9 -> 2/3
    ds = DawidSkene(n_iter=1).fit(toy, gold=pd.Series({"t3": "no"}))
    assert ds.probas_["yes"].tolist() == pytest.approx([1.0, 2 / 3, 0.0], abs=1e-12)
    full = DawidSkene().fit(toy, gold=pd.Series({"t3": "no"}))
    assert full.probas_.loc["t3", "no"] == 1.0


def test_one_coin_one_em_round_matches_hand_computation(toy):
    # skills from the start shares: A (1 + 2/3 + 2/3)/3 = 7/9, B (1 + 1/3 + 2/3)/3 = 2/3, C (1 + 2/3 + 1/3)/3 = 2/3
    # t1: yes ∝ 2/3*7/9*2/3*2/3 = 56/243, no ∝ 1/3*2/9*1/3*1/3 = 2/243  -> 28/29
    # t2: yes ∝ 2/3*7/9*1/3*2/3 = 28/243, no ∝ 1/3*2/9*2/3*1/3 = 4/243  -> 7/8
    # t3: yes ∝ 2/3*2/9*1/3*2/3 = 8/243,  no ∝ 1/3*7/9*2/3*1/3 = 14/243 -> 4/11
    oc = OneCoinDawidSkene(n_iter=1).fit(toy)
    assert oc.probas_["yes"].tolist() == pytest.approx([28 / 29, 7 / 8, 4 / 11], abs=1e-12)


def test_majority_vote_tie_rule_and_shares():
    votes = pd.DataFrame({"task": ["a", "a", "b", "b", "b", "c", "c"], "worker": ["u", "v", "u", "v", "w", "u", "v"],
                          "label": ["yes", "no", "7", "3", "7", "3", "7"]})
    mv = MajorityVote().fit(votes)
    assert mv.labels_.to_dict() == {"a": "no", "b": "7", "c": "3"}  # ties: smallest label by sort order
    assert mv.probas_.loc["b", "7"] == pytest.approx(2 / 3)
    weighted = MajorityVote(skills=pd.Series({"u": 1.0, "v": 0.2, "w": 0.2})).fit_predict(votes)
    assert weighted["b"] == "7" and weighted["a"] == "yes"


def test_duplicate_votes_count_once():
    votes = pd.DataFrame({"task": ["a"] * 4, "worker": ["u", "u", "u", "v"], "label": ["yes", "no", "no", "no"],
                          "time": [1.0, 2.0, 3.0, 4.0]})
    # u's earliest vote (yes) counts; u's later "no"s are ignored -> a tie, broken to "no"
    mv = MajorityVote().fit(votes)
    assert mv.probas_.loc["a"].to_dict() == {"no": 0.5, "yes": 0.5}


def test_errors_before_fit_and_bad_input(toy):
    with pytest.raises(DatakitError, match="not fitted yet"):
        DawidSkene().predict()
    with pytest.raises(DatakitError, match="not fitted yet"):
        MajorityVote().predict()
    with pytest.raises(ValueError, match="missing columns"):
        DawidSkene().fit(toy.drop(columns="worker"))
    with pytest.raises(TypeError, match="DataFrame"):
        DawidSkene().fit([("t", "w", "l")])
    with pytest.raises(ValueError, match="n_iter"):
        DawidSkene(n_iter=0).fit(toy)
    with pytest.raises(ValueError, match="gold labels"):
        DawidSkene().fit(toy, gold=pd.Series({"t1": "maybe"}))
    with pytest.raises(ValueError, match="no votes"):
        MajorityVote().fit(toy.iloc[:0])
    with pytest.raises(DatakitError, match="Unknown aggregator 'dawid'"):
        get_aggregator("dawid")
    assert AGGREGATORS.names() == ["dawid_skene", "majority_vote", "one_coin"]


def _simulated(spammer_share, seed=0, n_items=300, classes=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    truth = pd.Series(rng.choice(list(classes), n_items), index=[f"i{i}" for i in range(n_items)])
    crowd = SimulatedCrowd(n_workers=20, accuracy=(0.65, 0.9), spammer_share=spammer_share, seed=seed)
    return truth, crowd, crowd.annotate(truth, list(classes), votes_per_item=5)


def test_dawid_skene_beats_majority_vote_with_spammers():
    truth, crowd, votes = _simulated(spammer_share=0.3)
    mv = MajorityVote().fit_predict(votes)
    ds = DawidSkene().fit(votes)
    acc_mv = (mv == truth[mv.index]).mean()
    acc_ds = (ds.labels_ == truth[ds.labels_.index]).mean()
    assert acc_ds > acc_mv
    # spammers get lower estimated skill than honest workers
    kinds = crowd.workers_.set_index("worker")["kind"]
    skills = ds.skills_
    assert skills[kinds[kinds == "spammer"].index].mean() < skills[kinds[kinds == "honest"].index].mean() - 0.2


def test_worker_quality_flags_spammers_and_adversaries():
    rng = np.random.default_rng(1)
    truth = pd.Series(rng.choice(["yes", "no"], 200), index=[f"i{i}" for i in range(200)])
    crowd = SimulatedCrowd(n_workers=20, accuracy=0.9, spammer_share=0.2, adversary_share=0.1, seed=1)
    votes = crowd.annotate(truth, ["yes", "no"], votes_per_item=7)
    gold = truth.iloc[:40]
    q = worker_quality(votes, gold).set_index("worker")
    kinds = crowd.workers_.set_index("worker")["kind"]
    flagged = set(q.index[q["flag"]])
    bad = set(kinds.index[kinds != "honest"])
    assert bad <= flagged
    assert len(flagged - bad) <= 1
    assert q.loc[list(bad), "gold_accuracy"].max() < 0.8
    with pytest.raises(ValueError, match="min_gold_accuracy"):
        worker_quality(votes, min_gold_accuracy=2)
