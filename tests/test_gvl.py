"""GVL (rewards/gvl.py) and VOC (rewards/voc.py): the prompt, the reply parser, un-shuffling, the
uses of the values, and the whole loop against a tiny vision-language model, directly (`hf:`) and
served over HTTP by turngym's own chat server (`openai:`).

A tiny random model replies garbage: those tests check what the model was shown (images, anchor,
order) and that frames it did not answer are reported missing, never filled in. What a truthful
model would answer is scripted.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from conftest import serving, tiny_checkpoint
from scipy.stats import spearmanr

from turngym.agents.chat_api import image_from_data_url
from turngym.agents.lm import Completion, LMAgent, Message, image_part, text_part
from turngym.rewards.estimators import Rollouts, estimate
from turngym.rewards.gvl import (
    GVLResult,
    GVLScorer,
    annotate,
    awr_weights,
    filter_by_voc,
    gvl_critic,
    gvl_shaped_rewards,
    parse_percentages,
    turn_progress,
)
from turngym.rewards.voc import episode_voc, voc
from turngym.trajectory import Trajectory, Turn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests build their model: nothing may download


def frames(n: int, size: int = 8) -> list[np.ndarray]:
    """n solid frames; frame i has the value 10 * i, so a frame in a prompt says which it is."""
    return [np.full((size, size, 3), 10 * i, np.uint8) for i in range(n)]


def frame_id(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) // 10


class _Env(gym.Env):
    observation_space = gym.spaces.Text(1)
    action_space = gym.spaces.Text(1)


class Scripted(LMAgent):
    """An LM agent whose reply is computed from the prompt; it records every prompt."""

    def __init__(self, reply: Callable[[list[Message]], str]) -> None:
        super().__init__(_Env(), temperature=0.0)
        self.reply, self.seen = reply, []

    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        self.seen.append(messages)
        return Completion(self.reply(messages))


def shown(messages: list[Message]) -> list[tuple[str, int]]:
    """(the text just before it, frame id) of each image of the prompt's one message, in order."""
    parts = messages[-1]["content"]
    return [(parts[k - 1]["text"], frame_id(part["image"])) for k, part in enumerate(parts) if part["type"] == "image"]


def truthful(n: int, skip: tuple[int, ...] = ()) -> Callable[[list[Message]], str]:
    """Replies with each shown frame's true linear progress (in the shown order), leaving out
    the frames numbered in `skip`."""
    def reply(messages: list[Message]) -> str:
        lines = []
        for before, i in shown(messages):
            match = re.search(r"Frame (\d+): $", before)
            if match and int(match.group(1)) not in skip:
                lines.append(f"Frame {match.group(1)}: a frame. Task completion percentage: {100 * i / (n - 1):g}%")
        return "\n".join(lines)
    return reply


def trajectory(n_turns: int, *, final: bool, terminated: bool, rewards: list[float] | None = None) -> Trajectory:
    images = frames(n_turns + 1)
    rewards = rewards or [0.0] * (n_turns - 1) + [1.0]
    traj = Trajectory("x", "t", 0, instruction="stack the blocks", terminated=terminated, truncated=not terminated,
                      turns=[Turn("obs", "act", r, image=images[t]) for t, r in enumerate(rewards)])
    if final:
        traj.final_image = images[n_turns]
    return traj


# --- the prompt ------------------------------------------------------------------------------------

