"""Group rollouts: G episodes of each task from the same seed, played by a policy on a vector env.

Group-relative estimators (GRPO, RLOO, SPO, GiGPO) compare rollouts of the *same* task, so every
update resets `groups x G` envs, the G envs of a group with one training seed (same world, same
dynamics), and plays until every episode has ended. Two backends share the loop:

- `SymbolicActor`: an env family's fast vector backend (`TurnEnv.vector_backend`: Craft's
  `CraftVectorEnv`, NumPy, thousands of worlds a second) and `SymbolicPolicy`;
- `TextActor`: any turngym env in a Gymnasium `SyncVectorEnv` and the text `NeuralPolicy`,
  scoring the candidates the env's family proposes.

What comes back (`Collected`) holds the trajectories (what estimators read) and, turn by turn in
one flat order, what the policy needs to re-evaluate its choices (inputs, chosen index, old
log-prob and value).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from turngym.agents.neural import Batch, NeuralPolicy, choice_stats, proposer, unbatch
from turngym.agents.symbolic import SymbolicPolicy, as_tensors, obs_keys
from turngym.trajectory import Trajectory, Turn

TRAIN_SEEDS = 2**31  # training worlds and tasks come from seeds below this (test and dev lie above)


@dataclass
class Collected:
    """One update's rollouts. `turns[i]` lists trajectory i's flat turn indices, in order."""

    trajectories: list[Trajectory]
    groups: list[int]
    turns: list[list[int]]
    inputs: Any  # backend-specific, indexed by flat turn
    index: torch.Tensor
    logprob: torch.Tensor
    value: torch.Tensor
    bootstrap: list[float]  # V(s_T) of each trajectory (0 when it terminated)
    env_steps: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    def values(self) -> list[np.ndarray]:
        """Per trajectory: V(s_0..s_{T-1}) from collection time, then the bootstrap."""
        v = self.value.numpy().astype(np.float64)
        return [np.append(v[idx], b) for idx, b in zip(self.turns, self.bootstrap, strict=True)]


class SymbolicActor:
    """A family's fast vector backend (`CraftVectorEnv`) + SymbolicPolicy."""

    def __init__(self, policy: SymbolicPolicy, env: gym.vector.VectorEnv) -> None:
        self.policy = policy
        self.env = env
        self.names = env.rules.actions

    def reset(self, seeds: list[int], task_ids: list[str] | None = None) -> tuple[Any, Any]:
        return self.env.reset(seed=seeds, options=None if task_ids is None else {"task_ids": task_ids})

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any], rows: np.ndarray,
            generator: torch.Generator) -> tuple[np.ndarray, dict[str, np.ndarray], torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
        mask = torch.from_numpy(info["action_mask"][rows])
        logits, value = self.policy(as_tensors(obs, rows), mask)
        index = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        logp, _ = choice_stats(logits, index)
        actions = np.full(self.env.num_envs, 5, np.int64)  # noop for envs whose episode is over
        actions[rows] = index.numpy()
        inputs = {k: np.asarray(obs[k])[rows].copy() for k in obs_keys(obs)}
        inputs["mask"] = info["action_mask"][rows].copy()
        return actions, inputs, index, logp, value

    @torch.no_grad()
    def value(self, obs: dict[str, np.ndarray], rows: np.ndarray) -> torch.Tensor:
        return self.policy(as_tensors(obs, rows))[1]

    def evaluate(self, inputs: dict[str, np.ndarray], rows: np.ndarray, index: torch.Tensor,
                 network: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = network or self.policy
        logits, values = net(as_tensors(inputs, rows), torch.from_numpy(inputs["mask"][rows]))
        return (*choice_stats(logits, index), values)

    def scores(self, network: torch.nn.Module, inputs: dict[str, np.ndarray], rows: np.ndarray,
               index: torch.Tensor) -> torch.Tensor:
        """M(s, a) of the chosen actions, reading `network`'s action outputs as scores (the PRM)."""
        logits, _ = network(as_tensors(inputs, rows))
        return logits.gather(1, index[:, None]).squeeze(1)

    def describe(self, obs: dict[str, np.ndarray], rows: np.ndarray, actions: np.ndarray) -> tuple[list[str],
                                                                                                  list[str], list[str]]:
        """Per row: observation text (none: symbolic), action name, and a compact state key."""
        keys = [hashlib.blake2b(b"".join(np.ascontiguousarray(np.asarray(obs[k])[r]).tobytes() for k in obs_keys(obs)),
                                digest_size=8).hexdigest() for r in rows]
        return [""] * len(rows), [self.names[a] for a in actions[rows]], keys

    @staticmethod
    def take(inputs: list[dict[str, np.ndarray]], order: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The chunks as one batch, its turns in `order` where given."""
        rows = slice(None) if order is None else order
        if len(inputs) == 1:  # (no copy of a whole batch to pick a few turns of it: self-imitation's episodes)
            return {k: np.asarray(v)[rows] for k, v in inputs[0].items()}
        return {k: np.concatenate([chunk[k] for chunk in inputs])[rows] for k in inputs[0]}

    def close(self) -> None:
        self.env.close()


class TaskAtReset(gym.Wrapper):
    """Resets with the task id in `next_task` when one is set, so that the envs of a SyncVectorEnv,
    which hands all of them the same reset options, can each play a task of their own."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.next_task: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if self.next_task is not None:
            options = {"task_id": self.next_task}  # in place of the run's split or task: one task, not both
        return self.env.reset(seed=seed, options=options)


class Turns(tuple):
    """A batch's text turns, each (observation, candidates), that encode each turn once per network
    config and keep the encodings while the batch lives: an update reads its turns every epoch, and
    a credit model's fit again (a clone, every epoch), and encoding was a quarter of a WebShop run's
    time. A tuple, so the turns cannot change under their encodings."""

    @functools.cached_property
    def _encoded(self) -> dict[Any, list[Batch | None]]:
        return {}

    def batch(self, net: NeuralPolicy, rows: Sequence[int]) -> Batch:
        """Turns `rows`, in that order, as `net` encodes them (equal to encoding them together)."""
        parts = self._encoded.setdefault(net.config, [None] * len(self))
        for r in rows:
            if parts[r] is None:
                obs, candidates = self[r]
                parts[r] = net.encode([obs], [candidates])
        return Batch.join([parts[r] for r in rows])

    def __reduce__(self) -> tuple[Any, ...]:  # a copy (to or from a Ray worker) carries the turns, not tensors
        return Turns, (tuple(self),)


class TextActor:
    """Any turngym env (each in a SyncVectorEnv slot) + the text NeuralPolicy."""

    def __init__(self, policy: NeuralPolicy, env_fn: Callable[[], gym.Env], num_envs: int,
                 options: dict[str, Any] | None = None) -> None:
        self.policy = policy
        self.env = gym.vector.SyncVectorEnv([lambda: TaskAtReset(env_fn())] * num_envs)
        self.propose = proposer(self.env.envs[0])
        self.n = num_envs
        self.options = options  # every reset's options (a task picked at reset: resolve_task)

    def reset(self, seeds: list[int], task_ids: list[str] | None = None) -> tuple[Any, Any]:
        for env, task_id in zip(self.env.envs, task_ids or [None] * self.n, strict=True):
            env.next_task = task_id
        return self.env.reset(seed=seeds, options=self.options)

    @torch.no_grad()
    def act(self, obs: dict[str, Any], info: dict[str, Any], rows: np.ndarray,
            generator: torch.Generator) -> tuple[np.ndarray, list[tuple[dict, list[str]]], torch.Tensor,
                                                 torch.Tensor, torch.Tensor]:
        observations, infos = unbatch(obs, info, self.n)
        obs_rows, info_rows = [observations[r] for r in rows], [infos[r] for r in rows]
        step = self.policy.act(obs_rows, info_rows, self.propose, generator=generator)
        actions = np.array([""] * self.n, dtype=object)
        actions[rows] = step.actions
        inputs = [({"text": o["text"], "image": o.get("image")}, self.propose(o, i))
                  for o, i in zip(obs_rows, info_rows, strict=True)]
        return actions, inputs, step.index, step.logprob, step.value

    @torch.no_grad()
    def value(self, obs: dict[str, Any], rows: np.ndarray) -> torch.Tensor:
        observations = [{k: v[r] for k, v in obs.items()} for r in rows]
        return self.policy(self.policy.encode(observations, [[] for _ in rows]))[1]

    def evaluate(self, inputs: Turns, rows: np.ndarray, index: torch.Tensor,
                 network: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = network or self.policy
        logits, values = net(inputs.batch(net, rows))
        return (*choice_stats(logits, index), values)

    @staticmethod
    def scores(network: torch.nn.Module, inputs: Turns, rows: np.ndarray, index: torch.Tensor) -> torch.Tensor:
        """The network's output for the action taken, M(s, a) where the network is a PRM (a static
        method: the LM trainer's PRM reads its turns with it too)."""
        logits, _ = network(inputs.batch(network, rows))
        taken = logits.gather(1, index.clamp(min=0)[:, None]).squeeze(1)
        return torch.where(index >= 0, taken, torch.zeros_like(taken))  # a turn with no candidates: 0, not -inf

    def describe(self, obs: dict[str, Any], rows: np.ndarray, actions: np.ndarray) -> tuple[list[str], list[str],
                                                                                            list[str]]:
        texts = [str(obs["text"][r]) for r in rows]
        return texts, [str(actions[r]) for r in rows], texts

    @staticmethod
    def take(inputs: list[Sequence[Any]], order: np.ndarray | None = None) -> Turns:
        """The chunks as one batch, its turns in `order` where given."""
        flat = [item for chunk in inputs for item in chunk]
        return Turns(flat if order is None else (flat[i] for i in order))

    def close(self) -> None:
        self.env.close()


def one_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run on one torch thread (the caller's count restored after): a Ray worker has one, and
    a matmul's low bits change with the thread count."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Torch's deterministic kernels inside (the caller's setting restored after): on more than one
    thread the CPU backward of the text policy's scatters (index_put, the n-gram bags) sums in
    whatever order the threads finish, and one run's gradients differed from the next in the low
    bits, so a same-seed run or a resumed one drifted from the first."""
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)


@one_thread
def collect_groups(actor: SymbolicActor | TextActor, seeds: list[int], group_size: int, env_id: str,
                   streams: torch.Generator | Sequence[int], *, task_ids: list[str] | None = None) -> Collected:
    """Play one episode in every env: group g's G envs all reset with `seeds[g]` (and play task
    `task_ids[g]` where given, e.g. a curriculum's; else the run's task distribution).

    Group g samples its actions from a random stream of its own (`streams[g]`; a generator
    stands for the seeds `group_streams` draws from it), and the policy scores each group's turns
    in a batch of their own on one thread, since a batch's size and the thread count change the
    low bits of a CPU matmul. So what a group plays depends on its seed and stream alone: any
    split of the groups, collected apart and joined by `join` (Ray workers,
    trainers/distributed.py), gives exactly this result."""
    if isinstance(streams, torch.Generator):
        streams = group_streams(streams, len(seeds))
    generators = [torch.Generator().manual_seed(s) for s in streams]
    n = len(seeds) * group_size
    per_env = None if task_ids is None else [t for t in task_ids for _ in range(group_size)]
    obs, info = actor.reset([s for s in seeds for _ in range(group_size)], per_env)
    task_ids = [str(t) for t in np.asarray(info.get("task_id", [""] * n), dtype=object)] \
        if "task_id" in info else list(getattr(actor.env, "task_ids", [""] * n))
    trajs = [Trajectory(env_id=env_id, task_id=task_ids[i], seed=seeds[i // group_size]) for i in range(n)]
    turns: list[list[int]] = [[] for _ in range(n)]
    inputs, index, logprob, value = [], [], [], []
    bootstrap = [0.0] * n
    alive = np.ones(n, bool)
    total, steps = 0, 0
    while alive.any():
        rows = np.flatnonzero(alive)
        parts = by_group(rows, group_size)
        chosen = [actor.act(obs, info, part, generators[part[0] // group_size]) for part in parts]
        actions = chosen[0][0]
        for part, (own, *_) in zip(parts, chosen, strict=True):
            actions[part] = own[part]  # each call fills its group's rows (and the defaults elsewhere)
        texts, names, keys = actor.describe(obs, rows, actions)
        obs, reward, terminated, truncated, info = actor.env.step(actions)
        valid = np.asarray(info.get("valid", np.ones(n, bool)))  # SPA's grounding reads it (rewards/estimators.py)
        steps += len(rows)
        for _, chunk, idx, logp, v in chosen:
            inputs.append(chunk)
            index.append(idx)
            logprob.append(logp)
            value.append(v)
        for k, r in enumerate(rows):
            turns[r].append(total + k)
            trajs[r].turns.append(Turn(text=texts[k], action=names[k], reward=float(reward[r]),
                                       info={"valid": bool(valid[r])}, extras={"state": keys[k]}))
        total += len(rows)
        done = (terminated | truncated) & alive
        ended = np.flatnonzero(done)
        cut = ended[truncated[ended] & ~terminated[ended]]
        for part in by_group(cut, group_size):  # a truncated episode's last state still has a value
            for r, b in zip(part, actor.value(obs, part).tolist(), strict=True):
                bootstrap[r] = float(b)
        for r in ended:
            t = trajs[r]
            t.terminated, t.truncated = bool(terminated[r]), bool(truncated[r] and not terminated[r])
            t.success = bool(np.asarray(info.get("success", np.zeros(n, bool)))[r])
            t.score = float(np.asarray(info.get("score", np.zeros(n)))[r])
            t.score_parts = ended_parts(info, r)
        alive &= ~done
    # trajectory by trajectory (not step by step), so that the turns of a split's parts, one after
    # another, are the turns of the whole
    order = torch.as_tensor(np.concatenate(turns), dtype=torch.long)
    ends = np.cumsum([len(t) for t in turns])
    turns = [list(range(end - len(t), end)) for t, end in zip(turns, ends, strict=True)]
    return Collected(trajs, [i // group_size for i in range(n)], turns, actor.take(inputs, order.numpy()),
                     torch.cat(index)[order], torch.cat(logprob)[order], torch.cat(value)[order], bootstrap, steps)


def by_group(rows: np.ndarray, group_size: int) -> list[np.ndarray]:
    """Ascending env rows cut into runs of one group each."""
    return np.split(rows, np.flatnonzero(np.diff(rows // group_size)) + 1) if len(rows) else []


def ended_parts(info: dict[str, Any], r: int) -> dict[str, float]:
    """Env r's numeric score parts at the end of its episode: a vector env's `score_parts` (each
    part an array over envs), and a fast backend's `progress` (CraftVectorEnv's)."""
    parts = {key: values for key, values in (info.get("score_parts") or {}).items() if not key.startswith("_")}
    if "progress" in info:
        parts["progress"] = info["progress"]
    out = {}
    for key, values in parts.items():
        value = np.asarray(values)[r]
        if np.issubdtype(np.asarray(value).dtype, np.number):
            out[key] = float(value)
    return out


def group_seeds(rng: np.random.Generator, groups: int) -> list[int]:
    """Training seeds for one update's groups."""
    return [int(s) for s in rng.integers(TRAIN_SEEDS, size=groups)]


def group_streams(generator: torch.Generator, groups: int) -> list[int]:
    """Sampling seeds for one update's groups: one draw from the trainer's generator (so that its
    state, checkpointed, still says where a run is) spread into one seed per group index."""
    update = int(torch.randint(2**62, (1,), generator=generator))
    return [int(s) for s in np.random.SeedSequence(update).generate_state(groups, np.uint64) >> np.uint64(1)]
