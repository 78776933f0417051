"""The token-level RL trainer for `hf:` policies (trainers/lm.py), on tiny checkpoints built here.

Everything is real: the tiny chat models of `turngym.agents.tiny` are built (and briefly trained)
once per session, rollouts sample from them, and gradients flow through them.

The learning test plays `North`, a small TurnEnv defined below, rather than a turngym family. The
tiny model was taught to reply in Craft's action grammar, but it plays Craft by chance only (its
attention reaches back 64 tokens, which is the admissible-action list, not the map), and every
Craft task needs several right moves in a row from a spawn kept clear of trees, so a 2-core test
would wait a long time for a first success. North shows Craft's text and actions and rewards the
one move `move north` (the gate is there) within two turns: the untrained model finds it about a
quarter of the time, which gives GRPO groups with and without success from the first update on.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint

from turngym.agents import make_agent
from turngym.envs.base import InvalidAction, Outcome, TurnEnv
from turngym.rewards.estimators import Rollouts, estimate
from turngym.rollout import rollout
from turngym.trainers.lm import (
    Choice,
    LMTrainConfig,
    Sample,
    add_reference,
    choice_logpi,
    choice_terms,
    collate,
    collect,
    loss_terms,
    make_env,
    make_policy,
    make_samples,
    optimize,
    token_logprobs,
    train_lm,
)
from turngym.trainers.runlog import read_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests build their models: nothing may download
NORTH = "turngym_test/North-v0"
MOVES = ("move north", "move south", "move east", "move west", "do", "noop")
TIMING = ("rollout_s", "learn_s", "time_s")  # wall-clock columns: the only ones that may differ between runs


class North(TurnEnv):
    """Walk north through the gate: `move north` ends the episode with reward 1; the other Craft
    moves are valid and change nothing; anything else is invalid. Two turns by default."""

    metadata: ClassVar[dict] = {"render_modes": ["ansi"], "render_fps": 4}
    default_max_turns = 2

    def __init__(self, max_turns: int | None = None, render_mode: str | None = None) -> None:
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        gates = [f"gate-{i}" for i in range(300)]
        self.splits = {"train": gates[:100], "dev": gates[100:200], "test": gates[200:]}

    def _load_task(self, task_id: str | None) -> str:
        if task_id is None:
            task_id = self.splits["train"][int(self.np_random.integers(100))]
        self.reached = False
        self.instruction = "Walk north through the gate."
        return task_id

    def _apply(self, action: str) -> None:
        action = " ".join(action.lower().split())
        if action not in MOVES:
            raise InvalidAction("use one of: " + ", ".join(MOVES))
        self.reached = self.reached or action == "move north"

    def _terminated(self) -> bool:
        return self.reached

    def _outcome(self) -> Outcome:
        return Outcome(self.reached, float(self.reached))

    def _text(self) -> str:
        return (f"Task: {self.instruction}\nTurn {self.turn} of {self.max_turns}. You face south: grass.\n"
                "Nearby: gate: 1 north\nActions: move north|south|east|west, do, noop\n"
                "Possible now: " + ", ".join(MOVES))

    def _actions(self) -> list[str]:
        return list(MOVES)

    def _state(self) -> dict[str, Any]:
        return {"reached": self.reached}


# Registered with Gymnasium only, not turngym.register: it is no turngym family (no frozen splits).
if NORTH not in gym.registry:
    gym.register(NORTH, entry_point=North)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> str:
    """The tiny Mistral-style chat model, trained for a few seconds to reply in the agents' format."""
    return str(tiny_checkpoint(tmp_path_factory, "tiny"))


@pytest.fixture(scope="module")
def gpt2_lm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> str:
    """A tiny GPT-2 (learned absolute positions) with random weights: long, varied replies."""
    return str(tiny_checkpoint(tmp_path_factory, "tiny-gpt2", arch="gpt2", train_steps=0))


def config(model: str, tmp_path: Path, **overrides: Any) -> LMTrainConfig:
    """A small, fast run on North: 2 tasks x 4 rollouts an update, 20-token replies, on the CPU."""
    settings: dict[str, Any] = {"env_id": NORTH, "policy": f"hf:{model}", "groups": 2, "group_size": 4, "updates": 2,
                                "lr": 5e-4, "minibatch_size": 8, "max_new_tokens": 20, "out": str(tmp_path / "run"),
                                "device": "cpu"}
    return LMTrainConfig(**{**settings, **overrides})