def test_prompt_anchors_the_true_first_frame_and_shows_the_rest_shuffled_and_numbered() -> None:
    scorer = GVLScorer(Scripted(lambda m: ""), max_frames=5, seed=3)
    messages, used, permutation = scorer.prompt(frames(12), "stack the blocks")
    assert len(messages) == 1 and messages[0]["role"] == "user"
    assert used == [0, 1, 4, 6, 8, 11]  # evenly spaced, the last frame always shown
    assert sorted(permutation) == [1, 2, 3, 4, 5] and permutation != [1, 2, 3, 4, 5]
    images = shown(messages)
    assert len(images) == 1 + 5
    assert images[0][1] == 0 and images[0][0].endswith("Initial scene: ")  # the anchor: the episode's first frame
    parts = messages[0]["content"]
    assert "stack the blocks" in parts[0]["text"] and "random order" in parts[0]["text"]
    assert parts[2]["text"].startswith("\nIn the initial scene, the task completion percentage is 0%.")
    for k, (before, i) in enumerate(images[1:], 1):
        assert before.endswith(f"Frame {k}: ") and i == used[permutation[k - 1]]
    assert "frames 1 to 5" in parts[-1]["text"] and "Task completion percentage: <0 to 100>%" in parts[-1]["text"]
    assert all(a["type"] != b["type"] for a, b in itertools.pairwise(parts))  # texts merged

    # same seed, same prompt; another seed shuffles otherwise; a short episode shows every frame
    again = scorer.prompt(frames(12), "stack the blocks")
    assert again[1:] == (used, permutation) and shown(again[0]) == images
    assert any(scorer.prompt(frames(12), "stack the blocks", seed=s)[2] != permutation for s in range(4, 8))
    assert scorer.prompt(frames(4), "stack the blocks")[1] == [0, 1, 2, 3]
    assert GVLScorer(Scripted(lambda m: ""), max_frames=1).prompt(frames(9), "x")[1] == [0, 8]


def test_prompt_reads_a_trajectory_and_puts_in_context_examples_first_with_linear_labels() -> None:
    examples = [[np.full((4, 4, 3), 100 + 10 * i, np.uint8) for i in range(5)]]
    scorer = GVLScorer(Scripted(lambda m: ""), max_frames=3, seed=0, examples=examples, example_frames=3)
    traj = trajectory(4, final=True, terminated=True)
    messages, used, permutation = scorer.prompt(traj)
    parts = messages[0]["content"]
    assert "stack the blocks" in parts[0]["text"] and used == [0, 1, 2, 4]  # of 4 turn images + the final one
    labels = []
    for k, part in enumerate(parts):
        if part["type"] == "image" and frame_id(part["image"]) >= 10:  # an example's frame
            assert re.search(r"Example frame \d+: $", parts[k - 1]["text"])
            label = re.match(r" Task completion percentage: (\d+)%", parts[k + 1]["text"])
            labels.append((frame_id(part["image"]) - 10, int(label.group(1))))
    assert sorted(labels) == [(0, 0), (2, 50), (4, 100)]  # first, middle, last: linear in time
    images = shown(messages)
    assert [i for _, i in images[3:]] == [0] + [used[j] for j in permutation]  # the episode after the examples
    # the query's order does not depend on the examples
    assert GVLScorer(Scripted(lambda m: ""), max_frames=3, seed=0).prompt(traj)[2] == permutation

    no_image = trajectory(3, final=False, terminated=True)
    no_image.turns[1].image = None
    for episode, task, match in ((no_image, None, "turns without an image"), (frames(1), "x", "at least 2 frames"),
                                 (frames(3), "  ", "task in words"), ([np.zeros((4, 4))] * 3, "x", "RGB image")):
        with pytest.raises(ValueError, match=match):
            scorer.prompt(episode, task)


# --- the reply -------------------------------------------------------------------------------------

