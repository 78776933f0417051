"""eva's task curriculum: replay and evolve the tasks whose rollouts disagree most.

A group-relative trainer (GRPO, RLOO, ...) learns nothing from a group whose G returns are all
equal: every advantage is zero and the rollouts are wasted. eva (Ye et al. 2024, "Evolving
Alignment via Asymmetric Self-Play") steers the task distribution towards tasks whose groups
disagree. Its creator keeps a buffer of tasks with the informativeness of their last group and,
for each update of `n` groups:

  1. samples `ceil(sample_frac * n)` parents from the buffer, without replacement, with probability
     proportional to their informativeness (uniformly while no task has any);
  2. evolves `children` children from each parent (`evolve(task_id, rng)`, e.g. a Craft task that
     starts with a pickaxe); a parent with no child (an env that cannot evolve tasks) is replayed;
  3. fills `round(new_frac * n)` groups with those tasks (one child per parent in turn, so every
     parent is represented) and the rest with fresh draws from the run's own task distribution,
     eva's "old" prompts, which keep the training mix anchored to the tasks it is tested on.

After the update the trainer feeds each group's returns back (`update`) and the buffer keeps the
latest informativeness of every task it played (the oldest dropped first beyond `buffer_size`).

Informativeness of one group's returns r_1..r_G (`METRICS`): `max_min` max r - min r (eva's
default), `max_mean` max r - mean r, `variance` the population variance, `learnability` p (1 - p)
with p the mean return clipped to [0, 1] (a success rate for 0/1 returns), `uniform` 1. On 0/1
success most of them say little (max_min is 1 for any mixed group), so they read a graded signal
(`SIGNALS`): the return the trainer optimizes (with a code reward or Craft's `reward="progress"`),
the env's final score, or the `progress` score part.

Task ids are strings: a family's training split ids (`wood_pickaxe:123`), evolved ones with
`+key=value` modifiers (`wood_pickaxe:123+start=wood`). `Curriculum` is pure logic over them;
`from_config` binds it to a run's env.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from turngym.registry import env_class
from turngym.trajectory import Trajectory

if TYPE_CHECKING:
    from turngym.trainers.config import NeuralTrainConfig

Evolve = Callable[[str, np.random.Generator], "str | None"]


def _learnability(r: np.ndarray) -> float:
    p = min(max(float(r.mean()), 0.0), 1.0)
    return p * (1 - p)


METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "max_min": lambda r: float(r.max() - r.min()),
    "max_mean": lambda r: float(r.max() - r.mean()),
    "variance": lambda r: float(r.var()),
    "learnability": _learnability,
    "uniform": lambda r: 1.0,
}
SIGNALS = ("return", "score", "progress")
SOURCES = ("fresh", "evolved", "replayed")  # where a proposed task came from


def informativeness(metric: str, returns: Sequence[float]) -> float:
    """How much one group's returns can teach, by `metric` (one of METRICS). Never negative: the
    max - mean of equal returns can round to -1e-17, and a sampling weight must not."""
    return max(METRICS[metric](np.asarray(returns, dtype=np.float64)), 0.0)


def signal_of(traj: Trajectory, signal: str) -> float:
    """One rollout's `signal` (one of SIGNALS)."""
    if signal == "return":
        return traj.total_reward
    if signal == "score":
        return traj.score
    if "progress" in traj.score_parts:
        return traj.score_parts["progress"]
    raise ValueError(f"the rollouts of {traj.task_id!r} carry no progress score part: use signal return "
                     "(with Craft's -k reward=progress for partial credit) or score")


def group_signals(trajectories: Sequence[Trajectory], groups: Sequence[int], signal: str) -> list[np.ndarray]:
    """Each group's per-rollout `signal` (one of SIGNALS), groups in index order."""
    out: dict[int, list[float]] = {}
    for traj, g in zip(trajectories, groups, strict=True):
        out.setdefault(g, []).append(float(signal_of(traj, signal)))
    return [np.asarray(out[g]) for g in sorted(out)]


def all_equal_share(returns_per_group: Sequence[Sequence[float]], tol: float = 1e-9) -> float:
    """The share of groups whose returns are all equal: zero group-relative advantage, wasted rollouts."""
    flat = [np.ptp(np.asarray(r, dtype=np.float64)) <= tol for r in returns_per_group]
    return float(np.mean(flat)) if flat else 0.0


def modifiers(task_id: str) -> list[str]:
    """The keys of a task id's `+key=value` modifiers (`stone_pickaxe:1+start=wood+spawn=near`: start, spawn)."""
    return [part.partition("=")[0] for part in task_id.split("+")[1:] if "=" in part]


def normalized(infos: np.ndarray) -> np.ndarray:
    """Sampling probabilities proportional to informativeness; uniform when no task has any."""
    total = float(infos.sum())
    return infos / total if total > 0 else np.full(len(infos), 1.0 / len(infos))


@dataclass(frozen=True)
class Proposal:
    task_id: str
    source: str  # one of SOURCES
    depth: int  # evolutions from a fresh draw


