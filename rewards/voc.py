"""Value-Order Correlation (VOC, Ma et al. 2024, GVL): does a value estimate rise with the episode?

VOC is the Spearman rank correlation between the values an estimator gives the frames (or turns)
of an episode, in chronological order, and their time indices 0, 1, ..., T-1. An estimator that
ranks progress well scores near 1 on successful episodes of an expert; a shuffled or constant
estimate scores near 0.

Ties get the average of the ranks they span, as Spearman's definition has it. This matters: an
estimator that answers in whole percentages ties often, and the argsort form of ranking that some
public code uses breaks ties by position, i.e. in time order, which inflates VOC for free.
A constant sequence has no order at all: its VOC is NaN, reported as such, never 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of `values`, ties sharing the mean of the ranks they span."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # the start index of each run of equal values, and each element's run
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends - 1) / 2.0)[run]
    return ranks


def voc(values: Sequence[float] | np.ndarray) -> float:
    """Spearman correlation of `values` (chronological) with their time order; NaN when fewer than two
    values, any NaN among them, or all equal (no order to correlate)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 2 or np.isnan(x).any() or np.all(x == x[0]):
        return float("nan")
    ranks = average_ranks(x)
    time = np.arange(len(x), dtype=float)
    ranks -= ranks.mean()
    time -= time.mean()
    return float(ranks @ time / np.sqrt((ranks @ ranks) * (time @ time)))
