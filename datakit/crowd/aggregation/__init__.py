"""Label aggregation: one algorithm a file, after crowd-kit.

Every aggregator takes the long ``task, worker, label`` DataFrame and returns
results indexed by ``task``::

    >>> import pandas as pd
    >>> from datakit.crowd.aggregation import get_aggregator
    >>> votes = pd.DataFrame({"task": ["a", "a", "a"], "worker": ["w1", "w2", "w3"], "label": ["yes", "no", "yes"]})
    >>> get_aggregator("majority_vote")().fit_predict(votes).to_dict()
    {'a': 'yes'}

Two registries: :data:`AGGREGATORS` holds datakit's own algorithms (no
optional dependency); :data:`CROWDKIT_AGGREGATORS` holds crowd-kit's
(``glad``, ``mace``, ``mmsr``, ``wawa``, ``zero_based_skill``,
``crowdkit_dawid_skene``, ...; see :mod:`datakit.crowd.aggregation.crowdkit`),
which need the ``crowdkit`` extra only when fitted. :func:`get_aggregator`
and :func:`aggregator_names` cover both.
"""
from __future__ import annotations

from datakit.registry import Registry, UnknownNameError

__all__ = ["AGGREGATORS", "CROWDKIT_AGGREGATORS", "get_aggregator", "aggregator_names", "MajorityVote",
           "DawidSkene", "OneCoinDawidSkene"]

#: name -> aggregator class (datakit's own)
AGGREGATORS: Registry[type] = Registry("aggregator")

from datakit.crowd.aggregation.majority_vote import MajorityVote  # noqa: E402
from datakit.crowd.aggregation.dawid_skene import DawidSkene  # noqa: E402
from datakit.crowd.aggregation.one_coin import OneCoinDawidSkene  # noqa: E402
from datakit.crowd.aggregation.crowdkit import CROWDKIT_AGGREGATORS  # noqa: E402

AGGREGATORS.register("majority_vote")(MajorityVote)
AGGREGATORS.register("dawid_skene")(DawidSkene)
AGGREGATORS.register("one_coin")(OneCoinDawidSkene)


def aggregator_names(include_crowdkit: bool = True) -> list[str]:
    """Names of the aggregators: datakit's own, then (by default) crowd-kit's, each sorted."""
    return AGGREGATORS.names() + (CROWDKIT_AGGREGATORS.names() if include_crowdkit else [])


def get_aggregator(name: str) -> type:
    """The aggregator class registered under ``name``.

    Parameters
    ----------
    name : str
        One of :func:`aggregator_names` (``majority_vote``, ``dawid_skene``,
        ``one_coin``; with the ``crowdkit`` extra also ``glad``, ``mace``,
        ``mmsr``, ``wawa``, ``zero_based_skill``, ``crowdkit_dawid_skene``, ...).

    Raises
    ------
    UnknownNameError
        For a name in neither registry; the message lists the valid names.
    """
    for registry in (AGGREGATORS, CROWDKIT_AGGREGATORS):
        if name in registry:
            return registry.get(name)
    import difflib

    names = aggregator_names()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownNameError(f"Unknown aggregator {name!r}.{hint} Valid values are {{{', '.join(names)}}}.")
