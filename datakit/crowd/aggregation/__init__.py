"""Label aggregation: one algorithm a file, after crowd-kit.

Every aggregator takes the long ``task, worker, label`` DataFrame and returns
results indexed by ``task``::

    >>> import pandas as pd
    >>> from datakit.crowd.aggregation import get_aggregator
    >>> votes = pd.DataFrame({"task": ["a", "a", "a"], "worker": ["w1", "w2", "w3"], "label": ["yes", "no", "yes"]})
    >>> get_aggregator("majority_vote")().fit_predict(votes).to_dict()
    {'a': 'yes'}
"""
from __future__ import annotations

from datakit.registry import Registry

__all__ = ["AGGREGATORS", "get_aggregator", "MajorityVote", "DawidSkene", "OneCoinDawidSkene"]

#: name -> aggregator class
AGGREGATORS: Registry[type] = Registry("aggregator")

from datakit.crowd.aggregation.majority_vote import MajorityVote  # noqa: E402
from datakit.crowd.aggregation.dawid_skene import DawidSkene  # noqa: E402
from datakit.crowd.aggregation.one_coin import OneCoinDawidSkene  # noqa: E402

AGGREGATORS.register("majority_vote")(MajorityVote)
AGGREGATORS.register("dawid_skene")(DawidSkene)
AGGREGATORS.register("one_coin")(OneCoinDawidSkene)


def get_aggregator(name: str) -> type:
    """The aggregator class registered under ``name`` (majority_vote, dawid_skene, one_coin)."""
    return AGGREGATORS.get(name)