def samples_of(model_config: LMTrainConfig, update: int = 1) -> tuple[Any, list[Any], list[Any]]:
    """A policy, the trajectories of one update's rollouts and their samples (GRPO advantages):
    Samples in generate mode, Choices in score mode."""
    env = gym.make(model_config.env_id, **model_config.env_kwargs)
    policy = make_policy(model_config, env)
    trajectories, groups = collect(env, policy.agent, model_config, update)
    advantages = estimate(model_config.algo, Rollouts(trajectories, groups))
    return policy, trajectories, make_samples(policy, trajectories, advantages.advantages)


def mean_terms(policy: Any, samples: list[Sample], **options: Any) -> dict[str, float]:
    """Token means of the loss terms over `samples`, without gradients."""
    batch = collate(samples, policy.pad_id, policy.device)
    with torch.no_grad():
        logp, entropy = token_logprobs(policy.model, batch, policy.temperature)
        terms = loss_terms(logp, entropy, batch, **options)
    return {key: float(value) / batch.tokens for key, value in terms.items()}


# --- tokens and log-probs ---------------------------------------------------------------------

@pytest.mark.parametrize("which", ["lm", "gpt2_lm"])
def test_recomputed_logprobs_match_the_sampled_ones(which: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    """At the start of an update every ratio is 1: the loss sees the distribution the agent sampled
    from, through left padding, for relative (Mistral) and absolute (GPT-2) positions alike, on
    3-turn Craft episodes whose prompts carry the earlier turns."""
    model = request.getfixturevalue(which)
    run = config(model, tmp_path, env_id="turngym/Craft-v0", env_kwargs={"max_turns": 3, "image": False},
                 groups=2, group_size=2, temperature=0.7)
    policy, trajectories, samples = samples_of(run)
    assert len(samples) == sum(len(t) for t in trajectories) and len({len(s.ids) for s in samples}) > 1
    batch = collate(samples, policy.pad_id, policy.device)
    with torch.no_grad():
        logp, entropy = token_logprobs(policy.model, batch, run.temperature)
    ratio = (logp - batch.old_logprobs)[batch.mask].exp()
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-4)
    assert torch.isfinite(logp).all() and (entropy[batch.mask] >= 0).all()


def test_only_reply_tokens_enter_the_loss(lm: str, tmp_path: Path) -> None:
    """The mask holds exactly the reply tokens, in order; the loss's gradient reaches the logits of
    the positions that predict a reply token and no other (not the prompt's, not the padding's);
    and summing micro-batches gives the loss of the whole batch."""
    run = config(lm, tmp_path, env_id="turngym/Craft-v0", env_kwargs={"max_turns": 2, "image": False},
                 group_size=2)
    policy, trajectories, samples = samples_of(run)
    for s in samples:
        s.advantage = 1.0  # every reply token then has a nonzero gradient
    replies = [turn.completion_ids for t in trajectories for turn in t.turns]
    batch = collate(samples, policy.pad_id, policy.device)
    assert batch.tokens == sum(len(r) for r in replies) < batch.input_ids.numel() // 10
    assert batch.targets[batch.mask].tolist() == [token for r in replies for token in r]

    kept: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        kept.append(out)

    hook = policy.model.get_output_embeddings().register_forward_hook(keep)
    try:
        logp, entropy = token_logprobs(policy.model, batch, run.temperature)
    finally:
        hook.remove()
    loss_terms(logp, entropy, batch, entropy_coef=0.01)["loss"].backward()
    logits = kept[0]  # (B, C + 1, V): the output layer ran on the last C + 1 positions only
    assert logits.shape[1] == batch.targets.shape[1] + 1
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched[:, :-1], batch.mask) and not touched[:, -1].any()

    whole = mean_terms(policy, samples)["loss"] * batch.tokens
    halves = sum(mean_terms(policy, part)["loss"] * sum(s.reply_len for s in part)
                 for part in (samples[:3], samples[3:]))
    assert math.isclose(whole, halves, rel_tol=1e-4, abs_tol=1e-4)



