"""Preference pairs within groups of episodes, and the DPO objective over them.

Two trainers learn from which of two episodes of the same task went better: DPO of `hf:` policies
(trainers/dpo.py: chosen vs rejected episodes of the policy itself) and OPRL's implicit process
reward model (trainers/credit.py: preferred vs dispreferred episodes, whose sequence log-ratios
against the policy are its step rewards). Both mine pairs the same way and take the same loss:

    pairs:  (w, l) for two episodes of one group with key_w > key_l (equal or NaN keys: no pair)
    loss:   -mean_{(w, l)} log sigmoid(h),  h = beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Pair:
    """Two episodes of one group: indices into the batch and their keys (chosen_key > rejected_key)."""

    chosen: int
    rejected: int
    chosen_key: float
    rejected_key: float


def mine_pairs(keys: Sequence[float], groups: Sequence[int], per_group: int | None = None) -> list[Pair]:
    """For any two episodes i < j of a group (same `groups` id), the one with the higher key is
    chosen; equal keys give no pair (a tie says nothing about which is better), nor does a NaN key
    (an episode the key cannot judge). `per_group` keeps a group's pairs of widest key gap only (1:
    its best episode against its worst; None: every pair)."""
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        if not math.isnan(keys[index]):
            members.setdefault(group, []).append(index)
    pairs = []
    for indices in members.values():
        mined = []
        for a, i in enumerate(indices):
            for j in indices[a + 1:]:
                if keys[i] != keys[j]:
                    win, lose = (i, j) if keys[i] > keys[j] else (j, i)
                    mined.append(Pair(win, lose, float(keys[win]), float(keys[lose])))
        if per_group is not None:  # a stable sort: equal gaps keep the order above
            mined = sorted(mined, key=lambda p: p.rejected_key - p.chosen_key)[:per_group]
        pairs.extend(mined)
    return pairs


def dpo_terms(chosen: torch.Tensor, rejected: torch.Tensor, chosen_ref: torch.Tensor | float,
              rejected_ref: torch.Tensor | float, beta: float) -> dict[str, torch.Tensor]:
    """The DPO loss of P pairs from their sequence log-probs under the policy and the reference
    (each shape (P,)): loss = mean -log sigmoid(h), h = r(y_w) - r(y_l), r(y) = beta (log pi(y) -
    log pi_ref(y)); and for the logs the mean implicit rewards, their margin (mean h) and the
    preference accuracy (the share of h > 0)."""
    chosen_reward = beta * (chosen - chosen_ref)
    rejected_reward = beta * (rejected - rejected_ref)
    h = chosen_reward - rejected_reward
    return {"loss": -F.logsigmoid(h).mean(), "margin": h.mean(), "pref_acc": (h > 0).float().mean(),
            "chosen_reward": chosen_reward.mean(), "rejected_reward": rejected_reward.mean()}
