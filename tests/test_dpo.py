"""Online DPO for `hf:` policies (trainers/dpo.py), on the tiny checkpoints of `turngym.agents.tiny`.

The env is `Northward`, defined below: two turns always, in Craft's text and action grammar, and a
graded score, the share of turns that moved north. The untrained tiny model moves north now and
then, so a group of its rollouts holds episodes of scores 0, 0.5 and 1 to pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import pytest
import torch
from conftest import tiny_checkpoint

from turngym.envs.base import InvalidAction, Outcome, TurnEnv
from turngym.trainers.dpo import (
    Pair,
    add_episode_reference,
    dpo_terms,
    episode_logpi,
    episode_turns,
    make_reference,
    mine_pairs,
    minibatch_step,
    optimize_dpo,
    pair_key,
    score_agreement,
    train_dpo,
)
from turngym.trainers.lm import (
    LMTrainConfig,
    collate,
    collect,
    make_policy,
    sequence_logp,
    token_logprobs,
    train_lm,
)
from turngym.trainers.runlog import read_metrics
from turngym.trajectory import Trajectory, Turn

NORTHWARD = "turngym_test/Northward-v0"
MOVES = ("move north", "move south", "move east", "move west", "do", "noop")
TIMING = ("rollout_s", "key_s", "learn_s", "time_s")


class Northward(TurnEnv):
    """Two turns; the score is the share of them that played `move north` (the other Craft moves
    are valid and score nothing; anything else is invalid)."""

    metadata: ClassVar[dict] = {"render_modes": ["ansi"], "render_fps": 4}
    default_max_turns = 2

    def __init__(self, max_turns: int | None = None, render_mode: str | None = None) -> None:
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        gates = [f"gate-{i}" for i in range(300)]
        self.splits = {"train": gates[:100], "dev": gates[100:200], "test": gates[200:]}

    def _load_task(self, task_id: str | None) -> str:
        if task_id is None:
            task_id = self.splits["train"][int(self.np_random.integers(100))]
        self.norths = 0
        self.instruction = "Walk north, every turn."
        return task_id

    def _apply(self, action: str) -> None:
        action = " ".join(action.lower().split())
        if action not in MOVES:
            raise InvalidAction("use one of: " + ", ".join(MOVES))
        self.norths += action == "move north"

    def _terminated(self) -> bool:
        return False  # every episode plays its two turns (truncated)

    def _outcome(self) -> Outcome:
        return Outcome(self.norths == self.max_turns, self.norths / self.max_turns)

    def _text(self) -> str:
        return (f"Task: {self.instruction}\nTurn {self.turn} of {self.max_turns}. You face south: grass.\n"
                "Nearby: gate: 1 north\nActions: move north|south|east|west, do, noop\n"
                "Possible now: " + ", ".join(MOVES))

    def _actions(self) -> list[str]:
        return list(MOVES)

    def _state(self) -> dict[str, Any]:
        return {"norths": self.norths}


if NORTHWARD not in gym.registry:  # a test env: Gymnasium's registry only, no turngym family
    gym.register(NORTHWARD, entry_point=Northward)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> str:
    """The tiny Mistral-style chat model, trained for a few seconds to reply in the agents' format."""
    return str(tiny_checkpoint(tmp_path_factory, "tiny"))


def config(model: str, tmp_path: Path, **overrides: Any) -> LMTrainConfig:
    """A small DPO run on Northward: 2 tasks x 8 rollouts an update, 20-token replies, on the CPU."""
    settings: dict[str, Any] = {"env_id": NORTHWARD, "policy": f"hf:{model}", "loss": "dpo", "groups": 2,
                                "group_size": 8, "updates": 2, "lr": 5e-4, "minibatch_size": 64,
                                "max_new_tokens": 20, "out": str(tmp_path / "run"), "device": "cpu",
                                "tensorboard": False}
    return LMTrainConfig(**{**settings, **overrides})


def mined(run: LMTrainConfig) -> tuple[Any, list[Trajectory], Any, list[Pair]]:
    """A policy with its reference, one update's rollouts, their turns and their score pairs."""
    env = gym.make(run.env_id)
    policy = make_policy(run, env)
    make_reference(policy)
    trajectories, groups = collect(env, policy.agent, run, update=1)
    pairs = mine_pairs(trajectories, groups)
    episodes = episode_turns(policy, trajectories)
    add_episode_reference(policy, episodes, pairs, micro=16)
    return policy, trajectories, episodes, pairs


