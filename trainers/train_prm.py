"""AgentPRM's first stage on its own (`turngym train-prm`): play a fixed policy and fit a process
reward model to its rollouts, with the same PRMTrainer the `prm` estimator trains inside PPO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.console import progress_bar
from turngym.trainers.collect import collect_groups, group_seeds
from turngym.trainers.config import NeuralTrainConfig
from turngym.trainers.ppo import build
from turngym.trainers.prm import PRMTrainer
from turngym.trainers.runlog import Metrics, write_config


def train_prm(config: NeuralTrainConfig, *, updates: int, progress: bool = True) -> list[dict[str, Any]]:
    """Play `config.policy` (not trained here) and fit a PRM to its rollouts for `updates` rounds;
    writes config.json, prm.pt and metrics.jsonl into `config.out`."""
    config.check()
    out = Path(config.out)
    policy, actor, _ = build(config)
    prm = PRMTrainer(policy, config)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    metrics = Metrics(out, tensorboard=config.tensorboard)
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    write_config(out, config)
    rows, env_steps = [], 0
    try:
        with progress_bar(disable=not progress) as bar:
            job = bar.add_task("fitting the PRM", total=updates)
            for update in range(1, updates + 1):
                col = collect_groups(actor, group_seeds(rng, config.groups), config.group_size, config.env_id,
                                     generator)
                env_steps += col.env_steps
                row = {"update": update, "env_steps": env_steps,
                       "success": float(np.mean([t.success for t in col.trajectories])),
                       **prm.fit(actor, col, generator)}
                metrics.log(row)
                rows.append(row)
                bar.update(job, advance=1, description=f"fitting the PRM (EV {row['prm_ev']:.2f})")
    finally:
        actor.close()
        metrics.close()
    prm.save(out / "prm.pt", env_id=config.env_id, task=config.task, policy=config.policy, env_steps=env_steps,
             target=config.prm_target)
    return rows
