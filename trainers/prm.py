"""Fitting a process reward model M(s, a) on rollouts (AgentPRM), inside and outside policy training.

The PRM is a copy of the policy's architecture whose action outputs are read as scores,
M(s, a) = the network's output for action a, instead of a softmax. Each fit recomputes the
targets with the current PRM (`turngym.rewards.estimators.prm_targets`: TD(lambda), or the
Monte-Carlo returns with `prm_target="mc"`) and minimises
    L = sum_t 1/2 (M_t - Qhat_t)^2 + beta 1/2 ((M_t - M_{t-1}) - (Qhat_t - Qhat_{t-1}))^2
(the second term from turn 2 on), so both the scores and their turn-to-turn changes, which are the
turn advantages, match the targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from turngym.rewards.estimators import explained_variance, group_members, mc_targets, prm_targets
from turngym.trainers.credit import CreditModel, fresh_copy, per_turn_outputs


class PRMTrainer(CreditModel):
    """Holds the PRM network and its optimizer across updates (a `CreditModel`: trainers/credit.py)."""

    name, field = "prm", "prm"

    def __init__(self, policy: torch.nn.Module, config: Any) -> None:
        super().__init__(fresh_copy(policy, config.seed + 1), config.prm_lr, config.max_grad_norm)
        self.config = config

    def scores(self, actor: Any, col: Any) -> list[np.ndarray]:
        """M(s_t, a_t) of every turn, per trajectory."""
        return per_turn_outputs(col, lambda rows: actor.scores(self.net, col.inputs, rows, col.index[rows]))

    per_turn = scores

    def targets(self, col: Any, scores: list[np.ndarray]) -> np.ndarray:
        """Qhat for every flat turn, from the current scores."""
        c, out = self.config, np.zeros(len(col.index))
        gamma, lam = c.algo_options.get("gamma", 1.0), c.algo_options.get("lam", 0.95)
        for members in group_members(col.groups).values():
            start = gamma * float(np.mean([scores[i][0] for i in members if len(scores[i])] or [0.0]))
            for i in members:
                rewards = np.array([t.reward for t in col.trajectories[i].turns])
                if c.prm_target == "mc":
                    out[col.turns[i]] = mc_targets(rewards, gamma)
                else:
                    out[col.turns[i]] = prm_targets(rewards, scores[i], start, gamma=gamma, lam=lam)[1]
        return out

    def fit(self, actor: Any, col: Any, generator: torch.Generator) -> dict[str, float]:
        """`prm_epochs` passes over the batch, targets re-estimated before each."""
        c = self.config
        prev = np.full(len(col.index), -1)
        for idx in col.turns:
            prev[idx[1:]] = idx[:-1]
        losses, ev = [], 0.0
        self.net.train()
        for _ in range(c.prm_epochs):
            scores = self.scores(actor, col)
            q = torch.as_tensor(self.targets(col, scores), dtype=torch.float32)
            ev = explained_variance(q.numpy(), np.concatenate(scores) if scores else np.zeros(0))
            order = torch.randperm(len(q), generator=generator).numpy()
            for start in range(0, len(order), c.minibatch_size):
                rows = order[start:start + c.minibatch_size]
                m = actor.scores(self.net, col.inputs, rows, col.index[rows])
                loss_q = 0.5 * ((m - q[rows]) ** 2).mean()
                loss_a = torch.zeros(())
                has = prev[rows] >= 0
                if c.prm_beta and has.any():
                    before = prev[rows][has]
                    m_prev = actor.scores(self.net, col.inputs, before, col.index[before])
                    step = (m[torch.from_numpy(has)] - m_prev) - (q[rows][has] - q[before])
                    loss_a = 0.5 * (step ** 2).mean()
                self.step(loss_q + c.prm_beta * loss_a)
                losses.append((float(loss_q.detach()), float(loss_a.detach())))
        self.net.eval()
        q_loss, a_loss = np.mean(losses, axis=0) if losses else (0.0, 0.0)
        return {"prm_q_loss": float(q_loss), "prm_a_loss": float(a_loss), "prm_ev": float(ev)}
