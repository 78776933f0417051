"""The PPO/REINFORCE trainer: group rollouts, learning on sparse Craft, resume, both backends, CLI."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import StopRun, stop_after_saves
from typer.testing import CliRunner

from turngym.agents import make_agent
from turngym.apps.cli import app
from turngym.envs.base import resolve_task
from turngym.envs.craft.vector import CraftVectorEnv
from turngym.rollout import rollout
from turngym.trainers.collect import SymbolicActor, Turns, collect_groups
from turngym.trainers.config import CONFIGS, LMTrainConfig, NeuralTrainConfig, TrainConfig, knobs, make_config
from turngym.trainers.ppo import build, train
from turngym.trainers.runlog import load_checkpoint, read_metrics, save_checkpoint

CRAFT, HOPVQA = "turngym/Craft-v0", "turngym/HopVQA-v0"

TIMING = ("collect_s", "update_s", "steps_per_s")


def said(result) -> str:
    """A command's output as one line of words, out of rich's wrapped error box."""
    return " ".join(word for word in result.output.split() if word.strip("│╭╮╰╯─"))


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_group_rollouts_share_their_world_and_differ_in_play():
    from turngym.agents.symbolic import new_symbolic_policy

    actor = SymbolicActor(new_symbolic_policy(seed=0), CraftVectorEnv(6, task="wood_pickaxe", max_turns=30))
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
    random play's ~37% within 46k env steps (5 updates)."""
    rows = train(NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", algo="prm", steps=46_000, seed=0,
                                   out=str(tmp_path), tensorboard=False), progress=False)
    assert rows[-1]["env_steps"] >= 46_000
    first, last = rows[0]["success"], np.mean([r["success"] for r in rows[-2:]])
    assert last > first + 0.15 and last > 0.6, [r["success"] for r in rows]
    assert all(np.isfinite(r["prm_q_loss"]) for r in rows)
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe", symbolic=True, image=False)
    agent = make_agent(f"neural:{tmp_path / 'policy.pt'}", env)
    wins = sum(rollout(env, agent, seed=1000 + k, record_images=False).success for k in range(20))
    assert wins >= 10  # the saved policy plays Craft-v0 itself (not only the vector env)
    assert (tmp_path / "prm.pt").exists()


def test_critic_warmup_fits_the_value_head_alone_then_the_policy_learns(tmp_path):
    from turngym.agents.neural import load_saved
    from turngym.agents.symbolic import SymbolicPolicy

    def weights(path):
        return dict(SymbolicPolicy.from_saved(load_saved(path)).named_parameters())

    start = tmp_path / "start.pt"
    build(NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", out=str(tmp_path / "x")))[0].save(start)
    runs = {}
    for warmup in (2, 1):
        out = tmp_path / f"warmup{warmup}"
        rows = train(NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", algo="gae", policy=f"neural:{start}",
                                       groups=2, group_size=4, steps=2_000, critic_warmup=warmup, out=str(out),
                                       tensorboard=False), progress=False)
        assert len(rows) == 2 and rows[0]["v_loss"] > 0
        runs[warmup] = weights(out / "policy.pt")
    before = weights(start)
    for name, value in before.items():  # two warm-up updates: only the value head moved
        assert torch.equal(value, runs[2][name]) != name.startswith("value_head."), name
    assert not torch.equal(before["policy_head.weight"], runs[1]["policy_head.weight"])  # then the policy learns


@pytest.mark.parametrize("algo, extra", [("gae", {}), ("spo", {}),
                                         ("gae", {"self_imitation": 0.5, "self_imitation_signal": "progress"})])
