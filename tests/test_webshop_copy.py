"""Copying a WebShop env mid-episode (what PRM search does at every branch): the copy shares the
catalog, plays on by itself, and plays exactly as the original would."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

from turngym import rollout
from turngym.agents import make_agent
from turngym.envs.webshop import WebShopEnv
from turngym.envs.webshop.browser_env import WebShopBrowserEnv
from turngym.rewards.prm import beam_search

TASK = {"split": "test", "index": 0}


def mid_episode(turns: int = 2) -> tuple[gym.Env, list[str]]:
    """A WebShop env `turns` turns into the oracle's episode of a test task, and the oracle's
    remaining actions (taken from a run on another env: the same seed plays the same)."""
    scout = gym.make("turngym/WebShop-v0")
    traj = rollout(scout, make_agent("oracle", scout), seed=0, options=TASK)
    actions = [t.action for t in traj.turns]
    assert traj.success and len(actions) > turns  # so the copy has a purchase left to make
    env = gym.make("turngym/WebShop-v0")
    env.reset(seed=0, options=TASK)
    for action in actions[:turns]:
        env.step(action)
    return env, actions[turns:]


def test_a_copy_shares_the_catalog_and_plays_on_alone():
    env, rest = mid_episode()
    original = env.unwrapped
    before = copy.deepcopy(original.state_dict())
    clone = copy.deepcopy(env)
    assert clone.unwrapped.catalog is original.catalog and clone.unwrapped.session.catalog is original.catalog
    assert clone.unwrapped.session is not original.session
    assert clone.unwrapped.state_dict() == before and before["page"] != "search"  # mid-episode, not reset

    played = [clone.step(action) for action in rest]
    assert original.state_dict() == before  # stepping the copy left the original alone
    assert clone.unwrapped.state_dict()["purchased"] is not None

    for action, (obs, *outcome) in zip(rest, played, strict=True):
        obs2, *outcome2 = env.step(action)  # reward, terminated, truncated, info
        assert (obs2["text"], outcome2) == (obs["text"], outcome)
    assert original.state_dict() == clone.unwrapped.state_dict()


def test_a_copy_keeps_the_random_stream_of_its_original():
    # A reset without a task id draws a training goal from the env's generator: copies must draw alike.
    env, _ = mid_episode(turns=1)
    clone = copy.deepcopy(env)
    assert clone.reset()[1]["task_id"] == env.reset()[1]["task_id"]


class FirstAction:
    """A PRM that prefers the first proposed action: enough to make beam search branch."""

    def candidates(self, obs, info):
        return WebShopEnv.propose_actions(obs, info)

    def scores(self, obs, info, actions):
        return -np.arange(len(actions), dtype=float)


def test_beam_search_branches_webshop_episodes_by_plain_deepcopy():
    env = gym.make("turngym/WebShop-v0")
    traj = beam_search(env, FirstAction(), beam=2, expand=2, seed=0, max_turns=3, record_images=False)
    assert len(traj.turns) == 3 and traj.meta["nodes"] > 3
    assert traj.turns[0].action.startswith("search[")


def test_the_browser_env_refuses_to_be_copied():
    # No browser is launched: the refusal comes before any of the env's state is touched.
    env = WebShopBrowserEnv.__new__(WebShopBrowserEnv)
    with pytest.raises(TypeError, match=r"cannot be copied.*copy turngym/WebShop-v0"):
        copy.deepcopy(env)
