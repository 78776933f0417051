"""Benchmark suites: frozen, versioned lists of (env, pinned kwargs, test tasks) in assets/suites/.

A suite file names its entries; entry episode i plays task `indices[i]` of `split` from
`reset(seed=seed + indices[i])`, so an episode is the same whichever run, worker or machine plays it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "indices": list(self.indices)}


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    entries: tuple[Entry, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description}


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
                          split=str(e.get("split", "test")), indices=tuple(int(i) for i in e["indices"]),
                          seed=int(e.get("seed", seed)))
                    for e in data["entries"])
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"suite {data.get('name')!r} repeats an entry name: give every entry its own name")
    return Suite(str(data["name"]), int(data.get("version", 1)), str(data.get("description", "")), entries)


def single_env_suite(env_id: str, kwargs: dict[str, Any], episodes: int, split: str = "test",
                     seed: int = 0) -> Suite:
    """The suite of `turngym eval ENV_ID`: the first `episodes` tasks of one split of one env."""
    name = env_id.split("/")[-1]
    entry = Entry(name, env_id, dict(kwargs), split, tuple(range(episodes)), seed)
    return Suite(name, 0, f"{env_id} {kwargs or ''}, {split} split, {episodes} episodes", (entry,))
