"""Rollout collection in this process or on Ray workers (`turngym train ... --ray local|auto|ADDRESS`).

`collect_groups` makes what a group plays depend on its seed and sampling stream alone (its own
random stream, its own policy batches), so an update's groups can be cut into contiguous shares,
collected apart and joined in group order (`join`) into exactly the batch one process collects.
`RayCollector` does that with one Ray actor per worker: each builds the run's backend (env +
policy copy) for its share once, takes the current weights every update (one `ray.put`), plays
its groups and returns its `Collected`. Same seeds, same results as `LocalCollector`, whatever the
number of workers, so a user with a cluster scales collection without changing code.
`LMRayCollector` is the same for `hf:` policies (trainers/lm.py): a rollout there depends on its
env seed, its agent seed and the weights alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from turngym.trainers.collect import Collected, SymbolicActor, TextActor, collect_groups
from turngym.trainers.config import LMTrainConfig, NeuralTrainConfig
from turngym.trajectory import Trajectory


class LocalCollector:
    """Collects every group of an update in this process, on the trainer's own actor."""

    def __init__(self, config: NeuralTrainConfig, actor: SymbolicActor | TextActor) -> None:
        self.config = config
        self.actor = actor

    def __call__(self, seeds: list[int], streams: Sequence[int], **per_group: list[Any]) -> Collected:
        """One update's rollouts: group g resets with `seeds[g]` and samples from `streams[g]`;
        every other keyword of `collect_groups` holds one value per group too."""
        return collect_groups(self.actor, seeds, self.config.group_size, self.config.env_id, streams, **per_group)

    def close(self) -> None:
        """Nothing to release: the trainer closes its actor."""