@pytest.mark.parametrize("which", ["lm", "gpt2_lm"])
def test_a_gradient_truncated_at_the_prompt_keeps_the_logprobs(which: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    """`prompt_grad=False` in generate mode: the prompt runs without gradients and the reply on its
    keys and values, through left padding, for relative and absolute positions alike. The
    log-probs and entropies are the full pass's; the final norm, which acts only on the positions
    the loss reads, gets exactly the full gradient; the first layer does not (the prompt's
    activations no longer pass gradients back)."""
    run = config(request.getfixturevalue(which), tmp_path, env_id="turngym/Craft-v0",
                 env_kwargs={"max_turns": 3, "image": False}, groups=2, group_size=2, temperature=0.7)
    policy, _, samples = samples_of(run)
    for s in samples:
        s.advantage = 1.0
    batch = collate(samples, policy.pad_id, policy.device)
    assert len({len(s.ids) for s in samples}) > 1 and batch.input_ids.shape[1] > 2 * batch.targets.shape[1]
    params = dict(policy.model.named_parameters())
    norm = next(p for name, p in params.items() if name.endswith(("model.norm.weight", "ln_f.weight")))
    first = next(p for name, p in params.items() if ".0." in name and name.endswith("weight"))

    def run_pass(prompt_grad: bool) -> tuple[torch.Tensor, ...]:
        policy.model.zero_grad()
        logp, entropy = token_logprobs(policy.model, batch, run.temperature, prompt_grad=prompt_grad)
        loss_terms(logp, entropy, batch, entropy_coef=0.01)["loss"].backward()
        return logp.detach(), entropy.detach(), norm.grad.clone(), first.grad.clone()

    full, cut = run_pass(True), run_pass(False)
    assert torch.allclose(full[0], cut[0], atol=1e-4, rtol=0) and torch.allclose(full[1], cut[1], atol=1e-4, rtol=0)
    assert torch.allclose(full[2], cut[2], atol=1e-6, rtol=1e-3) and cut[2].abs().sum() > 0
    assert cut[3].abs().sum() > 0 and not torch.allclose(full[3], cut[3], atol=1e-6, rtol=1e-3)


# --- KL and LoRA ------------------------------------------------------------------------------

@pytest.mark.parametrize("lora", [False, True])
def test_kl_starts_at_zero_and_lora_trains_only_the_adapters(lm: str, tmp_path: Path, lora: bool) -> None:
    """The reference is the starting policy (a frozen copy; with LoRA the base model under the
    adapters, which start as a no-op), so the k3 KL is 0 before any step and > 0 after one. With
    LoRA only adapter weights move; without, the frozen reference does not."""
    run = config(lm, tmp_path, kl_coef=0.1, lora=lora, lr=5e-3 if lora else 5e-4)
    policy, _, samples = samples_of(run)
    add_reference(policy, samples, 8)
    assert mean_terms(policy, samples)["kl"] == pytest.approx(0.0, abs=1e-6)
    weights = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
    trained = {name for name, p in policy.model.named_parameters() if p.requires_grad}
    assert all("lora_" in name for name in trained) if lora else trained == set(weights)
    reference = None if lora else [p.detach().clone() for p in policy.reference.parameters()]

    stats = optimize(policy, torch.optim.AdamW(policy.parameters(), lr=run.lr), samples, run, update=1)
    assert stats["kl"] >= 0 and math.isfinite(stats["grad_norm"])
    assert mean_terms(policy, samples)["kl"] > 1e-6
    moved = {name for name, p in policy.model.named_parameters() if not torch.equal(p, weights[name])}
    assert moved and moved <= trained
    if not lora:
        assert all(torch.equal(p, before) for p, before in zip(policy.reference.parameters(), reference, strict=True))


def test_lm_policies_check_their_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from turngym.rewards import estimators

    for algo in estimators.ESTIMATORS:  # prm, spa and oprl's models and gae's critic: trainers/lm_credit.py
        config("unused", tmp_path, algo=algo).check()
    monkeypatch.setitem(estimators.NEEDS, "gae", frozenset({"values", "world_model"}))
    with pytest.raises(ValueError, match=r"needs values and world_model, which the language-model trainer does not "
                                         r"provide: use one of .*grpo.*oprl.*prm"):
        config("unused", tmp_path, algo="gae").check()
    with pytest.raises(ValueError, match="use ppo or reinforce"):
        config("unused", tmp_path, loss="a2c").check()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        config("unused", tmp_path, temperature=0).check()
    with pytest.raises(ValueError, match="unknown mode 'beam': use generate or score"):
        config("unused", tmp_path, mode="beam").check()
    with pytest.raises(ValueError, match="unknown score_reduce 'max': use sum or mean"):
        config("unused", tmp_path, mode="score", score_reduce="max").check()
    with pytest.raises(ValueError, match="unknown dtype 'int8': use auto, float32, bfloat16, float16"):
        config("unused", tmp_path, dtype="int8").check()
    with pytest.raises(ValueError, match=r"dtype bfloat16 trains only LoRA adapters .*: add lora=True"):
        config("unused", tmp_path, dtype="bfloat16").check()
    config("unused", tmp_path, dtype="bfloat16", lora=True).check()


# --- learning ---------------------------------------------------------------------------------

def test_an_update_lowers_its_loss_and_favours_the_rewarded_replies(lm: str, tmp_path: Path) -> None:
    """One PPO step on North (the update's 16 rollouts as one minibatch): the surrogate loss of
    those turns falls, the replies of winning rollouts (A > 0) become likelier and those of losing
    ones (A < 0) less likely. (This held for each of 20 seeds tried; over several steps PPO's clip
    can let a winner's reply lose probability on the tokens it shares with losers' replies.)"""
    run = config(lm, tmp_path, group_size=8, minibatch_size=64, lr=2e-4)
    policy, _, samples = samples_of(run)
    winners = [s for s in samples if s.advantage > 0]
    losers = [s for s in samples if s.advantage < 0]
    assert winners and losers  # the untrained model wins some of a group's episodes and loses others

    @torch.no_grad()
    def reply_logprob(group: list[Sample]) -> float:
        """The mean over `group` of log pi(reply | prompt), the sum of its tokens' log-probs."""
        batch = collate(group, policy.pad_id, policy.device)
        logp, _ = token_logprobs(policy.model, batch, run.temperature)
        return float(torch.where(batch.mask, logp, 0).sum(1).mean())

    before = mean_terms(policy, samples)["loss"], reply_logprob(winners), reply_logprob(losers)
    optimize(policy, torch.optim.AdamW(policy.parameters(), lr=run.lr), samples, run, update=1)
    after = mean_terms(policy, samples)["loss"], reply_logprob(winners), reply_logprob(losers)
    assert after[0] < before[0]
    assert after[1] > before[1] and after[2] < before[2]


def test_training_raises_the_reward_on_an_easy_task(lm: str, tmp_path: Path) -> None:
    """Six GRPO + PPO updates of 16 rollouts on North: the saved model wins clearly more held-out
    episodes than the starting one (about 0.25 -> 0.6-0.9 over seeds), and the training reward
    of the last updates beats the first's (a noisier figure: 16 episodes an update)."""
    run = config(lm, tmp_path, group_size=8, updates=6)
    rows = train_lm(run, progress=True)
    assert [r["update"] for r in rows] == list(range(1, 7))
    assert np.mean([r["reward"] for r in rows[-3:]]) > np.mean([r["reward"] for r in rows[:3]])
    assert all(math.isfinite(r["loss"]) and 0 <= r["clip_frac"] <= 1 and r["tokens"] > 0 for r in rows)

    def wins(model: str) -> float:
        env = gym.make(NORTH)
        agent = make_agent(f"hf:{model}", env, max_new_tokens=20)
        return float(np.mean([rollout(env, agent, seed=100 + i, options={"split": "dev", "index": i}).success
                              for i in range(16)]))

    assert wins(str(Path(run.out) / "model")) > wins(lm) + 0.2


# --- runs: budget, checkpoints, the saved model ----------------------------------------------

def test_resume_continues_exactly_and_the_saved_model_plays(lm: str, tmp_path: Path) -> None:
    """LoRA + KL + REINFORCE for 3 updates in one go, and for 2 then resumed to 3: the same metric
    rows (loss, KL, gradient norms, ... to the last bit) and the same final weights. The final
    model (adapters merged) loads as `hf:PATH` and plays; the adapters are saved beside it."""
    options = {"lora": True, "kl_coef": 0.05, "entropy_coef": 0.01, "lr": 5e-3, "loss": "reinforce",
               "groups": 1, "micro_batch_size": 2}
    whole = train_lm(config(lm, tmp_path / "a", updates=3, **options), progress=False)
    train_lm(config(lm, tmp_path / "b", updates=2, **options), progress=False)
    assert [r["update"] for r in read_metrics(tmp_path / "b" / "run")] == [1, 2]
    resumed = train_lm(config(lm, tmp_path / "b", updates=3, resume=True, **options), progress=False)

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]

    assert strip(resumed) == strip(whole) and len(whole) == 3 and whole[-1]["kl"] > 0
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / part / "run" / "model" / "model.safetensors") for part in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not any("lora" in k for k in weights[0])  # merged: a plain checkpoint
    assert (tmp_path / "a" / "run" / "adapter" / "adapter_config.json").exists()

    with pytest.raises(ValueError, match="made with other lora"):
        train_lm(config(lm, tmp_path / "b", updates=4, resume=True, **{**options, "lora": False}), progress=False)

    env = gym.make("turngym/Craft-v0", max_turns=2)
    traj = rollout(env, make_agent(f"hf:{tmp_path / 'a' / 'run' / 'model'}", env, max_new_tokens=20), seed=0)
    assert len(traj) == 2 and all(turn.completion_ids and turn.logprobs for turn in traj.turns)


