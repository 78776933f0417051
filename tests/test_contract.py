"""The DESIGN.md env contract, checked for every registered id (each new family inherits these)."""

from __future__ import annotations

import json
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import turngym
from turngym import read_jsonl, rollout, write_jsonl
from turngym.agents import make_agent
from turngym.apps.harness import OUT_OF_DATE

ENV_IDS = turngym.list_envs()
INFO_KEYS = {"task_id", "instruction", "turn", "actions", "valid", "error"}


def test_builtin_families_are_registered():
    assert "turngym/Craft-v0" in ENV_IDS
    assert "guessing/GuessNumber-v0" in ENV_IDS  # the docs example, loaded by conftest
    assert all(turngym.describe(i) for i in ENV_IDS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes_without_warnings(env_id):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id)
        check_env(env.unwrapped)
        env.close()
    # gym.make's notice that a newer version exists (HopVQA-v0) is the only warning allowed, and only there
    superseded = [w for w in caught if re.match(OUT_OF_DATE, str(w.message))]
    assert len(superseded) == (env_id == "turngym/HopVQA-v0")
    assert not [w for w in caught if w not in superseded], [str(w.message) for w in caught]


def play(env_id: str, seed: int, turns: int, **kwargs):
    """Reset with `seed`, then alternate seeded random admissible actions and junk strings. The
    browser plays a third of the turns: each of its steps loads a page in Chromium (about 0.3 s), it
    still ends episodes and resets, and tests/test_webshop_browser.py checks its pages and pixels."""
    if "Browser" in env_id:
        turns = max(1, turns // 3)
    env = gym.make(env_id, **kwargs)
    agent = make_agent("random", env)
    obs, info = env.reset(seed=seed)
    agent.reset(obs, info, seed=seed)
    record = [(obs, info)]
    for t in range(turns):
        action = agent.act(obs, info) if t % 3 else f"junk {t} ]["
        obs, reward, terminated, truncated, info = env.step(action)
        record.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            record.append((obs, info))
    env.close()
    return record


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_and_actions_give_identical_trajectories(env_id):
    first, second = play(env_id, 7, 60), play(env_id, 7, 60)
    assert_same(first, second)
    assert play(env_id, 8, 5)[0][1]["task_id"] != first[0][1]["task_id"] or env_id.startswith("guessing")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observations_and_infos_follow_the_contract(env_id):
    env = gym.make(env_id)
    for entry in play(env_id, 3, 80):
        obs, info = entry[0], entry[-1]
        assert env.observation_space.contains(obs)
        assert info.keys() >= INFO_KEYS
        assert isinstance(info["task_id"], str) and isinstance(info["instruction"], str)
        assert isinstance(info["actions"], list) and all(isinstance(a, str) for a in info["actions"])
        assert info["valid"] == (info["error"] is None)
        if len(entry) == 5:
            _, reward, terminated, truncated, _ = entry
            if terminated or truncated:
                assert {"success", "score", "score_parts"} <= info.keys()
                assert 0.0 <= info["score"] <= 1.0 and reward == info["score"]
                assert info["actions"] == []
            else:
                assert reward == 0.0 and "score" not in info
        json.dumps(turngym.trajectory.jsonable(info))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_max_turns_truncates_and_reports_the_outcome(env_id):
    env = gym.make(env_id, max_turns=3)
    env.reset(seed=0)
    for turn in range(1, 4):
        _, reward, terminated, truncated, info = env.step("not an action at all")
        assert info["turn"] == turn and not info["valid"] and not terminated
    assert truncated and info["success"] is False and reward == info["score"] == 0.0
    _, _, _, _, info = env.step("anything")
    assert not info["valid"] and "reset()" in info["error"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_options_select_tasks_deterministically(env_id):
    env = gym.make(env_id)
    splits = env.unwrapped.splits
    assert {"train", "dev", "test"} <= set(splits)
    test_ids = [splits["test"][i] for i in range(min(3, len(splits["test"])))]
    assert not set(test_ids) & {splits["dev"][i] for i in range(min(50, len(splits["dev"])))}
    for i, task_id in enumerate(test_ids):
        assert env.reset(seed=i, options={"split": "test", "index": i})[1]["task_id"] == task_id
        assert env.reset(seed=99, options={"task_id": task_id})[1]["task_id"] == task_id
    for bad in ({"split": "nope"}, {"split": "test", "index": 10**9}, {"colour": "red"},
                {"task_id": test_ids[0], "split": "test"}):
        with pytest.raises(ValueError):
            env.reset(seed=0, options=bad)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_modes(env_id):
    for mode in gym.spec(env_id).make().metadata["render_modes"]:
        env = gym.make(env_id, render_mode=mode)
        obs, _ = env.reset(seed=0)
        frame = env.render()
        if mode == "ansi":
            assert frame == obs["text"]
        else:
            assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    with pytest.warns(UserWarning, match="render_mode"), pytest.raises(ValueError, match="render_mode"):
        gym.make(env_id, render_mode="hologram")


_fuzz_envs: dict[str, gym.Env] = {}


def fuzz_env(env_id: str) -> gym.Env:
    if env_id not in _fuzz_envs:
        env = gym.make(env_id, max_turns=10**9)
        env.reset(seed=0)
        _fuzz_envs[env_id] = env
    return _fuzz_envs[env_id]


ANY_ACTION = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="ascii"), max_size=40),
    st.builds(lambda verb, rest: f"{verb}{rest}",
              st.sampled_from(["move ", "do", "place ", "make ", "goto ", "explore ", "guess ", "search[", "click["]),
              st.text(max_size=30)),
    st.sampled_from(["", " ", "\n", "\x00", "]]][[[", "move north; do", "MAKE " * 50, "é" * 5000]),
)


