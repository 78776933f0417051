"""Rollout collection in this process or on Ray workers (`turngym train ... --ray local|auto|ADDRESS`).

`collect_groups` makes what a group plays depend on its seed and sampling stream alone (its own
random stream, its own policy batches), so an update's groups can be cut into contiguous shares,
collected apart and joined in group order (`join`) into exactly the batch one process collects.
`RayCollector` does that with one Ray actor per worker: each builds the run's backend (env +
policy copy) for its share once, takes the current weights every update (one `ray.put`), plays
its groups and returns its `Collected`. Same seeds, same results as `LocalCollector`, whatever the
number of workers, so a user with a cluster scales collection without changing code.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from turngym.trainers.collect import Collected, SymbolicActor, TextActor, collect_groups
from turngym.trainers.config import NeuralTrainConfig


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
        # trainer's, shipped with its architecture), so a neural:PATH need not exist on this node
        _, self.actor, _ = build(dataclasses.replace(config, policy="neural"))
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
        try:
            import ray
        except ImportError:
            raise ValueError("--ray needs Ray: install it with `pip install ray`") from None
        self.ray = ray
        self.started = not ray.is_initialized()  # shut down on close only what this run started
        if self.started:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers is not None and workers > cpus:  # the extra actors would wait for a CPU forever
            raise ValueError(f"{workers} Ray workers need {workers} CPUs, the cluster has {cpus}: "
                             f"set ray_workers to {cpus} or less")
        count = workers or max(1, cpus)
        self.shares = shares(config.groups, count)
        self.policy = policy
        self.take = actor.take
        self.env = actor.env
        remote = ray.remote(num_cpus=1, max_restarts=0)(Worker)
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
        try:
            self.ray.get([worker.close.remote() for worker in self.workers])
        finally:
            for worker in self.workers:
                self.ray.kill(worker)
            self.workers = []
        if self.started:
            self.ray.shutdown()


def collector(config: NeuralTrainConfig, policy: torch.nn.Module,
              actor: SymbolicActor | TextActor) -> LocalCollector | RayCollector:
    """The run's collector: on Ray workers when `config.ray` is set, else in this process."""
    if config.ray is None:
        return LocalCollector(config, actor)
    return RayCollector(config, policy, actor, config.ray, config.ray_workers)
