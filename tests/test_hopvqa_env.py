"""HopVQA-v0 and -v1: episodes, claims and hop checks, zoom, bad actions, frozen and balanced splits."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import cache

import gymnasium as gym
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from turngym import rollout
from turngym.agents import make_agent
from turngym.apps.cli import app
from turngym.envs.hopvqa.env import chain_length, make_task, task_answer
from turngym.envs.hopvqa.program import ProgramError, execute
from turngym.envs.hopvqa.tasks import CHAINS, TRAIN_SEEDS, balanced_order, draw_split, manifest
from turngym.suites import load_suite


def make(version: int = 0, **kwargs):
    return gym.make(f"turngym/HopVQA-v{version}", **kwargs)


def test_the_oracle_claims_every_hop_and_answers_right():
    env = make()
    oracle = make_agent("oracle", env)
    for i in range(20):
        traj = rollout(env, oracle, seed=i, options={"split": "test", "index": i})
        hops = len(env.unwrapped.state_dict()["hops"])
        assert traj.success and len(traj) == hops + 1 and 3 <= hops <= 5
        assert traj.score_parts == {"correct": 1.0, "claims_correct": 1.0}
        assert traj.turns[-1].info["hop_checks"] == {str(k): True for k in range(1, hops + 1)}


def test_claims_are_checked_and_change_nothing_else():
    env = make()
    obs, info = env.reset(options={"split": "test", "index": 0})
    assert info["hop_checks"] == {} and obs["image"].shape == (768, 768, 3)
    state = env.unwrapped.state_dict()
    first = state["hops"][0]
    truth = len(first["value"]) if first["kind"] == "set" else first["value"]
    wrong = "not-an-answer"
    obs2, reward, terminated, _, info = env.step(f"claim[1, {wrong}]")
    assert info["valid"] and info["hop_checks"] == {"1": False} and reward == 0 and not terminated
    assert np.array_equal(obs2["image"], obs["image"])
    _, _, _, _, info = env.step(f"claim[1, {truth}]")
    assert info["hop_checks"] == {"1": True}  # the latest claim counts
    _, reward, terminated, _, info = env.step(f"answer[{state['answer'] + 1}]")
    assert terminated and reward == 0.0 and info["score_parts"] == {"correct": 0.0, "claims_correct": 1.0}


def test_zoom_enlarges_a_region_and_zoom_out_restores_the_picture():
    env = make()
    whole, _ = env.reset(options={"split": "test", "index": 3})
    zoomed, *_ = env.step("zoom[0.25, 0.25, 0.5, 0.5]")
    assert zoomed["image"].shape == whole["image"].shape and not np.array_equal(zoomed["image"], whole["image"])
    assert "region x 0.25-0.50" in zoomed["text"]
    back, *_ = env.step("zoom[0, 0, 1, 1]")
    assert np.array_equal(back["image"], whole["image"]) and "the whole picture" in back["text"]


@pytest.mark.parametrize(("action", "error"), [
    ("zoom[0.5, 0.5, 0.2, 0.9]", "x0 < x1"), ("zoom[0, 0, 1, 1.2]", "x0 < x1"), ("zoom[0.5, 0.5, 0.52, 0.9]", "small"),
    ("zoom[0.5, 0.5]", "four fractions"), ("claim[0, 3]", "hop number from 1"), ("claim[9, 3]", "hop number from 1"),
    ("claim[1, ]", "hop number from 1"), ("claim[one, 3]", "hop number from 1"), ("answer[twelve]", "whole number"),
    ("answer[3.5]", "whole number"), ("answer[]", "whole number"), ("look", "unknown action"),
])
def test_bad_actions_explain_themselves_and_change_nothing(action, error):
    env = make()
    env.reset(options={"split": "test", "index": 1})
    env.step("zoom[0, 0, 0.5, 0.5]")
    before = env.unwrapped.state_dict()
    _, reward, terminated, _, info = env.step(action)
    assert not info["valid"] and error in info["error"] and reward == 0 and not terminated
    assert {**env.unwrapped.state_dict(), "turn": 0} == {**before, "turn": 0}


@pytest.mark.parametrize("version", [0, 1])
def test_rendering_is_deterministic_and_the_splits_are_frozen(version):
    a = make(version=version).reset(options={"split": "test", "index": 5})[0]["image"]
    make_task.cache_clear()
    b = make(version=version).reset(options={"split": "test", "index": 5})[0]["image"]
    assert np.array_equal(a, b)
    frozen = manifest(version)
    assert frozen["version"] == {0: 2, 1: 1}[version]  # the splits file's own version
    for chain in CHAINS:
        test, dev = frozen["test"][chain], frozen["dev"][chain]
        assert len(test) == len(dev) == 500 and not set(test) & set(dev) and max(test + dev) < TRAIN_SEEDS.start
    for seed, expected in frozen["fingerprints"].items():
        scene, query = make_task(int(seed), chain_length(int(seed), "full", None), 768, version)
        record = {"scene": scene.to_json(), "question": query.question, "answer": query.answer,
                  "hops": [[h.index, h.text, h.kind, h.value] for h in query.hops]}
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
        assert digest == str(expected), f"task hop-{seed} changed: bump the splits version"


answer = cache(task_answer)  # a task's answer, generated, not read from anywhere


def answers(split: str, chain: str, version: int = 0) -> list[int]:
    return [answer(seed, chain, version) for seed in manifest(version)[split][chain]]


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("split", ["test", "dev"])
@pytest.mark.parametrize("chain", CHAINS)
def test_every_prefix_of_50_tasks_or_more_keeps_each_answer_at_15_percent_or_less(split, chain, version):
    # `turngym run -n N` and the suites play the first N tasks of a split, so balance over the
    # whole split is not enough: a constant guess must stay at or below 15% on every such prefix.
    counts: Counter[int] = Counter()
    for n, value in enumerate(answers(split, chain, version), 1):
        counts[value] += 1
        top, k = counts.most_common(1)[0]
        assert n < 50 or 100 * k <= 15 * n, (f"answer {top} is {k} of the first {n} {split} tasks of {chain!r}: "
                                             "reorder the split with tasks.balanced_order")


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("split", ["test", "dev"])
@pytest.mark.parametrize("chain", CHAINS)
def test_splits_hold_the_capped_draw_of_seeds_in_balanced_order(split, chain, version):
    # Reordering must keep the frozen tasks: redo the documented rejection sampling from scratch.
    frozen = manifest(version)
    pinned = frozen.get("pinned", {}).get(split, {}).get(chain, [])
    drawn = draw_split(lambda seed: answer(seed, chain, version), split, frozen["answer_cap"], pinned)
    assert frozen[split][chain] == drawn


def test_core_v0_still_plays_its_hopvqa_tasks_from_version_1_of_the_splits():
    entry = next(e for e in load_suite("core-v0").entries if e.env_id == "turngym/HopVQA-v0")
    assert entry.split == "test" and entry.kwargs.get("variant", "full") == "full" and "hops" not in entry.kwargs
    assert manifest()["pinned"]["test"]["full"] == list(entry.indices)
    seeds = manifest()["test"]["full"]
    assert [seeds[i] for i in entry.indices] == [sorted(seeds)[i] for i in entry.indices]  # version 1: seed order
    assert seeds[:50] != sorted(seeds)[:50]  # the rest moved


def test_v1_asks_none_of_the_v0_questions_whose_answers_were_wrong():
    # v0's "not in any container" never counted a container, though a container is in none: four
    # frozen test answers were wrong. v1's strict rules refuse those questions and ask others.
    for seed in (75, 184, 199, 557):
        scene, v0 = make_task(seed, chain_length(seed, "full", None), 768, 0)
        with pytest.raises(ProgramError):
            inputs = {}
            for hop in v0.hops:
                assert execute(scene, hop.steps, inputs) == hop.value  # v0's own rules accept it
                inputs[hop.index] = execute(scene, hop.steps, inputs, strict=True)
        v1 = make_task(seed, chain_length(seed, "full", None), 768, 1)[1]
        assert v1.question != v0.question


def test_v1_plays_like_v0_with_its_own_tasks():
    v0, v1 = make(), make(version=1)
    assert v1.unwrapped.version == 1 and v1.unwrapped.splits["test"][0] != v0.unwrapped.splits["test"][0]
    oracle, floor = make_agent("oracle", v1), make_agent("heuristic", v1)
    for i in range(10):
        traj = rollout(v1, oracle, seed=i, options={"split": "test", "index": i})
        assert traj.success and traj.score_parts == {"correct": 1.0, "claims_correct": 1.0}
    counts = Counter(answer(s, "full", 1) for s in TRAIN_SEEDS[:200])  # v1's training answers, not v0's
    assert floor.guess == min(counts, key=lambda a: (-counts[a], a))
    with pytest.raises(ValueError, match="HopVQA-v1 for the latest"):
        gym.make("turngym/HopVQA-v0", version=2)


def test_the_splits_command_draws_what_draw_split_draws(monkeypatch):
    # the command that made splits-v1.yaml, on 20-task splits of one setting so the test stays quick
    import turngym.envs.hopvqa.tasks as tasks

    monkeypatch.setattr(tasks, "SPLIT_SIZE", 20)
    monkeypatch.setattr(tasks, "CHAINS", ("3",))
    result = CliRunner().invoke(app, ["hopvqa", "splits", "--version", "1", "--cap", "0.1"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    for split in ("test", "dev"):
        expected = draw_split(lambda seed: answer(seed, "3", 1), split, 0.1)
        assert printed[split] == {"3": expected} and len(expected) == 20
        assert max(Counter(answer(seed, "3", 1) for seed in expected).values()) <= 2


def test_balanced_order_interleaves_and_keeps_pinned_positions():
    answers = [1] * 6 + [2] * 3 + [3] * 3
    order = balanced_order(answers)
    assert sorted(order) == list(range(12)) and [answers[i] for i in order[:4]] == [1, 2, 3, 1]
    assert [i for i in order if answers[i] == 1] == [0, 1, 2, 3, 4, 5]  # one value keeps its relative order
    pinned = balanced_order(answers, pinned=[0, 7])
    assert pinned[0] == 0 and pinned[7] == 7 and sorted(pinned) == list(range(12))
    with pytest.raises(ValueError, match="pin positions 0 to 11"):
        balanced_order(answers, pinned=[12])


@pytest.mark.parametrize(("kwargs", "chain"), [({}, "full"), ({"variant": "half"}, "half"),
                                               ({"variant": "single"}, "single"), ({"hops": 5}, "5"),
                                               ({"version": 1}, "full"), ({"version": 1, "hops": 5}, "5")])
def test_no_constant_guess_scores_above_15_percent_on_test(kwargs, chain):
    counts = Counter(answers("test", chain, kwargs.get("version", 0)))
    assert max(counts.values()) / 500 <= 0.15 and len(counts) >= 10
    env = make(**kwargs)
    floor = make_agent("heuristic", env)
    wins = [rollout(env, floor, seed=i, options={"split": "test", "index": i}).success for i in range(100)]
    assert sum(wins) <= 25  # a constant guess: near its share of the answers


@pytest.mark.parametrize(("kwargs", "lengths"), [({"variant": "single"}, {1}), ({"variant": "half"}, {2, 3}),
                                                 ({"hops": 2}, {2})])
def test_variants_change_the_chain_length(kwargs, lengths):
    env = make(**kwargs)
    seen = set()
    for i in range(6):
        env.reset(options={"split": "test", "index": i})
        seen.add(len(env.unwrapped.state_dict()["hops"]))
    assert seen <= lengths


_fuzz = None


@settings(max_examples=150, deadline=None)
@given(action=st.one_of(st.text(max_size=60), st.builds(
    lambda verb, arg: f"{verb}[{arg}]", st.sampled_from(["zoom", "claim", "answer", "CLAIM "]),
    st.one_of(st.text(max_size=30), st.sampled_from(["1, 7", "0.1, 0.1, 0.9, 0.9", "2, \x1b", "3", "-4"])))))
def test_any_string_is_handled(action):
    global _fuzz
    if _fuzz is None:
        _fuzz = make(max_turns=10**9)
    _fuzz.reset(options={"split": "test", "index": 2})
    before = _fuzz.unwrapped.state_dict()
    obs, _, terminated, _, info = _fuzz.step(action)
    assert _fuzz.observation_space.contains(obs) and info["valid"] == (info["error"] is None)
    if not info["valid"]:
        assert {**_fuzz.unwrapped.state_dict(), "turn": 0} == {**before, "turn": 0} and not terminated