def test_prm_fits_a_process_reward_model_on_the_lms_turns(lm: str, tmp_path: Path) -> None:
    """algo prm: every update fits AgentPRM's PRM (a small text network over the observation and
    the action taken) on the LM's turns before its scores make the advantages. After two updates
    it values `move north`, the one rewarded action, above every other move; a resumed run equals
    an uninterrupted one; OUT/prm.pt holds the PRM."""
    from turngym.agents.neural import NeuralPolicy

    options = {"algo": "prm", "mode": "score", "score_reduce": "mean", "group_size": 8, "prm_epochs": 20}
    whole = train_lm(config(lm, tmp_path / "a", updates=2, **options), progress=False)
    train_lm(config(lm, tmp_path / "b", updates=1, **options), progress=False)
    resumed = train_lm(config(lm, tmp_path / "b", updates=2, resume=True, **options), progress=False)
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in resumed] == \
           [{k: v for k, v in r.items() if k not in TIMING} for r in whole]
    assert all(math.isfinite(row["prm_q_loss"]) and "prm_ev" in row for row in whole)

    prm, meta = NeuralPolicy.load(tmp_path / "a" / "run" / "prm.pt")
    assert meta["algo"] == "prm" and meta["updates"] == 2
    env = gym.make(NORTH)
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        values = prm(prm.encode([obs] * len(MOVES), [[move] for move in MOVES]))[0][:, 0]
    assert MOVES[int(values.argmax())] == "move north"


