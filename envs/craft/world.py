"""One Craft world: the reference implementation of the rules.

The map is a flat `bytearray` with a border of `edge` tiles wide enough for the view, so a
position is one integer, a direction is one offset, and nothing needs bounds checks. Plain
Python integers keep a single world fast (tens of microseconds a tick); `CraftVectorEnv`
runs the same rules on NumPy batches and a test checks that the two agree step for step.

Randomness (cow moves, the chance of a sapling) is counter-based: a hash of the world's key,
the tick, a stream and an index. A world's future therefore does not depend on how many worlds
are stepped beside it, which is what lets the batched engine reproduce it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from turngym.envs.craft.rules import DIRECTIONS, Rules, Task
from turngym.envs.craft.worldgen import Layout

MASK64 = (1 << 64) - 1
GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
STREAM_COLLECT, STREAM_COW = 1, 2
MOVES, DO, NOOP = 4, 4, 5  # action ids: 0-3 move, 4 do, 5 noop, then place and make


def mix(key: int, tick: int, stream: int, index: int) -> int:
    """SplitMix64 of (key, tick, stream, index): 64 random bits from a counter."""
    z = (key + tick * GOLDEN + stream * MIX1 + index * MIX2) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def mix_np(key: np.ndarray, tick: np.ndarray, stream: int, index: np.ndarray) -> np.ndarray:
    """`mix` over arrays (uint64 arithmetic wraps modulo 2**64, as the masks do above)."""
    u = np.uint64
    z = key.astype(u) + tick.astype(u) * u(GOLDEN) + u(stream * MIX1 & MASK64) + index.astype(u) * u(MIX2)
    z = (z ^ (z >> u(30))) * u(MIX1)
    z = (z ^ (z >> u(27))) * u(MIX2)
    return z ^ (z >> u(31))


class Start:
    """The first state of a world, as both engines lay it out: the map padded with `edge` tiles,
    the player's flat position and facing, full vitals, every cow slot (-1: empty), the inventory
    and the achievements done (empty, unless an evolved task starts further along; tasks.py)."""

    def __init__(self, rules: Rules, layout: Layout, pad: int, inventory: Sequence[int] | None = None,
                 achieved: Sequence[str] = ()) -> None:
        self.inventory = list(inventory) if inventory is not None else [0] * len(rules.items)
        self.achieved = [a in achieved for a in rules.achievements]
        height, width = layout.grid.shape
        self.width = width + 2 * pad  # the row stride of the flat map
        self.grid = np.full((height + 2 * pad, self.width), rules.mat("edge"), np.uint8)
        self.grid[pad:pad + height, pad:pad + width] = layout.grid
        flat = [(y + pad) * self.width + x + pad for y, x in (layout.spawn, *layout.cows)]
        self.pos, self.facing = flat[0], DIRECTIONS.index("south")
        self.vitals = (rules.raw["vitals"]["max"],) * 3
        self.cows = flat[1:] + [-1] * (rules.raw["world"]["max_cows"] - len(layout.cows))
        self.cow_health = [rules.raw["cow"]["health"]] * len(layout.cows) + [0] * (len(self.cows) - len(layout.cows))


class World:
    """The state and rules of one world. `step(action_id)` returns None or why it was invalid."""

    def __init__(self, rules: Rules, task: Task, layout: Layout, key: int, pad: int,
                 inventory: Sequence[int] | None = None, achieved: Sequence[str] = ()) -> None:
        self.rules, self.task, self.pad = rules, task, pad
        start = Start(rules, layout, pad, inventory, achieved)
        self.width = start.width  # the row stride of the flat map
        self.map = bytearray(start.grid.tobytes())
        self.grid = np.frombuffer(self.map, np.uint8).reshape(start.grid.shape)  # shares memory with map
        self.offsets = (-self.width, self.width, 1, -1)  # north, south, east, west
        self.pos, self.facing = start.pos, start.facing
        self.inventory = start.inventory
        self.health = self.food = self.drink = start.vitals[0]
        self.cows, self.cow_health = start.cows, start.cow_health
        self.achieved = start.achieved
        self.tick = 0
        self.dead = False
        self.key = key & MASK64
        self._compile_tables()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a copy's grid must view the copy's own map (copy.deepcopy would give it a detached array)
        self.__dict__.update(state)
        self.grid = np.frombuffer(self.map, np.uint8).reshape(self.grid.shape)

    def _compile_tables(self) -> None:
        r, t = self.rules, self.rules.tables
        self.walkable, self.deadly = t["walkable"].tolist(), t["deadly"].tolist()
        self.collectable, self.requires = t["collectable"].tolist(), t["requires"].tolist()
        self.gives = [[(i, n) for i, n in enumerate(row) if n] for row in t["gives"].tolist()]
        self.drinks, self.leaves, self.chance = t["drink"].tolist(), t["leaves"].tolist(), t["chance"].tolist()
        self.collect_ach, self.action_ach = t["collect_ach"].tolist(), t["action_ach"].tolist()
        self.costs = [[(i, n) for i, n in enumerate(row) if n] for row in t["cost"].tolist()]
        self.near_needed = t["near"].tolist()
        self.onto, self.places, self.makes = t["onto"].tolist(), t["places"].tolist(), t["makes"].tolist()
        self.mat = {m: r.mat(m) for m in ("grass", "cow", "table", "furnace")}
        self.vitals = r.raw["vitals"]
        self.inv_max = r.raw["world"]["inventory_max"]
        self.cow_rule = r.raw["cow"]
        self.eat_ach = r.achievements.index("eat_cow")
        self.swords = list(zip(t["swords"].tolist(), t["sword_damage"].tolist(), strict=True))
        near = r.raw["world"]["near"]
        self.near_rows = [(dy * self.width - near, 2 * near + 1) for dy in range(-near, near + 1)]
        goal = self.task.adjacent
        self.goal_ach = None if goal else r.achievements.index(self.task.goal)
        self.goal_mat = r.mat(goal) if goal else None

    # ---- coordinates ----------------------------------------------------------------------
    def flat(self, y: int, x: int) -> int:
        """Flat index of map tile (y, x) (unpadded coordinates)."""
        return (y + self.pad) * self.width + x + self.pad

    def yx(self, flat: int) -> tuple[int, int]:
        y, x = divmod(flat, self.width)
        return y - self.pad, x - self.pad

    @property
    def target(self) -> int:
        """The tile the player faces."""
        return self.pos + self.offsets[self.facing]

    def stations_near(self) -> tuple[bool, bool]:
        """Whether a table and a furnace are within the `near` square around the player."""
        table, furnace, found_t, found_f = self.mat["table"], self.mat["furnace"], False, False
        m = self.map
        for offset, length in self.near_rows:
            row = m[self.pos + offset:self.pos + offset + length]
            found_t = found_t or table in row
            found_f = found_f or furnace in row
        return found_t, found_f

    # ---- rules ----------------------------------------------------------------------------
    def why_not(self, action: int) -> str | None:
        """None if `action` can be taken now, else a one-line reason."""
        if action < MOVES or action == NOOP:
            return None
        r = self.rules
        target = self.target
        m = self.map[target]
        facing = f"{r.materials[m]} to the {DIRECTIONS[self.facing]}"
        if action == DO:
            if m == self.mat["cow"]:
                return None
            if not self.collectable[m]:
                return f"nothing to collect, attack or eat: you face {facing}"
            tool = self.requires[m]
            if tool >= 0 and not self.inventory[tool]:
                return f"collecting {r.materials[m]} needs a {r.items[tool]}; you face {facing}"
            return None
        verb = r.actions[action]
        short = [f"{n} {r.items[i]} (have {self.inventory[i]})" for i, n in self.costs[action]
                 if self.inventory[i] < n]
        if short:
            return f"{verb} needs " + ", ".join(short)
        need_table, need_furnace = self.near_needed[action]
        if need_table or need_furnace:
            table, furnace = self.stations_near()
            missing = [s for s, need, have in (("table", need_table, table), ("furnace", need_furnace, furnace))
                       if need and not have]
            if missing:
                return f"{verb} needs a nearby " + " and a nearby ".join(missing)
        if self.places[action] >= 0 and not self.onto[action][m]:
            return f"cannot {verb} there: you face {facing}"
        return None

    def step(self, action: int) -> str | None:
        """Take `action` and advance the world one tick; or return why it is invalid (no change)."""
        reason = self.why_not(action)
        if reason is not None:
            return reason
        if action < MOVES:
            self.facing = action
            target = self.target
            if self.walkable[self.map[target]]:
                self.pos = target
        elif action == DO:
            self._do(self.target)
        elif action != NOOP:
            for i, n in self.costs[action]:
                self.inventory[i] -= n
            if self.places[action] >= 0:
                self.map[self.target] = self.places[action]
            else:
                tool = self.makes[action]
                self.inventory[tool] = min(self.inventory[tool] + 1, self.inv_max)
            self.achieved[self.action_ach[action]] = True
        self._tick()
        return None

    def _do(self, target: int) -> None:
        m = self.map[target]
        if m == self.mat["cow"]:
            slot = self.cows.index(target)
            damage = self.cow_rule["damage"]["none"]
            for sword, hit in self.swords:
                if self.inventory[sword]:
                    damage = hit
            self.cow_health[slot] -= damage
            if self.cow_health[slot] <= 0:
                self.cows[slot], self.cow_health[slot] = -1, 0
                self.map[target] = self.mat["grass"]
                self.food = min(self.food + self.cow_rule["food"], self.vitals["max"])
                self.achieved[self.eat_ach] = True
            return
        if mix(self.key, self.tick, STREAM_COLLECT, 0) >> 32 >= self.chance[m]:
            return  # e.g. grass yields a sapling only sometimes
        for i, n in self.gives[m]:
            self.inventory[i] = min(self.inventory[i] + n, self.inv_max)
        self.drink = min(self.drink + self.drinks[m], self.vitals["max"])
        self.map[target] = self.leaves[m]
        self.achieved[self.collect_ach[m]] = True

    def _tick(self) -> None:
        self.tick += 1
        t, v, m = self.tick, self.vitals, self.map
        grass, cow = self.mat["grass"], self.mat["cow"]
        # Cows step at once: each targets a tile that is grass before anyone moves; on a tie
        # the lower slot wins. The batched engine resolves ties the same way.
        claimed, moves = set(), []
        for slot, p in enumerate(self.cows):
            if p < 0:
                continue
            h = mix(self.key, t, STREAM_COW, slot)
            if h & 1:
                q = p + self.offsets[(h >> 1) & 3]
                if m[q] == grass and q != self.pos and q not in claimed:
                    claimed.add(q)
                    moves.append((slot, p, q))
        for slot, p, q in moves:
            m[p], m[q], self.cows[slot] = grass, cow, q
        if t % v["food_decay_every"] == 0:
            self.food = max(self.food - 1, 0)
        if t % v["drink_decay_every"] == 0:
            self.drink = max(self.drink - 1, 0)
        if self.food == 0 or self.drink == 0:
            if t % v["damage_every"] == 0:
                self.health -= 1
        elif self.health < v["max"] and t % v["regen_every"] == 0:
            self.health += 1
        self.dead = self.health <= 0 or self.deadly[m[self.pos]]

    # ---- goals and observations -----------------------------------------------------------
    def goal_reached(self) -> bool:
        if self.goal_ach is not None:
            return self.achieved[self.goal_ach]
        m, p = self.map, self.pos
        return self.goal_mat in (m[p - self.width], m[p + self.width], m[p + 1], m[p - 1])

    def valid_actions(self) -> list[int]:
        return [a for a in range(len(self.rules.actions)) if self.why_not(a) is None]

    def view(self, side: int) -> np.ndarray:
        """The side x side window of tile ids centred on the player (a copy)."""
        y, x = divmod(self.pos, self.width)
        r = side // 2
        return self.grid[y - r:y + r + 1, x - r:x + r + 1].copy()

    def state(self) -> dict[str, Any]:
        """JSON-ready true state (the format `CraftVectorEnv.state_dict` also produces)."""
        return encode_state(self.rules, self.task, self.grid, self.pad, self.yx(self.pos), self.facing,
                            self.inventory, (self.health, self.food, self.drink),
                            [(self.yx(p), h) for p, h in zip(self.cows, self.cow_health, strict=True) if p >= 0],
                            self.achieved, self.tick, self.dead)


def encode_state(rules: Rules, task: Task, grid: np.ndarray, pad: int, pos: tuple[int, int], facing: int,
                 inventory: Sequence[int], vitals: Sequence[int], cows: list[tuple[tuple[int, int], int]],
                 achieved: Sequence[bool], tick: int, dead: bool) -> dict[str, Any]:
    """The state of one world as plain data: the map as rows of legend characters."""
    encoder = StateEncoder.of(rules, task)
    return encoder.state(encoder.rows(grid, pad), (int(pos[0]), int(pos[1])), DIRECTIONS[int(facing)],
                         [(name, int(n)) for name, n in zip(rules.items, inventory, strict=True) if n],
                         [int(v) for v in vitals], [(int(y), int(x), int(h)) for (y, x), h in cows],
                         [a for a, done in zip(rules.achievements, achieved, strict=True) if done], int(tick),
                         bool(dead))


class StateEncoder:
    """`encode_state` for the worlds of one task: the legend and the character table made once,
    and `batch()` for many worlds read from NumPy arrays (`CraftVectorEnv.state_dicts`)."""

    def __init__(self, rules: Rules, task: Task) -> None:
        self.task, self.goal = task.name, task.goal
        chars = rules.chars
        self.legend = dict(zip(chars, rules.materials, strict=True))
        # material id -> its legend character, for bytes.translate (one ASCII byte per material)
        self.table = bytes(ord(chars[m]) if m < len(chars) else 0 for m in range(256))
        self.items = np.array(rules.items, object)
        self.achievements = np.array(rules.achievements, object)
        self.directions = np.array(DIRECTIONS, object)

    @classmethod
    def of(cls, rules: Rules, task: Task) -> StateEncoder:
        """The encoder of `rules` and `task`, made once (a single world's state() asks every turn)."""
        key = (id(rules), task.name, task.goal)  # the rules stay referenced below, so their id stays theirs
        if key not in ENCODERS:
            if len(ENCODERS) >= 64:
                ENCODERS.clear()
            ENCODERS[key] = (rules, cls(rules, task))
        return ENCODERS[key][1]

    def rows(self, grid: np.ndarray, pad: int) -> list[str]:
        """The map inside its `pad` border as rows of legend characters."""
        return self.text(grid[pad:grid.shape[0] - pad, pad:grid.shape[1] - pad])

    def text(self, tiles: np.ndarray) -> list[str]:
        """Each row of a 2-d array of material ids as a string of legend characters."""
        width = tiles.shape[1]
        if not width:
            return [""] * len(tiles)
        text = np.ascontiguousarray(tiles, np.uint8).tobytes().translate(self.table).decode()
        return [text[i:i + width] for i in range(0, len(text), width)]

    def state(self, rows: Sequence[str], pos: tuple[int, int], facing: str, inventory: Sequence[tuple[str, int]],
              vitals: Sequence[int], cows: Sequence[tuple[int, int, int]], achievements: Sequence[str], tick: int,
              dead: bool) -> dict[str, Any]:
        """One world's state from plain values: its map rows, the player's (y, x) and facing, the
        (item, count) pairs held, (health, food, drink), each cow's (y, x, health) and the names
        of the achievements done. Every list and dict in it is new: a reader may change them."""
        health, food, drink = vitals
        return {
            "task": self.task,
            "goal": self.goal,
            "map": list(rows),
            "legend": self.legend.copy(),
            "player": {"pos": [pos[0], pos[1]], "facing": facing},
            "inventory": dict(inventory),
            "vitals": {"health": health, "food": food, "drink": drink},
            "cows": [{"pos": [y, x], "health": h} for y, x, h in cows],
            "achievements": list(achievements),
            "tick": tick,
            "dead": dead,
        }

    def batch(self, rows: Sequence[Sequence[str]], pos: np.ndarray, facing: np.ndarray, inventory: np.ndarray,
              vitals: np.ndarray, cows: np.ndarray, cow_health: np.ndarray, cow_alive: np.ndarray,
              achieved: np.ndarray, tick: np.ndarray, dead: np.ndarray, task_ids: Sequence[str] | None = None,
              turns: np.ndarray | None = None) -> States:
        """The states of k worlds: `rows[j]` world j's map rows, `pos` (k, 2) and `cows` (k, slots, 2)
        (y, x) tiles, `cow_health` and `cow_alive` (k, slots), `inventory` (k, items), `vitals` (k, 3),
        `achieved` (k, achievements), `facing`, `tick` and `dead` (k,); with `task_ids` and `turns`
        (k,), each state starts with its task_id and turn (as `CraftEnv.state_dict()`)."""
        return States(self, rows, pos, facing, inventory, vitals, cows, cow_health, cow_alive, achieved, tick, dead,
                      task_ids, turns)


ENCODERS: dict[tuple[int, str, str], tuple[Rules, StateEncoder]] = {}  # StateEncoder.of's


class States(Sequence[dict[str, Any]]):
    """The states of a batch of worlds as read at one moment, built on demand: each `states[j]` is
    a new dict, with new lists and dicts inside, so a reader may change what it got without
    touching another read. The batch keeps flat lists of plain numbers and strings only, so one
    that outlives a step costs the garbage collector next to nothing."""

    def __init__(self, encoder: StateEncoder, rows: Sequence[Sequence[str]], pos: np.ndarray, facing: np.ndarray,
                 inventory: np.ndarray, vitals: np.ndarray, cows: np.ndarray, cow_health: np.ndarray,
                 cow_alive: np.ndarray, achieved: np.ndarray, tick: np.ndarray, dead: np.ndarray,
                 task_ids: Sequence[str] | None, turns: np.ndarray | None) -> None:
        k = self.k = len(rows)

        def runs(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
            # the columns of a (k, m) mask's True cells, world by world, and where each world's run starts
            world, col = np.divmod(np.flatnonzero(mask), mask.shape[1])
            return col, np.searchsorted(world, np.arange(k + 1)).tolist()

        self.encoder = encoder
        self.rows = [tuple(lines) for lines in rows]
        self.pos = list(zip(pos[:, 0].tolist(), pos[:, 1].tolist(), strict=True))
        self.facing = encoder.directions[facing].tolist()
        col, self.held_at = runs(inventory != 0)
        self.held = list(zip(encoder.items[col].tolist(), inventory[inventory != 0].tolist(), strict=True))
        self.vitals = list(zip(*vitals.T.tolist(), strict=True))
        _, self.cows_at = runs(cow_alive)
        self.cows = list(zip(*cows[cow_alive].T.tolist(), cow_health[cow_alive].tolist(), strict=True))
        col, self.done_at = runs(achieved)
        self.done = encoder.achievements[col].tolist()
        self.tick, self.dead = tick.tolist(), dead.tolist()
        self.task_ids = list(task_ids) if task_ids is not None else None
        self.turns = turns.tolist() if turns is not None else None

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, j: int) -> dict[str, Any]:
        if not -self.k <= j < self.k:
            raise IndexError(f"world {j} of a batch of {self.k}")
        j %= self.k
        state = self.encoder.state(self.rows[j], self.pos[j], self.facing[j],
                                   self.held[self.held_at[j]:self.held_at[j + 1]], self.vitals[j],
                                   self.cows[self.cows_at[j]:self.cows_at[j + 1]],
                                   self.done[self.done_at[j]:self.done_at[j + 1]], self.tick[j], self.dead[j])
        if self.task_ids is None:
            return state
        return {"task_id": self.task_ids[j], "turn": self.turns[j], **state}


def symbolic_spaces(rules: Rules, view: int) -> dict[str, spaces.Space]:
    """The symbolic observation (CraftVectorEnv's, and CraftEnv's with `symbolic=True`): the view
    as material ids (the player at the centre), the inventory counts, the vitals (health, food,
    drink) and the facing (0-3: north, south, east, west)."""
    return {
        "view": spaces.Box(0, len(rules.materials) - 1, (view, view), np.uint8),
        "inventory": spaces.Box(0, rules.raw["world"]["inventory_max"], (len(rules.items),), np.uint8),
        "vitals": spaces.Box(0, rules.raw["vitals"]["max"], (3,), np.uint8),
        "facing": spaces.Discrete(4),
    }