def test_resume_continues_exactly(tmp_path, monkeypatch, algo, extra):
    config = dict(env_id=CRAFT, task="wood_pickaxe", algo=algo, groups=2, group_size=4,
                  env_kwargs={"max_turns": 60}, tensorboard=True, **extra)
    whole = train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "a"), **config), progress=False)
    assert len(whole) >= 3
    first = train(NeuralTrainConfig(steps=400, out=str(tmp_path / "b"), **config), progress=False)
    assert len(first) < len(whole)
    with pytest.raises(ValueError, match="config differs in lr"):
        train(NeuralTrainConfig(steps=1200, lr=0.5, out=str(tmp_path / "b"), resume=True, **config),
              progress=False)
    # a copy of the folder elsewhere, made before a knob existed (it compares as its default), resumes too
    shutil.copytree(tmp_path / "b", tmp_path / "d")
    state = load_checkpoint(tmp_path / "d" / "checkpoint.pt")
    del state["config"]["credit_lr"]
    save_checkpoint(tmp_path / "d" / "checkpoint.pt", state)
    moved = train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "d"), resume=True, **config), progress=False)
    assert strip(moved) == strip(whole)
    # a resumed run with a larger budget extends the first one into the uninterrupted run
    extended = train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "b"), resume=True, **config),
                     progress=False)
    assert strip(extended) == strip(whole)
    # ... and a run cut after its second update resumes to the uninterrupted run's rows and weights
    stop_after_saves(monkeypatch, 2)
    with pytest.raises(StopRun):
        train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "c"), **config), progress=False)
    assert len(read_metrics(tmp_path / "c")) == 2
    resumed = train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "c"), resume=True, **config),
                    progress=False)
    assert strip(resumed) == strip(whole)
    a = torch.load(tmp_path / "a" / "policy.pt", weights_only=True)["state_dict"]
    c = torch.load(tmp_path / "c" / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert (tmp_path / "a" / "tb").is_dir() and any((tmp_path / "a" / "tb").iterdir())


def test_text_backend_runs_the_same_twice_and_resumes_exactly_on_two_threads(tmp_path):
    # On two threads the text policy's scatters sum in thread order unless torch's deterministic
    # kernels run (two runs of one seed ended 3e-4 apart in their weights); and a resumed run's first
    # rollouts played a fresh module in train mode, whose log-probs differed in the last bits.
    config = dict(env_id=CRAFT, task="collect_wood", algo="grpo", backend="text", groups=2, group_size=2,
                  env_kwargs={"max_turns": 10, "image": False}, tensorboard=False,
                  net={"dim": 16, "layers": 1, "buckets": 1024})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [train(NeuralTrainConfig(steps=100, out=str(tmp_path / run), **config), progress=False)
                for run in "ab"]
        train(NeuralTrainConfig(steps=1, out=str(tmp_path / "c"), **config), progress=False)
        runs.append(train(NeuralTrainConfig(steps=100, out=str(tmp_path / "c"), resume=True, **config),
                          progress=False))
    finally:
        torch.set_num_threads(threads)
    assert len(runs[0]) >= 3 and strip(runs[1]) == strip(runs[0]) == strip(runs[2])
    a, b, c = (torch.load(tmp_path / run / "policy.pt", weights_only=True)["state_dict"] for run in "abc")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_text_backend_with_reinforce_and_code_reward(tmp_path):
    source = "def reward(prev_state, action, state, info):\n    return 0.05 if action == 'do' else 0.0\n"
    rows = train(NeuralTrainConfig(env_id=CRAFT, task="collect_wood", algo="grpo", loss="reinforce", backend="text",
                                   groups=2, group_size=2, steps=60, env_kwargs={"max_turns": 10, "image": False},
                                   out=str(tmp_path), reward_code=source, tensorboard=False), progress=False)
    assert rows[-1]["env_steps"] >= 60 and rows[0]["episodes"] == 4
    env = gym.make(CRAFT, task="collect_wood", image=False, max_turns=5)
    agent = make_agent(f"neural:{tmp_path / 'policy.pt'}", env)  # a text policy: plays the text env
    assert len(rollout(env, agent, seed=3, record_images=False).turns) <= 5


def test_net_sizes_a_fresh_text_policy_and_its_cnn_sees_the_image(tmp_path):
    train(NeuralTrainConfig(env_id=HOPVQA, groups=1, group_size=2, steps=8, net={"image": True, "dim": 32},
                            env_kwargs={"max_turns": 2, "size": 256}, out=str(tmp_path), tensorboard=False),
          progress=False)
    saved = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert saved["config"]["image"] is True and saved["config"]["dim"] == 32
    assert any(key.startswith("cnn.") for key in saved["state_dict"])
    with pytest.raises(ValueError, match="unknown net option"):
        NeuralTrainConfig(env_id=HOPVQA, net={"width": 3}).check()
    with pytest.raises(ValueError, match="keeps its own"):
        NeuralTrainConfig(env_id=HOPVQA, policy=f"neural:{tmp_path / 'policy.pt'}", net={"dim": 8}).check()


def test_the_task_goes_where_the_env_class_says():
    """Craft names its task kwarg (and has a vector backend); HopVQA takes a task id or a split at
    reset, so a text-backend run plays exactly the task it was given."""
    assert resolve_task(CRAFT, "stone_pickaxe", {"size": 48}) == ({"size": 48, "task": "stone_pickaxe"}, None)
    assert resolve_task(CRAFT, None, {"size": 48}) == ({"size": 48}, None)
    with pytest.raises(ValueError, match="give the task once"):
        resolve_task(CRAFT, "stone_pickaxe", {"task": "wood_pickaxe"})
    assert resolve_task(HOPVQA, "dev", {}) == ({}, {"split": "dev"})
    task_id = gym.make(HOPVQA).unwrapped.splits["test"][3]
    assert resolve_task(HOPVQA, task_id, {}) == ({}, {"task_id": task_id})

    craft = NeuralTrainConfig(env_id=CRAFT, task="stone_pickaxe")
    assert craft.vector_backend() is not None
    assert craft.trained()[1] == {"task": "stone_pickaxe", "symbolic": True, "image": False}
    assert NeuralTrainConfig(env_id=CRAFT, env_kwargs={"action_mode": "skills"}).vector_backend() is None
    config = NeuralTrainConfig(env_id=HOPVQA, task=task_id, groups=2, group_size=2, env_kwargs={"max_turns": 2})
    assert config.vector_backend() is None
    _, actor, backend = build(config)
    try:
        col = collect_groups(actor, [5, 6], 2, HOPVQA, torch.Generator().manual_seed(0))
    finally:
        actor.close()
    assert backend == "text" and {t.task_id for t in col.trajectories} == {task_id}


def test_an_updates_turns_are_encoded_once_and_read_as_encoding_them_afresh():
    from turngym.agents.neural import PolicyConfig, choice_stats, new_policy

    config = NeuralTrainConfig(env_id="turngym/WebShop-v0", env_kwargs={"obs_mode": "text_rich"}, groups=2,
                               group_size=2)
    policy, actor, _ = build(config)
    try:
        col = collect_groups(actor, [5, 6], 2, config.env_id, torch.Generator().manual_seed(0))
    finally:
        actor.close()
    other = new_policy(PolicyConfig(context=0, dim=16), seed=1)  # another config encodes differently
    rows = np.arange(len(col.inputs))[::-2].copy()  # some turns, out of order
    for net in (policy, other, policy):
        logp, entropy, value = actor.evaluate(col.inputs, rows, col.index[rows], net)
        chosen = [col.inputs[r] for r in rows]
        logits, values = net(net.encode([o for o, _ in chosen], [c for _, c in chosen]))
        expected = choice_stats(logits, col.index[rows])
        assert torch.equal(logp, expected[0]) and torch.equal(entropy, expected[1]) and torch.equal(value, values)
    assert isinstance(col.inputs, Turns) and len(col.inputs._encoded) == 2  # one entry per config
    assert sum(p is not None for p in col.inputs._encoded[policy.config]) == len(rows)
    copy = pickle.loads(pickle.dumps(col.inputs))  # as to and from a Ray worker: the turns, no encodings
    assert copy == col.inputs and "_encoded" not in vars(copy)
    assert torch.equal(actor.evaluate(copy, rows, col.index[rows])[0],
                       actor.evaluate(col.inputs, rows, col.index[rows])[0])


def test_bad_configs_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown algo 'ppo2': use one of"):
        train(NeuralTrainConfig(env_id=CRAFT, algo="ppo2", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="no trainer takes policy 'random'"):
        train(NeuralTrainConfig(env_id=CRAFT, policy="random", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="not 'hf:model': use LMTrainConfig"):
        train(NeuralTrainConfig(env_id=CRAFT, policy="hf:model", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=r"reward\(\) must take \(prev_state, action, state, info\)"):
        train(NeuralTrainConfig(env_id=CRAFT, reward_code="def reward(a, b, c, d):\n    return 0.0\n",
                                backend="symbolic", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=r"no vector backend .* use backend text"):
        train(NeuralTrainConfig(env_id=HOPVQA, backend="symbolic", out=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="unknown env 'turngym/Nope-v0'"):
        NeuralTrainConfig(env_id="turngym/Nope-v0").check()
    with pytest.raises(ValueError, match="critic_warmup must be >= 0"):
        NeuralTrainConfig(env_id=CRAFT, critic_warmup=-1).check()


def test_configs_share_one_name_per_knob_and_convert_values():
    """A knob both trainers read has one field in the shared base; each trainer gives its own
    default; values from YAML or the command line are converted to the field's type."""
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"lr", "epochs", "minibatch_size", "clip_eps", "entropy_coef", "max_grad_norm", "steps"} <= shared
    for cls in CONFIGS:  # no trainer re-declares a shared knob under another name
        assert not {"clip", "ent_coef", "minibatch", "env_steps", "model"} & {f.name for f in dataclasses.fields(cls)}
    assert (NeuralTrainConfig(env_id=CRAFT).lr, LMTrainConfig(env_id=CRAFT, policy="hf:m").lr) == (1e-3, 1e-5)
    config = make_config({"env_id": CRAFT, "policy": "hf:m", "lr": "2e-5", "epochs": 2.0, "steps": 500})
    assert isinstance(config, LMTrainConfig) and (config.lr, config.epochs, config.updates) == (2e-5, 2, None)
    assert LMTrainConfig(env_id=CRAFT, policy="hf:m").updates == 100  # no budget given: 100 updates
    assert type(make_config({"env_id": CRAFT})) is NeuralTrainConfig
    with pytest.raises(ValueError, match="lora is an option of the language-model trainer"):
        make_config({"env_id": CRAFT, "lora": True})
    with pytest.raises(ValueError, match="epochs takes a number, got 'two'"):
        make_config({"env_id": CRAFT, "epochs": "two"})
    with pytest.raises(ValueError, match="unknown train option 'learning_rate'"):
        make_config({"env_id": CRAFT, "learning_rate": 0.1})
    # every field is an option of `turngym train`, named after it
    # (rich sizes the help to COLUMNS and cuts long option names at 80 columns)
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for knob in knobs():
        if knob.name != "env_id":
            assert (knob.aliases or ("--" + knob.name.replace("_", "-"),))[0] in help_text, knob.name


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
    assert json.loads((out / "config.json").read_text())["algo"] == "gigpo"
    result = runner.invoke(app, ["train", "turngym/Craft-v0", "--algo", "nope", "--out", str(out)])
    assert result.exit_code != 0 and "unknown algo 'nope'" in said(result)
    result = runner.invoke(app, ["train", "turngym/Craft-v0", "--lora-rank", "4", "--out", str(out)])
    assert result.exit_code != 0 and "lora_rank is an option of the language-model trainer" in said(result)
    prm_out = tmp_path / "prm"
    result = runner.invoke(app, ["train-prm", "turngym/Craft-v0", "--task", "wood_pickaxe", "--policy",
                                 f"neural:{out / 'policy.pt'}", "--updates", "2", "--groups", "2", "--group-size",
                                 "2", "--target", "mc", "--out", str(prm_out), "-k", "max_turns=40"])
    assert result.exit_code == 0, result.output
    assert (prm_out / "prm.pt").exists() and len(read_metrics(prm_out)) == 2


def test_cli_train_reads_a_config_file_under_its_options(tmp_path):
    """--config gives the options, the command line overrides them (kwargs merge key by key), and
    config.json records the resolved config, which reads back as a --config."""
    (tmp_path / "run.yaml").write_text("env_id: turngym/Craft-v0\ntask: wood_pickaxe\nsteps: 400\nlr: 3e-4\n"
                                       "groups: 2\ngroup_size: 2\nenv_kwargs: {max_turns: 30, size: 48}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "run.yaml"), "--lr", "2e-4",
                                      "-k", "max_turns=20", "--no-tensorboard", "--eval", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 2e-4 and saved["steps"] == 400 and saved["groups"] == 2 and not saved["tensorboard"]
    assert saved["env_kwargs"] == {"max_turns": 20, "size": 48} and saved["epochs"] == 4  # the trainer's default
    assert not (out / "tb").exists() and not (out / "test.json").exists()
    result = CliRunner().invoke(app, ["train", "--config", str(out / "config.json"), "--steps", "800", "--resume",
                                      "--eval", "0"])
    assert result.exit_code == 0, result.output
    assert read_metrics(out)[-1]["env_steps"] >= 800  # resumed and extended
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "run.yaml"), "--lr", "0.5", "--resume",
                                      "--out", str(out)])
    assert result.exit_code != 0 and "its config differs in env_kwargs, lr;" in said(result)
