"""CraftVectorEnv: many Craft worlds stepped as one NumPy batch, for neural-policy training.

The rules are those of `World` (world.py), applied to arrays with one row per world: same tables,
same order of effects, same counter-based randomness, same tie-breaking. Env i reset with seed
s + i plays exactly like `CraftEnv` reset with seed s + i (tests/test_craft_vector.py checks it).
Observations are symbolic: the view as material ids, the inventory, the vitals and the facing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from turngym.envs.base import select_task
from turngym.envs.craft.env import REWARDS
from turngym.envs.craft.rules import ACTION_MODES, Task, load_rules
from turngym.envs.craft.tasks import TaskSpec, new_episode, next_train_seed, parse_task_id, splits_for
from turngym.envs.craft.world import (
    DO,
    MASK64,
    MOVES,
    NOOP,
    STREAM_COLLECT,
    STREAM_COW,
    Start,
    StateEncoder,
    States,
    mix_np,
    symbolic_spaces,
)
from turngym.envs.craft.worldgen import Layout, generate
from turngym.envs.craft.worldpool import WorldPool

HEALTH, FOOD, DRINK = 0, 1, 2
# Worlds kept for reuse: a GRPO group's envs share their task's world (the same seed), so a trainer's
# reset makes one world per group, not one per env.
RECENT_WORLDS = 256


class MapText:
    """Every world's map as rows of legend characters, encoded again only where tiles changed: a
    copy of the tiles as last encoded finds the stale rows, whatever changed them (steps, resets)."""

    def __init__(self, encoder: StateEncoder, num_envs: int, width: int, pad: int) -> None:
        self.encoder, self.width, self.pad = encoder, width, pad
        self.seen = np.full((num_envs, width * width), 255, np.uint8)  # 255 is no material: all rows start stale
        self.rows = [[""] * (width - 2 * pad) for _ in range(num_envs)]
        # maps are compared a word of tiles at a time (8, 4 or 2 tiles, as the map size divides)
        self.word = next(b for b in (8, 4, 2, 1) if width * width % b == 0)
        self.dtype = np.dtype(f"u{self.word}")

    def update(self, maps: np.ndarray, envs: np.ndarray | None = None) -> None:
        """Encode again the stale rows of worlds `envs` (default: all); `maps` holds every world's tiles."""
        new, old = maps.view(self.dtype), self.seen.view(self.dtype)
        if envs is None:  # (flatnonzero is many times faster than a 2-d nonzero)
            world, at = np.divmod(np.flatnonzero(new != old), new.shape[1])
        else:
            world, at = np.divmod(np.flatnonzero(new[envs] != old[envs]), new.shape[1])
            world = envs[world]
        if not world.size:
            return
        old[world, at] = new[world, at]
        w, first = self.width, at * self.word
        stale = np.zeros(len(maps) * w, bool)  # the rows of each changed word's first and last tile
        stale[world * w + first // w] = True
        stale[world * w + (first + self.word - 1) // w] = True
        world, row = np.divmod(np.flatnonzero(stale), w)
        inside = (row >= self.pad) & (row < w - self.pad)  # the border is not in the state
        world, row = world[inside], row[inside]
        tiles = maps.reshape(len(maps), w, w)[world, row, self.pad:w - self.pad]
        for i, r, line in zip(world.tolist(), (row - self.pad).tolist(), self.encoder.text(tiles), strict=True):
            self.rows[i][r] = line


class CraftVectorEnv(VectorEnv):
    """`num_envs` Craft worlds of one task in primitive mode, stepped together.

    Actions: an int array of action ids (`rules.actions`: move north/south/east/west, do, noop,
    place ..., make ...). Observations: `view` (num_envs, view, view) material ids (the player
    stands at the centre), `inventory` (num_envs, items), `vitals` (health, food, drink) and
    `facing` (0-3: north, south, east, west). `info` holds `valid` and `action_mask` (the actions
    possible next) on every step, and `success`/`score` for the envs whose episode just ended.
    Autoreset follows Gymnasium's `autoreset_mode` (next_step by default, or same_step).
    `reward` is CraftEnv's: "success" (default) or "progress" (partial credit, paid at the end).
    `worldgen_workers` > 0 makes each env's next training world ahead in that many background
    processes (envs/craft/worldpool.py): the same worlds, sooner, where a core is free; `close()`
    stops them.
    """

    def __init__(self, num_envs: int, task: str = "wood_pickaxe", size: int = 64, view: int = 9,
                 max_turns: int | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, reward: str = "success",
                 worldgen_workers: int = 0) -> None:
        rules = self.rules = load_rules()
        if task not in rules.tasks:
            raise ValueError(f"unknown Craft task {task!r}: use one of {', '.join(rules.tasks)}")
        if view < 3 or view % 2 == 0:
            raise ValueError(f"view must be an odd number of tiles, at least 3; got {view}")
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}: use 'success' or 'progress'")
        self.reward_mode = reward
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError("autoreset_mode must be next_step or same_step")
        self.metadata = {"autoreset_mode": mode}
        self.num_envs, self.task, self.size, self.view = int(num_envs), rules.tasks[task], size, view
        self.max_turns = int(max_turns or self.task.max_turns[ACTION_MODES[0]])
        self.splits = splits_for(task)
        self.pad = view // 2 + 1  # as CraftEnv, so flat tile indices agree
        self.width = size + 2 * self.pad
        n, nc, ni = self.num_envs, rules.raw["world"]["max_cows"], len(rules.items)
        self.single_observation_space = spaces.Dict(symbolic_spaces(rules, view))
        self.single_action_space = spaces.Discrete(len(rules.actions))
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        self.maps = np.zeros((n, self.width * self.width), np.uint8)
        self.pos = np.zeros(n, np.int64)
        self.facing = np.zeros(n, np.int64)
        self.inv = np.zeros((n, ni), np.int64)
        self.vit = np.zeros((n, 3), np.int64)
        self.cow_pos = np.full((n, nc), -1, np.int64)
        self.cow_hp = np.zeros((n, nc), np.int64)
        self.ach = np.zeros((n, len(rules.achievements)), bool)
        self.tick = np.zeros(n, np.int64)
        self.key = np.zeros(n, np.uint64)
        self.dead = np.zeros(n, bool)
        self.turn = np.zeros(n, np.int64)
        self.limit = np.full(n, self.max_turns, np.int64)  # each episode's turn budget (turns= modifiers)
        self.mask = np.zeros((n, len(rules.actions)), bool)
        self.task_ids = [""] * n
        self._needs_reset = np.zeros(n, bool)
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(n)]
        if worldgen_workers < 0:
            raise ValueError(f"worldgen_workers must be 0 or more, got {worldgen_workers}")
        self._pool = WorldPool(task, size, worldgen_workers) if worldgen_workers else None
        self._worlds: dict[tuple[str, int], Layout] = {}  # the last RECENT_WORLDS made, oldest first
        self._compile()

    def _compile(self) -> None:
        r, w, t = self.rules, self.width, self.rules.tables
        self.t = t
        self.offsets = np.array([-w, w, 1, -1])  # north, south, east, west
        self.rows = np.arange(self.num_envs)
        self.base = self.rows * self.width * self.width  # flat index of each world's first tile
        self.grass, self.cow, self.table, self.furnace = (r.mat(m) for m in ("grass", "cow", "table", "furnace"))
        near = r.raw["world"]["near"]
        self.near_offsets = np.array([dy * w + dx for dy in range(-near, near + 1) for dx in range(-near, near + 1)])
        half = self.view // 2
        self.view_offsets = np.array([dy * w + dx for dy in range(-half, half + 1) for dx in range(-half, half + 1)])
        self.crafts = np.arange(NOOP + 1, len(r.actions))  # place and make actions
        self.vitals = r.raw["vitals"]
        self.inv_max = r.raw["world"]["inventory_max"]
        self.cow_rule = r.raw["cow"]
        self.slots = np.arange(r.raw["world"]["max_cows"], dtype=np.uint64)
        goal = self.task.adjacent
        self.goal_ach = None if goal else r.achievements.index(self.task.goal)
        self.goal_mat = r.mat(goal) if goal else None
        self.chain = np.array([r.achievements.index(a) for a in r.prerequisites(self.task.goal)]
                              if not goal else [], dtype=np.int64)

    # ---- Gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every env. `seed`: s (env i gets s + i) or one seed per env. `options`:
        `{"task_ids": [...]}` with one task id per env (evolved ids with `+start=`, `+spawn=`, `+turns=`
        modifiers too; see envs/craft/tasks.py), or a CraftEnv-style `{"split": ..., "index": i}`
        (env j then gets index i + j). A bad id raises ValueError before any env is reset."""
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        options = dict(options or {})
        task_ids = options.pop("task_ids", None)
        if task_ids is not None and len(task_ids) != self.num_envs:
            raise ValueError(f"got {len(task_ids)} task_ids for {self.num_envs} envs")
        requested = []
        for i in range(self.num_envs):
            if task_ids is not None:
                requested.append(task_ids[i])
            elif "index" in options:
                requested.append(select_task(self.splits, {**options, "index": options["index"] + i}, self._rngs[i]))
            else:
                requested.append(select_task(self.splits, options, self._rngs[i]))
        specs = [None if r is None else self._spec(r) for r in requested]  # every id is checked first
        self._reset_envs(range(self.num_envs), specs)
        self._needs_reset[:] = False
        self._update_mask()
        return self._observe(), {"valid": np.ones(self.num_envs, bool), "action_mask": self.mask.copy()}

    def step(self, actions):
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        fresh = self._needs_reset.copy()
        if fresh.any():
            self._reset_envs(np.flatnonzero(fresh).tolist())
        active = ~fresh
        in_range = (a >= 0) & (a < len(self.rules.actions))
        valid = active & in_range & self.mask[self.rows, np.where(in_range, a, 0)]
        self._apply(valid, a)
        self.turn[active] += 1
        success = active & ~self.dead & self._goal_reached()
        terminated = active & (self.dead | success)
        truncated = active & ~terminated & (self.turn >= self.limit)
        done = terminated | truncated
        reward = success.astype(np.float64)
        if self.reward_mode == "progress" and self.chain.size:
            reward = np.where(done & ~self.dead, self.ach[:, self.chain].mean(axis=1), 0.0)
        info: dict[str, Any] = {"valid": valid}
        if done.any():
            # progress as CraftEnv's score_parts has it: the share of the goal's chain done, dead or alive
            progress = self.ach[:, self.chain].mean(axis=1) if self.chain.size else success.astype(np.float64)
            info.update(success=success, _success=done, score=success.astype(np.float64), _score=done,
                        progress=progress, _progress=done)
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and done.any():
            info["final_obs"] = self._observe()
            self._reset_envs(np.flatnonzero(done).tolist())
        else:
            self._needs_reset = done
        self._update_mask()
        info["action_mask"] = self.mask.copy()
        return self._observe(), reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def state_dict(self, i: int) -> dict[str, Any]:
        """World i's true state in the format of `CraftEnv.state_dict()`."""
        return self.state_dicts([i])[0]

    def state_dicts(self, envs: Sequence[int] | None = None) -> States:
        """The states of worlds `envs` (default: all) as they are now, read in one batched pass:
        a sequence whose `[j]` is `state_dict(envs[j])`, a new dict on every read. Each world's map
        rows stay encoded between calls and only the rows whose tiles changed are encoded again, so
        reading every world every step (code rewards) stays cheap."""
        text = self.__dict__.get("_map_text")
        if text is None:
            text = self._map_text = MapText(StateEncoder(self.rules, self.task), self.num_envs, self.width, self.pad)
        idx = self.rows if envs is None else np.asarray(envs, dtype=np.int64).reshape(-1)
        text.update(self.maps, None if envs is None else idx)
        corner = self.pad * (self.width + 1)  # flat index of map tile (0, 0)
        pos = np.stack(np.divmod(self.pos[idx] - corner, self.width), axis=1)
        cow_pos = self.cow_pos[idx]
        cows = np.stack(np.divmod(cow_pos - corner, self.width), axis=2)
        ids = idx.tolist()
        return text.encoder.batch([text.rows[i] for i in ids], pos, self.facing[idx], self.inv[idx], self.vit[idx],
                                  cows, self.cow_hp[idx], cow_pos >= 0, self.ach[idx], self.tick[idx], self.dead[idx],
                                  [self.task_ids[i] for i in ids], self.turn[idx])

    # ---- the rules on arrays --------------------------------------------------------------
    def _spec(self, task_id: str) -> TaskSpec:
        """A task id parsed, or a ValueError: bad syntax, or a task this env does not play."""
        spec = parse_task_id(self.rules, task_id)
        if spec.task is not self.task:
            raise ValueError(f"task id {task_id!r} is a {spec.task.name} task, but this CraftVectorEnv plays "
                             f"{self.task.name}: make a CraftVectorEnv(task={spec.task.name!r}) for it")
        return spec

    def _reset_envs(self, envs: Sequence[int], specs: Sequence[TaskSpec | None] | None = None) -> None:
        """Reset `envs` in order, each to its spec (None: a training world). With a pool, then start
        their next training worlds, last env first: the next resets take envs from the first on, so
        the workers and this process meet in the middle instead of queueing for the same worlds."""
        for k, i in enumerate(envs):
            self._reset_env(i, None if specs is None else specs[k])
        if self._pool is not None:
            for i in reversed(envs):
                self._pool.submit(i, next_train_seed(self._rngs[i]))

    def _reset_env(self, i: int, task_id: str | TaskSpec | None) -> None:
        def made(task: Task, seed: int) -> Layout:
            key = (task.name, seed)
            layout = self._worlds.pop(key, None)
            if layout is not None and self._pool is not None:
                self._pool.discard(i)
            if layout is None and self._pool is not None and task is self.task:
                layout = self._pool.take(i, seed)
            if layout is None:
                layout = generate(self.rules, task, self.size, seed)
            self._worlds[key] = layout  # the newest last; layouts are read, never written
            if len(self._worlds) > RECENT_WORLDS:
                del self._worlds[next(iter(self._worlds))]
            return layout

        episode = new_episode(self.rules, task_id, self.task, self._rngs[i], self.size, made)
        # as World starts, without compiling its tables
        start = Start(self.rules, episode.layout, self.pad, episode.inventory, episode.achieved)
        self.maps[i] = start.grid.reshape(-1)
        self.pos[i], self.facing[i] = start.pos, start.facing
        self.inv[i] = start.inventory
        self.vit[i] = start.vitals
        self.cow_pos[i] = start.cows
        self.cow_hp[i] = start.cow_health
        self.ach[i] = start.achieved
        self.limit[i] = episode.max_turns or self.max_turns
        self.tick[i], self.key[i], self.dead[i], self.turn[i] = 0, episode.key & MASK64, False, 0
        self.task_ids[i] = episode.task_id

    def _apply(self, ok: np.ndarray, a: np.ndarray) -> None:
        t, rows = self.t, self.rows
        move = ok & (a < MOVES)
        self.facing[move] = a[move]
        target = self.pos + self.offsets[self.facing]
        faced = self.maps[rows, target]
        walk = move & t["walkable"][faced]
        self.pos[walk] = target[walk]

        do = np.flatnonzero(ok & (a == DO))
        if do.size:
            is_cow = faced[do] == self.cow
            self._hit_cows(do[is_cow], target[do[is_cow]])
            env, m = do[~is_cow], faced[do[~is_cow]]
            lucky = (mix_np(self.key[env], self.tick[env], STREAM_COLLECT, np.zeros(env.size, np.uint64))
                     >> np.uint64(32)).astype(np.int64) < t["chance"][m]
            env, m = env[lucky], m[lucky]
            self.inv[env] = np.minimum(self.inv[env] + t["gives"][m], self.inv_max)
            self.vit[env, DRINK] = np.minimum(self.vit[env, DRINK] + t["drink"][m], self.vitals["max"])
            self.maps[env, target[env]] = t["leaves"][m]
            self.ach[env, t["collect_ach"][m]] = True

        craft = np.flatnonzero(ok & (a > NOOP))
        if craft.size:
            act = a[craft]
            self.inv[craft] -= t["cost"][act]
            placing = t["places"][act] >= 0
            env = craft[placing]
            self.maps[env, target[env]] = t["places"][act[placing]]
            env, tool = craft[~placing], t["makes"][act[~placing]]
            self.inv[env, tool] = np.minimum(self.inv[env, tool] + 1, self.inv_max)
            self.ach[craft, t["action_ach"][act]] = True
        self._tick(np.flatnonzero(ok))

    def _hit_cows(self, env: np.ndarray, target: np.ndarray) -> None:
        if not env.size:
            return
        slot = np.argmax(self.cow_pos[env] == target[:, None], axis=1)
        damage = np.full(env.size, self.cow_rule["damage"]["none"])
        for sword, hit in zip(self.t["swords"], self.t["sword_damage"], strict=True):
            damage = np.where(self.inv[env, sword] > 0, hit, damage)
        self.cow_hp[env, slot] -= damage
        eaten = self.cow_hp[env, slot] <= 0
        env, slot, target = env[eaten], slot[eaten], target[eaten]
        self.cow_pos[env, slot], self.cow_hp[env, slot] = -1, 0
        self.maps[env, target] = self.grass
        self.vit[env, FOOD] = np.minimum(self.vit[env, FOOD] + self.cow_rule["food"], self.vitals["max"])
        self.ach[env, self.rules.achievements.index("eat_cow")] = True

    def _tick(self, env: np.ndarray) -> None:
        if not env.size:
            return
        self.tick[env] += 1
        tick, v = self.tick[env], self.vitals
        # Cows step at once onto tiles that were grass before anyone moved; the lower slot wins
        # a tie (np.unique returns first occurrences, and candidates are in slot order).
        cows = self.cow_pos[env]
        h = mix_np(self.key[env][:, None], tick[:, None], STREAM_COW, self.slots[None, :])
        dest = cows + self.offsets[((h >> np.uint64(1)) & np.uint64(3)).astype(np.int64)]
        wants = (cows >= 0) & ((h & np.uint64(1)) == 1)
        free = wants & (self.maps[env[:, None], np.where(wants, dest, 0)] == self.grass)
        free &= dest != self.pos[env][:, None]
        row, slot = np.nonzero(free)
        if row.size:
            _, first = np.unique(env[row] * self.maps.shape[1] + dest[row, slot], return_index=True)
            row, slot = row[first], slot[first]
            world, src, dst = env[row], cows[row, slot], dest[row, slot]
            self.maps[world, src] = self.grass
            self.maps[world, dst] = self.cow
            self.cow_pos[world, slot] = dst

        vit = self.vit[env]
        vit[tick % v["food_decay_every"] == 0, FOOD] -= 1
        vit[tick % v["drink_decay_every"] == 0, DRINK] -= 1
        np.maximum(vit, 0, out=vit)
        starving = (vit[:, FOOD] == 0) | (vit[:, DRINK] == 0)
        vit[starving & (tick % v["damage_every"] == 0), HEALTH] -= 1
        vit[~starving & (vit[:, HEALTH] < v["max"]) & (tick % v["regen_every"] == 0), HEALTH] += 1
        self.vit[env] = vit
        self.dead[env] = (vit[:, HEALTH] <= 0) | self.t["deadly"][self.maps[env, self.pos[env]]]

    def _goal_reached(self) -> np.ndarray:
        if self.goal_ach is not None:
            return self.ach[:, self.goal_ach].copy()
        return (self._gather(self.offsets) == self.goal_mat).any(axis=1)

    def _update_mask(self) -> None:
        t, rows, mask = self.t, self.rows, self.mask
        faced = self.maps[rows, self.pos + self.offsets[self.facing]]
        tool = t["requires"][faced]
        has_tool = (tool < 0) | (self.inv[rows, np.maximum(tool, 0)] > 0)
        mask[:, :MOVES] = True
        mask[:, NOOP] = True
        mask[:, DO] = (t["collectable"][faced] & has_tool) | (faced == self.cow)
        around = self._gather(self.near_offsets)
        stations = np.stack([(around == self.table).any(1), (around == self.furnace).any(1)], axis=1)
        crafts = self.crafts
        afford = (self.inv[:, None, :] >= t["cost"][crafts][None]).all(axis=2)
        near_ok = ~(t["near"][crafts][None] & ~stations[:, None, :]).any(axis=2)
        onto_ok = (t["places"][crafts] < 0)[None, :] | t["onto"][crafts][:, faced].T
        mask[:, crafts] = afford & near_ok & onto_ok

    def _gather(self, offsets: np.ndarray) -> np.ndarray:
        """The tiles at `offsets` from each player, one row per world."""
        return np.take(self.maps.reshape(-1), (self.base + self.pos)[:, None] + offsets[None, :])

    def _observe(self) -> dict[str, np.ndarray]:
        view = self._gather(self.view_offsets)
        return {
            "view": view.reshape(self.num_envs, self.view, self.view),
            "inventory": self.inv.astype(np.uint8),
            "vitals": self.vit.astype(np.uint8),
            "facing": self.facing.copy(),
        }
