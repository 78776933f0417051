"""SPA-RL's progress attribution and OPRL's implicit process rewards: the estimators and the model
fits on hand-computed batches (every expectation is arithmetic from the docstrings' formulas), then
`turngym train --algo spa|oprl` end to end: the model saved beside the policy, an exact resume, and
fits that must lower their loss on the batch."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import StopRun, stop_after_saves
from typer.testing import CliRunner

from turngym.agents import make_agent
from turngym.apps.cli import app
from turngym.rewards.estimators import NEEDS, Rollouts, grounded, oprl, spa
from turngym.rewards.prm import ImplicitPRM, ProcessRewardModel
from turngym.rollout import rollout
from turngym.trainers.config import LMTrainConfig, NeuralTrainConfig
from turngym.trainers.credit import (
    cut,
    dpo_loss,
    episode_sums,
    preference_accuracy,
    preference_pairs,
    silent_copy,
    spa_loss,
)
from turngym.trainers.ppo import train
from turngym.trainers.runlog import read_metrics
from turngym.trajectory import Trajectory, Turn

CRAFT = "turngym/Craft-v0"
TIMING = ("collect_s", "update_s", "steps_per_s")


def traj(rewards, states=None, valid=None) -> Trajectory:
    n = len(rewards)
    turns = [Turn(text="obs", action=f"act{k}", reward=float(rewards[k]),
                  info={"valid": valid[k]} if valid is not None else {},
                  extras={"state": states[k]} if states is not None else {}) for k in range(n)]
    return Trajectory(env_id="test/Hand-v0", task_id="task-0", seed=0, turns=turns)


def approx(values, expected, tol=1e-5):
    assert np.asarray(values, np.float64).tolist() == pytest.approx(expected, rel=tol, abs=tol)


# ---- SPA ------------------------------------------------------------------------------------------
def test_a_silent_text_model_starts_at_zero_and_turns_without_candidates_score_zero():
    from turngym.agents.neural import new_policy
    from turngym.trainers.collect import TextActor, Turns

    # NeuralPolicy adds an overlap term to its scorer's output: SPA's zero start must silence both
    net = silent_copy(new_policy(seed=0), seed=1)
    turns = Turns([({"text": "Task: make a wood pickaxe.\nNearby: tree: 2 north"}, ["move north", "do", "noop"]),
                   ({"text": "Nothing to do here."}, [])])
    logits, _ = net(turns.batch(net, [0]))
    assert torch.equal(logits[0, :3], torch.zeros(3))
    # the PRM reads a turn with no candidates as 0 (its slot 0 is -inf), not as a NaN-making -inf
    scores = TextActor.scores(new_policy(seed=2), turns, np.array([0, 1]), torch.tensor([1, -1]))
    assert torch.isfinite(scores).all() and scores[1] == 0 and scores[0] != 0


def test_spa_loss_hand_computed():
    """Two episodes, contributions (0.2, 0.3) and (0.1, -0.1, 0.4), outcomes 1 and 0:
    L = ((1 - 0.5)^2 + (0 - 0.4)^2) / 2 = (0.25 + 0.16) / 2 = 0.205."""
    c = torch.tensor([0.2, 0.3, 0.1, -0.1, 0.4])
    approx(episode_sums(c, [2, 3]), [0.5, 0.4])
    assert float(spa_loss(c, [2, 3], torch.tensor([1.0, 0.0]))) == pytest.approx(0.205)
    # the gradient reaches every contribution of an episode alike: dL/dc_t = -(R - sum c) (2 / n episodes)
    c.requires_grad_(True)
    spa_loss(c, [2, 3], torch.tensor([1.0, 0.0])).backward()
    approx(c.grad, [-0.5, -0.5, 0.4, 0.4, 0.4])


def test_grounding_needs_a_valid_action_that_changed_the_state():
    """Turn 0 valid and the state changes (a -> b): 1; turn 1 invalid: 0; turn 2 valid but the
    state stays c: 0; turn 3, the last, valid: 1. Nothing recorded: every action counts as valid."""
    approx(grounded(traj([0, 0, 0, 1], states=["a", "b", "c", "c"], valid=[True, False, True, True])),
           [1, 0, 0, 1])
    approx(grounded(traj([0, 0, 0, 1], states=["a", "b", "b", "c"], valid=[True, False, True, True])),
           [1, 0, 1, 1])
    approx(grounded(traj([0, 1])), [0, 1])  # no state keys: the texts stand for the states, both "obs"


def test_spa_decomposition_with_grounding_and_gae():
    """c = (0.1, 0.5, 0.4), g = 0.5 x (1, 0, 1) (turn 1 invalid): r = (0.6, 0.5, 0.9).
    gamma = lambda = 1, V = 0: A_t = sum_{k>=t} r_k = (2.0, 1.4, 0.9), critic targets the same.
    gamma 0.9, lambda 0.5, V = (0.2, 0.4, 0.1, 0): delta = (0.6 + 0.36 - 0.2, 0.5 + 0.09 - 0.4,
    0.9 - 0.1) = (0.76, 0.19, 0.8); A = (0.76 + 0.45 A_1, 0.19 + 0.45 x 0.8, 0.8) =
    (1.0075, 0.55, 0.8), targets A + V = (1.2075, 0.95, 0.9)."""
    t = traj([0, 0, 1], states=["a", "b", "c"], valid=[True, False, True])
    c = [np.array([0.1, 0.5, 0.4])]
    plain = spa(Rollouts([t], [0], values=[np.zeros(4)], step_rewards=c), gamma=1.0, lam=1.0, grounding=0.5)
    approx(plain.advantages[0], [2.0, 1.4, 0.9])
    approx(plain.returns[0], [2.0, 1.4, 0.9])
    est = spa(Rollouts([t], [0], values=[np.array([0.2, 0.4, 0.1, 0.0])], step_rewards=c), gamma=0.9, lam=0.5,
              grounding=0.5)
    approx(est.advantages[0], [1.0075, 0.55, 0.8])
    approx(est.returns[0], [1.2075, 0.95, 0.9])
    # no grounding bonus by default: the rewards are the contributions, A_t = (1.0, 0.9, 0.4)
    approx(spa(Rollouts([t], [0], values=[np.zeros(4)], step_rewards=c), gamma=1.0, lam=1.0).advantages[0],
           [1.0, 0.9, 0.4])


# ---- OPRL -----------------------------------------------------------------------------------------
def test_preference_pairs_within_groups_and_accuracy():
    """Group 0 has returns (1, 0, 1): pairs (0, 1) and (2, 1); group 1's tie makes none."""
    pairs = preference_pairs([1.0, 0.0, 1.0, 0.5, 0.5], [0, 0, 0, 1, 1])
    assert sorted(pairs) == [(0, 1), (2, 1)]
    assert preference_accuracy(np.array([0.5, -0.5, -1.0, 0, 0]), pairs) == 0.5  # one right, one wrong
    assert preference_accuracy(np.array([0.5, -0.5, 0.0, 0, 0]), pairs) == 1.0
    assert preference_accuracy(np.zeros(5), pairs) == 0.5  # an untrained PRM: ties
    assert preference_accuracy(np.array([1e-6, 0, 0, 0, 0]), pairs) == 0.5  # float noise is a tie
    assert preference_accuracy(np.zeros(2), []) == 0.5