def test_parse_percentages_reads_the_formats_models_write_and_refuses_the_rest() -> None:
    reply = """Initial scene: the table, 0%.
Example frame 1: Task completion percentage: 90%
Frame 1: Frame Description: the arm reaches for 2 blocks, Task Completion Percentages: 20%
**Frame 2**: the gripper closes. **Task completion percentage:** 45%
### Frame 3
Description: the arm is lifting the block.
Task completion percentage: 70.5 %
- Frame 4: 35
Frame 5: the block sits on the tower, 100% done
Frame 6: progress is unclear here.
Frame 7: Task completion percentage: 150%
Frame 8: Task completion percentage: -5%
Frame 0: Task completion percentage: 10%
Frame 9: Task completion percentage: 10%
Frame 2: Task completion percentage: 99%
Frame 10: nothing here
"""
    assert parse_percentages(reply, 9) == {1: 20.0, 2: 45.0, 3: 70.5, 4: 35.0, 5: 100.0, 9: 10.0}
    assert parse_percentages(reply, 8) == {1: 20.0, 2: 45.0, 3: 70.5, 4: 35.0, 5: 100.0}  # 9 is out of range
    for garbage in ("", "\n\n\n", "frame frame 50%", "Frames 1-3: 20%", "Frame one: 30%"):
        assert parse_percentages(garbage, 3) == {}


def test_scores_are_unshuffled_and_unanswered_frames_reported_not_invented() -> None:
    n = 9
    scorer = GVLScorer(Scripted(truthful(n)), max_frames=4, seed=1)
    result = scorer.score(frames(n), "stack the blocks")
    assert result.frames == [0, 1, 3, 6, 8] and result.missing == [] and result.n_frames == n
    assert np.allclose(result.values, np.array(result.frames) / (n - 1)) and result.voc == 1.0
    assert result.reply.count("Frame") == 4
    assert np.allclose(result.frame_values(), np.arange(n) / (n - 1))

    skipped = GVLScorer(Scripted(truthful(n, skip=(2,))), max_frames=4, seed=1).score(frames(n), "stack the blocks")
    lost = result.frames[result.permutation[1]]  # the frame shown as "Frame 2"
    assert skipped.missing == [lost] and skipped.permutation == result.permutation
    j = result.frames.index(lost)
    assert math.isnan(skipped.values[j]) and np.allclose(np.delete(skipped.values, j), np.delete(result.values, j))
    assert skipped.voc == 1.0  # over the frames answered
    assert np.allclose(skipped.frame_values(), np.arange(n) / (n - 1))  # the uses interpolate linearly

    nothing = GVLScorer(Scripted(lambda m: "I cannot tell."), max_frames=4).score(frames(n), "stack the blocks")
    assert nothing.missing == [1, 3, 6, 8] and np.isnan(nothing.values[1:]).all() and math.isnan(nothing.voc)
    assert (nothing.frame_values() == 0).all()


# --- VOC -------------------------------------------------------------------------------------------

def test_voc_is_spearman_against_time_with_average_ranks_and_nan_without_order() -> None:
    rng = np.random.default_rng(0)
    cases = [rng.random(12), rng.integers(0, 4, 15).astype(float), np.array([0, 10, 10, 20, 20, 20, 50.0]),
             np.array([3.0, 2.0, 1.0]), np.arange(6.0), np.array([5.0, 5.0, 1.0, 5.0])]
    for values in cases:
        assert voc(values) == pytest.approx(spearmanr(np.arange(len(values)), values).statistic, abs=1e-12)
    assert voc([1.0, 2.0, 3.0]) == 1.0 and voc([3.0, 2.0, 1.0]) == -1.0
    # ties break by average rank, not by position: a flat answer earns nothing
    assert voc([0.0, 0.5, 0.5, 0.5, 1.0]) == pytest.approx(spearmanr(range(5), [0, 1, 1, 1, 2]).statistic)
    for no_order in ([0.4] * 5, [1.0], [], [0.1, float("nan"), 0.3]):
        assert math.isnan(voc(no_order))


# --- the uses --------------------------------------------------------------------------------------

