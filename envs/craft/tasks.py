"""Craft task ids, frozen splits, and the start of an episode.

A task id is `<task>:<world seed>` (e.g. `wood_pickaxe:2921440061`); a bare `<task>` means "that
task on a world drawn from the reset seed". Test and dev seeds are frozen in
assets/craft/splits.yaml; training uses every seed below 2**31 (test and dev seeds lie above, so
the splits never overlap).

Evolved tasks (a curriculum's, see `CraftEnv.evolve_task`) add `+key=value` modifiers after the
seed, each at most once, e.g. `stone_pickaxe:123+start=make_wood_pickaxe+spawn=near+turns=300`:

- `start=<step>`: start right after that step of the goal's recipe path (an achievement such as
  `make_wood_pickaxe`, a task such as `wood_pickaxe`, or an item such as `wood`): the path's
  achievements up to it count as done, the tools made on the way are held, the collected materials
  that the rest of the path uses are held, and the stations placed on the way stand next to the
  player (south first, then east, west, north, where the recipe may place them).
- `spawn=near|far|<tiles>`: the player starts on the grass tile, walkable from the world's own
  spawn, whose taxicab distance to the nearest resource the task still needs is closest to
  `<tiles>` (near = 1, next to it; far = 16); ties are broken by the world seed. No effect when the
  start leaves no resource to collect.
- `turns=<n>`: the episode's turn budget, whatever `max_turns` says.

The world itself is still the seed's; the goal, reward and score are the task's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import numpy as np
import yaml
from scipy import ndimage

from turngym.envs.base import TaskIds
from turngym.envs.craft.rules import Rules, Task
from turngym.envs.craft.worldgen import Layout, generate, reachable

TRAIN_SEEDS = range(2**31)


@cache
def frozen() -> dict:
    """assets/craft/splits.yaml: version, test and dev seeds, test-world fingerprints."""
    return yaml.safe_load(resources.files("turngym.assets").joinpath("craft/splits.yaml").read_text())


def splits_for(task: str) -> dict[str, Sequence[str]]:
    manifest = frozen()
    return {"train": TaskIds(f"{task}:", TRAIN_SEEDS), "dev": TaskIds(f"{task}:", manifest["dev"]),
            "test": TaskIds(f"{task}:", manifest["test"])}


SPAWN_NAMES = {"near": 1, "far": 16}
SPAWN_MAX = 64  # tiles
TURNS_MAX = 10_000
SPAWN_STREAM = 0x5B  # sub-seed of the spawn choice, apart from world generation's attempts (< 50)
STATION_SIDES = ((1, 0), (0, 1), (0, -1), (-1, 0))  # south (the player faces it), east, west, north


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task id: the task, its world seed (None: draw one) and its modifiers."""

    task: Task
    seed: int | None = None
    start: str | None = None  # the achievement the episode starts right after
    spawn: str | None = None  # "near", "far" or a number of tiles, as written
    turns: int | None = None

    def task_id(self, seed: int | None = None) -> str:
        """The canonical id (modifiers in the order start, spawn, turns), with `seed` if given."""
        seed = self.seed if seed is None else seed
        mods = [f"+{k}={v}" for k, v in (("start", self.start), ("spawn", self.spawn), ("turns", self.turns))
                if v is not None]
        return self.task.name + ("" if seed is None else f":{seed}") + "".join(mods)

    @property
    def spawn_tiles(self) -> int | None:
        return None if self.spawn is None else SPAWN_NAMES.get(self.spawn) or int(self.spawn)


