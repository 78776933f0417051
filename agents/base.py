"""The Agent interface, the registry behind agent spec strings, and the random agent.

A spec is `name` or `name:argument` (`random`, `oracle`, `neural:runs/policy.pt`, ...). Each name
is registered for an env class (family agents such as a family's oracle) or for every env; the
most specific registration wins, so a family plugs its agents in without touching the CLI.
Keyword options (sampling settings of language-model agents, say) go to the factory as keywords.
"""

from __future__ import annotations

import importlib
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

AgentFactory = Callable[..., "Agent"]  # (env, spec argument, **options) -> agent
_REGISTRY: dict[str, list[tuple[type | None, AgentFactory]]] = {}


class Agent(ABC):
    """Maps (observation, info) to an action string, one episode at a time.

    An agent with more to say about a turn than its action (a language model's token ids and
    log-probs, a policy's value) sets `last_record` in `act`: a dict with any of the Turn fields
    `prompt_ids`, `completion_ids`, `logprobs` and `extras`, which `rollout` copies into the turn.
    """

    last_record: dict[str, Any] = {}  # noqa: RUF012  (replaced, never mutated, by agents that record)

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:  # noqa: B027
        """Start an episode; `seed` (the episode's seed) makes stochastic agents reproducible."""

    @abstractmethod
    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        """The action for this turn."""


def register_agent(name: str, env_type: type | None = None) -> Callable[[AgentFactory], AgentFactory]:
    """Decorator: make `factory(env, argument)` the agent called `name` for envs of `env_type`
    (None: every env)."""

    def decorate(factory: AgentFactory) -> AgentFactory:
        _REGISTRY.setdefault(name, []).append((env_type, factory))
        return factory

    return decorate


def register_lazy(name: str, target: str, env_type: type | None = None) -> None:
    """Register `name` for a factory given as "module:function", imported on first use: agents
    built on torch or transformers then cost nothing until someone asks for them."""

    def factory(env: gym.Env, argument: str, **options: Any) -> Agent:
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)(env, argument, **options)

    factory.__signature__ = inspect.signature(lambda env, argument, **options: None)  # options checked later
    register_agent(name, env_type)(factory)


def _factory(name: str, env: gym.Env | type) -> AgentFactory | None:
    entries = _REGISTRY.get(name, [])
    for cls in (env if isinstance(env, type) else type(env.unwrapped)).__mro__:
        for env_type, factory in reversed(entries):
            if env_type is cls:
                return factory
    return next((f for env_type, f in reversed(entries) if env_type is None), None)


def available_agents(env: gym.Env | type) -> list[str]:
    """The agent names that `make_agent` accepts for `env` (an env, or an env class)."""
    return sorted(name for name in _REGISTRY if _factory(name, env) is not None)


def make_agent(spec: str, env: gym.Env, **options: Any) -> Agent:
    """Build the agent named by `spec` (e.g. "random", "oracle", "neural:PATH") for `env`;
    `options` are the agent's keyword settings (e.g. `temperature=0.7` for `hf:` agents)."""
    name, _, argument = spec.partition(":")
    factory = _factory(name, env)
    if factory is None:
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise ValueError(f"no agent {name!r} for {env_id}: use one of {', '.join(available_agents(env))}")
    if options:
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(options) - set(list(params)[2:]))
            if unknown:
                raise ValueError(f"agent {name!r} takes no option {', '.join(unknown)}: leave it out for this agent")
    return factory(env, argument, **options)


@register_agent("random")
class RandomAgent(Agent):
    """Picks uniformly among `info["actions"]`; a template such as `search[<query>]` gets a
    random word of the observation text as its argument."""

    def __init__(self, env: gym.Env | None = None, argument: str = "") -> None:
        self.rng = np.random.default_rng(int(argument) if argument else None)

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng([seed, 0x5EED])  # independent of the env's stream

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        actions = info.get("actions") or []
        if not actions:
            return ""
        action = actions[int(self.rng.integers(len(actions)))]
        if "<" in action:
            words = re.findall(r"[A-Za-z0-9]+", obs.get("text", "")) or ["a"]
            action = re.sub(r"<[^<>]*>", lambda _: words[int(self.rng.integers(len(words)))], action)
        return action