def scored(traj: Trajectory, skip: tuple[int, ...] = ()) -> GVLResult:
    n = len(traj.turns) + (getattr(traj, "final_image", None) is not None)
    return GVLScorer(Scripted(truthful(n, skip)), max_frames=10, seed=0).score(traj)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_shaping_moves_credit_but_keeps_the_return(gamma: float) -> None:
    discount = gamma ** np.arange(5)
    for final in (True, False):
        done = trajectory(5, final=final, terminated=True, rewards=[0.0, 0.2, 0.0, 0.0, 1.0])
        shaped = gvl_shaped_rewards(done, scored(done), gamma=gamma, scale=2.0)
        assert shaped @ discount == pytest.approx(np.array([t.reward for t in done.turns]) @ discount)
        assert not np.allclose(shaped, [t.reward for t in done.turns])  # the credit moved
    cut = trajectory(5, final=True, terminated=False, rewards=[0.0] * 5)
    result = scored(cut)
    shaped = gvl_shaped_rewards(cut, result, gamma=gamma)
    # truncated: the potential of the last state stands in for the return to come, as in PotentialShaping
    assert shaped @ discount == pytest.approx(gamma ** 5 * result.frame_values()[5])
    assert np.allclose(shaped, gamma * np.arange(1, 6) / 5 - np.arange(5) / 5)


def test_the_values_serve_as_a_frozen_critic_for_gae_and_weigh_awr() -> None:
    done, cut = trajectory(4, final=True, terminated=True), trajectory(4, final=False, terminated=False)
    results = [scored(done), scored(cut, skip=(2,))]
    critic = gvl_critic([done, cut], results)
    assert np.allclose(critic[0], [0, 0.25, 0.5, 0.75, 0.0])  # V(s_T) = 0 after termination
    assert np.allclose(critic[1], [0, 1 / 3, 2 / 3, 1, 1])  # truncated, no final frame: the last turn's value
    assert np.allclose(turn_progress(done, results[0]), [0, 0.25, 0.5, 0.75, 1.0])
    advantages = estimate("gae", Rollouts([done, cut], [0, 0], values=critic), gamma=1.0, lam=0.0)
    assert np.allclose(advantages.advantages[0], [0.25, 0.25, 0.25, 0.25])  # the success's credit spread evenly

    weights = awr_weights(done, results[0], tau=4.0)
    assert np.allclose(weights, np.exp(4.0 * 0.25))
    assert np.allclose(awr_weights(done, results[0], tau=40.0, max_weight=5.0), 5.0)
    assert np.allclose(awr_weights(cut, results[1]), [*np.exp(np.full(3, 1 / 3)), 1.0])  # nothing after the last
    with pytest.raises(ValueError, match="not of this trajectory"):
        turn_progress(trajectory(8, final=True, terminated=True), results[0])


def test_annotate_writes_the_judged_values_where_the_report_reads_them() -> None:
    traj = trajectory(5, final=True, terminated=True)
    result = scored(traj, skip=(1,))
    lost = result.frames[result.permutation[0]]
    annotate(traj, result)
    written = {t: turn.extras["gvl"] for t, turn in enumerate(traj.turns) if "gvl" in turn.extras}
    assert written == {t: t / 5 for t in range(1, 5) if t != lost}  # neither the anchor nor the final frame
    assert episode_voc(traj, "gvl") == 1.0


def test_filter_by_voc_keeps_the_episodes_whose_values_rise() -> None:
    n = 6
    up = frames(n)
    down = up[:1] + up[1:][::-1]  # progress undone: frame k of this episode is frame n - k of the other
    scorer = GVLScorer(Scripted(truthful(n)), max_frames=5, seed=2)
    results = [scorer.score(e, "stack the blocks") for e in (up, down)]
    assert results[0].voc == 1.0 and results[1].voc == -1.0
    assert filter_by_voc(["up", "down"], 0.5, results) == ["up"]
    assert filter_by_voc(["up", "down"], -1.0, results) == ["up", "down"]
    trajs = [trajectory(5, final=True, terminated=True), trajectory(5, final=True, terminated=True)]
    trajs[1].turns[0].image, trajs[1].turns[3].image = trajs[1].turns[3].image, trajs[1].turns[0].image
    kept = filter_by_voc(trajs, 0.9, GVLScorer(Scripted(truthful(6)), max_frames=5))
    assert len(kept) == 1 and kept[0] is trajs[0]
    with pytest.raises(ValueError, match="2 GVL results for 1 episodes"):
        filter_by_voc(["up"], 0.5, results)