def test_oprl_dpo_objective_and_step_rewards_on_a_two_episode_group():
    """Episode w (R = 1): log pi_phi = (-0.5, -1.0), log pi_old = (-1.0, -1.0): ratios (0.5, 0),
    s_w = 0.5. Episode l (R = 0): log pi_phi = (-2.0), log pi_old = (-1.5): s_l = -0.5. beta 0.5:
    L = -log sigmoid(0.5 (0.5 + 0.5)) = log(1 + e^-0.5) = 0.474077; step rewards
    beta x ratio = (0.25, 0) and (-0.25), summing to beta s."""
    logp_phi = torch.tensor([-0.5, -1.0, -2.0])
    logp_old = torch.tensor([-1.0, -1.0, -1.5])
    s = episode_sums(logp_phi - logp_old, [2, 1])
    approx(s, [0.5, -0.5])
    pairs = preference_pairs([1.0, 0.0], [0, 0])
    assert pairs == [(0, 1)]
    assert float(dpo_loss(s, pairs, 0.5)) == pytest.approx(math.log(1 + math.exp(-0.5)))
    approx(0.5 * (logp_phi - logp_old), [0.25, 0.0, -0.25])


def test_oprl_advantages_on_a_two_episode_group():
    """R = (1, 0): A^E = (0.5 / 0.5, -0.5 / 0.5) = (1, -1). Step rewards (0.25, 0 | -0.25): group
    mean 0, std sqrt(0.125 / 3) = 0.204124, A^S = (1.224745, 0 | -1.224745).
    A = A^E + A^S = (2.224745, 1 | -2.224745); with w = 0.5: (1.612372, 1 | -1.612372)."""
    rollouts = Rollouts([traj([0, 1]), traj([0])], [0, 0], step_rewards=[np.array([0.25, 0.0]), np.array([-0.25])])
    est = oprl(rollouts)
    approx(est.advantages[0], [2.224745, 1.0])
    approx(est.advantages[1], [-2.224745])
    half = oprl(rollouts, weight=0.5)
    approx(half.advantages[0], [1.612372, 1.0])
    approx(half.advantages[1], [-1.612372])


