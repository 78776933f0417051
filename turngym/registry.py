"""Env registration: every turngym id is a Gymnasium id plus a one-line description.

Families register lazily (entry point strings), so `import turngym` stays fast and a family's
heavy dependencies load only when one of its envs is made.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

PLUGIN_GROUP = "turngym.envs"

_DESCRIPTIONS: dict[str, str] = {}
_COMMANDS: dict[str, str] = {}  # `turngym NAME ...` command groups: name -> "module:typer_app"


def register(env_id: str, entry_point: str | type, description: str, **kwargs: Any) -> None:
    """Register `env_id` with Gymnasium (so `gym.make(env_id, **overrides)` works) and list it.

    Registering the same id again with the same entry point and kwargs is a no-op, so a module
    that registers its envs can be imported or run twice.
    """
    existing = gym.registry.get(env_id)
    if existing is not None and existing.entry_point == entry_point and existing.kwargs == kwargs:
        _DESCRIPTIONS[env_id] = description
        return
    gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
    _DESCRIPTIONS[env_id] = description


def register_commands(name: str, target: str) -> None:
    """Add the command group `turngym NAME ...` (a family's data tools, say): `target` is
    "module:app" naming a `typer.Typer`, imported only when the group is used, so that starting
    the CLI costs no family its imports."""
    _COMMANDS[name] = target


def command_groups() -> dict[str, str]:
    """The registered command groups, name -> "module:app"."""
    return dict(_COMMANDS)


def list_envs() -> list[str]:
    """All registered turngym env ids, sorted."""
    return sorted(_DESCRIPTIONS)


def describe(env_id: str) -> str:
    """The one-line description an id was registered with."""
    try:
        return _DESCRIPTIONS[env_id]
    except KeyError:
        raise KeyError(f"unknown env id {env_id!r}: run `turngym list` to see the registered ids") from None


def env_class(env_id: str) -> type:
    """The class an id makes, without making one (imports the family's module)."""
    from gymnasium.envs.registration import load_env_creator

    describe(env_id)  # a clear error for an unknown id
    entry_point = gym.spec(env_id).entry_point
    return entry_point if isinstance(entry_point, type) else load_env_creator(entry_point)


def load_plugins() -> None:
    """Import every module that an installed package lists under the `turngym.envs` entry-point
    group, so that its envs register like the built-in ones (and appear in `turngym list`)."""
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin must not break turngym itself
            warnings.warn(f"turngym plugin {entry.name!r} ({entry.value}) failed to load: {exc}", stacklevel=2)
