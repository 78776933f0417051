"""Run an agent on a split of an env and summarise the episodes (`turngym run` and the demo)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
from rich.progress import Progress

from turngym.rollout import rollout
from turngym.trajectory import Trajectory


@dataclass(frozen=True)
class Summary:
    """Aggregate results of one agent on one env configuration."""

    env_id: str
    agent: str
    episodes: int
    success_rate: float
    mean_score: float
    score_se: float  # standard error of the mean score
    mean_turns: float
    invalid_rate: float  # share of turns whose action was invalid
    parts: dict[str, float]  # mean of each numeric score part (e.g. achievement rates, reward components)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(env_id: str, agent: str, trajectories: list[Trajectory]) -> Summary:
    n = len(trajectories)
    if n == 0:
        raise ValueError("no episodes to summarise")
    scores = [t.score for t in trajectories]
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    turns = sum(len(t) for t in trajectories)
    invalid = sum(not turn.info.get("valid", True) for t in trajectories for turn in t.turns)
    values: dict[str, list[float]] = {}
    for t in trajectories:
        for key, value in t.score_parts.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    parts = {key: sum(v) / len(v) for key, v in values.items()}
    return Summary(env_id, agent, n, sum(t.success for t in trajectories) / n, mean, math.sqrt(var / n),
                   turns / n, invalid / max(turns, 1), parts)


def run_episodes(env_id: str, agent: str, episodes: int, *, split: str = "test", seed: int = 0,
                 env_kwargs: dict[str, Any] | None = None, record_images: bool = False,
                 progress: Progress | None = None, agent_options: dict[str, Any] | None = None) -> list[Trajectory]:
    """Episode i plays task i of `split` from `reset(seed=seed + i)` (split "train" samples tasks);
    `agent_options` go to `make_agent` (sampling settings of language-model agents, say)."""
    from turngym.agents import make_agent  # the kernel imports agents only when it runs them

    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        tasks = env.unwrapped.splits.get(split)
        if tasks is None:
            raise ValueError(f"{env_id} has no split {split!r}: use one of {sorted(env.unwrapped.splits)}")
        if split != "train" and episodes > len(tasks):
            raise ValueError(f"split {split!r} of {env_id} has {len(tasks)} tasks; asked for {episodes} episodes")
        actor = make_agent(agent, env, **(agent_options or {}))
        job = progress.add_task(f"{agent} on {env_id}", total=episodes) if progress else None
        trajectories = []
        for i in range(episodes):
            options = None if split == "train" else {"split": split, "index": i}
            traj = rollout(env, actor, seed=seed + i, options=options, record_images=record_images)
            traj.meta.update(agent=agent, env_kwargs=dict(env_kwargs or {}), split=split)
            trajectories.append(traj)
            if progress:
                progress.advance(job)
        return trajectories
    finally:
        env.close()

