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
            action = candidates[int(self.rng.integers(len(candidates)))]
            self.expert.played(action)
            return action
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
    if not samples:
        raise ValueError("no demonstrations to clone: the expert's actions never matched the env's candidates")
    inputs = Turns((s.obs, s.candidates) for s in samples)
    labels = torch.tensor([s.index for s in samples])

    def forward(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return policy(inputs.batch(policy, rows))[0], labels[rows]

    return _fit(policy, forward, len(samples), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                label_smoothing=label_smoothing, progress=progress)


def collect_symbolic(env_id: str, episodes: int, *, env_kwargs: dict[str, Any] | None = None,
                     expert: str = "oracle", seed: int = 0, noise: float = 0.0, landmarks: tuple[str, ...] = (),
                     progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Expert turns as the symbolic policy reads them (Craft made with `symbolic=True`): the arrays
    of OBS_KEYS, the landmark memory's features where `landmarks` are remembered (kept exactly as
    SymbolicAgent keeps them, from the actions executed), `mask` (the admissible primitive actions)
    and `label` (the expert's action)."""
    from turngym.agents.landmarks import LandmarkMemory
    from turngym.agents.symbolic import MEMORY_KEY, OBS_KEYS
    from turngym.envs.craft import load_rules

    env = gym.make(env_id, **(env_kwargs or {}))
    if "view" not in env.observation_space.spaces:
        raise ValueError("a symbolic clone reads Craft's symbolic observation: make the env with symbolic=True "
                         "(`-k symbolic=true`)")
    if getattr(env.unwrapped, "action_mode", "primitive") != "primitive":
        raise ValueError("the symbolic policy plays primitive actions: leave action_mode at primitive")
    rules = load_rules()
    index = {a: i for i, a in enumerate(rules.actions)}
    view = env.observation_space["view"].shape[0]
    memory = LandmarkMemory(rules, landmarks, 1, view) if landmarks else None
    row = np.zeros(1, np.int64)
    columns: dict[str, list[Any]] = {k: [] for k in (*OBS_KEYS, MEMORY_KEY, "mask", "label")}
    try:
        agent = _Noisy(make_agent(expert, env), noise, lambda obs, info: list(info["actions"]))
        job = progress.add_task(f"{expert} episodes", total=episodes) if progress else None
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            agent.reset(obs, info, seed=seed + i)
            if memory is not None:
                memory.reset(row, np.asarray(obs["view"])[None])
            done = False
            while not done:
                action = agent.act(obs, info)
                mask = np.zeros(len(rules.actions), bool)
                mask[[index[a] for a in info["actions"] if a in index]] = True
                for k in OBS_KEYS:
                    columns[k].append(np.asarray(obs[k]))
                if memory is not None:
                    columns[MEMORY_KEY].append(memory.features(row)[0])
                columns["mask"].append(mask)
                columns["label"].append(index[agent.last_record["extras"]["expert"]])
                before = np.asarray(obs["view"])[None]
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if memory is not None and not done:
                    memory.step(row, before, np.array([index[action]]), np.asarray(obs["view"])[None])
            if progress:
                progress.advance(job)
    finally:
        env.close()
    return {k: np.stack(v) for k, v in columns.items() if v}


def clone_symbolic(policy: torch.nn.Module, data: dict[str, np.ndarray], *, epochs: int = 10,
                   batch_size: int = 256, lr: float = 1e-3, seed: int = 0, label_smoothing: float = 0.0,
                   progress: Progress | None = None) -> list[dict[str, float]]:
    """Train a SymbolicPolicy on `collect_symbolic`'s turns (masked to each turn's admissible actions);
    returns each epoch's mean loss and accuracy."""
    from turngym.agents.symbolic import as_tensors

    inputs = as_tensors(data)
    mask, labels = torch.from_numpy(data["mask"]), torch.from_numpy(data["label"]).long()

    def forward(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return policy({k: v[rows] for k, v in inputs.items()}, mask[rows])[0], labels[rows]

    return _fit(policy, forward, len(labels), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                label_smoothing=label_smoothing, progress=progress)


def _fit(policy: torch.nn.Module, forward: Any, n: int, *, epochs: int, batch_size: int, lr: float, seed: int,
         label_smoothing: float, progress: Progress | None) -> list[dict[str, float]]:
    """Minimise the (smoothed) cross-entropy of `forward(rows)` = (logits, labels) over `n` samples with
    Adam, in shuffled minibatches; each epoch's mean loss and accuracy."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr, fused=True)  # see trainers/ppo.py
    generator = torch.Generator().manual_seed(seed)
    job = progress.add_task("cloning", total=epochs) if progress else None
    history = []
    policy.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).tolist()
        loss_sum = correct = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            logits, index = forward(rows)
            loss = smoothed_cross_entropy(logits, index, label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            loss_sum += loss.item() * len(rows)
            correct += float((logits.argmax(-1) == index).sum())
        history.append({"epoch": epoch + 1, "loss": loss_sum / n, "accuracy": correct / n})
        if progress:
            progress.update(job, advance=1, description=f"cloning (loss {history[-1]['loss']:.3f})")
    return history
