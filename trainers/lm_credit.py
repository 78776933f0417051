"""Learned credit for `hf:` policies (trainers/lm.py): what the estimators read besides the
trajectories, fitted on every update's turns before they make the advantages.

- `prm` (AgentPRM) and `spa` (SPA-RL's progress estimator): the credit models of trainers/prm.py
  and trainers/credit.py, each a small text network (agents/neural.py) reading the observation
  text with the action taken as its one candidate (`turn_batch`), separate from the policy as in
  AgentPRM and cheap next to it. OUT/prm.pt, OUT/spa.pt.
- `oprl` (OPRL's implicit PRM, `ImplicitLM`): a LoRA copy of the policy, pi_phi, fitted against
  pi_old (the log-probs the agent recorded) by trajectory-level DPO; step rewards
  r_t = beta (log pi_phi(a_t|s_t) - log pi_old(a_t|s_t)), a_t the reply (generate mode) or the chosen
  candidate (score mode). OUT/oprl/ holds its adapters over the starting model.
- `values` (`TextCritic`, for gae, evpo and spa): V(s_t) from a small text network's value head,
  read before the estimator and fitted to its returns after, as PPO's critic is.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.rewards.estimators import NEEDS, explained_variance
from turngym.trainers.collect import Collected, TextActor, Turns
from turngym.trainers.config import LMTrainConfig
from turngym.trainers.credit import (
    CreditModel,
    SPATrainer,
    dpo_loss,
    preference_figures,
    preference_pairs,
    returns_of,
)
from turngym.trainers.lm import Policy, add_lora, chunks, make_samples, turn_logpi
from turngym.trainers.prm import PRMTrainer
from turngym.trajectory import Trajectory

Learned = dict[str, list[np.ndarray]]  # a Rollouts field -> one value per turn, per trajectory


def turn_batch(trajectories: Sequence[Trajectory], groups: Sequence[int]) -> Collected:
    """The LM's turns in the form the small networks read (trainers/collect.py's `Collected`):
    each turn's observation text with the action taken as its one candidate, read by
    `TextActor.scores`."""
    turns, inputs, at = [], [], 0
    for traj in trajectories:
        turns.append(list(range(at, at + len(traj))))
        inputs += [({"text": turn.text, "image": None}, [turn.action]) for turn in traj.turns]
        at += len(traj)
    zeros = torch.zeros(at)
    return Collected(list(trajectories), list(groups), turns, Turns(inputs), torch.zeros(at, dtype=torch.long),
                     zeros, zeros, [0.0] * len(trajectories))


class TurnModel:
    """A small-network `CreditModel` (AgentPRM's PRM, SPA's progress estimator) over an LM's turns."""

    def __init__(self, model: CreditModel) -> None:
        self.model = model
        self.name = model.name

    def update(self, trajectories: Sequence[Trajectory], groups: Sequence[int],
               generator: torch.Generator) -> tuple[dict[str, float], Learned]:
        """Fit on the update's turns; its figures and its per-turn outputs in its Rollouts field."""
        batch = turn_batch(trajectories, groups)
        stats = self.model.fit(TextActor, batch, generator)
        learned = self.model.per_turn(TextActor, batch)
        return {**stats, **self.model.figures(batch, learned)}, {self.model.field: learned}

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)

    def save(self, out: Path, **meta: Any) -> None:
        self.model.save(out / f"{self.name}.pt", **meta)


