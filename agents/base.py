"""The Agent interface, the registry behind agent spec strings, and the random agent.

A spec is `name` or `name:argument` (`random`, `oracle`, `neural:runs/policy.pt`, ...). Each name
is registered for an env class (family agents such as a family's oracle) or for every env; the
most specific registration wins, so a family plugs its agents in without touching the CLI.
Keyword options (sampling settings of language-model agents, say) go to the factory as keywords,
given to `make_agent` or written into the spec after a `?` (`hf:smollm2?mode=score&temperature=0`,
YAML values), so that one suite or one eval can hold two settings of the same agent side by side.

Family agents load lazily. `register_family("pkg.envs.foo:FooEnv", "pkg.agents.foo")` says that
the module `pkg.agents.foo` registers (with `register_agent`) the agents for envs of that class;
nothing is imported until someone asks for an agent for such an env (`make_agent`,
`available_agents`, or `register_agent` for that class, so that a user's agent registered later
still overrides the family's own). A family is matched against the env's MRO by identity of the
class found at that path in an already imported module: a module that is not imported yet cannot
hold the env's class, so the check imports nothing, and a class re-exported by its package
matches under either path. Making a Craft env therefore never imports the LongDoc agents (and
with them PyMuPDF), nor those of any other family.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

AgentFactory = Callable[..., "Agent"]  # (env, spec argument, **options) -> agent
_REGISTRY: dict[str, list[tuple[type | None, AgentFactory]]] = {}
_FAMILIES: dict[str, list[str]] = {}  # "module:Class" of an env family -> modules that register its agents


class _Loading(threading.local):
    """The family paths this thread is importing now (see `_load_families`)."""

    def __init__(self) -> None:
        self.paths: set[str] = set()


_LOADING = _Loading()


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

    def played(self, action: str) -> None:  # noqa: B027
        """The env played `action` this turn instead of the one `act` returned (a wrapper such as
        DART's noise in trainers/bc.py chose it): an agent that remembers its own actions hears it."""


def register_agent(name: str, env_type: type | None = None) -> Callable[[AgentFactory], AgentFactory]:
    """Decorator: make `factory(env, argument)` the agent called `name` for envs of `env_type`
    (None: every env)."""

    def decorate(factory: AgentFactory) -> AgentFactory:
        if env_type is not None:
            _load_families(env_type)  # the family's own agents first, so this one overrides them
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


def register_family(env_class: str, module: str) -> None:
    """Have `module` (imported on first use) register the agents for envs of the class at
    `env_class` ("package.module:Class"); importing turngym.agents stays cheap however many
    families there are, and a family's heavy dependencies load only with its own envs."""
    if ":" not in env_class:
        raise ValueError(f"env class {env_class!r} must read 'module:Class', e.g. 'turngym.envs.craft:CraftEnv'")
    _FAMILIES.setdefault(env_class, []).append(module)


def _load_families(env_type: type) -> None:
    """Import the agent modules registered for any class in `env_type`'s MRO.

    A family leaves the table only once its modules have imported: a failed import raises again on
    the next call instead of turning into "no agent", and another thread asking meanwhile waits on
    Python's import lock instead of finding the family gone and its agents half registered. The
    family module's own `register_agent` calls re-enter here; `_LOADING` makes them skip it.
    """
    loading = _LOADING.paths
    for cls in env_type.__mro__:
        for path, modules in list(_FAMILIES.items()):
            if path in loading or not _resolves_to(path, cls):
                continue
            loading.add(path)
            try:
                for module in modules:
                    importlib.import_module(module)
            finally:
                loading.discard(path)
            _FAMILIES.pop(path, None)


def _resolves_to(path: str, cls: type) -> bool:
    module, _, qualname = path.partition(":")
    found: Any = sys.modules.get(module)  # not imported yet: it cannot hold cls, and we import nothing
    for attribute in qualname.split("."):
        found = getattr(found, attribute, None)
    return found is cls


def _env_class(env: gym.Env | type) -> type:
    """The class of `env` (or `env` itself, a class), with its family's agents registered."""
    env_cls = env if isinstance(env, type) else type(env.unwrapped)
    _load_families(env_cls)
    return env_cls


def _factory(name: str, env_cls: type) -> AgentFactory | None:
    entries = _REGISTRY.get(name, [])
    for cls in env_cls.__mro__:
        for env_type, factory in reversed(entries):
            if env_type is cls:
                return factory
    return next((f for env_type, f in reversed(entries) if env_type is None), None)


def available_agents(env: gym.Env | type) -> list[str]:
    """The agent names that `make_agent` accepts for `env` (an env, or an env class)."""
    env_cls = _env_class(env)  # before the loop: loading a family adds names to _REGISTRY
    return sorted(name for name in _REGISTRY if _factory(name, env_cls) is not None)


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`"hf:m?mode=score&temperature=0"` -> ("hf:m", {"mode": "score", "temperature": 0})."""
    base, sep, query = spec.partition("?")
    if not sep:
        return spec, {}
    options = {}
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"agent spec {spec!r}: options after `?` are key=value pairs joined by `&`, "
                             f"got {pair!r}")
        try:
            options[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            options[key] = value
    return base, options


def make_agent(spec: str, env: gym.Env, **options: Any) -> Agent:
    """Build the agent named by `spec` (e.g. "random", "oracle", "neural:PATH") for `env`;
    `options` are the agent's keyword settings (e.g. `temperature=0.7` for `hf:` agents)."""
    spec, written = split_spec(spec)
    options = {**written, **options}
    name, _, argument = spec.partition(":")
    factory = _factory(name, _env_class(env))
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