class Curriculum:
    """eva's buffer, sampling, evolution and mix (see the module docstring).

    `fresh(rng)` draws a task id of the run's own distribution; `evolve(task_id, rng)` returns a
    child task id or None (None for `evolve` itself: the family cannot evolve, parents are replayed).
    """

    def __init__(self, fresh: Callable[[np.random.Generator], str], evolve: Evolve | None = None, *,
                 metric: str = "max_min", sample_frac: float = 0.25, children: int = 4, new_frac: float = 0.8,
                 buffer_size: int = 256, seed: int | Sequence[int] = 0) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown curriculum metric {metric!r}: use one of {', '.join(METRICS)}")
        for name, value in (("sample_frac", sample_frac), ("new_frac", new_frac)):
            if not 0 <= value <= 1:
                raise ValueError(f"curriculum {name} must be in [0, 1], got {value}")
        if children < 1 or buffer_size < 1:
            raise ValueError(f"curriculum children and buffer size must be at least 1, got {children} and "
                             f"{buffer_size}")
        self.fresh, self.evolve, self.metric = fresh, evolve, metric
        self.sample_frac, self.children, self.new_frac, self.buffer_size = sample_frac, children, new_frac, buffer_size
        self.rng = np.random.default_rng(seed)
        self.buffer: OrderedDict[str, tuple[float, int]] = OrderedDict()  # task id -> (informativeness, depth)
        self.proposed: list[Proposal] = []

    def weights(self) -> np.ndarray:
        """The buffer's sampling probabilities, in buffer order (oldest first)."""
        return normalized(np.array([info for info, _ in self.buffer.values()]))

    def propose(self, groups: int) -> list[str]:
        """The task ids of the next update's `groups` groups."""
        curriculum = self._curriculum_tasks(round(self.new_frac * groups), groups)
        self.proposed = curriculum + [Proposal(self.fresh(self.rng), "fresh", 0)
                                      for _ in range(groups - len(curriculum))]
        return [p.task_id for p in self.proposed]

    def _curriculum_tasks(self, slots: int, groups: int) -> list[Proposal]:
        if not self.buffer or not slots:
            return []
        ids, w = list(self.buffer), self.weights()
        k = min(math.ceil(self.sample_frac * groups), int(np.count_nonzero(w)))
        if not k:
            return []
        parents = [ids[i] for i in self.rng.choice(len(ids), size=k, replace=False, p=w)]
        taken = set()
        offspring = []  # per parent, its distinct children
        for parent in parents:
            depth = self.buffer[parent][1] + 1
            kids = []
            for _ in range(self.children if self.evolve else 0):
                child = self.evolve(parent, self.rng)
                if child is not None and child not in taken:
                    taken.add(child)
                    kids.append(Proposal(child, "evolved", depth))
            offspring.append(kids or [Proposal(parent, "replayed", depth - 1)])
        # round-robin over the parents, so a short update still plays every parent's line
        ordered = [kids[i] for i in range(max(map(len, offspring))) for kids in offspring if i < len(kids)]
        return ordered[:slots]

    def update(self, task_ids: Sequence[str], returns_per_group: Sequence[Sequence[float]]) -> dict[str, float]:
        """Record each group's informativeness; returns the update's curriculum metrics: the task
        mix (`mix/<source>` and `mod/<modifier>` shares of the groups), the mean informativeness
        by every metric (`info/<metric>`, the ablation on the same groups), and the buffer size."""
        if len(task_ids) != len(returns_per_group):
            raise ValueError(f"got {len(task_ids)} task ids for {len(returns_per_group)} groups")
        proposed = {p.task_id: p for p in self.proposed}
        for task_id, returns in zip(task_ids, returns_per_group, strict=True):
            depth = proposed[task_id].depth if task_id in proposed else 0
            self.buffer.pop(task_id, None)  # re-inserted last: the newest measurement
            self.buffer[task_id] = (informativeness(self.metric, returns), depth)
        while len(self.buffer) > self.buffer_size:
            self.buffer.popitem(last=False)
        played = [proposed.get(t, Proposal(t, "fresh", 0)) for t in task_ids]
        n = len(played)
        sources = Counter(p.source for p in played)
        mods = Counter(key for p in played for key in set(modifiers(p.task_id)))
        return {**{f"mix/{s}": sources[s] / n for s in SOURCES}, **{f"mod/{k}": c / n for k, c in sorted(mods.items())},
                **{f"info/{m}": float(np.mean([informativeness(m, r) for r in returns_per_group])) for m in METRICS},
                "curriculum_depth": float(np.mean([p.depth for p in played])), "curriculum_buffer": len(self.buffer)}

    def state_dict(self) -> dict[str, Any]:
        """The buffer and the random stream: what a resumed run needs to propose the same tasks."""
        return {"buffer": [[t, info, depth] for t, (info, depth) in self.buffer.items()],
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.buffer = OrderedDict((t, (float(info), int(depth))) for t, info, depth in state["buffer"])
        self.rng.bit_generator.state = state["rng"]


def from_config(config: NeuralTrainConfig) -> Curriculum | None:
    """The run's curriculum (None with `curriculum="none"`). Fresh draws come from the tasks the run
    plays without one: its one task id, the split its reset options name, else the env's training
    split (Craft: `<task>:<world seed>`); the frozen test split stays for evaluation. Children come
    from the env class's `TurnEnv.evolve_task(task_id, rng)` (None from a family that cannot evolve)."""
    if config.curriculum == "none":
        return None
    kwargs, options = config.env_setup()
    options = options or {}
    if "task_id" in options:
        pool: Sequence[str] = [str(options["task_id"])]
    else:
        env = gym.make(config.env_id, **kwargs)
        pool = env.unwrapped.splits[options.get("split", "train")]
        env.close()
    evolve = getattr(env_class(config.env_id), "evolve_task", None)  # None: a plain Gymnasium env
    return Curriculum(lambda rng: pool[int(rng.integers(len(pool)))], evolve, metric=config.curriculum_metric,
                      sample_frac=config.curriculum_sample_frac, children=config.curriculum_children,
                      new_frac=config.curriculum_new_frac, buffer_size=config.curriculum_buffer,
                      seed=[config.seed, 1])  # a stream apart from the trainer's own default_rng(seed)