@torch.no_grad()
def pair_terms(policy: Any, episodes: Any, pairs: list[Pair], beta: float) -> dict[str, float]:
    logpi = episode_logpi(policy.model, episodes, range(len(episodes.turns)), policy, 16)
    win, lose = [p.chosen for p in pairs], [p.rejected for p in pairs]
    terms = dpo_terms(logpi[win], logpi[lose], episodes.ref_logpi[win], episodes.ref_logpi[lose], beta)
    return {key: float(value) for key, value in terms.items()}


# --- the loss and the pairs -------------------------------------------------------------------

def test_dpo_loss_matches_a_hand_computation() -> None:
    """Two pairs: h = beta [(lw - rw) - (ll - rl)] = 0.5 [(-3 + 4) - (-5 + 4)] = 1 and
    0.5 [(-2 + 1) - (-1 + 3)] = -1.5; loss = mean -log sigmoid(h); accuracy 1/2."""
    chosen, rejected = torch.tensor([-3.0, -2.0]), torch.tensor([-5.0, -1.0])
    chosen_ref, rejected_ref = torch.tensor([-4.0, -1.0]), torch.tensor([-4.0, -3.0])
    terms = dpo_terms(chosen, rejected, chosen_ref, rejected_ref, beta=0.5)
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.5))) / 2
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(terms["margin"]) == pytest.approx(-0.25)
    assert float(terms["pref_acc"]) == 0.5
    assert float(terms["chosen_reward"]) == pytest.approx((0.5 * 1 + 0.5 * -1) / 2)
    assert float(terms["rejected_reward"]) == pytest.approx((0.5 * -1 + 0.5 * 2) / 2)


def test_pairs_are_mined_within_groups_and_ties_are_skipped() -> None:
    """Chosen = the higher key, rejected = the lower, every two episodes of one group; equal keys
    and episodes of different groups never pair; any callable can be the key."""
    scores = [1.0, 0.5, 0.5, 0.0, 0.3, 0.3, 0.0, 1.0]
    groups = [0, 0, 0, 0, 1, 1, 2, 2]
    trajectories = [Trajectory("env", f"task-{g}", 0, score=s) for s, g in zip(scores, groups, strict=True)]
    pairs = mine_pairs(trajectories, groups)
    assert {(p.chosen, p.rejected) for p in pairs} == {(0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (7, 6)}
    assert len(pairs) == 6 and all(p.chosen_key > p.rejected_key for p in pairs)
    assert Pair(7, 6, 1.0, 0.0) in pairs

    for traj, turns in zip(trajectories, [1, 3, 2, 2, 1, 1, 2, 2], strict=True):
        traj.turns = [Turn("obs", "noop") for _ in range(turns)]
    widest = mine_pairs(trajectories, groups, per_group=2)  # group 0's gaps: 0.5, 0.5, 1, 0.5, 0.5
    assert [(p.chosen, p.rejected) for p in widest] == [(0, 3), (0, 1), (7, 6)]

    shorter = mine_pairs(trajectories, groups, key=lambda t: -len(t))  # the shorter episode preferred
    assert {(p.chosen, p.rejected) for p in shorter} == {(0, 1), (0, 2), (0, 3), (2, 1), (3, 1)}

    control = pair_key(config("unused", Path("unused"), dpo_pairs="random"))
    keys = [control(t) for t in trajectories]
    assert all(0 <= k < 1 for k in keys) and keys == [control(t) for t in trajectories]  # a resume draws them again
    assert keys[2] == keys[3] and keys[4] == keys[5] and keys[6] == keys[7]  # same task, same actions: a tie
    assert len(set(keys)) == 5
    assert keys != [pair_key(config("unused", Path("unused"), dpo_pairs="random", seed=1))(t) for t in trajectories]

    unjudged = mine_pairs(trajectories, groups, key=lambda t: math.nan if len(t) == 3 else t.score)
    assert {(p.chosen, p.rejected) for p in unjudged} == {(0, 2), (0, 3), (2, 3), (7, 6)}  # episode 1: no pair


def test_only_the_policys_replies_count_in_log_pi_of_an_episode(lm: str, tmp_path: Path) -> None:
    """log pi(y) of a two-turn episode is the sum of the log-probs the agent recorded for its reply
    tokens over both turns (the second turn's prompt holds the first observation and reply); the
    prompt's positions do not enter it: any value there, NaN included, leaves it and the loss
    unchanged."""
    policy, trajectories, episodes, pairs = mined(config(lm, tmp_path))
    assert pairs and all(len(t) == 2 for t in trajectories)
    with torch.no_grad():
        logpi = episode_logpi(policy.model, episodes, range(len(episodes.turns)), policy, 16)
    recorded = [sum(sum(turn.logprobs) for turn in t.turns) for t in trajectories]
    assert logpi.tolist() == pytest.approx(recorded, abs=1e-3)

    batch = collate(episodes.turns, policy.pad_id, policy.device)
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model, batch, policy.temperature)
    assert (~batch.mask).any()  # shorter replies' rows start with their prompts' last tokens
    scrambled = torch.where(batch.mask, logp, torch.randn_like(logp) * 100)
    scrambled[~batch.mask & (torch.rand_like(logp) < 0.5)] = float("nan")
    assert torch.equal(sequence_logp(logp, batch.mask), sequence_logp(scrambled, batch.mask))

    def loss(per_turn: torch.Tensor) -> float:
        per_episode = torch.zeros(len(trajectories)).index_add(0, torch.tensor(episodes.owner), per_turn)
        win, lose = [p.chosen for p in pairs], [p.rejected for p in pairs]
        return float(dpo_terms(per_episode[win], per_episode[lose], per_episode[win] + 1, per_episode[lose],
                               beta=0.1)["loss"])

    assert loss(sequence_logp(logp, batch.mask)) == loss(sequence_logp(scrambled, batch.mask))