@pytest.mark.parametrize(("algo", "mode"), [("spa", "score"), ("oprl", "generate"), ("oprl", "score"),
                                           ("gae", "generate")])
def test_spa_oprl_and_a_critic_train_an_lm(lm: str, tmp_path: Path, algo: str, mode: str) -> None:
    """SPA's progress estimator and the critic (small text networks) and OPRL's implicit PRM (a
    LoRA copy of the LM) are fitted on each update's turns: each fit lowers its loss on the batch it
    fits (SPA's decomposition error; the implicit PRM's DPO loss, its preference accuracy rising
    from the untrained 0.5), a resumed run equals an uninterrupted one, and the models are saved
    beside the policy."""
    options = {"algo": algo, "mode": mode, "score_reduce": "mean", "group_size": 8, "credit_epochs": 4,
               "credit_lr": 1e-2 if algo == "oprl" else 3e-3}
    whole = train_lm(config(lm, tmp_path / "a", updates=2, **options), progress=False)
    train_lm(config(lm, tmp_path / "b", updates=1, **options), progress=False)
    resumed = train_lm(config(lm, tmp_path / "b", updates=2, resume=True, **options), progress=False)
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in resumed] == \
           [{k: v for k, v in r.items() if k not in TIMING} for r in whole]
    run = tmp_path / "a" / "run"
    if algo != "oprl":
        assert all(math.isfinite(row["critic_loss"]) and "critic_ev" in row for row in whole)
        assert (run / "critic.pt").exists()
    if algo == "spa":
        assert all(row["spa_mse"] < row["spa_mse_before"] for row in whole)
        assert (run / "spa.pt").exists()
    if algo == "oprl":
        fitted = [row for row in whole if row["oprl_pairs"]]
        assert fitted and whole[0]["oprl_acc_before"] == 0.5  # pi_phi starts as the policy: every pair ties
        assert all(row["oprl_loss"] < row["oprl_loss_before"] and row["oprl_acc"] > 0.5 for row in fitted)
        assert (run / "oprl" / "adapter_config.json").exists()


