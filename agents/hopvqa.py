"""HopVQA agents: the oracle (claims every hop from the scene graph, then answers) and the floor."""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import gymnasium as gym

from turngym.agents.base import Agent, register_agent
from turngym.envs.hopvqa import HopVQAEnv
from turngym.envs.hopvqa.env import chain_length, make_task
from turngym.envs.hopvqa.tasks import TRAIN_SEEDS

FLOOR_SAMPLE = 200  # training tasks whose answers decide the floor's guess


@register_agent("oracle", HopVQAEnv)
class HopVQAOracle(Agent):
    """Claims each hop's true value in order (an object's id, a set's size, a number), then answers.
    Reads `env.unwrapped.state_dict()`: an upper bound and a source of process labels."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        self.env = env

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        state = self.env.unwrapped.state_dict()
        for hop in state["hops"]:
            if str(hop["index"]) not in state["claims"]:
                value = len(hop["value"]) if hop["kind"] == "set" else hop["value"]
                return f"claim[{hop['index']}, {value}]"
        return f"answer[{state['answer']}]"


@cache
def most_frequent_answer(variant: str, hops: int | None, size: int, version: int = 0) -> int:
    """The commonest answer over the first training tasks: the best constant guess."""
    answers = Counter(make_task(seed, chain_length(seed, variant, hops), size, version)[1].answer
                      for seed in TRAIN_SEEDS[:FLOOR_SAMPLE])
    return min(answers, key=lambda a: (-answers[a], a))


@register_agent("heuristic", HopVQAEnv)
class HopVQAFloor(Agent):
    """Answers the most frequent answer of the training split, whatever the picture: the floor a
    policy must beat. The test split is balanced so that no constant guess scores above 15%."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        inner = env.unwrapped
        self.guess = most_frequent_answer(inner.variant, inner.hops, inner.size, inner.version)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        return f"answer[{self.guess}]"
