"""Where a symbolic Craft agent last saw a table, a furnace, water: a memory the agent keeps itself.

Craft's symbolic observation is a 9x9 view, so a memoryless policy that walks away from its table
cannot find it again, and the long tasks (iron_pickaxe: table, furnace and three materials brought
together) stall there. This memory is computed from what the agent observed and the actions it
took, nothing else: a move changes the player's position exactly when the tile it faces in the
view it acted on is walkable (the rules move the player before cows move, and the view shows the
map as the action meets it), so dead reckoning from the start of the episode is exact. Each step
it records, for each landmark material, the nearest tile of it in view (ties: the first in
row-major order) in the episode's own frame; the features are, per material, whether one has been
seen and the offset (dy, dx) from the player to it, over SCALE and clipped to [-1, 1].

`LandmarkMemory` does this for a batch of episodes (a vector env's, or one); `Remember` wraps a
CraftVectorEnv (or a wrapper of one) so that its observations carry `landmarks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from turngym.envs.craft.rules import Rules
from turngym.envs.craft.world import MOVES

SCALE = 16.0  # tiles at which an offset reaches 1
STEPS = np.array([(-1, 0), (1, 0), (0, 1), (0, -1)])  # move north, south, east, west as (dy, dx)


def landmark_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """Material names from "table,furnace" or a sequence of them."""
    names = value.split(",") if isinstance(value, str) else value
    return tuple(n.strip() for n in names if n.strip())


def check_materials(rules: Rules, materials: Sequence[str]) -> None:
    unknown = [m for m in materials if m not in rules.materials]
    if unknown:
        raise ValueError(f"unknown landmark material(s) {unknown}: use Craft materials such as table, furnace, water")


class LandmarkMemory:
    """Dead-reckoned position and last-seen landmark tiles of `n` episodes (one per row)."""

    def __init__(self, rules: Rules, materials: Sequence[str], n: int, view: int) -> None:
        check_materials(rules, materials)
        self.ids = np.array([rules.mat(m) for m in materials], np.int64)
        self.walkable = np.asarray(rules.tables["walkable"], bool)
        self.view = view
        half = view // 2
        dy, dx = np.divmod(np.arange(view * view), view)
        self.offsets = np.stack([dy - half, dx - half], axis=1)  # each view tile's offset from the player
        # view tiles by distance from the player, so the first match in this order is the nearest
        self.order = np.argsort(np.abs(self.offsets).sum(1), kind="stable")
        self.ahead = (half + STEPS[:, 0]) * view + half + STEPS[:, 1]  # the faced tile of each move
        self.pos = np.zeros((n, 2), np.int64)
        self.seen = np.zeros((n, len(self.ids)), bool)
        self.at = np.zeros((n, len(self.ids), 2), np.int64)

    def reset(self, rows: np.ndarray, views: np.ndarray) -> None:
        """New episodes in `rows`, their first views `views` (len(rows), view, view)."""
        self.pos[rows] = 0
        self.seen[rows] = False
        self._look(rows, views)

    def step(self, rows: np.ndarray, before: np.ndarray, actions: np.ndarray, after: np.ndarray) -> None:
        """Rows that took `actions` facing views `before` and now see `after`."""
        actions = np.asarray(actions, np.int64)
        move = actions < MOVES
        direction = np.where(move, actions, 0)  # (any direction for the rows that did not move)
        faced = before.reshape(len(rows), self.view * self.view)[np.arange(len(rows)), self.ahead[direction]]
        moved = move & self.walkable[faced]
        self.pos[rows] += np.where(moved[:, None], STEPS[direction], 0)
        self._look(rows, after)

    def _look(self, rows: np.ndarray, views: np.ndarray) -> None:
        tiles = views.reshape(len(rows), self.view * self.view)[:, self.order]
        for k, material in enumerate(self.ids):
            hit = tiles == material
            found = hit.any(1)
            nearest = self.offsets[self.order[hit.argmax(1)]]
            where = rows[found]
            self.at[where, k] = self.pos[where] + nearest[found]
            self.seen[where, k] = True

    def features(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(rows, 3 per material): seen, dy and dx to the last-seen tile over SCALE, clipped."""
        offset = np.clip((self.at[rows] - self.pos[rows][:, None, :]) / SCALE, -1.0, 1.0)
        seen = self.seen[rows]
        out = np.concatenate([seen[:, :, None], np.where(seen[:, :, None], offset, 0.0)], axis=2)
        return out.reshape(len(seen), -1).astype(np.float32)


def landmark_space(materials: Sequence[str]) -> spaces.Box:
    return spaces.Box(-1.0, 1.0, (3 * len(materials),), np.float32)


class Remember(gym.vector.VectorWrapper):
    """A Craft vector env whose observations carry `landmarks` (LandmarkMemory's features). It
    needs next_step autoreset, where the step after an episode's end is the reset. Attribute reads
    it does not answer go to the wrapped env (state_dict, rules, splits, ...)."""

    def __init__(self, env: gym.vector.VectorEnv, materials: Sequence[str]) -> None:
        super().__init__(env)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if gym.vector.AutoresetMode(mode) != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError("Remember needs next_step autoreset: make the env with autoreset_mode='next_step'")
        view = env.single_observation_space["view"].shape[0]
        self.materials = tuple(materials)
        self.memory = LandmarkMemory(env.rules, self.materials, env.num_envs, view)
        self.rows = np.arange(env.num_envs)
        self.single_observation_space = spaces.Dict({**env.single_observation_space.spaces,
                                                     "landmarks": landmark_space(self.materials)})
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self._view: np.ndarray | None = None
        self._ended = np.zeros(env.num_envs, bool)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.memory.reset(self.rows, obs["view"])
        self._ended[:] = False
        return self._with(obs), info

    def step(self, actions: Any):
        if self._view is None:
            raise RuntimeError("Remember.step() before reset(): call reset() first")
        obs, reward, terminated, truncated, info = self.env.step(actions)
        actions = np.asarray(actions, np.int64).reshape(self.num_envs)
        played, fresh = np.flatnonzero(~self._ended), np.flatnonzero(self._ended)
        self.memory.step(played, self._view[played], actions[played], obs["view"][played])
        self.memory.reset(fresh, obs["view"][fresh])
        self._ended = np.asarray(terminated | truncated, bool).copy()
        return self._with(obs), reward, terminated, truncated, info

    def _with(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._view = np.asarray(obs["view"]).copy()
        return {**obs, "landmarks": self.memory.features()}
