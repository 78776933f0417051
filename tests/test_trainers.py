"""The PPO/REINFORCE trainer: group rollouts, learning on sparse Craft, resume, both backends, CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from turngym.agents import make_agent
from turngym.apps.cli import app
from turngym.rollout import rollout
from turngym.trainers.collect import SymbolicActor, collect_groups
from turngym.trainers.ppo import TrainConfig, train
from turngym.trainers.runlog import read_metrics

TIMING = ("collect_s", "update_s", "steps_per_s")


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_group_rollouts_share_their_world_and_differ_in_play():
    from turngym.agents.symbolic import new_symbolic_policy

    actor = SymbolicActor(new_symbolic_policy(seed=0), "wood_pickaxe", 6, max_turns=30)
    col = collect_groups(actor, [11, 12], 3, "turngym/Craft-v0", torch.Generator().manual_seed(0))
    assert col.groups == [0, 0, 0, 1, 1, 1]
    assert [t.task_id for t in col.trajectories[:3]] == [col.trajectories[0].task_id] * 3
    assert col.trajectories[0].task_id != col.trajectories[3].task_id
    assert len({tuple(t.action for t in tr.turns) for tr in col.trajectories[:3]}) > 1  # sampled apart
    assert col.env_steps == sum(len(t.turns) for t in col.trajectories) == len(col.index)
    for idx, tr in zip(col.turns, col.trajectories, strict=True):
        assert len(idx) == len(tr.turns) and tr.terminated != tr.truncated
    # the turns' first state key is the same within a group: same start state
    assert len({tr.turns[0].extras["state"] for tr in col.trajectories[:3]}) == 1
    actor.close()


def test_prm_training_learns_wood_pickaxe_from_scratch(tmp_path):
    """Sparse reward (1 on success, at the end): the sampled policy's success rises well above
    random play's ~37% within 60k env steps."""
    rows = train(TrainConfig(task="wood_pickaxe", algo="prm", steps=60_000, seed=0, out=str(tmp_path),
                             tensorboard=False), progress=False)
    assert rows[-1]["env_steps"] >= 60_000
    first, last = rows[0]["success"], np.mean([r["success"] for r in rows[-2:]])
    assert last > first + 0.15 and last > 0.6, [r["success"] for r in rows]
    assert all(np.isfinite(r["prm_q_loss"]) for r in rows)
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe", symbolic=True, image=False)
    agent = make_agent(f"neural:{tmp_path / 'policy.pt'}", env)
    wins = sum(rollout(env, agent, seed=1000 + k, record_images=False).success for k in range(20))
    assert wins >= 10  # the saved policy plays Craft-v0 itself (not only the vector env)
    assert (tmp_path / "prm.pt").exists()


@pytest.mark.parametrize("algo", ["gae", "spo"])
def test_resume_continues_exactly(tmp_path, algo):
    config = dict(task="wood_pickaxe", algo=algo, groups=2, group_size=4, max_turns=60, tensorboard=True)
    whole = train(TrainConfig(steps=1200, out=str(tmp_path / "a"), **config), progress=False)
    assert len(whole) >= 3
    first = train(TrainConfig(steps=400, out=str(tmp_path / "b"), **config), progress=False)
    assert len(first) < len(whole)
    with pytest.raises(ValueError, match="config differs in lr"):
        train(TrainConfig(steps=1200, lr=0.5, out=str(tmp_path / "b"), **config), resume=True, progress=False)
    # a resumed run with a larger budget extends the first one into the uninterrupted run
    extended = train(TrainConfig(steps=1200, out=str(tmp_path / "b"), **config), resume=True, progress=False)
    assert strip(extended) == strip(whole)
    # ... and a run cut after its first update resumes to the uninterrupted run's rows and weights
    import turngym.trainers.ppo as ppo

    class Stop(Exception):
        pass

    real, calls = ppo.save_checkpoint, []

    def save_then_stop(path, state):
        real(path, state)
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    ppo.save_checkpoint = save_then_stop
    try:
        with pytest.raises(Stop):
            train(TrainConfig(steps=1200, out=str(tmp_path / "c"), **config), progress=False)
    finally:
        ppo.save_checkpoint = real
    assert len(read_metrics(tmp_path / "c")) == 2
    resumed = train(TrainConfig(steps=1200, out=str(tmp_path / "c"), **config), resume=True, progress=False)
    assert strip(resumed) == strip(whole)
    a = torch.load(tmp_path / "a" / "policy.pt", weights_only=True)["state_dict"]
    c = torch.load(tmp_path / "c" / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert (tmp_path / "a" / "tb").is_dir() and any((tmp_path / "a" / "tb").iterdir())


def test_text_backend_with_reinforce_and_code_reward(tmp_path):
    source = "def reward(prev_state, action, state, info):\n    return 0.05 if action == 'do' else 0.0\n"
    rows = train(TrainConfig(task="collect_wood", algo="grpo", loss="reinforce", backend="text", groups=2,
                             group_size=2, steps=60, max_turns=10, out=str(tmp_path), reward_code=source,
                             tensorboard=False), progress=False)
    assert rows[-1]["env_steps"] >= 60 and rows[0]["episodes"] == 4
    env = gym.make("turngym/Craft-v0", task="collect_wood", image=False, max_turns=5)
    agent = make_agent(f"neural:{tmp_path / 'policy.pt'}", env)  # a text policy: plays the text env
    assert len(rollout(env, agent, seed=3, record_images=False).turns) <= 5


def test_bad_configs_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown --algo 'ppo2'"):
        train(TrainConfig(algo="ppo2", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="hf:PATH goes to the language-model trainer"):
        train(TrainConfig(policy="random", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="use the text backend"):
        train(TrainConfig(reward_code="def reward(a, b, c, d):\n    return 0.0\n", backend="symbolic",
                          out=str(tmp_path)), progress=False)


def test_cli_train_and_train_prm(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "turngym/Craft-v0", "--task", "wood_pickaxe", "--algo", "gigpo",
                                 "--steps", "3000", "--groups", "2", "--group-size", "4", "--out", str(out),
                                 "--eval", "3"])
    assert result.exit_code == 0, result.output
    for name in ("metrics.jsonl", "checkpoint.pt", "policy.pt", "curve.png", "test.json", "config.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "test.json").read_text())["episodes"] == 3
    assert len(list((out / "episodes").rglob("*.jsonl"))) == 3  # an eval run in the training folder
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "report" / "plots" / "curves.png").stat().st_size > 0  # the learning curve beside the episodes
    result = runner.invoke(app, ["train", "turngym/Craft-v0", "--algo", "nope", "--out", str(out)])
    assert result.exit_code != 0 and "unknown --algo" in result.output
    prm_out = tmp_path / "prm"
    result = runner.invoke(app, ["train-prm", "turngym/Craft-v0", "--task", "wood_pickaxe", "--policy",
                                 f"neural:{out / 'policy.pt'}", "--updates", "2", "--groups", "2", "--group-size",
                                 "2", "--target", "mc", "--out", str(prm_out), "-k", "max_turns=40"])
    assert result.exit_code == 0, result.output
    assert (prm_out / "prm.pt").exists() and len(read_metrics(prm_out)) == 2
