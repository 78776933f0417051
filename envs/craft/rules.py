"""The Craft rules (assets/craft/rules.yaml) compiled into lookup tables.

Both engines index these tables by material, item or action id, so a rule lives in one place:
the YAML file. The recipe-tree helpers (`prerequisites`, `materials_needed`, `recipe_lines`) are
derived from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

DIRECTIONS = ("north", "south", "east", "west")
DIR_VECTORS = ((-1, 0), (1, 0), (0, 1), (0, -1))  # (dy, dx) per direction
ACTION_MODES = ("primitive", "skills")


@dataclass(frozen=True)
class Task:
    name: str
    goal: str  # an achievement name, or "adjacent:<material>"
    max_turns: dict[str, int]
    about: str
    world: dict[str, Any]

    @property
    def adjacent(self) -> str | None:
        """The material the player must stand next to, for `adjacent` goals."""
        return self.goal.split(":", 1)[1] if self.goal.startswith("adjacent:") else None


@dataclass(frozen=True)
class Recipe:
    """A `place` or `make` rule: costs, required nearby stations, what it yields."""

    name: str
    uses: dict[str, int]
    near: tuple[str, ...]
    onto: tuple[str, ...] = ()  # place only


@dataclass(frozen=True)
class Rules:
    """All of assets/craft/rules.yaml, with the integer tables the engines index."""

    raw: dict[str, Any]
    materials: tuple[str, ...]
    items: tuple[str, ...]
    actions: tuple[str, ...]
    achievements: tuple[str, ...]
    tasks: dict[str, Task]
    place: dict[str, Recipe]
    make: dict[str, Recipe]
    collect: dict[str, dict[str, Any]]
    tables: dict[str, np.ndarray] = field(repr=False)
    _chains: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    # --- names and ids ---------------------------------------------------------------------
    def mat(self, name: str) -> int:
        return self.materials.index(name)

    def item(self, name: str) -> int:
        return self.items.index(name)

    @property
    def chars(self) -> tuple[str, ...]:
        return tuple(self.raw["materials"][m]["char"] for m in self.materials)

    @property
    def place_offset(self) -> int:
        return self.actions.index(f"place {next(iter(self.place))}")

    @property
    def make_offset(self) -> int:
        return self.actions.index(f"make {next(iter(self.make))}")

    def collect_achievement(self, material: str) -> str:
        return "collect_" + next(iter(self.collect[material]["gives"]))

    # --- recipe tree -----------------------------------------------------------------------
    def source_of(self, item: str) -> str | None:
        """The material that gives `item` when collected (None for crafted tools)."""
        return next((m for m, rule in self.collect.items() if item in rule["gives"]), None)

    def achievement_for_item(self, item: str) -> str:
        """The achievement that first yields `item`."""
        if item in self.make:
            return f"make_{item}"
        source = self.source_of(item)
        if source is None:
            raise KeyError(f"no rule yields {item!r}")
        return self.collect_achievement(source)

    def requirements(self, achievement: str) -> list[str]:
        """The achievements that must come right before `achievement` (one recipe level)."""
        kind, _, name = achievement.partition("_")
        if kind == "collect":
            material = self.source_of(name)
            tool = self.collect[material].get("requires")
            return [f"make_{tool}"] if tool else []
        if kind in ("place", "make"):
            recipe = (self.place if kind == "place" else self.make)[name]
            needs = [self.achievement_for_item(i) for i in recipe.uses]
            return needs + [f"place_{s}" for s in recipe.near]
        return []  # eat_cow and other free-standing achievements

    def prerequisites(self, goal: str) -> list[str]:
        """Every achievement needed for `goal`, in an order that can be followed, goal last."""
        if goal in self._chains:
            return list(self._chains[goal])
        order: list[str] = []

        def visit(ach: str) -> None:
            for req in self.requirements(ach):
                visit(req)
            if ach not in order:
                order.append(ach)

        if goal in self.achievements:
            visit(goal)
        self._chains[goal] = order
        return list(order)

    def materials_needed(self, task: Task) -> list[str]:
        """Materials that must exist and be reachable for `task` to be solvable."""
        mats = [m for m in self.collect if self.collect_achievement(m) in self.prerequisites(task.goal)]
        if task.goal == "eat_cow":
            mats.append("cow")
        if task.adjacent:
            mats.append(task.adjacent)
        return mats

    def recipe_lines(self, task: Task) -> list[str]:
        """One line per place/make/collect rule on the task's path, for the text observation."""
        lines = []
        for ach in self.prerequisites(task.goal):
            kind, _, name = ach.partition("_")
            if kind in ("place", "make"):
                recipe = (self.place if kind == "place" else self.make)[name]
                parts = [", ".join(f"{n} {i}" for i, n in recipe.uses.items())]
                if recipe.near:
                    parts.append("near a " + " and a ".join(recipe.near))
                lines.append(f"{kind} {name}: " + "; ".join(parts))
            elif kind == "collect":
                material = self.source_of(name)
                tool = self.collect[material].get("requires")
                lines.append(f"collect {name}: do facing {material}" + (f" holding a {tool}" if tool else ""))
        return lines