class ImplicitLM:
    """OPRL's implicit PRM for an LM policy: pi_phi, a LoRA copy of the policy (its own adapters
    copied when the policy trains LoRA, else fresh adapters on a copy of the starting model, B = 0),
    so pi_phi = pi_old at first. Each update fits it by the trajectory-level DPO loss of
    trainers/credit.py,
        s_i = sum_t [log pi_phi(a_t|s_t) - log pi_old(a_t|s_t)],  L = -mean_{(w, l)} log sigmoid(beta (s_w - s_l)),
    over every pair of one group's episodes with R_w > R_l, `credit_epochs` full-batch steps. The
    loss is not a sum over turns, so a step runs twice: a pass without gradients gives every s_i
    and dL/ds_i, then the turns go through in micro-batches, backpropagating sum_t dL/ds_i(t)
    log pi_phi(a_t|s_t), which is exactly dL/dphi with one micro-batch of activations in memory.
    Score-mode turns with one candidate have log pi = 0 under any weights: their step reward is 0."""

    name = "oprl"

    def __init__(self, policy: Policy, config: LMTrainConfig) -> None:
        self.policy, self.config, self.beta = policy, config, config.oprl_beta
        self.model = copy.deepcopy(policy.model)
        if not policy.lora:
            self.model = add_lora(self.model.requires_grad_(False), config)
        self.model.eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.credit_lr, weight_decay=0.0)

    def turns(self, trajectories: Sequence[Trajectory]) -> tuple[list[Any], np.ndarray]:
        """The turns as the policy's loss sees them (Samples or Choices), and each one's flat turn
        index: built with that index as the advantage, which is how one reads which turn a sample
        is (score mode leaves single-candidate turns out)."""
        at, flat = 0, []
        for traj in trajectories:
            flat.append(np.arange(at, at + len(traj), dtype=np.float64))
            at += len(traj)
        samples = make_samples(self.policy, trajectories, flat)
        return samples, np.array([int(s.advantage) for s in samples], dtype=np.int64)

    def logprobs(self, part: Sequence[Any]) -> torch.Tensor:
        """log pi_phi(a_t|s_t) of each turn of `part`: the reply's summed token log-probs, or the
        chosen candidate's log-prob among the turn's candidates."""
        return turn_logpi(self.model, part, self.policy)

    @staticmethod
    def old_logprob(sample: Any) -> float:
        """log pi_old(a_t|s_t) as recorded when the turn was played."""
        return float(sum(sample.logprobs)) if hasattr(sample, "ids") else float(sample.logprob)

    def log_ratios(self, samples: Sequence[Any]) -> np.ndarray:
        """log pi_phi - log pi_old of every sample, without gradients."""
        micro = self.config.micro_batch_size or self.config.minibatch_size
        with torch.no_grad():
            phi = np.concatenate([self.logprobs(part).double().cpu().numpy() for part in chunks(samples, micro)]
                                 or [np.zeros(0)])
        return phi - np.array([self.old_logprob(s) for s in samples])

    def per_turn(self, trajectories: Sequence[Trajectory], owner: np.ndarray,
                 ratios: np.ndarray) -> list[np.ndarray]:
        """The step rewards r_t = beta `ratios` of the samples, per trajectory (0 for turns without
        a sample)."""
        flat = np.zeros(sum(len(t) for t in trajectories))
        flat[owner] = self.beta * ratios
        return np.split(flat, np.cumsum([len(t) for t in trajectories])[:-1])

    def figures(self, trajectories: Sequence[Trajectory], groups: Sequence[int],
                rewards: list[np.ndarray]) -> dict[str, float]:
        return preference_figures(returns_of(trajectories), groups, rewards)

    def backward(self, samples: Sequence[Any], episode: np.ndarray, episodes: int,
                 pairs: Sequence[tuple[int, int]], ratios: np.ndarray | None = None) -> float:
        """Accumulate dL_DPO/dphi in the adapters' .grad (the class docstring's two passes): sample k
        belongs to episode `episode[k]` of `episodes`; `ratios`, the samples' log-ratios under the
        current weights where already known. Returns L_DPO."""
        owner = torch.as_tensor(episode, dtype=torch.long)
        ratios = self.log_ratios(samples) if ratios is None else ratios
        s = torch.zeros(episodes, dtype=torch.float64).index_add(0, owner, torch.as_tensor(ratios))
        s.requires_grad_(True)
        loss = dpo_loss(s, pairs, self.beta)
        loss.backward()
        weight = s.grad[owner].float()  # dL/ds of each sample's episode
        micro = self.config.micro_batch_size or self.config.minibatch_size
        for start in range(0, len(samples), micro):
            part = samples[start:start + micro]
            (weight[start:start + len(part)].to(self.policy.device) * self.logprobs(part)).sum().backward()
        return float(loss.detach())

    def update(self, trajectories: Sequence[Trajectory], groups: Sequence[int],
               generator: torch.Generator) -> tuple[dict[str, float], Learned]:
        """Fit pi_phi on the update's episodes; the figures before and after, and the step rewards."""
        samples, owner = self.turns(trajectories)
        episode = np.repeat(np.arange(len(trajectories)), [len(t) for t in trajectories])[owner]
        pairs = preference_pairs(returns_of(trajectories), groups)
        ratios = self.log_ratios(samples)
        stats = {f"{k}_before": v for k, v in
                 self.figures(trajectories, groups, self.per_turn(trajectories, owner, ratios)).items()}
        for epoch in range(self.config.credit_epochs if pairs else 0):
            self.optimizer.zero_grad(set_to_none=True)
            self.backward(samples, episode, len(trajectories), pairs, ratios if epoch == 0 else None)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.optimizer.step()
        rewards = self.per_turn(trajectories, owner, self.log_ratios(samples))
        return {**stats, **self.figures(trajectories, groups, rewards)}, {"step_rewards": rewards}

    def state_dict(self) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        return {"adapters": get_peft_model_state_dict(self.model), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state["adapters"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save(self, out: Path, **meta: Any) -> None:
        """OUT/oprl/: pi_phi's adapters (peft's folder) over the model the run started from."""
        self.model.save_pretrained(out / self.name)


def make_credit(config: LMTrainConfig, policy: Policy) -> TurnModel | ImplicitLM | None:
    """The learned credit of `config.algo`: prm, spa or oprl (None for the other estimators)."""
    from turngym.agents.neural import new_policy

    if config.algo == "prm":
        return TurnModel(PRMTrainer(new_policy(seed=config.seed), config))
    if config.algo == "spa":
        return TurnModel(SPATrainer(new_policy(seed=config.seed), config))
    if config.algo == "oprl":
        return ImplicitLM(policy, config)
    return None


class TextCritic:
    """V(s) for an LM's turns: the value head of a small text network (agents/neural.py) over the
    observation text. The estimator reads V(s_0..s_{T-1}) and V(s_T) = 0 (an LM episode ends at
    the task's end or its turn limit, which is part of the task); afterwards the critic takes
    `credit_epochs` passes of minibatches of `credit_minibatch_size` turns towards the
    estimator's returns (mean squared error), so the next update reads a better one."""

    name = "critic"

    def __init__(self, config: LMTrainConfig) -> None:
        from turngym.agents.neural import new_policy

        self.config = config
        self.net = new_policy(seed=config.seed + 5).eval()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.credit_lr, fused=True)

    def predict(self, batch: Collected, rows: np.ndarray) -> torch.Tensor:
        observations = [batch.inputs[r][0] for r in rows]
        return self.net(self.net.encode(observations, [[] for _ in rows]))[1]

    def values(self, batch: Collected) -> list[np.ndarray]:
        with torch.no_grad():
            flat = np.concatenate([self.predict(batch, rows).double().numpy()
                                   for rows in chunks(np.arange(len(batch.inputs)), 1024)] or [np.zeros(0)])
        return [np.append(flat[idx], 0.0) for idx in batch.turns]

    def fit(self, batch: Collected, returns: list[np.ndarray], generator: torch.Generator,
            values: list[np.ndarray]) -> dict[str, float]:
        targets = torch.as_tensor(np.concatenate([np.asarray(r)[:len(idx)] for r, idx in zip(returns, batch.turns,
                                                                                            strict=True)]),
                                  dtype=torch.float32)
        before = np.concatenate([v[:-1] for v in values])
        losses = []
        self.net.train()
        for _ in range(self.config.credit_epochs):
            order = torch.randperm(len(targets), generator=generator).numpy()
            for rows in chunks(order, self.config.credit_minibatch_size):
                rows = np.asarray(rows)
                loss = ((self.predict(batch, rows) - targets[rows]) ** 2).mean()
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.net.eval()
        return {"critic_loss": float(np.mean(losses)) if losses else 0.0,
                "critic_ev": explained_variance(targets.numpy().astype(np.float64), before)}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save(self, out: Path, **meta: Any) -> None:
        self.net.save(out / "critic.pt", critic=True, **meta)


def make_critic(config: LMTrainConfig) -> TextCritic | None:
    """A critic when the estimator reads values (gae, evpo, spa)."""
    return TextCritic(config) if "values" in NEEDS[config.algo] else None
