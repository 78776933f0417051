"""Value-Order Correlation (VOC, Ma et al. 2024, GVL): does a value estimate rise with the episode?

VOC is the Spearman rank correlation between the values an estimator gives the frames (or turns)
of an episode, in chronological order, and their time indices 0, 1, ..., T-1. An estimator that
ranks progress well scores near 1 on successful episodes of an expert; a shuffled or constant
estimate scores near 0.

Ties get the average of the ranks they span, as Spearman's definition has it. This matters: an
estimator that answers in whole percentages ties often, and the argsort form of ranking that some
public code uses breaks ties by position, i.e. in time order, which inflates VOC for free.
A constant sequence has no order at all: its VOC is NaN, reported as such, never 0 or 1.

Where per-turn values live: `turn.extras[key]`, the value of the state the turn acted on, with one
key per kind of estimator (`VALUE_KEYS`), so that a report or a benchmark finds every estimate an
episode carries without knowing who wrote it:

    "value"  a critic's V(s_t), or any other state-value estimator (the neural agents write it);
    "prm"    a process reward model's M(s_t, a_t) (turngym.rewards.prm);
    "gvl"    GVL's task-progress estimate of the turn's frame (turngym.rewards.gvl).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from turngym.trajectory import Trajectory, Turn

VALUE_KEYS: tuple[str, ...] = ("value", "prm", "gvl")  # the turn.extras keys of per-turn values (see above)


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


def episode_values(episode: Trajectory | Mapping[str, Any], key: str) -> list[float] | None:
    """The finite values under `turn.extras[key]` of an episode (a Trajectory, or its JSON record as
    a trajectory file holds it), in turn order; None if no turn has `key`. Turns without a value
    are left out rather than made NaN: an estimator that scores a subsample of the frames (GVL)
    still orders the ones it scored."""
    turns = episode.turns if isinstance(episode, Trajectory) else episode.get("turns", [])
    found, values = False, []
    for turn in turns:
        extras = (turn.extras if isinstance(turn, Turn) else turn.get("extras")) or {}
        if key not in extras:
            continue
        found = True
        value = extras[key]
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    return values if found else None


def episode_voc(episode: Trajectory | Mapping[str, Any], key: str) -> float | None:
    """VOC of an episode's per-turn values under `key` (`episode_values`); None when it carries
    none, NaN when they cannot be ordered (fewer than two, or all equal)."""
    values = episode_values(episode, key)
    return None if values is None else voc(values)
