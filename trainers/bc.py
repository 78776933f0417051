"""Behaviour cloning: fit a `NeuralPolicy` to an expert's choices (usually the family's oracle).

Top to bottom: play expert episodes (`collect`), turn every turn into (observation, the env's
candidate actions, which candidate the expert took) (`demonstrations`), and minimise the
cross-entropy of the policy's softmax over candidates with Adam (`clone`).

`collect(noise=p)` executes a random admissible action instead of the expert's with probability p
while still labelling the turn with the expert's choice (DART): the clone then also sees, and
learns to recover from, the states its own mistakes lead to.

`clone(label_smoothing=e)` moves e of each label's mass evenly over the turn's candidates. A clone of a
deterministic rule otherwise ends with no entropy: every rollout of an RL group then plays the same
episode, every advantage is zero, and RL after the clone has nothing to learn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import Progress

from turngym.agents import Agent, make_agent
from turngym.agents.neural import NeuralPolicy, Propose, proposer
from turngym.rollout import rollout
from turngym.trainers.collect import Turns
from turngym.trajectory import Trajectory


class _Noisy(Agent):
    """The expert, with a random admissible action executed instead at rate `noise`; the expert's
    own choice is recorded as the label (`extras["expert"]`)."""

    def __init__(self, expert: Agent, noise: float, propose: Propose) -> None:
        self.expert, self.noise, self.propose = expert, noise, propose
        self.rng = np.random.default_rng(0)

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.expert.reset(obs, info, seed=seed)
        self.rng = np.random.default_rng([0 if seed is None else seed, 0xDA27])

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        label = self.expert.act(obs, info)
        self.last_record = {"extras": {"expert": label}}
        candidates = self.propose(obs, info)
        if candidates and self.rng.random() < self.noise:
            return candidates[int(self.rng.integers(len(candidates)))]
        return label


def collect(env_id: str, episodes: int, *, env_kwargs: dict[str, Any] | None = None, expert: str = "oracle",
            seed: int = 0, noise: float = 0.0, images: bool = False,
            progress: Progress | None = None) -> list[Trajectory]:
    """Expert episodes on training tasks, episode i from `reset(seed=seed + i)` (keep the
    observation images with `images=True`, for policies that look at them)."""
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        agent = _Noisy(make_agent(expert, env), noise, proposer(env))
        job = progress.add_task(f"{expert} episodes", total=episodes) if progress else None
        trajectories = []
        for i in range(episodes):
            trajectories.append(rollout(env, agent, seed=seed + i, record_images=images))
            if progress:
                progress.advance(job)
        return trajectories
    finally:
        env.close()


@dataclass
class Demonstration:
    """One expert turn: what it saw, the candidates it had, and which one it chose."""

    obs: dict[str, Any]
    candidates: list[str]
    index: int


def demonstrations(trajectories: list[Trajectory], propose: Propose) -> list[Demonstration]:
    """Every turn whose expert action is among the env's candidates (the label is the expert's
    choice, `extras["expert"]`, where a noisy collection executed something else)."""
    samples = []
    for traj in trajectories:
        infos = [traj.reset_info] + [turn.info for turn in traj.turns[:-1]]
        for turn, info in zip(traj.turns, infos, strict=True):
            obs = {"text": turn.text, "image": turn.image}
            candidates = propose(obs, info)
            label = turn.extras.get("expert", turn.action)
            if label in candidates:
                samples.append(Demonstration(obs, candidates, candidates.index(label)))
    return samples


def smoothed_cross_entropy(logits: torch.Tensor, index: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy against labels with `smoothing` of their mass spread evenly over each row's
    candidates (its finite logits; torch's own label smoothing would spread it over the padding too)."""
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, index[:, None]).squeeze(1)
    if not smoothing:
        return nll.mean()
    valid = torch.isfinite(logits)
    uniform = -logp.masked_fill(~valid, 0.0).sum(-1) / valid.sum(-1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def clone(policy: NeuralPolicy, samples: list[Demonstration], *, epochs: int = 10, batch_size: int = 64,
          lr: float = 1e-3, seed: int = 0, label_smoothing: float = 0.0,
          progress: Progress | None = None) -> list[dict[str, float]]:
    """Train `policy` on `samples`; returns each epoch's mean loss and accuracy. Each sample is
    encoded once, and every epoch's minibatches join those encodings."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not samples:
        raise ValueError("no demonstrations to clone: the expert's actions never matched the env's candidates")
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr, fused=True)  # see trainers/ppo.py
    generator = torch.Generator().manual_seed(seed)
    job = progress.add_task("cloning", total=epochs) if progress else None
    inputs = Turns((s.obs, s.candidates) for s in samples)
    history = []
    policy.train()
    for epoch in range(epochs):
        order = torch.randperm(len(samples), generator=generator).tolist()
        loss_sum = correct = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = inputs.batch(policy, rows)
            index = torch.tensor([samples[k].index for k in rows])
            logits, _ = policy(batch)
            loss = smoothed_cross_entropy(logits, index, label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            loss_sum += loss.item() * len(rows)
            correct += float((logits.argmax(-1) == index).sum())
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(samples), "accuracy": correct / len(samples)})
        if progress:
            progress.update(job, advance=1, description=f"cloning (loss {history[-1]['loss']:.3f})")
    return history
