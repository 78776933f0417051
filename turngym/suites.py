"""Benchmark suites: frozen, versioned lists of (env, pinned kwargs, test tasks) in assets/suites/.

A suite file names its entries; entry episode i plays task `indices[i]` of `split` (`first: N`:
tasks 0 to N-1) from `reset(seed=seed + indices[i])`, so an episode is the same whichever run,
worker or machine plays it. An entry may name the agents that play it (`agents: [...]`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Entry:
    """One env configuration of a suite and the tasks it plays."""

    name: str  # unique within the suite; also the entry's folder name in a run
    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    indices: tuple[int, ...] = ()
    seed: int = 0
    agents: tuple[str, ...] = ()  # the agent specs that play this entry (empty: every agent of the run)

    def as_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "indices": list(self.indices), "agents": list(self.agents)}
        if not self.agents:  # run.json of suites without the field stays as it was
            del data["agents"]
        return data

    def head(self, episodes: int) -> Entry:
        """This entry cut to its first `episodes` tasks (a quick look at a suite)."""
        return replace(self, indices=self.indices[:episodes])


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    entries: tuple[Entry, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description}

    def head(self, episodes: int | None) -> Suite:
        """The suite with every entry cut to its first `episodes` tasks (None: unchanged)."""
        return self if episodes is None else replace(self, entries=tuple(e.head(episodes) for e in self.entries))


def list_suites() -> list[str]:
    """Names of the suites that ship in assets/suites/."""
    folder = resources.files("turngym.assets").joinpath("suites")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (`core-v0`) or a suite YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ValueError(f"suite file {path} does not exist: give a path to a suite YAML or one of "
                             f"{', '.join(list_suites())}")
        text = path.read_text()
    elif str(name_or_path) in list_suites():
        text = resources.files("turngym.assets").joinpath(f"suites/{name_or_path}.yaml").read_text()
    else:
        raise ValueError(f"unknown suite {str(name_or_path)!r}: use one of {', '.join(list_suites())} "
                         "or a path to a suite YAML file")
    return parse_suite(yaml.safe_load(text))


def parse_suite(data: dict[str, Any]) -> Suite:
    seed = int(data.get("seed", 0))
    entries = tuple(Entry(name=str(e["name"]), env_id=str(e["env_id"]), kwargs=dict(e.get("kwargs") or {}),
                          split=str(e.get("split", "test")), indices=_indices(e),
                          seed=int(e.get("seed", seed)), agents=tuple(str(a) for a in e.get("agents") or ()))
                    for e in data["entries"])
    names = [e.name for e in entries]
    for name in names:  # each names a folder of a run (episodes/<agent>/<entry>/)
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"suite entry name {name!r} must be a plain folder name (no / or \\): rename it")
    if len(set(names)) != len(names):
        raise ValueError(f"suite {data.get('name')!r} repeats an entry name: give every entry its own name")
    return Suite(str(data["name"]), int(data.get("version", 1)), str(data.get("description", "")), entries)


def _indices(entry: dict[str, Any]) -> tuple[int, ...]:
    """An entry's task indices: `indices: [...]`, or `first: N` for the split's first N tasks."""
    if ("indices" in entry) == ("first" in entry):
        raise ValueError(f"suite entry {entry.get('name')!r} needs `indices: [...]` or `first: N` (one of them)")
    return tuple(int(i) for i in entry["indices"]) if "indices" in entry else tuple(range(int(entry["first"])))


def single_env_suite(env_id: str, kwargs: dict[str, Any], episodes: int, split: str = "test",
                     seed: int = 0) -> Suite:
    """The suite of `turngym eval ENV_ID`: the first `episodes` tasks of one split of one env."""
    name = env_id.split("/")[-1]
    entry = Entry(name, env_id, dict(kwargs), split, tuple(range(episodes)), seed)
    return Suite(name, 0, f"{env_id} {kwargs or ''}, {split} split, {episodes} episodes", (entry,))