def parse_task_id(rules: Rules, task_id: str) -> TaskSpec:
    """Parse `<task>[:<seed>][+start=...][+spawn=...][+turns=...]` (see the module docstring);
    a ValueError names what to fix."""
    head, *mods = str(task_id).split("+")
    name, sep, seed = head.partition(":")
    if name not in rules.tasks:
        raise ValueError(f"unknown Craft task {name!r} in task id {task_id!r}: "
                         f"use one of {', '.join(rules.tasks)}")
    task = rules.tasks[name]
    if sep and (not (seed.isascii() and seed.isdigit()) or int(seed) >= 2**32):
        raise ValueError(f"bad world seed in task id {task_id!r}: expected <task>:<integer below 2**32>")
    values: dict[str, str] = {}
    for mod in mods:
        key, eq, value = mod.partition("=")
        if key not in ("start", "spawn", "turns") or not eq or not value:
            raise ValueError(f"bad modifier {mod!r} in task id {task_id!r}: use +start=<step>, "
                             "+spawn=near|far|<tiles> or +turns=<n>")
        if key in values:
            raise ValueError(f"modifier {key} appears twice in task id {task_id!r}: give it once")
        values[key] = value
    start = _start_step(rules, task, values["start"], task_id) if "start" in values else None
    spawn = values.get("spawn")
    if spawn is not None and spawn not in SPAWN_NAMES \
            and not (spawn.isascii() and spawn.isdigit() and int(spawn) <= SPAWN_MAX):
        raise ValueError(f"bad spawn {spawn!r} in task id {task_id!r}: use +spawn=near, +spawn=far or "
                         f"+spawn=<tiles from 0 to {SPAWN_MAX}>")
    turns = values.get("turns")
    if turns is not None and not (turns.isascii() and turns.isdigit() and 1 <= int(turns) <= TURNS_MAX):
        raise ValueError(f"bad turns {turns!r} in task id {task_id!r}: use +turns=<n> with 1 <= n <= {TURNS_MAX}")
    return TaskSpec(task, int(seed) if sep else None, start, spawn, None if turns is None else int(turns))


def _start_step(rules: Rules, task: Task, step: str, task_id: str) -> str:
    """The achievement that `start=<step>` names: an achievement, a task's goal or an item's source,
    one that comes before the goal on its recipe path."""
    before = rules.prerequisites(task.goal)[:-1] if not task.adjacent else []
    if step in rules.tasks:
        step = rules.tasks[step].goal
    elif step in rules.items:
        step = rules.achievement_for_item(step)
    if step not in before:
        fix = f"use one of {', '.join(before)}" if before else "this task has no steps before its goal"
        raise ValueError(f"start={step} is not a step before the goal of {task.name} in task id {task_id!r}: {fix}")
    return step


@dataclass(frozen=True)
class Episode:
    task: Task
    task_id: str
    layout: Layout
    key: int  # seeds the world's dynamics (cow moves, sapling chance)
    inventory: tuple[int, ...] | None = None  # None: empty
    achieved: tuple[str, ...] = ()  # achievements that count as done from the start
    max_turns: int | None = None  # this episode's turn budget (None: the env's)


def draw_train_seed(rng: np.random.Generator) -> int:
    """A training world's seed, as `new_episode` draws it for a task id without one."""
    return int(rng.integers(len(TRAIN_SEEDS)))


def next_train_seed(rng: np.random.Generator) -> int:
    """The seed `draw_train_seed(rng)` will give next, leaving `rng` as it was."""
    state = rng.bit_generator.state
    seed = draw_train_seed(rng)
    rng.bit_generator.state = state
    return seed


def new_episode(rules: Rules, task_id: str | TaskSpec | None, default: Task, rng: np.random.Generator,
                size: int, made: Callable[[Task, int], Layout | None] | None = None) -> Episode:
    """The task, world and dynamics key of a new episode; draws only from `rng`, in fixed order.
    `made(task, seed)` may hand over the world of (task, size, seed) made ahead (or None)."""
    spec = TaskSpec(default) if task_id is None else (
        task_id if isinstance(task_id, TaskSpec) else parse_task_id(rules, task_id))
    seed = spec.seed
    if seed is None:
        seed = draw_train_seed(rng)
    key = int(rng.integers(2**63))
    layout = made(spec.task, seed) if made is not None else None
    if layout is None:
        layout = generate(rules, spec.task, size, seed)
    if spec.start is None and spec.spawn is None:
        return Episode(spec.task, spec.task_id(seed), layout, key, max_turns=spec.turns)
    chain = rules.prerequisites(spec.task.goal)
    done = chain[:chain.index(spec.start) + 1] if spec.start else []
    rest = chain[len(done):]
    if spec.spawn is not None:
        layout = _move_spawn(rules, spec.task, layout, rest, spec.spawn_tiles, seed)
    inventory = [0] * len(rules.items)
    for ach in done:
        kind, _, name = ach.partition("_")
        if kind == "make":
            inventory[rules.item(name)] = 1
        elif kind == "collect":  # what the rest of the path still uses of it
            inventory[rules.item(name)] = min(sum(_recipe(rules, a).uses.get(name, 0) for a in rest
                                                  if a.startswith(("place_", "make_"))),
                                              rules.raw["world"]["inventory_max"])
        elif kind == "place":
            layout = _place_station(rules, layout, name)
    return Episode(spec.task, spec.task_id(seed), layout, key, tuple(inventory), tuple(done), spec.turns)