@pytest.mark.parametrize("nll", [0.0, 0.5])
def test_micro_batches_give_the_exact_gradient(lm: str, tmp_path: Path, nll: float) -> None:
    """The gradient accumulated over micro-batches as sum_e w_e grad log pi(y_e) equals autograd
    through the whole DPO loss at once, for one-turn micro-batches as for one big batch; with RPO's
    term too (nll: alpha x the chosen episodes' -log pi(y_w) per reply token, averaged)."""
    run = config(lm, tmp_path, lr=5e-3, dpo_nll_coef=nll)
    policy, trajectories, episodes, pairs = mined(run)
    optimize_dpo(policy, torch.optim.SGD(policy.parameters(), lr=0.05), episodes, pairs, run, update=1)  # h != 0

    def gradient(micro: int) -> list[torch.Tensor]:
        for p in policy.parameters():
            p.grad = None
        minibatch_step(policy, episodes, pairs, config(lm, tmp_path, micro_batch_size=micro, dpo_nll_coef=nll))
        return [p.grad.clone() for p in policy.parameters()]

    for p in policy.parameters():
        p.grad = None
    logpi = episode_logpi(policy.model, episodes, range(len(episodes.turns)), policy, 64)
    win, lose = [p.chosen for p in pairs], [p.rejected for p in pairs]
    tokens = torch.tensor([float(sum(len(turn.completion_ids) for turn in trajectories[e].turns)) for e in win])
    loss = dpo_terms(logpi[win], logpi[lose], episodes.ref_logpi[win], episodes.ref_logpi[lose], run.dpo_beta)["loss"]
    (loss - nll * (logpi[win] / tokens).mean()).backward()
    direct = [p.grad.clone() for p in policy.parameters()]
    assert any(g.abs().sum() > 0 for g in direct)
    for micro in (1, 64):
        assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(gradient(micro), direct, strict=True))