# --- a real tiny vision-language model -----------------------------------------------------------

@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> str:
    """A tiny vision-language checkpoint with random weights (16 image tokens an image)."""
    return str(tiny_checkpoint(tmp_path_factory, "tiny-vlm", vlm=True))


class Recorder:
    """ASGI middleware that keeps the JSON body of every POST."""

    def __init__(self, app: Any) -> None:
        self.app, self.bodies = app, []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.bodies.append(json.loads(body))
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def vlm_server(vlm: str) -> Iterator[tuple[str, Recorder]]:
    from turngym.serve.lm_server import make_app

    recorder = Recorder(make_app(vlm, name="tiny-vlm"))
    with serving(recorder) as url:
        yield f"{url}/v1", recorder


def test_gvl_over_http_sends_every_frame_in_order_and_reports_garbage_as_missing(
        vlm: str, vlm_server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    url, recorder = vlm_server
    episode = frames(10, size=24)
    remote = GVLScorer(f"openai:tiny-vlm@{url}?max_new_tokens=24", max_frames=5, seed=7)
    messages, used, permutation = remote.prompt(episode, "stack the blocks")
    result = remote.score(episode, "stack the blocks")
    assert (result.frames, result.permutation) == (used, permutation)

    body = recorder.bodies[-1]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 24 and len(body["messages"]) == 1
    parts = body["messages"][0]["content"]
    images = [image_from_data_url(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
    assert len(images) == 1 + 5
    assert np.array_equal(images[0], episode[0]) and parts[0]["text"].endswith("Initial scene: ")
    assert [frame_id(i) for i in images[1:]] == [used[j] for j in permutation]
    assert [p["text"] for p in parts if p["type"] == "text"] == \
        [p["text"] for p in messages[0]["content"] if p["type"] == "text"]
    # garbage in, nothing invented: every frame the reply does not answer is missing
    answered = parse_percentages(result.reply, 5)
    assert len(result.missing) == 5 - len(answered)
    assert np.isnan(result.values).sum() == len(result.missing) and result.values[0] == 0.0

    # hf: the same model directly sees the same prompt, 16 tokens an image, and (greedy) replies the same
    local = GVLScorer(f"hf:{vlm}", max_frames=5, seed=7, max_new_tokens=24)
    seen: list[Completion] = []
    complete = local.lm.complete
    monkeypatch.setattr(local.lm, "complete", lambda *a: seen.append(complete(*a)) or seen[-1])
    direct = local.score(episode, "stack the blocks")
    image_token = local.lm.model.model.config.image_token_id
    assert seen[0].prompt_ids.count(image_token) == 16 * 6
    assert direct.usage["prompt_tokens"] == result.usage["prompt_tokens"]
    assert direct.reply == result.reply and direct.missing == result.missing


def test_gvl_refuses_a_text_only_model_which_reads_only_the_text_of_image_messages(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from turngym.agents.hf import HFModel

    path = tiny_checkpoint(tmp_path_factory, "lm", train_steps=0)
    with pytest.raises(ValueError, match="text-only"):
        GVLScorer(f"hf:{path}")
    model = HFModel(str(path))
    mixed = [{"role": "user", "content": [text_part("look: "), image_part(frames(1)[0]), text_part(" now")]}]
    assert model.prompt_text(mixed) == model.prompt_text([{"role": "user", "content": "look:  now"}])
    assert model.encode(mixed)["input_ids"].tolist() == model.encode([{"role": "user", "content": "look:  now"}])[
        "input_ids"].tolist()
