"""turngym envs as OpenEnv environments (turngym/integrations/openenv.py): openenv-core's own server
on a free port of 127.0.0.1, driven with OpenEnv's own WebSocket client, step for step against a
local `gym.make` of the same id, kwargs and seed."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import httpx
import numpy as np
import pytest
from conftest import serving

import turngym
from turngym.agents.base import RandomAgent
from turngym.trajectory import jsonable

pytest.importorskip("openenv.core")
from turngym.integrations.openenv import (
    NOT_RESET,
    TurnGymAction,
    TurnGymEnvClient,
    create_app,
    environment_class,
)

CRAFT = "turngym/Craft-v0"
KWARGS = {"task": "wood_pickaxe", "action_mode": "skills", "max_turns": 12}  # with images


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serving(create_app(CRAFT, max_concurrent_envs=4, **KWARGS)) as address:
        yield address


@pytest.fixture
def client(url: str) -> Iterator[Any]:
    with TurnGymEnvClient(base_url=url).sync() as env:
        yield env


def same(result: Any, obs: dict[str, Any], reward: float | None, terminated: bool, truncated: bool,
         info: dict[str, Any]) -> None:
    """The OpenEnv step result shows exactly the local env's step."""
    got = result.observation
    assert got.text == obs["text"]
    assert got.image_array().dtype == np.uint8 and np.array_equal(got.image_array(), obs["image"])
    assert got.info == jsonable(info) == got.metadata
    assert (got.terminated, got.truncated) == (terminated, truncated)
    assert result.done == got.done == (terminated or truncated)
    assert result.reward == got.reward == reward


def test_an_episode_matches_the_local_env(client: Any) -> None:
    """Reset with a seed, then a seeded random agent's episode to its end, plus a bad action and
    an empty one on the way: every observation, reward, flag and info as the local env's."""
    local = gym.make(CRAFT, **KWARGS)
    obs, info = local.reset(seed=3)
    same(client.reset(seed=3), obs, None, False, False, info)
    agent = RandomAgent()
    agent.reset(obs, info, seed=3)
    actions = ["fly to the moon", ""]
    done = False
    while not done:
        action = actions.pop(0) if actions else agent.act(obs, info)
        obs, reward, terminated, truncated, info = local.step(action)
        result = client.step(TurnGymAction(action=action) if len(actions) % 2 else action)  # a str works too
        same(result, obs, reward, terminated, truncated, info)
        done = result.done
    assert "score" in result.observation.info
    state = client.state()
    assert (state.env_id, state.task_id, state.seed, state.step_count, state.done) == (
        CRAFT, info["task_id"], 3, info["turn"], True)


def test_a_bad_action_is_explained_in_the_info_and_never_raises(client: Any) -> None:
    client.reset(seed=0)
    for action in ("fly to the moon", "", "make diamond_pickaxe", "x" * 5000, "mové ñorth"):
        observation = client.step(action).observation
        assert observation.info["valid"] is False and observation.metadata["valid"] is False
        error = observation.info["error"]
        assert isinstance(error, str) and error and "\n" not in error
    assert "use one of" in client.step("fly to the moon").observation.info["error"]  # names the grammar


def test_reset_options_pick_the_task(client: Any) -> None:
    local = gym.make(CRAFT, **KWARGS)
    task = local.unwrapped.splits["test"][5]
    obs, info = local.reset(seed=1, options={"task_id": task})
    same(client.reset(seed=1, options={"task_id": task}), obs, None, False, False, info)
    with pytest.raises(RuntimeError, match="unknown reset argument"):  # a typo is no silent default
        client.reset(seed=1, task=task)


def test_sessions_stay_apart_and_close_quietly(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        with TurnGymEnvClient(base_url=url).sync() as a, TurnGymEnvClient(base_url=url).sync() as b:
            first = a.reset(seed=0).observation.text
            assert b.reset(seed=1).observation.text != first
            a.step("move north")
            assert a.state().step_count == 1 and b.state().step_count == 0
        time.sleep(0.5)  # the server ends both sessions after the clients have gone
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback for a clean close


def test_the_http_endpoints_answer_without_a_session(url: str) -> None:
    """OpenEnv's stateless HTTP routes: a reset works, a step says to reset first (no 500)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        reset = http.post("/reset", json={"seed": 4}).json()
        assert reset["observation"]["text"] == gym.make(CRAFT, **KWARGS).reset(seed=4)[0]["text"]
        step = http.post("/step", json={"action": {"action": "noop"}})
        assert step.status_code == 200 and step.json()["observation"]["info"]["error"] == NOT_RESET
        meta = http.get("/metadata").json()
        assert meta["name"] == CRAFT and meta["description"] == turngym.describe(CRAFT)
        assert http.get("/schema").json()["action"]["properties"]["action"]["type"] == "string"


def test_environment_class_binds_the_id_and_kwargs() -> None:
    cls = environment_class(CRAFT, task="stone_pickaxe", image=False)
    env = cls()
    try:
        observation = env.reset(seed=0)
        assert "Make a stone pickaxe" in observation.text and observation.image is None
        assert cls.SUPPORTS_CONCURRENT_SESSIONS and not cls.REQUIRES_SINGLE_THREAD_EXECUTOR
    finally:
        env.close()
    assert environment_class("turngym/WebShopBrowser-v0").REQUIRES_SINGLE_THREAD_EXECUTOR  # Playwright's thread


def test_the_module_imports_without_openenv_and_names_the_install() -> None:
    code = """
import sys
sys.modules["openenv"] = None  # as if not installed
import turngym.integrations.openenv as o
try:
    o.TurnGymAction
except ImportError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install -e '.[lm]'" in done.stdout and "make install" in done.stdout
