"""Procedural Craft worlds: grassland, forests, lakes with beaches, stone mountains with tunnels,
caves, ores, diamonds deep inside near lava pools, and wandering cows.

Terrain comes from smooth value noise; thresholds are quantiles, so every world has the same
share of mountain, water and forest and only their shapes vary. After generation the world is
checked against the task: every material on the task's recipe path, plus water and cows for
survival, must exist and be reachable from the spawn point (walking for trees, water and stone;
walking and mining for ores). A world that fails is regenerated from the next sub-seed, so the
result is still a pure function of (task, size, seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from turngym.envs.craft.rules import Rules, Task

MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class Layout:
    """A generated world: tile ids (size x size), the spawn tile and the cow tiles."""

    grid: np.ndarray
    spawn: tuple[int, int]
    cows: tuple[tuple[int, int], ...]


class WorldGenerationError(RuntimeError):
    pass


def _value_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth noise in [0, 1]: a random lattice every `scale` tiles, smoothstep-interpolated.

    Only elementwise +, -, *, / are used (no exp, no BLAS), so a world is bit-identical on every
    machine and the frozen test worlds stay frozen.
    """
    cells = int(np.ceil(size / scale)) + 2
    lattice = rng.random((cells, cells))
    (iy, fy), (ix, fx) = (_axis(size, scale, phase) for phase in rng.random(2) * scale)
    rows = lattice[:, ix] * (1 - fx) + lattice[:, ix + 1] * fx  # along x, then along y
    return rows[iy] * (1 - fy)[:, None] + rows[iy + 1] * fy[:, None]