@pytest.mark.parametrize(("mode", "lora"), [("generate", False), ("generate", True), ("score", True)])
def test_dpo_steps_raise_the_chosen_margin(lm: str, tmp_path: Path, mode: str, lora: bool) -> None:
    """The policy starts as its reference (margin 0, loss log 2); a few DPO steps on the update's
    pairs make the chosen episodes likelier than the rejected ones relative to the reference:
    margin > 0, loss < log 2, most pairs ranked right. In score mode log pi(y) sums the log-softmax
    of the chosen candidates (mean-reduced scores: summed, the tiny model's one-token `do` and
    `noop` crowd out `move north`, and the groups tie at 0)."""
    run = config(lm, tmp_path, mode=mode, lora=lora, lr=5e-3 if lora else 5e-4, epochs=4, minibatch_size=16,
                 score_reduce="mean")
    policy, _, episodes, pairs = mined(run)
    assert len(pairs) >= 4
    before = pair_terms(policy, episodes, pairs, run.dpo_beta)
    assert before["margin"] == pytest.approx(0.0, abs=1e-5) and before["loss"] == pytest.approx(math.log(2), abs=1e-5)
    stats = optimize_dpo(policy, torch.optim.AdamW(policy.parameters(), lr=run.lr), episodes, pairs, run, update=1)
    after = pair_terms(policy, episodes, pairs, run.dpo_beta)
    assert after["margin"] > 0.01 and after["loss"] < before["loss"] and after["pref_acc"] > 0.5
    assert after["chosen_reward"] > after["rejected_reward"]
    assert math.isfinite(stats["grad_norm"]) and stats["loss"] < math.log(2)


def test_flr_pairs_rank_episodes_by_follow_up_likelihood(lm: str, tmp_path: Path) -> None:
    """dpo_pairs flr ranks a group by FLR of its last turn under flr_model, reading no score: the
    mined keys are FollowUpLikelihood's, and a DPO run on them trains (pairs in every update).
    Northward's episodes all run out of turns, so they are judged by their last move (judge)."""
    from turngym.rewards.flr import FollowUpLikelihood

    run = config(lm, tmp_path, dpo_pairs="flr", flr_model=lm, groups=1, group_size=3, updates=1, lora=True,
                 lr=5e-3, flr_unanswered="judge")
    env = gym.make(run.env_id)
    policy = make_policy(run, env)
    trajectories, groups = collect(env, policy.agent, run, update=1)
    pairs = mine_pairs(trajectories, groups, pair_key(run))
    flr = [FollowUpLikelihood(lm, "general").score_trajectory(t) for t in trajectories]
    assert pairs and all(p.chosen_key == pytest.approx(flr[p.chosen]) and p.chosen_key > p.rejected_key
                         for p in pairs)
    rows = train_dpo(run, progress=False)
    assert rows[0]["pairs"] > 0 and rows[0]["key_gap"] > 0 and math.isfinite(rows[0]["loss"])
    chosen_higher = [trajectories[p.chosen].score > trajectories[p.rejected].score for p in pairs
                     if trajectories[p.chosen].score != trajectories[p.rejected].score]
    assert score_agreement(trajectories, pairs) == (sum(chosen_higher) / len(chosen_higher) if chosen_higher else None)


def test_flr_keys_only_episodes_that_gave_a_response(lm: str, tmp_path: Path) -> None:
    """By default FLR judges final responses only: an episode that ran out of turns (not terminated)
    has a NaN key and joins no pair, whatever its last turn; with flr_unanswered judge it is keyed."""
    from turngym.rewards.flr import FollowUpLikelihood

    last = ["click[buy now]", "click[back to search]", "search[red shoes]", "click[buy now]"]
    trajectories = [Trajectory("env", "task", 0, turns=[Turn("Instruction: red shoes\n[Buy Now]", action)],
                               terminated=action == "click[buy now]", truncated=action != "click[buy now]")
                    for action in last]
    trajectories[3].turns[0].text += " size 9"  # a different response context: a different FLR
    skip = pair_key(config(lm, tmp_path, dpo_pairs="flr", flr_model=lm))
    keys = [skip(t) for t in trajectories]
    flr = FollowUpLikelihood(lm, "general")
    assert math.isnan(keys[1]) and math.isnan(keys[2])
    assert keys[0] == pytest.approx(flr.score_trajectory(trajectories[0])) and keys[0] != keys[3]
    pairs = mine_pairs(trajectories, [0, 0, 0, 0], skip)
    assert {(p.chosen, p.rejected) for p in pairs} in ({(0, 3)}, {(3, 0)})
    judge = pair_key(config(lm, tmp_path, dpo_pairs="flr", flr_model=lm, flr_unanswered="judge"))
    assert all(math.isfinite(judge(t)) for t in trajectories)
    assert len(mine_pairs(trajectories, [0, 0, 0, 0], judge)) == 6
    with pytest.raises(ValueError, match="use skip or judge"):
        config(lm, tmp_path, flr_unanswered="last").check()


# --- runs -------------------------------------------------------------------------------------

