"""Craft's oracle and rule agent: one planner over the recipe tree, on the true map or on a remembered one.

`oracle` plans on the true map (state_dict). Each turn it picks an objective by working backwards
from the task's goal through the rules (what the next missing item, tool or nearby station is),
keeps food and drink up on the way, and walks there along a shortest safe path, mining through rock
when its tools allow. It never steps on lava. It plays in either action mode, using primitive actions.

`heuristic` is the same planner on what it has observed: it reads only the observation (the view,
inventory, vitals and facing, from the text or from the symbolic arrays), draws each view into a map
of its own by dead reckoning, and when what it needs is not on that map it walks to the nearest
edge of the unknown, inside the mountains for ores and outside them for the rest (frontier
exploration). It is Craft's rule baseline: what a script with a memory reaches without the map.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np

from turngym.agents.base import Agent, register_agent
from turngym.envs.craft import CraftEnv, load_rules
from turngym.envs.craft.paths import direction, explore_target, search, step_costs, trace
from turngym.envs.craft.rules import DIRECTIONS

STATION_SEARCH = 15  # walk back to a station this close rather than build a new one
LOW = 3  # go and drink, or eat, when drink or food falls this low
PLACE_CHECK = 30  # how far around a placement must stay reachable
EXPLORE_REACH = 80  # how far (in steps, mining counted twice) the rule agent looks for unknown ground
# The rule agent explores the mountains for ores and the open land for the rest: unknown ground on the
# other side costs this many extra steps.
WRONG_GROUND = 12
ORES = ("stone", "coal", "iron", "diamond")
TOP_UP, TOP_UP_REACH = 6, 8  # the rule agent drinks or eats at this level or below when water or a cow is this near
MOUNTAIN = ("stone", "path", "coal", "iron", "diamond")


@register_agent("oracle", CraftEnv)
class CraftOracle(Agent):
    """Upper-bound agent for Craft; reads `env.unwrapped.state_dict()` every turn."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        self.env = env
        self.rules = r = load_rules()
        self.to_ids = bytes.maketrans("".join(r.chars).encode(), bytes(range(len(r.chars))))
        self.edge = r.mat("edge")
        self.near = r.raw["world"]["near"]
        self.vmax = r.raw["vitals"]["max"]

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.refilling: str | None = None  # "water" or "cow" while topping up a vital
        self.route: list[int] = []
        self.route_for: tuple | None = None

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        self._read(self.env.unwrapped.state_dict())
        objective = self._objective()
        return self._skill(objective, info["actions"]) or self._pursue(objective)

    # ---- reading the state ----------------------------------------------------------------
    def _read(self, state: dict[str, Any]) -> None:
        rows = state["map"]
        self.width = w = len(rows[0]) + 2
        edge = bytes([self.edge])
        body = b"".join(edge + row.encode().translate(self.to_ids) + edge for row in rows)
        self.cells = bytearray(edge * w + body + edge * w)
        y, x = state["player"]["pos"]
        self.pos = (y + 1) * w + x + 1
        self.facing = DIRECTIONS.index(state["player"]["facing"])
        self.inv = [state["inventory"].get(item, 0) for item in self.rules.items]
        self.vitals = state["vitals"]
        self.done = set(state["achievements"])
        self.goal = state["goal"]
        self.offsets = (-w, w, 1, -1)

    # ---- choosing an objective ------------------------------------------------------------
    def _objective(self) -> tuple:
        enough = {"drink": self.vmax, "food": LOW + 1}  # drink until full; one cow is plenty
        for material, vital in (("water", "drink"), ("cow", "food")):
            if self.vitals[vital] <= LOW:
                self.refilling = material
            if self.refilling == material:
                if self.vitals[vital] < enough[vital]:
                    return ("collect", material)
                self.refilling = None
        if ":" in self.goal:  # e.g. adjacent:tree
            return tuple(self.goal.split(":", 1))
        if self.goal == "eat_cow":
            return ("collect", "cow")
        kind, _, name = self.goal.partition("_")
        if kind == "collect":
            return self._need_item(name, self.inv[self.rules.item(name)] + 1)
        return self._need_recipe(kind, name)

    def _plan_totals(self) -> Counter:
        """Raw items the rest of the plan consumes, plus enough to build each station again."""
        totals, stations = Counter(), set()
        for ach in self.rules.prerequisites(self.goal):
            kind, _, name = ach.partition("_")
            if ach in self.done or kind not in ("place", "make"):
                continue
            recipe = (self.rules.place if kind == "place" else self.rules.make)[name]
            totals.update({i: n for i, n in recipe.uses.items() if i not in self.rules.make})
            stations.update(recipe.near)
        for station in stations:
            totals.update(self.rules.place[station].uses)
        return totals

    def _need_item(self, item: str, count: int) -> tuple:
        if self.inv[self.rules.item(item)] >= count:
            return ()
        if item in self.rules.make:
            return self._need_recipe("make", item)
        material = self.rules.source_of(item)
        tool = self.rules.collect[material].get("requires")
        if tool and not self.inv[self.rules.item(tool)]:
            return self._need_item(tool, 1)
        return ("collect", material)

    def _need_recipe(self, kind: str, name: str) -> tuple:
        recipe = (self.rules.place if kind == "place" else self.rules.make)[name]
        totals = self._plan_totals()
        cap = self.rules.raw["world"]["inventory_max"]
        for item, n in recipe.uses.items():
            want = n if item in self.rules.make else max(n, min(totals[item], cap))
            objective = self._need_item(item, want)
            if objective:
                return objective
        for station in recipe.near:
            if not self._station_within(station, self.near):
                if self._station_within(station, STATION_SEARCH, walk=True):
                    return ("approach", station)
                return self._need_recipe("place", station)
        return (kind, name)

    def _station_within(self, station: str, reach: int, walk: bool = False) -> bool:
        """Whether a station is inside the `near` square (or, if `walk`, that close on foot)."""
        tiles = self._near_tiles(station, self.near - (1 if walk else 0))
        if not walk:
            return self.pos in tiles
        found, _, _ = search(self.cells, self.width, self.pos, self._costs(False), tiles.__contains__, reach)
        return found is not None

    def _near_tiles(self, station: str, radius: int) -> set[int]:
        """Tiles within `radius` (square) of any tile of `station`."""
        code, w, tiles, at = bytes([self.rules.mat(station)]), self.width, set(), -1
        while (at := self.cells.find(code, at + 1)) >= 0:
            tiles.update(at + dy * w + dx for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1))
        return tiles

    # ---- carrying it out ------------------------------------------------------------------
    def _skill(self, objective: tuple, possible: list[str]) -> str | None:
        """In skills mode: `goto` a target in view, or `explore` when that brings a far one closer.

        Exploring is chosen only if it cuts the walking distance to the target by more than it
        costs in turns, so the distance falls every turn and the oracle cannot go back and forth.
        """
        if objective[0] not in ("collect", "adjacent", "approach") or "explore north" not in self.env.unwrapped.grammar:
            return None
        code = self.rules.mat(objective[1])
        if any(self.cells[self.pos + o] == code for o in self.offsets):
            return None  # already there: face it and act with primitives
        if f"goto {objective[1]}" in possible:
            return f"goto {objective[1]}"
        walk = self._costs(False)
        at, stands = -1, set()
        while (at := self.cells.find(bytes([code]), at + 1)) >= 0:
            stands.update(t for t in (at + o for o in self.offsets) if walk[self.cells[t]] is not None)
        _, to_target, _ = search(self.cells, self.width, stands, walk, max_cost=None)
        if self.pos not in to_target:
            return None  # only reachable by mining: walk with primitives
        best, best_left = None, to_target[self.pos] - 1
        for way, name in enumerate(DIRECTIONS):
            if f"explore {name}" in possible:
                path = explore_target(self.cells, self.width, self.pos, walk, way, self.env.unwrapped.view)
                left = to_target.get(path[-1], 1 << 30) if path else 1 << 30
                if left < best_left:
                    best, best_left = f"explore {name}", left
        return best

    def _costs(self, dig: bool) -> list[int | None]:
        return step_costs(self.rules, self.inv, dig)

    def _pursue(self, objective: tuple) -> str:
        kind = objective[0]
        if kind == "make":
            return f"make {objective[1]}"
        if kind == "place":
            return self._place(objective[1])
        if kind == "approach":
            tiles = self._near_tiles(objective[1], self.near - 1)
            return self._walk(objective, lambda t: t in tiles, None)
        code = self.rules.mat(objective[1])
        return self._walk(objective, lambda t: any(self.cells[t + o] == code for o in self.offsets), code,
                          act=kind == "collect")

    def _walk(self, objective: tuple, goal, code: int | None, act: bool = False) -> str:
        """Follow (or plan) a route to a tile where `goal` holds; then face `code` (and `do`)."""
        if self.route_for == objective and self.route and self.route[0] == self.pos:
            self.route.pop(0)
        if self.route_for != objective or not self._route_valid(goal):
            found, _, parent = search(self.cells, self.width, self.pos, self._costs(True), goal)
            if found is None:
                self.route_for = None
                return self._wander()
            self.route, self.route_for = trace(parent, found), objective
        if self.route:
            return self._step_to(self.route[0])
        if code is None:
            return "noop"
        d = next(d for d, o in enumerate(self.offsets) if self.cells[self.pos + o] == code)
        return "do" if act and self.facing == d else f"move {DIRECTIONS[d]}"  # the target blocks: turn

    def _step_to(self, nxt: int) -> str:
        """The action towards the neighbouring tile `nxt`: mine it when it blocks and is faced, else
        move (which turns towards a blocked tile without stepping)."""
        d = direction(self.width, self.pos, nxt)
        blocked = not self.rules.tables["walkable"][self.cells[nxt]]
        return "do" if blocked and self.facing == d else f"move {DIRECTIONS[d]}"

    def _route_valid(self, goal) -> bool:
        if not self.route:
            return goal(self.pos)
        nxt = self.route[0]
        return nxt - self.pos in self.offsets and self._costs(True)[self.cells[nxt]] is not None

    def _place(self, name: str) -> str:
        """Place on the faced tile, or step so as to face a good spot; never seal a passage and
        stay within reach of the stations the recipe needs."""
        recipe = self.rules.place[name]
        onto = {self.rules.mat(m) for m in recipe.onto}
        walk, w = self._costs(False), self.width
        reach = [self._near_tiles(station, self.near) for station in recipe.near]

        def stand_ok(t: int) -> bool:
            return all(t in tiles for tiles in reach)

        def clearing(t: int) -> bool:  # an open 3x3 block: no single placement can seal it
            return stand_ok(t) and all(walk[self.cells[t + dy * w + dx]] is not None
                                       for dy in (-1, 0, 1) for dx in (-1, 0, 1))

        options = [(self.pos, self.facing)] + [(self.pos + o, d) for d, o in enumerate(self.offsets)
                                               if walk[self.cells[self.pos + o]] is not None]
        spots = [(stand, d) for stand, d in options
                 if stand_ok(stand) and self.cells[stand + self.offsets[d]] in onto]
        def setup(t: int) -> bool:  # one step from here leaves us facing a placeable tile
            return any(walk[self.cells[t + o]] is not None and stand_ok(t + o) and self.cells[t + 2 * o] in onto
                       for o in self.offsets)

        # Near a station, look only a step or two around so the walk never leaves its reach.
        radius = self.near if recipe.near else PLACE_CHECK
        safe = [spot for spot in spots if self._harmless(*spot)]
        if not safe and not clearing(self.pos):
            found, _, _ = search(self.cells, w, self.pos, walk, clearing, max_cost=radius)
            if found is not None:
                return self._walk(("clearing", name), clearing, None)
        for stand, d in safe or spots:
            return f"place {name}" if stand == self.pos else f"move {DIRECTIONS[d]}"
        found, _, _ = search(self.cells, w, self.pos, walk, setup, max_cost=radius)
        return self._walk(("setup", name), setup, None) if found is not None else self._wander()

    def _harmless(self, stand: int, d: int) -> bool:
        """Whether blocking the tile faced from `stand` keeps the surroundings connected."""
        spot, walk = stand + self.offsets[d], self._costs(False)
        before = len(search(self.cells, self.width, stand, walk, max_cost=PLACE_CHECK)[1])
        kept, self.cells[spot] = self.cells[spot], self.edge
        after = len(search(self.cells, self.width, stand, walk, max_cost=PLACE_CHECK)[1])
        self.cells[spot] = kept
        return after >= before - 1

    def _wander(self) -> str:
        """No plan applies (boxed in, or the target is gone): take a safe step."""
        walkable, deadly = self.rules.tables["walkable"], self.rules.tables["deadly"]
        for d, o in enumerate(self.offsets):
            cell = self.cells[self.pos + o]
            if walkable[cell] and not deadly[cell]:
                return f"move {DIRECTIONS[d]}"
        return "noop"