@pytest.mark.parametrize("env_id", ENV_IDS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=ANY_ACTION)
def test_any_string_is_handled_and_an_invalid_one_changes_nothing(env_id, action):
    env = fuzz_env(env_id)
    before = env.unwrapped.state_dict()
    turn = before.pop("turn")
    obs, reward, terminated, truncated, info = env.step(action)
    after = env.unwrapped.state_dict()
    assert after.pop("turn") == turn + 1
    assert env.observation_space.contains(obs)
    if info["valid"]:
        assert info["error"] is None
        if terminated or truncated:
            env.reset(seed=turn)
    else:
        assert after == before
        assert isinstance(info["error"], str) and info["error"] and "\n" not in info["error"]
        assert reward == 0.0 and not terminated and not truncated


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("action", [None, 3, 2.5, b"do", ["do"], {"action": "do"}])
def test_non_string_actions_are_invalid_not_errors(env_id, action):
    env = gym.make(env_id)
    env.reset(seed=0)
    before = env.unwrapped.state_dict()
    _, _, _, _, info = env.step(action)
    assert not info["valid"] and "strings" in info["error"]
    assert {**env.unwrapped.state_dict(), "turn": 0} == {**before, "turn": 0}


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_run(env_id, mode):
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode)
    try:
        obs, info = envs.reset(seed=0)
        assert len(obs["text"]) == 2 and isinstance(obs["text"][0], str)
        singles = [gym.make(env_id) for _ in range(2)]
        expected = [env.reset(seed=i)[0]["text"] for i, env in enumerate(singles)]
        assert list(obs["text"]) == expected  # AsyncVectorEnv's shared memory must not freeze texts
        for _ in range(4):
            actions = tuple(str(a[0]) if len(a) else "noop" for a in info["actions"])
            obs, reward, terminated, _, info = envs.step(actions)
            assert reward.shape == (2,) and terminated.dtype == bool
            expected = [env.step(a)[0]["text"] for env, a in zip(singles, actions, strict=True)]
            assert list(obs["text"]) == expected
        for env in singles:
            env.close()
    finally:
        envs.close()
    single = gym.make(env_id)
    first, _ = single.reset(seed=0)
    assert first["text"] == gym.make_vec(env_id, num_envs=1, vectorization_mode="sync").reset(seed=0)[0]["text"][0]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_trajectories_round_trip_through_jsonl(env_id, tmp_path):
    env = gym.make(env_id, max_turns=15)
    trajs = [rollout(env, make_agent("random", env), seed=s) for s in range(2)]
    back = read_jsonl(write_jsonl(tmp_path / "episodes.jsonl", trajs))
    assert [(t.task_id, t.seed, t.score, t.success, len(t)) for t in back] == \
           [(t.task_id, t.seed, t.score, t.success, len(t)) for t in trajs]
    for a, b in zip(trajs, back, strict=True):
        for x, y in zip(a.turns, b.turns, strict=True):
            assert (x.text, x.action, x.reward) == (y.text, y.action, y.reward)
            assert turngym.trajectory.jsonable(x.info) == y.info
            assert (x.image is None and y.image is None) or np.array_equal(x.image, y.image)


def test_atomic_writes_make_files_as_readable_as_open_does(tmp_path):
    # mkstemp makes its file 0600: a run folder shared or served over HTTP must stay readable
    from turngym.trajectory import atomic_write_bytes

    (tmp_path / "plain").write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic", b"x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