def test_minibatches_of_whole_units():
    """Units of sizes (3, 5, 2, 4) in the order (2, 0, 1, 3), at most 6 turns: (2, 0) = 5, then
    1 (5), then 3 (4); at most 4: 2, 0, 1 (alone, larger than the limit), 3."""
    assert cut([2, 0, 1, 3], [3, 5, 2, 4], 6) == [[2, 0], [1], [3]]
    assert cut([2, 0, 1, 3], [3, 5, 2, 4], 4) == [[2], [0], [1], [3]]


def test_needs_and_the_credit_settings_are_checked():
    assert NEEDS["spa"] == {"step_rewards", "values"} and NEEDS["oprl"] == {"step_rewards"}
    for algo in ("spa", "oprl"):  # the LM trainer provides both (trainers/lm_credit.py)
        LMTrainConfig(env_id=CRAFT, policy="hf:m", algo=algo).check()
    with pytest.raises(ValueError, match="credit_minibatch_size must be at least 1"):
        NeuralTrainConfig(env_id=CRAFT, algo="spa", credit_minibatch_size=0).check()
    for trainer in (NeuralTrainConfig, LMTrainConfig):
        with pytest.raises(ValueError, match="oprl_beta must be > 0"):
            trainer(env_id=CRAFT, policy="hf:m" if trainer is LMTrainConfig else "neural", algo="oprl",
                    oprl_beta=0.0).check()