def test_dpo_runs_resume_exactly(lm: str, tmp_path: Path) -> None:
    """`train_lm` with loss dpo runs the DPO loop; 2 updates in one go equal 1 then resumed to 2
    (same rows, same saved weights); the rows count the pairs and log the loss terms."""
    options = {"lora": True, "lr": 5e-3, "groups": 1, "group_size": 4, "micro_batch_size": 3}
    whole = train_lm(config(lm, tmp_path / "a", **options), progress=False)
    train_dpo(config(lm, tmp_path / "b", updates=1, **options), progress=False)
    resumed = train_dpo(config(lm, tmp_path / "b", resume=True, **options), progress=False)

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]

    assert strip(resumed) == strip(whole) and [r["update"] for r in whole] == [1, 2]
    assert all(r["pairs"] > 0 and math.isfinite(r["loss"]) and 0 <= r["pref_acc"] <= 1 for r in whole)
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / part / "run" / "model" / "model.safetensors") for part in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(ValueError, match="made with other lora"):
        train_dpo(config(lm, tmp_path / "b", updates=3, resume=True, **{**options, "lora": False}), progress=False)
    with pytest.raises(ValueError, match="made with other lora_alpha"):  # it scales the saved adapters
        train_dpo(config(lm, tmp_path / "b", updates=3, resume=True, **{**options, "lora_alpha": 64}),
                  progress=False)
    with pytest.raises(ValueError, match="made with other loss"):  # a DPO folder is not a PPO run to go on with
        train_lm(config(lm, tmp_path / "b", updates=3, resume=True, loss="reinforce", **options), progress=False)


def test_cli_trains_with_the_dpo_loss(lm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`turngym train ... --loss dpo` with its knobs: config.json records them, metrics.jsonl has a
    row per update with the pairs and the DPO terms, and the trained model is saved and evaluated."""
    from typer.testing import CliRunner

    from turngym import registry
    from turngym.apps.cli import app

    # The CLI trains turngym ids only: list Northward as one for this test (not for the contract tests).
    monkeypatch.setitem(registry._DESCRIPTIONS, NORTHWARD, "walk north for two turns")

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", NORTHWARD, "--policy", f"hf:{lm}", "--loss", "dpo", "--dpo-beta", "0.2", "--dpo-pairs", "score",
        "--updates", "2", "--groups", "1", "--group-size", "4", "--lora", "--lr", "5e-3", "--max-new-tokens", "12",
        "--device", "cpu", "--out", str(out), "--eval", "2"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["loss"], saved["dpo_beta"], saved["dpo_pairs"], saved["lora"]) == ("dpo", 0.2, "score", True)
    rows = read_metrics(out)
    assert [r["update"] for r in rows] == [1, 2]
    assert all({"pairs", "key_gap", "episodes", "score"} <= r.keys() for r in rows)
    assert any(r["pairs"] > 0 and {"loss", "margin", "pref_acc", "grad_norm"} <= r.keys() for r in rows)
    assert all(r["score_agrees"] == (1.0 if r["pairs"] else None) for r in rows)  # score pairs follow the score
    assert (out / "model" / "config.json").exists() and (out / "checkpoint.pt").exists()
    assert json.loads((out / "test.json").read_text())["episodes"] == 2


def test_dpo_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use score, flr or random"):
        config("unused", tmp_path, dpo_pairs="judge").check()
    with pytest.raises(ValueError, match="dpo_beta must be > 0"):
        config("unused", tmp_path, dpo_beta=0.0).check()
    with pytest.raises(ValueError, match="dpo_nll_coef must be >= 0"):
        config("unused", tmp_path, dpo_nll_coef=-1.0).check()
    with pytest.raises(ValueError, match="dpo_pairs_per_group must be at least 1"):
        config("unused", tmp_path, dpo_pairs_per_group=0).check()
    with pytest.raises(ValueError, match="set group_size to 2 or more"):
        config("unused", tmp_path, group_size=1).check()
    with pytest.raises(ValueError, match="set kl_coef and entropy_coef to 0"):
        config("unused", tmp_path, kl_coef=0.1).check()
    from turngym.trainers.config import NeuralTrainConfig

    with pytest.raises(ValueError, match="unknown loss 'dpo' for the neural-policy trainer"):
        NeuralTrainConfig(env_id=NORTHWARD, loss="dpo").check()
    config("unused", tmp_path).check()
