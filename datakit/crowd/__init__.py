"""Crowd labelling: tasks, platform import/export, the annotation app, aggregation,
worker quality, agreement, ImageNet's adaptive consensus, ImageNetV2's selection
frequency, and a simulated crowd.

The shared table is the long ``task, worker, label`` DataFrame
(``annotations.parquet``); see :mod:`datakit.crowd.tasks`.
"""
from __future__ import annotations

from datakit.crowd.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene, get_aggregator
from datakit.crowd.agreement import agreement_report, fleiss_kappa, krippendorff_alpha, pairwise_cohen_kappa
from datakit.crowd.consensus import AdaptiveConsensus, ConfidenceModel, SimulatedOracle, plan_votes
from datakit.crowd.frequency import curate_by_frequency, selection_frequency
from datakit.crowd.quality import worker_quality
from datakit.crowd.simulate import SimulatedCrowd
from datakit.crowd.tasks import (load_annotations, load_tasks, make_binary_tasks, make_multiclass_tasks,
                                 save_annotations, save_tasks)

__all__ = [
    "AdaptiveConsensus", "ConfidenceModel", "DawidSkene", "MajorityVote", "OneCoinDawidSkene", "SimulatedCrowd",
    "SimulatedOracle", "agreement_report", "curate_by_frequency", "fleiss_kappa", "get_aggregator",
    "krippendorff_alpha", "load_annotations", "load_tasks", "make_binary_tasks", "make_multiclass_tasks",
    "pairwise_cohen_kappa", "plan_votes", "save_annotations", "save_tasks", "selection_frequency",
    "worker_quality",
]