def shares(groups: int, workers: int) -> list[range]:
    """Contiguous group ranges, one per worker, sizes differing by at most one."""
    bounds = np.linspace(0, groups, min(workers, groups) + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def join(parts: list[Collected], take: Callable[[list[Any]], Any]) -> Collected:
    """The collections of consecutive shares of an update's groups, in group order, as one:
    exactly what `collect_groups` returns for all the groups at once (`take`: the backend actor's,
    which concatenates inputs)."""
    turns: list[list[int]] = []
    groups: list[int] = []
    first_turn = first_group = 0
    for part in parts:
        turns += [[first_turn + i for i in own] for own in part.turns]
        groups += [first_group + g for g in part.groups]
        first_turn += len(part.index)
        first_group += max(part.groups, default=-1) + 1
    return Collected([t for part in parts for t in part.trajectories], groups, turns,
                     take([part.inputs for part in parts]), torch.cat([part.index for part in parts]),
                     torch.cat([part.logprob for part in parts]), torch.cat([part.value for part in parts]),
                     [b for part in parts for b in part.bootstrap], sum(part.env_steps for part in parts))


class Worker:
    """One Ray actor: the run's backend for its share of the groups, built once."""

    def __init__(self, config: NeuralTrainConfig, policy: torch.nn.Module) -> None:
        from turngym.trainers.ppo import build  # ppo imports this module

        # a fresh network of the default kind only to get the actor; it then plays `policy` (the
        # trainer's, shipped with its architecture), so a neural:PATH need not exist on this node.
        # The env is the one `policy` reads: with its landmark memory where it has one.
        landmarks = getattr(getattr(policy, "config", None), "landmarks", ())
        net = {**config.net, "landmarks": landmarks} if landmarks else config.net
        _, self.actor, _ = build(dataclasses.replace(config, policy="neural", net=net))
        self.actor.policy = self.policy = policy
        self.config = config

    def collect(self, weights: dict[str, torch.Tensor], training: bool, seeds: list[int], streams: list[int],
                per_group: dict[str, list[Any]]) -> tuple[Collected, dict[str, float]]:
        """This share's rollouts, and what the env counted while they played (deaths, stalls, ...)."""
        self.policy.load_state_dict(weights)
        # the trainer's mode too: a transformer's eval-mode fast path differs from its training-mode
        # path in the low bits
        self.policy.train(training)
        col = collect_groups(self.actor, seeds, self.config.group_size, self.config.env_id, streams, **per_group)
        pop = getattr(self.actor.env, "pop", None)  # rewards/analysis.py's EpisodeAnalysis counts
        return col, pop() if pop is not None else {}

    def close(self) -> None:
        self.actor.close()


class RayCollector:
    """Collects an update's groups on Ray workers, one contiguous share each, joined in group order.

    `address`: "local" (a new Ray instance on this machine), "auto" (the running cluster) or a
    cluster's address; an already initialized Ray is used as it is. `workers`: actors to start
    (None: one per CPU of the cluster), at most one per group."""

    def __init__(self, config: NeuralTrainConfig, policy: torch.nn.Module, actor: SymbolicActor | TextActor,
                 address: str, workers: int | None = None) -> None:
        self.ray, self.started, self.shares = start_ray(address, workers, config.groups)
        self.policy = policy
        self.take = actor.take
        self.env = actor.env
        remote = self.ray.remote(num_cpus=1, max_restarts=0)(Worker)
        self.workers = [remote.remote(dataclasses.replace(config, groups=len(share)), policy)
                        for share in self.shares]

    def __call__(self, seeds: list[int], streams: Sequence[int], **per_group: list[Any]) -> Collected:
        """As `LocalCollector.__call__`, each worker playing its share."""
        weights = self.ray.put({k: v.detach().clone() for k, v in self.policy.state_dict().items()})
        refs = []
        for worker, share in zip(self.workers, self.shares, strict=True):
            cut = slice(share.start, share.stop)
            refs.append(worker.collect.remote(weights, self.policy.training, seeds[cut], list(streams[cut]),
                                              {k: v[cut] for k, v in per_group.items()}))
        try:
            parts, counts = zip(*self.ray.get(refs), strict=True)
        except self.ray.exceptions.RayError as exc:
            raise RuntimeError(f"a Ray collection worker failed: {str(exc).splitlines()[0]}") from exc
        # the trainer reads the episode counts (deaths, stalls: EpisodeAnalysis) off its own env,
        # which played nothing here: the workers' counts go there (update, not +, which would drop
        # zero and negative sums; looked up each time, since a pop replaces the counter)
        tally = getattr(self.env, "counts", None)
        for share in counts if tally is not None else ():
            tally.update(share)
        return join(list(parts), self.take)

    def close(self) -> None:
        """Stop the workers (and Ray, when this collector started it)."""
        stop_ray(self.ray, self.workers, self.started)
        self.workers = []


def start_ray(address: str, workers: int | None, groups: int) -> tuple[Any, bool, list[range]]:
    """Ray (initialized here unless it already is, at `address`: local, auto or a cluster's), whether
    this call started it, and the groups' shares: one per worker (None: one per CPU)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: install it with `pip install ray`") from None
    started = not ray.is_initialized()  # shut down on close only what this run started
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers is not None and workers > cpus:  # the extra actors would wait for a CPU forever
        raise ValueError(f"{workers} Ray workers need {workers} CPUs, the cluster has {cpus}: "
                         f"set ray_workers to {cpus} or less")
    return ray, started, shares(groups, workers or max(1, cpus))


def stop_ray(ray: Any, workers: list[Any], started: bool) -> None:
    """Close and kill `workers`, then shut Ray down if `started`."""
    try:
        ray.get([worker.close.remote() for worker in workers])
    finally:
        for worker in workers:
            ray.kill(worker)
    if started:
        ray.shutdown()


# --- language-model policies (trainers/lm.py) ------------------------------------------------

class LMWorker:
    """One Ray actor of the LM trainer: its own env and copy of the model (built once from the
    run's config), taking the trainable weights every update (LoRA: the adapters only)."""

    def __init__(self, config: LMTrainConfig) -> None:
        from turngym.trainers.lm import make_env, make_policy

        self.env, self.options = make_env(config)
        self.policy = make_policy(dataclasses.replace(config, kl_coef=0.0), self.env)  # no reference to keep

    def collect(self, weights: dict[str, torch.Tensor], env_seeds: list[int], agent_seeds: list[list[int]],
                update: int) -> list[Trajectory]:
        from turngym.trainers.lm import load_trainable_state, play_groups

        load_trainable_state(self.policy, weights)
        return play_groups(self.env, self.policy.agent, env_seeds, agent_seeds, update, self.options)

    def close(self) -> None:
        self.env.close()


class LMRayCollector:
    """`trainers.lm.collect` on Ray workers: each plays a contiguous share of the update's groups
    with the seeds `collect` would give them, so the trajectories are the same, in the same order."""

    def __init__(self, config: LMTrainConfig, policy: Any) -> None:
        self.ray, self.started, self.shares = start_ray(config.ray or "local", config.ray_workers, config.groups)
        self.config, self.policy = config, policy
        remote = self.ray.remote(num_cpus=1, max_restarts=0)(LMWorker)
        self.workers = [remote.remote(config) for _ in self.shares]

    def __call__(self, update: int) -> tuple[list[Trajectory], list[int]]:
        from turngym.trainers.lm import trainable_state, update_seeds

        config = self.config
        env_seeds, agent_seeds = update_seeds(config.seed, update, config.groups, config.group_size)
        weights = self.ray.put({k: v.detach().cpu().clone() for k, v in trainable_state(self.policy).items()})
        refs = [worker.collect.remote(weights, env_seeds[share.start:share.stop], agent_seeds[share.start:share.stop],
                                      update)
                for worker, share in zip(self.workers, self.shares, strict=True)]
        try:
            parts = self.ray.get(refs)
        except self.ray.exceptions.RayError as exc:
            raise RuntimeError(f"a Ray collection worker failed: {str(exc).splitlines()[0]}") from exc
        return [t for part in parts for t in part], [g for g, seeds in enumerate(agent_seeds) for _ in seeds]

    def close(self) -> None:
        stop_ray(self.ray, self.workers, self.started)
        self.workers = []


def collector(config: NeuralTrainConfig, policy: torch.nn.Module,
              actor: SymbolicActor | TextActor) -> LocalCollector | RayCollector:
    """The run's collector: on Ray workers when `config.ray` is set, else in this process."""
    if config.ray is None:
        return LocalCollector(config, actor)
    return RayCollector(config, policy, actor, config.ray, config.ray_workers)