def _axis(size: int, scale: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    coord = (np.arange(size) + phase) / scale
    index = coord.astype(np.int64)
    frac = coord - index
    return index, frac * frac * (3 - 2 * frac)


def _fractal(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    return 0.7 * _value_noise(rng, size, scale) + 0.3 * _value_noise(rng, size, scale / 3)


def _top(field: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """The `count` tiles of `mask` where `field` is highest."""
    values = field[mask]
    if count <= 0 or values.size == 0:
        return np.zeros_like(mask)
    count = min(count, values.size)
    threshold = np.partition(values, values.size - count)[values.size - count]
    return mask & (field >= threshold)


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Tiles 4-adjacent to `mask` (and `mask` itself)."""
    return ndimage.binary_dilation(mask)


def _component(passable: np.ndarray, spawn: tuple[int, int]) -> np.ndarray:
    labels, _ = ndimage.label(passable)
    return labels == labels[spawn]


def generate(rules: Rules, task: Task, size: int, seed: int) -> Layout:
    """The world of (`task`, `size`, `seed`): deterministic, solvable, reachable."""
    params = {**rules.raw["worldgen"], **task.world}
    needed = set(rules.materials_needed(task)) | {"water", "cow"}
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, attempt])
        layout = _attempt(rules, params, needed, size, rng)
        if layout is not None:
            return layout
    raise WorldGenerationError(f"no solvable {task.name} world of size {size} for seed {seed}: "
                               "use a larger size (at least 32)")


def _attempt(rules: Rules, p: dict, needed: set[str], size: int,
             rng: np.random.Generator) -> Layout | None:
    m = rules.mat
    area = size * size
    yy, xx = np.mgrid[0:size, 0:size]
    spawn = (size // 2, size // 2)
    # 1 at the spawn point, falling to 0 far away: keeps mountains and lakes out of the start.
    start = 1 / (1 + ((yy - spawn[0]) ** 2 + (xx - spawn[1]) ** 2) / (size / 6) ** 2)
    ring = np.maximum(abs(yy - spawn[0]), abs(xx - spawn[1]))  # square distance to spawn
    everywhere = np.ones((size, size), bool)

    mountain_noise = _fractal(rng, size, size / 3) - 1.5 * start
    mountain = _top(mountain_noise, everywhere, int(p["mountain_fraction"] * area))
    water_noise = _fractal(rng, size, size / 4) - 1.5 * start
    water = _top(water_noise, ~mountain, int(p["water_fraction"] * area))
    sand = _top(water_noise, ~mountain & ~water, int(p["beach_fraction"] * area))
    grass = ~mountain & ~water & ~sand
    forest = _top(_fractal(rng, size, size / 5), grass, int(p["forest_fraction"] * area))
    uniform = rng.random((4, size, size))
    trees = grass & ((forest & (uniform[0] < p["forest_density"])) | (uniform[0] < p["lone_tree_rate"]))

    grid = np.full((size, size), m("grass"), np.uint8)
    grid[sand] = m("sand")
    grid[water] = m("water")
    grid[trees] = m("tree")
    clear = ring <= p["spawn_clear_radius"]
    grid[clear & (trees | water)] = m("grass")
    grid[(ring <= p["clear_trees_radius"]) & (grid == m("tree"))] = m("grass")

    # Mountains: depth runs from 0 at the foot to 1 at the deepest point.
    values = mountain_noise[mountain]
    depth = np.zeros((size, size))
    depth[mountain] = (mountain_noise[mountain] - values.min()) / max(np.ptp(values), 1e-9)
    tunnel_noise = _fractal(rng, size, size / 5)
    centre = np.median(tunnel_noise[mountain]) if mountain.any() else 0.5
    tunnels = mountain & (abs(tunnel_noise - centre) < p["tunnel_width"])
    caves = _top(_fractal(rng, size, size / 8), mountain, int(p["cave_fraction"] * mountain.sum()))
    stone = mountain & ~tunnels & ~caves
    grid[mountain] = m("stone")
    grid[tunnels | caves] = m("path")
    grid[caves & (depth > p["lava_depth"])] = m("lava")
    grid[stone & (uniform[1] < p["coal_rate"])] = m("coal")
    grid[stone & (depth > p["iron_depth"]) & (uniform[2] < p["iron_rate"])] = m("iron")
    grid[stone & (depth > p["diamond_depth"]) & (uniform[3] < p["diamond_rate"])] = m("diamond")

    walkable = rules.tables["walkable"][grid] & ~rules.tables["deadly"][grid]
    reach = _component(walkable, spawn)
    if reach.sum() < 0.08 * area:
        return None
    minable = walkable | np.isin(grid, [m(x) for x in ("stone", "coal", "iron", "diamond")])
    dig = _component(minable, spawn)

    # Diamonds: at least min_diamonds reachable by digging, each ringed by lava at distance 2.
    diamonds = (grid == m("diamond")) & dig
    missing = int(p["min_diamonds"]) - int(diamonds.sum())
    if "diamond" in needed and missing > 0:
        deepest = _top(depth, dig & (grid == m("stone")) & (depth > p["diamond_depth"]), missing)
        grid[deepest] = m("diamond")
    for y, x in zip(*np.nonzero(grid == m("diamond")), strict=True):
        ring2 = [(y + dy, x + dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2]
        ring2 = [(a, b) for a, b in ring2 if 0 <= a < size and 0 <= b < size
                 and grid[a, b] in (m("stone"), m("path"))]
        for k in rng.permutation(len(ring2))[: int(p["lava_near_diamond"])]:
            grid[ring2[k]] = m("lava")

    # Recompute reachability after lava was added, then check every need.
    walkable = rules.tables["walkable"][grid] & ~rules.tables["deadly"][grid]
    reach = _component(walkable, spawn)
    near_reach = _neighbours(reach)
    minable = walkable | np.isin(grid, [m(x) for x in ("stone", "coal", "iron", "diamond")])
    dig = _component(minable, spawn)
    for material in needed - {"cow"}:
        where = grid == m(material)
        reachable = dig if material in ("coal", "iron", "diamond") else near_reach  # ores may be dug to
        if not (where & reachable).any():
            return None

    pasture = np.argwhere(reach & (grid == m("grass")) & (ring > 1))
    wanted = round(p["cow_density"] * len(pasture))
    count = min(max(wanted, int(p["min_cows"])), int(rules.raw["world"]["max_cows"]), len(pasture))
    if count < int(p["min_cows"]):
        return None
    chosen = pasture[np.sort(rng.choice(len(pasture), size=count, replace=False))]
    grid[chosen[:, 0], chosen[:, 1]] = m("cow")
    return Layout(grid, spawn, tuple((int(y), int(x)) for y, x in chosen))