def _recipe(rules: Rules, achievement: str):
    kind, _, name = achievement.partition("_")
    return (rules.place if kind == "place" else rules.make)[name]


def _move_spawn(rules: Rules, task: Task, layout: Layout, rest: list[str], tiles: int, seed: int) -> Layout:
    """The layout with the spawn on the walkable grass tile whose distance to the nearest resource
    still needed is closest to `tiles` (ties broken by a generator seeded from the world seed)."""
    targets = {rules.source_of(a.partition("_")[2]) for a in rest if a.startswith("collect_")}
    if task.goal == "eat_cow":
        targets.add("cow")
    if task.adjacent:
        targets.add(task.adjacent)
    grid = layout.grid
    wanted = np.isin(grid, [rules.mat(t) for t in targets if t])
    if not wanted.any():
        return layout
    distance = ndimage.distance_transform_cdt(~wanted, metric="taxicab")
    allowed = reachable(rules, grid, layout.spawn) & (grid == rules.mat("grass"))
    if task.adjacent:  # a spawn next to the material would meet the goal before the first turn
        allowed &= distance > 1
    candidates = np.argwhere(allowed)
    if not len(candidates):
        return layout
    gap = np.abs(distance[candidates[:, 0], candidates[:, 1]] - tiles)
    best = candidates[gap == gap.min()]
    y, x = best[np.random.default_rng([seed, SPAWN_STREAM]).integers(len(best))]
    return replace(layout, spawn=(int(y), int(x)))


def _place_station(rules: Rules, layout: Layout, station: str) -> Layout:
    """The layout with `station` on the first free side of the spawn where it may be placed."""
    y0, x0 = layout.spawn
    onto = {rules.mat(m) for m in rules.place[station].onto}
    for dy, dx in STATION_SIDES:
        y, x = y0 + dy, x0 + dx
        if 0 <= y < layout.grid.shape[0] and 0 <= x < layout.grid.shape[1] and layout.grid[y, x] in onto:
            grid = layout.grid.copy()
            grid[y, x] = rules.mat(station)
            return replace(layout, grid=grid)
    return layout  # boxed in: the player places one


def evolve(rules: Rules, task_id: str, rng: np.random.Generator) -> str:
    """One random mutation of `task_id`'s modifiers on a fresh training world (see CraftEnv.evolve_task)."""
    spec = parse_task_id(rules, task_id)
    task, default = spec.task, int(spec.task.max_turns["primitive"])
    steps = rules.prerequisites(task.goal)[:-1] if not task.adjacent else []
    options: list[dict] = []
    here = steps.index(spec.start) if spec.start else -1
    if here + 1 < len(steps):
        options.append({"start": steps[here + 1]})  # later: less left to do
    if here >= 0:
        options.append({"start": steps[here - 1] if here > 0 else None})  # earlier
    tiles = spec.spawn_tiles
    if tiles is None:
        options += [{"spawn": "near"}, {"spawn": "far"}]
    else:
        if tiles > 1:  # 1 is next to it already
            options.append({"spawn": str(tiles // 2)})
        if tiles < SPAWN_MAX:
            options.append({"spawn": str(min(max(2 * tiles, 2), SPAWN_MAX))})
    options.append({"turns": None})  # drawn below: x0.5 .. x2
    change = options[int(rng.integers(len(options)))]
    if "turns" in change:
        low, high = max(10, default // 4), 4 * default
        change = {"turns": int(np.clip(round((spec.turns or default) * rng.uniform(0.5, 2.0)), low, high))}
    child = replace(spec, **change)
    return child.task_id(draw_train_seed(rng))