VITALS_LINE = re.compile(r"Health (\d+)/\d+, food (\d+)/\d+, drink (\d+)/\d+\. You face (\w+)")


@register_agent("heuristic", CraftEnv)
class CraftHeuristic(CraftOracle):
    """The oracle's planner on a map drawn from the agent's own observations (see the module doc).

    The player's position is dead-reckoned: a move moves the player exactly when the tile it faces
    in the view it acted on is walkable (agents/landmarks.py relies on the same rule), so the map
    stays aligned. Cows wander, so a cow outside the view is forgotten (drawn as grass). It reads
    the text's map (`text_map=True`, the default) or the symbolic arrays (`symbolic=True`)."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        super().__init__(env, argument)
        r = self.rules
        self.unknown = len(r.materials)  # a tile id beyond the rules' materials: never walked, never dug
        self.from_char = {c: i for i, c in enumerate(r.chars)}
        self.mountain = bytes(r.mat(m) for m in MOUNTAIN)
        self.cow, self.grass = r.mat("cow"), r.mat("grass")

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        super().reset(obs, info, seed=seed)
        env = self.env.unwrapped
        if "view" not in obs and not str(obs.get("text", "")).count("\nMap ("):
            raise ValueError("the Craft heuristic reads the map in the observation: leave text_map on, or make "
                             "the env with symbolic=True")
        self.side = env.view
        # Room for a walk from the start to any edge of the world and the view beyond it, whatever the start.
        self.width = n = 2 * env.size + self.side + 2
        self.cells = bytearray([self.edge]) * n + (bytearray([self.edge]) + bytearray([self.unknown]) * (n - 2)
                                                   + bytearray([self.edge])) * (n - 2) + bytearray([self.edge]) * n
        self.start = self.pos = (n // 2) * n + n // 2
        self.offsets = (-n, n, 1, -1)
        self.goal = env.task.goal
        self.done: set[str] = set()
        self.last: tuple[str, list[int]] | None = None
        self.target: str | None = None

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        self._observe(obs)
        objective = self._objective()
        action = self._skill(objective, info["actions"]) or self._pursue(objective)
        self.last = (action, list(self.inv))
        return action

    def played(self, action: str) -> None:
        self.last = (action, self.last[1] if self.last else list(self.inv))  # dead reckoning follows what was played

    # ---- reading the observation ----------------------------------------------------------
    def _observe(self, obs: dict[str, Any]) -> None:
        view, inv, vitals, facing = self._parse(obs)
        if self.last is not None:
            verb, _, arg = self.last[0].partition(" ")
            step = self.offsets[DIRECTIONS.index(arg)] if verb == "move" else 0
            if step and self.rules.tables["walkable"][self.cells[self.pos + step]]:
                self.pos += step
            if verb == "place" and inv != self.last[1]:
                self.done.add(f"place_{arg}")
        for item, n in zip(self.rules.items, inv, strict=True):
            if n:  # what is held was collected or made
                self.done.add(("make_" if item in self.rules.make else "collect_") + item)
        self.cells = self.cells.replace(bytes([self.cow]), bytes([self.grass]))
        n, r = self.width, self.side // 2
        here = self.cells[self.pos]
        for y in range(self.side):
            first = self.pos + (y - r) * n - r
            self.cells[first:first + self.side] = view[y]
        if self.cells[self.pos] == self.unknown:  # the text shows the player, not the ground it stands on
            self.cells[self.pos] = here if here != self.unknown else self.grass
        self.inv, self.facing = inv, facing
        self.vitals = dict(zip(("health", "food", "drink"), vitals, strict=True))

    def _parse(self, obs: dict[str, Any]) -> tuple[list[bytes], list[int], list[int], int]:
        """(view rows as tile-id bytes, inventory, (health, food, drink), facing) from the observation."""
        if "view" in obs:
            view = np.asarray(obs["view"], np.uint8)
            return ([row.tobytes() for row in view], [int(k) for k in obs["inventory"]],
                    [int(v) for v in obs["vitals"]], int(obs["facing"]))
        lines = str(obs["text"]).splitlines()
        top = next(i for i, line in enumerate(lines) if line.startswith("Map (")) + 1
        view = [bytes(self.unknown if c == "@" else self.from_char[c] for c in line.split(" "))
                for line in lines[top:top + self.side]]
        health, food, drink, facing = VITALS_LINE.search(obs["text"]).groups()
        held = dict(part.rsplit(" ", 1) for part in
                    next(line for line in lines if line.startswith("Inventory: "))[11:].split(", ")
                    if part != "empty")
        return (view, [int(held.get(item, 0)) for item in self.rules.items], [int(health), int(food), int(drink)],
                DIRECTIONS.index(facing))

    def _objective(self) -> tuple:
        # Water or a cow may not be in sight when a vital runs low: top up on the way while one is near.
        for material, vital in (("water", "drink"), ("cow", "food")):
            if self.refilling is None and self.vitals[vital] <= TOP_UP and self._near(material, TOP_UP_REACH):
                self.refilling = material
        return super()._objective()

    def _near(self, material: str, reach: int) -> bool:
        code = self.rules.mat(material)
        found, _, _ = search(self.cells, self.width, self.pos, self._costs(False),
                             lambda t: code in (self.cells[t - self.width], self.cells[t + self.width],
                                                self.cells[t + 1], self.cells[t - 1]), reach)
        return found is not None

    # ---- where the map ends ----------------------------------------------------------------
    def _costs(self, dig: bool) -> list[int | None]:
        return [*step_costs(self.rules, self.inv, dig), None]  # unknown tiles: no path goes through them

    def _pursue(self, objective: tuple) -> str:
        self.target = objective[1] if len(objective) > 1 else None
        return super()._pursue(objective)

    def _wander(self) -> str:
        """What is needed is not on the map: step towards the nearest unknown ground of the right
        kind (the mountains for ores, open land for the rest)."""
        costs, n, unknown = self._costs(True), self.width, self.unknown
        _, dist, parent = search(self.cells, n, self.pos, costs, max_cost=EXPLORE_REACH)
        want_mountain = self.target in ORES
        best, best_cost = None, None
        for tile, d in dist.items():
            if unknown not in (self.cells[tile - n], self.cells[tile + n], self.cells[tile + 1], self.cells[tile - 1]):
                continue
            cost = d + (0 if (self.cells[tile] in self.mountain) == want_mountain else WRONG_GROUND)
            if best_cost is None or cost < best_cost:
                best, best_cost = tile, cost
        path = trace(parent, best) if best is not None else []
        return self._step_to(path[0]) if path else super()._wander()
