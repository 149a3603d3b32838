"""crowd-kit's aggregators behind datakit's interface: registry, results, gold, agreement with ours, errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.crowd.aggregation import (AGGREGATORS, CROWDKIT_AGGREGATORS, DawidSkene, OneCoinDawidSkene,
                                       aggregator_names, get_aggregator)
from datakit.crowd.aggregation.crowdkit import CrowdKitMissing
from datakit.crowd.simulate import SimulatedCrowd
from datakit.errors import DatakitError

pytest.importorskip("crowdkit.aggregation", reason="crowd-kit is an optional extra: pip install 'datakit[crowdkit]'")

CROWDKIT_NAMES = ["crowdkit_dawid_skene", "crowdkit_majority_vote", "crowdkit_one_coin", "glad", "mace", "mmsr",
                  "wawa", "zero_based_skill"]


@pytest.fixture(scope="module")
def simulated():
    """120 items, 3 classes, 20 workers (25% spammers), 5 votes each; seeded."""
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    truth = pd.Series(rng.choice(classes, 120), index=[f"i{i:03d}" for i in range(120)])
    crowd = SimulatedCrowd(n_workers=20, accuracy=(0.65, 0.9), spammer_share=0.25, seed=0)
    return truth, crowd.annotate(truth, classes, votes_per_item=5)


def test_registry_names():
    assert CROWDKIT_AGGREGATORS.names() == CROWDKIT_NAMES
    assert aggregator_names() == AGGREGATORS.names() + CROWDKIT_NAMES
    assert aggregator_names(include_crowdkit=False) == ["dawid_skene", "majority_vote", "one_coin"]
    with pytest.raises(DatakitError, match=r"Unknown aggregator 'gald'. Did you mean 'glad'\?.*mace.*wawa"):
        get_aggregator("gald")


@pytest.mark.parametrize("name", CROWDKIT_NAMES)
def test_every_method_returns_datakits_shapes_and_beats_chance(simulated, name):
    truth, votes = simulated
    model = get_aggregator(name)()
    labels = model.fit_predict(votes)
    assert list(labels.index) == sorted(truth.index) and labels.index.name == "task"
    assert set(labels) <= {"a", "b", "c"}
    accuracy = float((labels == truth.reindex(labels.index)).mean())
    assert accuracy >= 0.75, f"{name}: accuracy {accuracy:.3f}"  # chance 0.33; majority vote 0.81, m-msr 0.79
    if name == "mmsr":
        assert model.probas_ is None and model.scores_.shape == (120, 3)
        with pytest.raises(DatakitError, match="gives no probabilities"):
            model.predict_proba()
    else:
        probas = model.probas_
        assert list(probas.columns) == ["a", "b", "c"]
        np.testing.assert_allclose(probas.sum(axis=1), 1.0, atol=1e-6)
        # labels are the arg-max of the probabilities
        assert (probas.idxmax(axis=1) == labels).all()


def test_our_dawid_skene_and_one_coin_agree_with_crowdkits(simulated):
    """What the library does for us: the same labels as our own EM, probabilities within 0.02."""
    _, votes = simulated
    for ours, theirs in ((DawidSkene(), "crowdkit_dawid_skene"), (OneCoinDawidSkene(), "crowdkit_one_coin")):
        ours.fit(votes)
        other = get_aggregator(theirs)().fit(votes)
        assert (ours.labels_ == other.labels_).all()
        assert float((ours.probas_ - other.probas_).abs().max().max()) < 0.02
    # the same EM: run for crowd-kit's number of rounds, ours gives crowd-kit's posteriors
    theirs = get_aggregator("crowdkit_dawid_skene")().fit(votes)
    rounds = len(theirs.model_.loss_history_)
    same = DawidSkene(n_iter=rounds).fit(votes)
    assert float((same.probas_ - theirs.probas_).abs().max().max()) < 1e-6
    mv = get_aggregator("majority_vote")().fit(votes)
    ck = get_aggregator("crowdkit_majority_vote")().fit(votes)
    pd.testing.assert_frame_equal(mv.probas_, ck.probas_, check_dtype=False)


def test_gold_answers(simulated):
    truth, votes = simulated
    mv = get_aggregator("majority_vote")().fit_predict(votes)
    wrong = mv[mv != truth.reindex(mv.index)].index[:3]
    assert len(wrong) == 3
    gold = truth[wrong]
    for name in ("crowdkit_dawid_skene", "glad", "mmsr"):
        labels = get_aggregator(name)().fit_predict(votes, gold=gold)
        assert (labels[wrong] == gold).all(), name
    with pytest.raises(ValueError, match="gold labels"):
        get_aggregator("glad")().fit(votes, gold=pd.Series({"i000": "zebra"}))


def test_bad_input_and_parameters(simulated):
    _, votes = simulated
    with pytest.raises(ValueError, match="missing columns"):
        get_aggregator("wawa")().fit(votes.drop(columns="worker"))
    with pytest.raises(ValueError, match="bad parameters"):
        get_aggregator("glad")(n_iterations=3).fit(votes)
    with pytest.raises(DatakitError, match="not fitted yet"):
        get_aggregator("mace")().predict()


def test_missing_crowdkit_says_how_to_install(simulated, monkeypatch):
    import sys

    _, votes = simulated
    for mod in [m for m in sys.modules if m == "crowdkit" or m.startswith("crowdkit.")]:
        monkeypatch.setitem(sys.modules, mod, None)  # None in sys.modules: the import raises ImportError
    monkeypatch.setitem(sys.modules, "crowdkit", None)
    monkeypatch.setitem(sys.modules, "crowdkit.aggregation", None)
    from datakit.crowd.aggregation.crowdkit import crowdkit_available

    assert not crowdkit_available()
    with pytest.raises(CrowdKitMissing, match=r"'glad' runs on crowd-kit.*pip install 'datakit\[crowdkit\]'"):
        get_aggregator("glad")().fit(votes)
    DawidSkene().fit(votes)  # ours need nothing


@pytest.fixture
def voted_dataset(tmp_path, simulated):
    """A dataset directory whose annotations.parquet holds simulated votes on its images."""
    from datakit import open_dataset
    from datakit.crowd.tasks import save_annotations
    from datakit.store.writer import write_dataset

    rng = np.random.default_rng(1)
    root = write_dataset(tmp_path / "ds", rng.integers(0, 255, (30, 8, 8), dtype=np.uint8),
                         [["a", "b", "c"][i % 3] for i in range(30)], "train")
    ids = open_dataset(root).manifest["id"].astype(str)
    truth = pd.Series([["a", "b", "c"][i % 3] for i in range(30)], index=ids.to_numpy())
    votes = SimulatedCrowd(n_workers=10, accuracy=0.85, seed=2).annotate(truth, ["a", "b", "c"], votes_per_item=5)
    save_annotations(root, votes)
    return root, truth


def test_cli_aggregate_with_crowdkit_methods(voted_dataset, tmp_path, monkeypatch):
    root, truth = voted_dataset
    runner = CliRunner()
    for method in ("glad", "mmsr"):
        out = tmp_path / f"{method}.csv"
        r = runner.invoke(cli, ["crowd", "aggregate", str(root), "--method", method, "--out", str(out),
                                "--format", "csv"])
        assert r.exit_code == 0, r.output
        result = pd.read_csv(out)
        assert len(result) == 30 and (result["votes"] == 5).all()
        assert (result.set_index("task")["label"] == truth.reindex(result["task"]).to_numpy()).mean() >= 0.9
        assert result["probability"].isna().all() if method == "mmsr" else result["probability"].between(0, 1).all()
    r = runner.invoke(cli, ["crowd", "aggregate", str(root), "--method", "kos"])
    assert r.exit_code == 2 and "glad" in r.output  # a click usage error listing the choices

    def missing(*args, **kwargs):
        raise CrowdKitMissing("Aggregation method 'glad' runs on crowd-kit, which is not installed. "
                              "Install it with: pip install 'datakit[crowdkit]'")

    monkeypatch.setattr("datakit.crowd.aggregation.crowdkit._crowdkit_class", missing)
    r = runner.invoke(cli, ["crowd", "aggregate", str(root), "--method", "glad"])
    assert r.exit_code == 1 and "pip install 'datakit[crowdkit]'" in r.output and "Traceback" not in r.output


def test_a_crowdkit_failure_names_the_method(simulated, monkeypatch):
    """crowd-kit raising on votes that passed our checks becomes a DatakitError naming the method."""
    _, votes = simulated

    class Broken:
        def __init__(self, **params):
            pass

        def fit_predict(self, data):
            raise ValueError("Encountered all NA values")

    monkeypatch.setattr("datakit.crowd.aggregation.crowdkit._crowdkit_class", lambda name, method: Broken)
    with pytest.raises(DatakitError, match=r"mmsr: crowd-kit's MMSR failed on these votes \(ValueError: "
                                           r"Encountered all NA values\); try another method"):
        get_aggregator("mmsr")().fit(votes)