def test_the_implicit_prms_two_pass_gradient_is_the_dpo_gradient(lm: str, tmp_path: Path) -> None:
    """ImplicitLM.backward (per-episode dL/ds, then the turns in micro-batches) leaves the gradient
    that autograd gives through the whole DPO loss at once."""
    from turngym.trainers.credit import dpo_loss
    from turngym.trainers.lm_credit import ImplicitLM

    run = config(lm, tmp_path, algo="oprl", group_size=4, micro_batch_size=3, oprl_beta=0.7)
    env = gym.make(NORTH)
    policy = make_policy(run, env)
    trajectories, _ = collect(env, policy.agent, run, update=1)
    implicit = ImplicitLM(policy, run)
    torch.manual_seed(0)
    with torch.no_grad():  # away from pi_old (LoRA's B = 0 leaves A's gradient 0)
        for p in implicit.params:
            p.add_(0.05 * torch.randn_like(p))
    samples, owner = implicit.turns(trajectories)
    episode = np.repeat(np.arange(len(trajectories)), [len(t) for t in trajectories])[owner]
    pairs = [(0, 1), (2, 3), (5, 4), (1, 6)]
    loss = implicit.backward(samples, episode, len(trajectories), pairs)
    two_pass = [p.grad.clone() for p in implicit.params]
    for p in implicit.params:
        p.grad = None
    logp = implicit.logprobs(samples).double() - torch.tensor([implicit.old_logprob(x) for x in samples],
                                                                 dtype=torch.float64)
    s = torch.zeros(len(trajectories), dtype=torch.float64).index_add(0, torch.as_tensor(episode), logp)
    direct = dpo_loss(s, pairs, 0.7)
    direct.backward()
    assert loss == pytest.approx(float(direct.detach()), rel=1e-5)
    assert any(g.abs().sum() > 0 for g in two_pass)
    for got, want in zip(two_pass, (p.grad for p in implicit.params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_an_env_step_budget_ends_the_run(lm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A steps budget alone (no update count) runs until the env steps are played, and the
    progress bar counts env steps toward it."""
    import turngym.trainers.lm as lm_trainer

    bars: list[Any] = []

    def recorded(**kwargs: Any) -> Any:
        bars.append(real(**kwargs))
        return bars[-1]

    real = lm_trainer.progress_bar
    monkeypatch.setattr(lm_trainer, "progress_bar", recorded)
    run = config(lm, tmp_path, groups=1, group_size=2, updates=None, steps=3)
    rows = train_lm(run, progress=False)
    assert run.updates is None and rows[-1]["env_steps"] >= 3 and (len(rows) == 1 or rows[-2]["env_steps"] < 3)
    training = bars[0].tasks[0]
    assert (training.total, training.completed) == (3, 3)
    assert (Path(tmp_path) / "run" / "checkpoint.pt").exists() and (Path(tmp_path) / "run" / "tb").is_dir()


def test_reward_code_adds_its_dense_reward_to_every_turn(lm: str, tmp_path: Path) -> None:
    """`reward_code` wraps the LM trainer's env as it wraps the neural trainer's: each turn's reward
    is the env's plus the program's (clipped) dense part, and a critic's run trains on the sum."""
    source = "def reward(prev_state, action, state, info):\n    return 0.05 if state['reached'] else -0.05\n"
    run = config(lm, tmp_path, reward_code=source, groups=1, group_size=2, updates=1, algo="gae")
    env, options = make_env(run)
    policy = make_policy(run, env)
    trajectories, _ = collect(env, policy.agent, run, 1, options)
    turns = [turn for traj in trajectories for turn in traj.turns]
    for turn in turns:
        reached = " ".join(turn.action.lower().split()) == "move north"
        assert turn.info["code_reward"]["dense"] == pytest.approx(0.05 if reached else -0.05)
        assert turn.reward == pytest.approx(float(reached) + (0.05 if reached else -0.05))
    rows = train_lm(run, progress=False)
    assert rows[-1]["reward"] != pytest.approx(rows[-1]["score"])  # the score is the env's alone


def test_cli_trains_an_hf_policy_with_its_options_and_evaluates_it(lm: str, tmp_path: Path) -> None:
    """`turngym train --policy hf:PATH` takes the shared options (--lr, --epochs) and the LM-only
    ones (LoRA, KL, sampling), records them in config.json, and --eval plays the trained model."""
    from typer.testing import CliRunner

    from turngym.apps.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "turngym/Craft-v0", "--policy", f"hf:{lm}", "--lr", "1e-5", "--epochs", "2", "--steps", "4",
        "--groups", "1", "--group-size", "2", "--lora", "--lora-rank", "4", "--kl-coef", "0.05",
        "--max-new-tokens", "12", "--device", "cpu", "--task", "collect_wood", "-k", "max_turns=2",
        "-k", "image=false", "--out", str(out), "--eval", "2"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["policy"], saved["lr"], saved["epochs"], saved["steps"], saved["updates"]) == \
        (f"hf:{lm}", 1e-5, 2, 4, None)
    assert (saved["lora"], saved["lora_rank"], saved["kl_coef"], saved["max_new_tokens"]) == (True, 4, 0.05, 12)
    assert saved["minibatch_size"] == 16 and saved["groups"] == 1  # the LM trainer's default; the option given
    test = json.loads((out / "test.json").read_text())
    assert test["agent"] == f"hf:{out / 'model'}" and test["episodes"] == 2
    assert (out / "curve.png").exists() and (out / "model" / "config.json").exists()
    assert 0.0 <= read_metrics(out)[-1]["progress"] <= 1.0  # Craft's rows carry the recipe path's share


# --- score mode: the policy is the distribution over proposed actions ---------------------------

def choice_means(policy: Any, choices: list[Choice], run: LMTrainConfig) -> dict[str, float]:
    """Per-turn means of the score-mode loss terms over `choices`, without gradients."""
    with torch.no_grad():
        terms = choice_terms(policy, choices, run)
    return {key: float(value) / len(choices) for key, value in terms.items()}


@pytest.mark.parametrize("which", ["lm", "gpt2_lm"])
def test_score_mode_ratios_start_at_one(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The trainer's recomputation of pi over the candidates (several turns' prompts left-padded
    into one batch) gives the log-prob and entropy the agent sampled with (its cache reused across
    turns): every ratio is 1 and nothing is clipped at the first step."""
    run = config(request.getfixturevalue(which), tmp_path, mode="score", env_id="turngym/Craft-v0",
                 env_kwargs={"max_turns": 3, "image": False, "action_mode": "skills"}, group_size=2,
                 temperature=0.7, entropy_coef=0.01)
    policy, trajectories, choices = samples_of(run)
    turns = [turn for t in trajectories for turn in t.turns]
    assert len(choices) == len(turns) > 4 and all(isinstance(c, Choice) for c in choices)
    assert len({len(c.prompt_ids) for c in choices}) > 1
    with torch.no_grad():
        logpis = choice_logpi(policy.model, choices, policy)
    for choice, logpi, turn in zip(choices, logpis, turns, strict=True):
        assert len(logpi) == len(choice.candidate_ids) == len(turn.extras["candidates"])
        assert math.isclose(float(logpi[choice.chosen]), choice.logprob, abs_tol=1e-4)
        assert math.isclose(float(-(logpi.exp() * logpi).sum()), turn.extras["entropy"], abs_tol=1e-4)
    means = choice_means(policy, choices, run)
    assert abs(means["approx_kl"]) < 1e-6 and means["clip_frac"] == 0 and means["entropy"] > 0


@pytest.mark.parametrize("prompt_grad", [True, False])
def test_a_score_mode_update_favours_the_rewarded_action(lm: str, tmp_path: Path, prompt_grad: bool) -> None:
    """One PPO step in score mode on North (the update's 16 rollouts as one minibatch): the
    surrogate loss falls and pi(move north), the rewarded action, rises over the update's turns,
    with the exact gradient and with the one truncated at the prompt (`prompt_grad=False`).
    Mean-reduced scores: with sums the tiny model prefers the one-token `do` and `noop` so much
    that it rarely tries `move north` (about 0.03 a turn), and GRPO then sees few wins."""
    run = config(lm, tmp_path, mode="score", score_reduce="mean", group_size=8, minibatch_size=64, lr=2e-4,
                 prompt_grad=prompt_grad)
    policy, _, choices = samples_of(run)
    winners = [c for c in choices if c.advantage > 0]
    assert winners and [c for c in choices if c.advantage < 0]  # groups with wins and losses

    @torch.no_grad()
    def north() -> float:
        """The mean over the turns of pi(move north)."""
        logpis = choice_logpi(policy.model, choices, policy)
        return float(np.mean([float(lp[MOVES.index("move north")].exp()) for lp in logpis]))

    before = choice_means(policy, choices, run)["loss"], north()
    optimize(policy, torch.optim.AdamW(policy.parameters(), lr=run.lr), choices, run, update=1)
    after = choice_means(policy, choices, run)["loss"], north()
    assert after[0] < before[0] and after[1] > before[1]


def test_score_mode_runs_resume_exactly_and_the_saved_model_scores(lm: str, tmp_path: Path) -> None:
    """Score mode with LoRA, the exact KL, an entropy bonus and micro-batches:
    2 updates in one go equal 1 then resumed to 2 (same rows, same weights); the KL is 0 at first
    and > 0 once the adapters moved; `hf:OUT/model` plays in score mode."""
    options = {"mode": "score", "lora": True, "kl_coef": 0.05, "entropy_coef": 0.01,
               "lr": 5e-3, "groups": 1, "micro_batch_size": 3}
    whole = train_lm(config(lm, tmp_path / "a", updates=2, **options), progress=False)
    train_lm(config(lm, tmp_path / "b", updates=1, **options), progress=False)
    resumed = train_lm(config(lm, tmp_path / "b", updates=2, resume=True, **options), progress=False)

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]

    assert strip(resumed) == strip(whole) and len(whole) == 2
    assert whole[0]["kl"] == pytest.approx(0.0, abs=1e-7) and whole[1]["kl"] > 0
    assert all(row["candidates"] == len(MOVES) and math.isfinite(row["loss"]) for row in whole)
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / part / "run" / "model" / "model.safetensors") for part in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    env = gym.make(NORTH)
    agent = make_agent(f"hf:{tmp_path / 'a' / 'run' / 'model'}", env, mode="score")
    traj = rollout(env, agent, seed=0)
    assert all(turn.info["valid"] and turn.extras["mode"] == "score" for turn in traj.turns)


def test_bfloat16_base_weights_train_float32_adapters_and_merge_them_exactly(lm: str, tmp_path: Path) -> None:
    """`dtype=bfloat16` with LoRA: the base weights run in bfloat16, the adapters (what the
    optimizer updates) stay float32, the first update's ratios are 1 to bfloat16's rounding, and
    the saved model is the adapters merged in float32 into the bfloat16 base (a bfloat16 merge
    would round away updates below a weight's rounding step)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run = config(lm, tmp_path, mode="score", score_reduce="mean", lora=True, dtype="bfloat16", lr=5e-3, updates=2,
                 group_size=8)
    policy, _, choices = samples_of(run)
    dtypes = {name: p.dtype for name, p in policy.model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    means = choice_means(policy, choices, run)
    assert abs(means["approx_kl"]) < 1e-2 and means["clip_frac"] == 0

    rows = train_lm(run, progress=False)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    saved = AutoModelForCausalLM.from_pretrained(run.out + "/model", local_files_only=True, dtype="auto")
    base = AutoModelForCausalLM.from_pretrained(lm, local_files_only=True, dtype=torch.bfloat16)
    adapter = load_file(Path(run.out) / "adapter" / "adapter_model.safetensors")
    a_key = next(k for k in adapter if k.endswith("q_proj.lora_A.weight"))
    layer = a_key.removeprefix("base_model.model.").rsplit(".lora_A", 1)[0]  # model.layers.0.self_attn.q_proj
    delta = adapter[a_key.replace("lora_A", "lora_B")] @ adapter[a_key] * (run.lora_alpha / run.lora_rank)
    assert float(delta.abs().max()) > 0  # the adapters moved
    merged, start = saved.get_parameter(layer + ".weight"), base.get_parameter(layer + ".weight")
    assert merged.dtype == torch.float32
    assert torch.allclose(merged, start.float() + delta, atol=1e-6, rtol=0)