def _compile(raw: dict[str, Any]) -> Rules:
    materials = tuple(raw["materials"])
    items = tuple(raw["items"])
    mat = {m: i for i, m in enumerate(materials)}
    item = {it: i for i, it in enumerate(items)}
    place = {n: Recipe(n, dict(r["uses"]), tuple(r.get("near", ())), tuple(r["onto"]))
             for n, r in raw["place"].items()}
    make = {n: Recipe(n, dict(r["uses"]), tuple(r.get("near", ()))) for n, r in raw["make"].items()}
    collect = {m: dict(r) for m, r in raw["collect"].items()}
    actions = (*(f"move {d}" for d in DIRECTIONS), "do", "noop",
               *(f"place {n}" for n in place), *(f"make {n}" for n in make))
    achievements = (*(f"collect_{next(iter(r['gives']))}" for r in collect.values()),
                    *(f"place_{n}" for n in place), *(f"make_{n}" for n in make), "eat_cow")
    ach = {a: i for i, a in enumerate(achievements)}
    nm, ni = len(materials), len(items)

    def flags(key: str) -> np.ndarray:
        return np.array([bool(raw["materials"][m].get(key, False)) for m in materials])

    # Per material: what `do` yields. chance_u32 compares against the top 32 bits of a hash.
    collectable = np.zeros(nm, bool)
    requires = np.full(nm, -1, np.int64)
    gives = np.zeros((nm, ni), np.int64)
    drink = np.zeros(nm, np.int64)
    leaves = np.arange(nm, dtype=np.int64)
    chance = np.full(nm, 1 << 32, np.int64)
    collect_ach = np.full(nm, -1, np.int64)
    for m, rule in collect.items():
        i = mat[m]
        collectable[i] = True
        requires[i] = item[rule["requires"]] if "requires" in rule else -1
        for name, n in rule["gives"].items():
            if name == "drink":
                drink[i] = n
            else:
                gives[i, item[name]] = n
        leaves[i] = mat[rule.get("leaves", m)]
        chance[i] = round(float(rule.get("chance", 1.0)) * (1 << 32))
        collect_ach[i] = ach[f"collect_{next(iter(rule['gives']))}"]

    # Per action: costs, stations needed nearby, what it places or makes.
    na = len(actions)
    cost = np.zeros((na, ni), np.int64)
    near = np.zeros((na, 2), bool)  # (table, furnace) needed nearby
    onto = np.zeros((na, nm), bool)
    places = np.full(na, -1, np.int64)
    makes = np.full(na, -1, np.int64)
    action_ach = np.full(na, -1, np.int64)
    stations = ("table", "furnace")
    for kind, recipes in (("place", place), ("make", make)):
        for n, r in recipes.items():
            a = actions.index(f"{kind} {n}")
            for it, k in r.uses.items():
                cost[a, item[it]] = k
            for s in r.near:
                near[a, stations.index(s)] = True
            for m in r.onto:
                onto[a, mat[m]] = True
            if kind == "place":
                places[a] = mat[n]
            else:
                makes[a] = item[n]
            action_ach[a] = ach[f"{kind}_{n}"]

    damage = raw["cow"]["damage"]
    tables = {
        "walkable": flags("walkable"), "deadly": flags("deadly"), "collectable": collectable,
        "requires": requires, "gives": gives, "drink": drink, "leaves": leaves, "chance": chance,
        "collect_ach": collect_ach, "cost": cost, "near": near, "onto": onto, "places": places,
        "makes": makes, "action_ach": action_ach,
        # Cow damage by the best sword held: swords in increasing order of damage.
        "swords": np.array([item[s] for s in sorted((s for s in damage if s != "none"), key=damage.get)]),
        "sword_damage": np.array(sorted(v for s, v in damage.items() if s != "none")),
    }
    tasks = {}
    for name, t in raw["tasks"].items():
        goal = t["goal"]
        if isinstance(goal, dict):
            ((kind, target),) = goal.items()
            goal = f"{kind}:{target}"
        elif goal not in ach:
            raise ValueError(f"task {name!r} has unknown goal {goal!r}")
        tasks[name] = Task(name, goal, dict(t["max_turns"]), t["about"], dict(t.get("world", {})))
    return Rules(raw, materials, items, actions, achievements, tasks, place, make, collect, tables)


@cache
def load_rules() -> Rules:
    """The rules of Craft-v0 (parsed once per process)."""
    text = resources.files("turngym.assets").joinpath("craft/rules.yaml").read_text()
    return _compile(yaml.safe_load(text))
