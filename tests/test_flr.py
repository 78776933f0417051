"""FLR (turngym.rewards.flr) on tiny checkpoints built locally: the packed, batched pass against a
plain forward pass per follow-up, the layout of the follow-up as the next user turn, the follow-up
sets, and the reward wrapper."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import mixed_window_checkpoint, tiny_checkpoint

from turngym.agents import make_agent
from turngym.rewards.flr import (
    FLRReward,
    FollowUpLikelihood,
    FollowUps,
    followup_sets,
    load_followups,
    trajectory_item,
    turn_item,
)
from turngym.rollout import rollout

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests build their models: nothing may download
FOLLOWUPS = {"aspects": {"fit": {"positive": ["That is exactly what I needed.", "Great, thanks!"],
                                 "negative": ["That is not what I asked for.", "No"]}}}
# a conversation longer than the tiny Mistral's reach (2 layers x a 32-token window), so that the
# window decides what a follow-up token sees
LONG = ("Instruction: i need a pair of blue running shoes in size 9 under 40 dollars, breathable and light. "
        "Results: B0001 Blue Runner | $35.00 [SEP] B0002 Red Trail Shoe | $55.00 [SEP] B0003 Blue Walker | $20.00")
ITEMS = [
    ([{"role": "user", "content": LONG}], "click[B0001]"),
    ([{"role": "user", "content": "Question: What is the total on page 3?"}], "answer[65.3]"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "search for shoes"},
      {"role": "assistant", "content": "search[shoes]"}, {"role": "user", "content": LONG[:120]}], "click[Buy Now]"),
    ([{"role": "user", "content": "hi"}], ""),  # an empty response: FLR still scores the follow-ups
]


@pytest.fixture(scope="module", params=["mistral", "gpt2", "qwen2-mixed"])
def flr(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        one_thread: None) -> FollowUpLikelihood:
    """A FollowUpLikelihood on a tiny random-weight LM: a Mistral (sliding window), a GPT-2, or a
    Qwen2 with one windowed and one full-attention layer."""
    if request.param == "qwen2-mixed":
        return FollowUpLikelihood(str(mixed_window_checkpoint(tmp_path_factory, request.param)), FOLLOWUPS)
    path = tiny_checkpoint(tmp_path_factory, request.param, arch=request.param, train_steps=0)
    return FollowUpLikelihood(str(path), FOLLOWUPS)


def plain(flr: FollowUpLikelihood, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and log-probs of one sequence from a plain forward pass (no mask, no packing)."""
    with torch.no_grad():
        logits = flr.lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    return logits, torch.log_softmax(logits, -1)


