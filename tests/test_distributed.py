"""Rollout collection split across workers: shares of the groups joined in group order are the
whole collection, and Ray workers (a local instance) collect exactly what one process does."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint
from typer.testing import CliRunner

from turngym.apps.cli import app
from turngym.trainers.collect import Collected, collect_groups, group_seeds, group_streams
from turngym.trainers.config import NeuralTrainConfig
from turngym.trainers.distributed import LocalCollector, RayCollector, join, shares
from turngym.trainers.ppo import build, train
from turngym.trainers.runlog import read_metrics

CRAFT = "turngym/Craft-v0"
BACKENDS = {
    # episodes end at different turns, so a group's batches shrink through sizes (5 to 7 rows)
    # where a matmul on 1 thread (a Ray worker's) and on 2 (the trainer's, here) round differently
    "symbolic": NeuralTrainConfig(env_id=CRAFT, task="collect_wood", env_kwargs={"max_turns": 40}),
    # skills mode has no vector backend: the text policy over single envs
    "text": NeuralTrainConfig(env_id=CRAFT, task="collect_wood",
                              env_kwargs={"max_turns": 6, "image": False, "action_mode": "skills"}),
}
TIMING = ("collect_s", "update_s", "steps_per_s")


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def played(col: Collected) -> list:
    return [(t.task_id, t.seed, t.success, t.score, t.terminated, t.truncated,
             [(turn.text, turn.action, turn.reward, turn.extras["state"]) for turn in t.turns])
            for t in col.trajectories]


def assert_same(a: Collected, b: Collected) -> None:
    """Equal in everything the estimators and the PPO update read, bit for bit."""
    assert played(a) == played(b)
    assert (a.groups, a.turns, a.bootstrap, a.env_steps) == (b.groups, b.turns, b.bootstrap, b.env_steps)
    for name in ("index", "logprob", "value"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    if isinstance(a.inputs, dict):
        assert a.inputs.keys() == b.inputs.keys()
        assert all(np.array_equal(a.inputs[k], b.inputs[k]) for k in a.inputs)
    else:
        assert a.inputs == b.inputs


def actor_for(backend: str, groups: int):
    policy, actor, name = build(dataclasses.replace(BACKENDS[backend], groups=groups))
    assert name == backend
    return policy, actor


def test_shares_are_contiguous_and_cover_every_group():
    assert shares(5, 2) == [range(0, 2), range(2, 5)]
    assert shares(8, 3) == [range(0, 3), range(3, 5), range(5, 8)]
    assert shares(2, 4) == [range(0, 1), range(1, 2)]  # no worker without a group


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_shares_collected_apart_and_joined_are_the_whole_collection(backend):
    """Each group samples from its own stream in batches of its own, so neither the other groups
    in a batch nor how many there are changes what it plays."""
    group_size = BACKENDS[backend].group_size
    seeds = group_seeds(np.random.default_rng(3), 5)
    streams = group_streams(torch.Generator().manual_seed(3), 5)
    policy, actor = actor_for(backend, 5)
    whole = collect_groups(actor, seeds, group_size, CRAFT, streams)
    actor.close()
    parts = []
    for share in ([0, 1], [2], [3, 4]):
        _, part_actor = actor_for(backend, len(share))
        part_actor.policy = policy
        parts.append(collect_groups(part_actor, [seeds[g] for g in share], group_size, CRAFT,
                                    [streams[g] for g in share]))
        part_actor.close()
    assert_same(join(parts, actor.take), whole)
    # the streams matter: other ones play other episodes
    _, again = actor_for(backend, 5)
    other = collect_groups(again, seeds, group_size, CRAFT, group_streams(torch.Generator().manual_seed(4), 5))
    again.close()
    assert [t[-1] for t in played(other)] != [t[-1] for t in played(whole)]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_ray_workers_collect_what_one_process_does(ray_session, backend):
    config = dataclasses.replace(BACKENDS[backend], groups=3)
    policy, actor = actor_for(backend, 3)
    local = LocalCollector(config, actor)
    remote = RayCollector(config, policy, actor, "local", workers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a trainer's pool (conftest gives tests one thread); a worker has one
    try:
        assert [len(s) for s in remote.shares] == [2, 1]
        rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
        for _ in range(2):
            seeds, streams = group_seeds(rng, 3), group_streams(generator, 3)
            assert_same(remote(seeds, streams), local(seeds, streams))
            with torch.no_grad():  # as an update does: the workers must play the new weights (and mode)
                for p in policy.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * 0.1)
            policy.eval()
    finally:
        torch.set_num_threads(threads)
        remote.close()
        local.close()
        actor.close()


def test_ray_workers_give_a_saved_landmark_policy_its_memory(ray_session):
    """A run that continues a saved policy has no --net: each worker wraps its env in the memory
    the shipped policy reads (agents/landmarks.py), and collects what one process does."""
    config = dataclasses.replace(BACKENDS["symbolic"], groups=2, net={"landmarks": "table,water"})
    policy, actor, _ = build(config)
    local = LocalCollector(config, actor)
    remote = RayCollector(dataclasses.replace(config, net={}), policy, actor, "local", workers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seeds, streams = group_seeds(np.random.default_rng(1), 2), group_streams(torch.Generator().manual_seed(1), 2)
        ours = local(seeds, streams)
        assert "landmarks" in ours.inputs
        assert_same(remote(seeds, streams), ours)
    finally:
        torch.set_num_threads(threads)
        remote.close()
        local.close()
        actor.close()


def test_train_on_ray_gives_the_local_run(ray_session, tmp_path):
    """`turngym train --ray local` (Ray already up here, so it joins this instance) logs the rows
    and saves the weights of the run in one process."""
    options = dict(env_id=CRAFT, task="wood_pickaxe", algo="gae", groups=3, group_size=4, steps=1000,
                   env_kwargs={"max_turns": 40}, tensorboard=False)
    assert len(train(NeuralTrainConfig(out=str(tmp_path / "local"), **options), progress=False)) >= 3
    out = tmp_path / "ray"
    result = CliRunner().invoke(app, ["train", CRAFT, "--task", "wood_pickaxe", "--algo", "gae", "--groups", "3",
                                      "--group-size", "4", "--steps", "1000", "-k", "max_turns=40", "--no-tensorboard",
                                      "--eval", "0", "--ray", "local", "--ray-workers", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["ray"] == "local"

    assert strip(read_metrics(out)) == strip(read_metrics(tmp_path / "local"))
    a = torch.load(tmp_path / "local" / "policy.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ray_settings_that_cannot_work_name_the_fix(ray_session, monkeypatch):
    config = dataclasses.replace(BACKENDS["symbolic"], groups=2)
    policy, actor = actor_for("symbolic", 2)
    with pytest.raises(ValueError, match="3 Ray workers need 3 CPUs, the cluster has 2: set ray_workers to 2"):
        RayCollector(config, policy, actor, "local", workers=3)
    with pytest.raises(ValueError, match="ray_workers must be at least 1"):
        dataclasses.replace(config, ray="local", ray_workers=0).check()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r"install it with `pip install ray`"):
        RayCollector(config, policy, actor, "local")
    actor.close()


def test_lm_training_on_ray_gives_the_local_run(ray_session, tmp_path, tmp_path_factory, one_thread):
    """An hf: policy (a tiny model, LoRA, score mode on Craft skills) trained 2 updates with its
    rollouts on 2 Ray workers logs the rows and saves the weights of the run in one process: the
    workers play the groups `collect` would, with the adapters of each update."""
    from safetensors.torch import load_file

    from turngym.trainers.config import LMTrainConfig
    from turngym.trainers.lm import train_lm

    model = tiny_checkpoint(tmp_path_factory, "tiny", train_steps=0)
    options = dict(env_id=CRAFT, task="wood_pickaxe", env_kwargs={"max_turns": 3, "image": False,
                                                                   "action_mode": "skills"},
                   policy=f"hf:{model}", mode="score", score_reduce="mean", lora=True, lr=5e-3, entropy_coef=0.01,
                   groups=3, group_size=2, updates=2, minibatch_size=8, device="cpu", tensorboard=False)
    local = train_lm(LMTrainConfig(out=str(tmp_path / "local"), **options), progress=False)
    remote = train_lm(LMTrainConfig(out=str(tmp_path / "ray"), ray="local", ray_workers=2, **options), progress=False)
    timing = ("rollout_s", "learn_s", "time_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in remote] == \
           [{k: v for k, v in r.items() if k not in timing} for r in local]
    a, b = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("local", "ray"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(model / "model.safetensors")  # the second update played adapters the first one moved
    assert any(not torch.equal(a[k], base[k]) for k in base)