# ---- end to end -----------------------------------------------------------------------------------
def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize("algo", ["spa", "oprl"])
def test_cli_train_saves_the_model_and_resumes_exactly(tmp_path, monkeypatch, algo):
    """`turngym train ... --algo spa|oprl` writes OUT/<algo>.pt beside policy.pt; a run stopped
    after its first update and resumed gives the uninterrupted run's rows and weights."""
    runner = CliRunner()
    args = ["train", CRAFT, "--task", "wood_pickaxe", "--algo", algo, "--steps", "1200", "--groups", "2",
            "--group-size", "4", "-k", "max_turns=60", "-k", "reward=progress", "--no-tensorboard", "--eval", "0"]
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert whole.exit_code == 0, whole.output
    rows = read_metrics(tmp_path / "a")
    assert len(rows) >= 3 and all(f"{algo}_{'mse' if algo == 'spa' else 'acc'}" in r for r in rows)
    stop_after_saves(monkeypatch, 1)
    cut_short = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert isinstance(cut_short.exception, StopRun) and len(read_metrics(tmp_path / "b")) == 1
    assert not (tmp_path / "b" / f"{algo}.pt").exists()
    resumed = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert strip(read_metrics(tmp_path / "b")) == strip(rows)
    for name in ("policy.pt", f"{algo}.pt"):
        a, b = weights(tmp_path / "a" / name), weights(tmp_path / "b" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name

    # the saved model reads turns of the env it was trained on
    env = gym.make(CRAFT, task="wood_pickaxe", symbolic=True, image=False, max_turns=20)
    if algo == "spa":
        model = ProcessRewardModel.load(tmp_path / "a" / "spa.pt", env)
        value = lambda obs, info, action: float(model.scores(obs, info, [action])[0])  # noqa: E731
    else:
        # its rewards are ratios to the policy of the batch it was last fitted on, saved beside it:
        # policy.pt is one PPO update newer
        reference = weights(tmp_path / "a" / "oprl_reference.pt")
        final = weights(tmp_path / "a" / "policy.pt")
        assert not all(torch.equal(reference[k], final[k]) for k in final)
        model = ImplicitPRM.load(tmp_path / "a" / "oprl.pt", tmp_path / "a" / "oprl_reference.pt", env)
        assert model.beta == 1.0
        value = model.reward
    agent = make_agent(f"neural:{tmp_path / 'a' / 'policy.pt'}", env)
    obs, info = env.reset(seed=3)
    agent.reset(obs, info, seed=3)
    assert np.isfinite(value(obs, info, agent.act(obs, info)))
    assert len(rollout(env, agent, seed=3, record_images=False).turns) <= 20


@pytest.mark.parametrize("algo", ["spa", "oprl"])
def test_the_fit_lowers_its_loss_on_every_batch(tmp_path, algo):
    """Each update's fit must improve on its own batch what the model fitted on earlier batches
    had: SPA's decomposition error (R - sum_t c_t)^2 falls; OPRL's DPO loss falls and its
    preference accuracy ends above chance on average (a batch of a dozen pairs can end at chance
    while its loss falls: on one CPU, update 4 went from 0.42 to 0.50). A sign error in either
    loss, or a fit that does not reach the model, fails this."""
    rows = train(NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", algo=algo, steps=4000, groups=4, group_size=4,
                                   env_kwargs={"max_turns": 60, "reward": "progress"}, out=str(tmp_path),
                                   tensorboard=False), progress=False)
    assert len(rows) >= 4
    if algo == "spa":
        assert all(r["spa_mse"] < r["spa_mse_before"] for r in rows), rows
    else:
        assert rows[0]["oprl_acc_before"] == 0.5  # pi_phi starts as the policy that played the batch
        fitted = [r for r in rows if r["oprl_pairs"]]
        assert len(fitted) >= 3
        assert all(r["oprl_loss"] < r["oprl_loss_before"] for r in fitted), fitted
        assert sum(r["oprl_acc"] for r in fitted) / len(fitted) > 0.6, fitted


@pytest.mark.parametrize("algo", ["spa", "oprl"])
def test_text_policy_fits_the_model_too(tmp_path, algo):
    """The text policy (any env family; here Craft's text view with a small code reward, so that a
    group's returns differ) fits and saves the model through the same actor calls."""
    source = "def reward(prev_state, action, state, info):\n    return 0.05 if action == 'do' else 0.0\n"
    rows = train(NeuralTrainConfig(env_id=CRAFT, task="collect_wood", algo=algo, backend="text", groups=2,
                                   group_size=3, steps=60, env_kwargs={"max_turns": 10, "image": False},
                                   reward_code=source, out=str(tmp_path), tensorboard=False), progress=False)
    if algo == "spa":
        assert all(r["spa_mse"] < r["spa_mse_before"] for r in rows if r["spa_mse_before"] > 0), rows
    else:
        fitted = [r for r in rows if r["oprl_pairs"]]
        assert fitted and all(r["oprl_acc"] > 0.5 for r in fitted), rows
    assert ProcessRewardModel.load(tmp_path / f"{algo}.pt", gym.make(CRAFT, task="collect_wood", image=False)).meta