def test_followup_is_the_next_user_turn(flr: FollowUpLikelihood) -> None:
    tokenizer = flr.tokenizer
    for messages, response in ITEMS:
        followup = "That is exactly what I needed."
        chat = [*messages, {"role": "assistant", "content": response}, {"role": "user", "content": followup}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        ids = flr.sequence(messages, response, followup)
        # the scored sequence is the chat template up to the follow-up's end, tokenized as a whole
        assert tokenizer.decode(ids) == text[:text.rindex(followup) + len(followup)]
        assert ids == tokenizer(text[:text.rindex(followup) + len(followup)], add_special_tokens=False)["input_ids"]
        assert ids[-len(tokenizer(followup)["input_ids"]):] == tokenizer(followup)["input_ids"]
        # ... right after the response, which ends the assistant's turn, and the user's turn opener
        prompt = flr.prompt(messages, response)
        start, end = prompt.response
        assert tokenizer.decode(prompt.ids[start:end]) == response
        assert tokenizer.decode(prompt.ids[end:]) == "<|im_end|>\n<|im_start|>user\n"
        assert prompt.ids == ids[:len(prompt.ids)]


def test_scores_equal_a_plain_forward_pass(flr: FollowUpLikelihood) -> None:
    """Every variant and the response baseline, against one unpacked forward pass per follow-up."""
    sets = load_followups(FOLLOWUPS)
    measures = flr.measure(ITEMS, sets.positive + sets.negative)
    for i, (messages, response) in enumerate(ITEMS):
        prompt = flr.prompt(messages, response)
        n = len(prompt.ids)
        expected: dict[str, dict[str, float]] = {"loglik": {}, "logit": {}, "logit_bag": {}}
        for followup in sets.positive + sets.negative:
            ids = flr.sequence(messages, response, followup)
            logits, logprobs = plain(flr, ids)
            k = torch.arange(n, len(ids))  # the follow-up's tokens, each predicted by the position before it
            expected["loglik"][followup] = logprobs[k - 1, torch.tensor(ids)[k]].mean().item()
            expected["logit"][followup] = logits[k - 1, torch.tensor(ids)[k]].mean().item()
            expected["logit_bag"][followup] = logits[n, torch.tensor(ids[n:])].mean().item()  # at its first token
        for variant, by_followup in expected.items():
            flr_by_hand = (np.mean([by_followup[f] for f in sets.positive])
                           - np.mean([by_followup[f] for f in sets.negative]))
            assert measures.flr(sets, variant)[i] == pytest.approx(flr_by_hand, abs=1e-5)
            got = measures.variants[variant][i, list(measures.followups).index("Great, thanks!")]
            assert got == pytest.approx(by_followup["Great, thanks!"], abs=1e-5)
        start, end = prompt.response
        if end > start:
            _, logprobs = plain(flr, prompt.ids)
            k = torch.arange(start, end)
            assert measures.response[i] == pytest.approx(logprobs[k - 1, torch.tensor(prompt.ids)[k]].mean().item(),
                                                         abs=1e-5)
        else:
            assert np.isnan(measures.response[i])
    assert flr.scores(ITEMS) == pytest.approx(measures.flr(sets, "loglik"))
    assert flr.response_loglik(ITEMS) == pytest.approx(measures.response, nan_ok=True)


def test_batching_and_padding_leave_scores_unchanged(flr: FollowUpLikelihood) -> None:
    one_by_one = np.concatenate([flr.scores([item]) for item in ITEMS])
    batched = FollowUpLikelihood(flr.lm, FOLLOWUPS, batch_size=8).scores(ITEMS)
    reordered = FollowUpLikelihood(flr.lm, FOLLOWUPS, batch_size=8).scores(ITEMS[::-1])[::-1]
    mixed = FollowUpLikelihood(flr.lm, FOLLOWUPS, batch_size=3).scores(ITEMS)
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert reordered == pytest.approx(one_by_one, abs=1e-5)
    assert mixed == pytest.approx(one_by_one, abs=1e-5)
    assert len(set(np.round(one_by_one, 6))) == len(ITEMS)  # the items really differ


def test_followup_sets_load_with_about_ten_and_ten_per_aspect() -> None:
    assert {"general", "webshop", "longdoc", "craft"} <= set(followup_sets())
    general = load_followups("general")
    assert set(general.aspects) == {"understanding", "relevance", "correctness", "helpfulness",
                                    "instruction_following"}
    for name in followup_sets():
        sets = load_followups(name)
        assert sets.name == name and sets.aspects
        for aspect, (pos, neg) in sets.aspects.items():
            assert 8 <= len(pos) <= 12 and 8 <= len(neg) <= 12, (name, aspect)
            assert len(set(pos)) == len(pos) and len(set(neg)) == len(neg) and not set(pos) & set(neg)
            assert all(f == f.strip() and f for f in pos + neg)
        assert len(sets.positive) == sum(len(p) for p, _ in sets.aspects.values())


def test_followup_specs_and_errors(tmp_path: Path) -> None:
    single = load_followups({"positive": ["Yes."], "negative": ["No."]})
    assert single.positive == ("Yes.",) and single.negative == ("No.",)
    path = tmp_path / "mine.yaml"
    path.write_text("aspects:\n  a:\n    positive: [Good.]\n    negative: [Bad.]\n")
    assert load_followups(path) == FollowUps("mine", {"a": (("Good.",), ("Bad.",))})
    assert load_followups(str(path)).aspects == {"a": (("Good.",), ("Bad.",))}
    with pytest.raises(ValueError, match="unknown follow-up set"):
        load_followups("nope")
    with pytest.raises(ValueError, match="non-empty"):
        load_followups({"positive": ["Yes."], "negative": []})
    with pytest.raises(ValueError, match="not a mapping"):
        load_followups({"aspects": ["Yes.", "No."]})


def test_bad_options_are_refused(flr: FollowUpLikelihood) -> None:
    with pytest.raises(ValueError, match="variant"):
        FollowUpLikelihood(flr.lm, variant="probability")
    with pytest.raises(ValueError, match="batch_size"):
        FollowUpLikelihood(flr.lm, batch_size=0)


def test_reward_changes_only_the_chosen_turn_mixed_by_weight(flr: FollowUpLikelihood) -> None:
    env = gym.make("turngym/WebShop-v0")
    actions = [t.action for t in rollout(env, make_agent("oracle", env), seed=0).turns]
    bare = rollout(env, _Script(actions), seed=0)
    wrapped_env = FLRReward(gym.make("turngym/WebShop-v0"), flr, weight=0.25)
    wrapped = rollout(wrapped_env, _Script(actions), seed=0)
    assert [t.action for t in wrapped.turns] == actions and bare.terminated and len(bare) >= 3
    score = float(flr.scores([trajectory_item(bare)])[0])
    assert score == pytest.approx(flr.score_trajectory(bare))
    for before, after in zip(bare.turns[:-1], wrapped.turns[:-1], strict=True):
        assert after.reward == before.reward and "flr" not in after.info
    last = wrapped.turns[-1]
    assert last.info["flr"] == pytest.approx(score) and last.info["env_reward"] == bare.turns[-1].reward
    assert last.reward == pytest.approx(0.75 * bare.turns[-1].reward + 0.25 * score)

    # every turn, or the turns a rule picks (here the second), scored on its own observation and action
    everywhere = rollout(FLRReward(gym.make("turngym/WebShop-v0"), flr, weight=1.0, turns="all"),
                         _Script(actions), seed=0)
    expected = flr.scores([turn_item(t.text, t.action) for t in bare.turns])
    assert [t.reward for t in everywhere.turns] == pytest.approx(expected, abs=1e-5)
    picked = rollout(FLRReward(gym.make("turngym/WebShop-v0"), flr, weight=0.5,
                               turns=lambda action, info, terminated: info["turn"] == 2), _Script(actions), seed=0)
    flagged = [i for i, t in enumerate(picked.turns) if "flr" in t.info]
    assert len(flagged) == 1
    i = flagged[0]
    assert picked.turns[i].reward == pytest.approx(0.5 * bare.turns[i].reward + 0.5 * expected[i], abs=1e-5)
    with pytest.raises(ValueError, match="weight"):
        FLRReward(env, flr, weight=1.5)
    with pytest.raises(ValueError, match="turns"):
        FLRReward(env, flr, turns="final")


class _Script:
    """Plays a fixed list of actions."""

    def __init__(self, actions: list[str]) -> None:
        self.actions = actions

    def reset(self, obs: dict, info: dict) -> None:
        self.left = iter(self.actions)

    def act(self, obs: dict, info: dict) -> str:
        return next(self.left)
