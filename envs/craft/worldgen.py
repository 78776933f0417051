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

import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from turngym.envs.craft.rules import Rules, Task

MAX_ATTEMPTS = 50
# The ten noise layers of an attempt, in the order their random numbers are drawn: five fractals
# (mountain, water, forest, tunnel, cave), each a coarse and a fine layer (`_fractal`), with the
# (4, size, size) uniform draw between forest and tunnel. Scales are map sides per lattice cell.
FRACTAL_SCALES = (3, 4, 5, 5, 8)
UNIFORM_AFTER = 3  # fractals drawn before the uniform tiles
# The lava ring around a diamond: tiles at square distance 2, in row-major order.
RING2 = tuple((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2)
CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


@dataclass(frozen=True)
class Layout:
    """A generated world: tile ids (size x size), the spawn tile and the cow tiles."""

    grid: np.ndarray
    spawn: tuple[int, int]
    cows: tuple[tuple[int, int], ...]


class WorldGenerationError(RuntimeError):
    pass


@dataclass(frozen=True)
class _Frame:
    """Everything about a map of one size that no seed changes, computed once per size."""

    size: int
    spawn: tuple[int, int]
    pull: np.ndarray  # 1.5 x (1 at the spawn point, falling to 0 far away): keeps mountains and lakes out
    ring: np.ndarray  # square distance to the spawn point
    scales: np.ndarray  # the ten noise layers' scales
    cells: tuple[int, ...]  # their lattice sides
    coords: np.ndarray  # 0 .. size-1 as floats


@cache
def _frame(size: int) -> _Frame:
    yy, xx = np.mgrid[0:size, 0:size]
    spawn = (size // 2, size // 2)
    start = 1 / (1 + ((yy - spawn[0]) ** 2 + (xx - spawn[1]) ** 2) / (size / 6) ** 2)
    ring = np.maximum(abs(yy - spawn[0]), abs(xx - spawn[1]))
    scales = tuple(s for f in FRACTAL_SCALES for s in (size / f, size / f / 3))
    cells = tuple(int(np.ceil(size / s)) + 2 for s in scales)
    return _Frame(size, spawn, 1.5 * start, ring, np.array(scales), cells, np.arange(size).astype(np.float64))


class _Scratch(threading.local):
    """Work arrays for `_noise`, reused from call to call (one set per thread and map size):
    temporaries this big would otherwise get fresh pages from the system on every call, which
    costs more than the arithmetic on them."""

    def get(self, frame: _Frame) -> tuple[np.ndarray, ...]:
        arrays = self.__dict__.get(frame.size)
        if arrays is None:
            layers, big, size = len(frame.scales), max(frame.cells), frame.size
            arrays = self.__dict__[frame.size] = (
                np.empty((layers, size, big)), np.empty((layers, size, big)), np.empty((layers * big, size)),
                np.empty((layers, size, size)), np.empty((layers, size, size)), np.empty((4, size, size)))
        return arrays


_scratch = _Scratch()


def _noise(frame: _Frame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The five fractal fields (5, size, size) and the uniform tiles (4, size, size) of an attempt.

    Each noise layer is smooth value noise in [0, 1]: a random lattice every `scale` tiles,
    smoothstep-interpolated; a fractal is 0.7 x a coarse layer + 0.3 x a layer three times finer.
    The ten layers share each NumPy call (instead of ten calls each), with exactly the elementwise
    operations of one layer at a time, so every value is bit-identical to it. Only elementwise
    +, -, *, / are used (no exp, no BLAS), so a world is bit-identical on every machine and the
    frozen test worlds stay frozen. The results are views of this thread's scratch arrays: valid
    until the next call.
    """
    size, layers, big = frame.size, len(frame.scales), max(frame.cells)
    along_x, upper_x, by_row, field, upper, uniform = _scratch.get(frame)
    lattice = np.zeros((layers, big, big))
    phases = np.empty((layers, 2))
    for k, cells in enumerate(frame.cells):
        if k == 2 * UNIFORM_AFTER:
            rng.random(out=uniform)
        lattice[k, :cells, :cells] = rng.random((cells, cells))
        phases[k] = rng.random(2)
    coord = (frame.coords + (phases * frame.scales[:, None])[:, :, None]) / frame.scales[:, None, None]
    index = coord.astype(np.int64)  # (layer, y or x, tile)
    frac = coord - index
    smooth = frac * frac * (3 - 2 * frac)
    # Gathers copy whole rows of 2-d tables (fast), never single elements.
    first = (np.arange(layers) * big)[:, None]
    columns = lattice.transpose(0, 2, 1).reshape(layers * big, big)  # row k*big + x: lattice column x
    ix, fx = index[:, 1] + first, smooth[:, 1][:, :, None]
    np.take(columns, ix, axis=0, out=along_x, mode="clip")  # along x: (layer, x, lattice row)
    along_x *= 1 - fx
    np.take(columns, ix + 1, axis=0, out=upper_x, mode="clip")
    upper_x *= fx
    along_x += upper_x
    rows = by_row.reshape(layers, big, size)
    rows[...] = along_x.transpose(0, 2, 1)
    rows = by_row  # row k*big + y: lattice row y interpolated along x
    iy, fy = index[:, 0] + first, smooth[:, 0][:, :, None]
    np.take(rows, iy, axis=0, out=field, mode="clip")  # along y: (layer, y, x)
    field *= 1 - fy
    np.take(rows, iy + 1, axis=0, out=upper, mode="clip")
    upper *= fy
    field += upper
    coarse, fine = field[0::2], field[1::2]
    coarse *= 0.7
    fine *= 0.3
    coarse += fine
    return coarse, uniform


def _top(field: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """The `count` tiles of `mask` where `field` is highest."""
    values = field[mask]
    if count <= 0 or values.size == 0:
        return np.zeros_like(mask)
    count = min(count, values.size)
    threshold = np.partition(values, values.size - count)[values.size - count]
    return mask & (field >= threshold)


def _median(values: np.ndarray) -> float:
    """np.median of a 1-d array (the same partition and mean of the middle pair), minus its overhead."""
    half = values.size // 2
    if values.size % 2:
        return np.partition(values, half)[half]
    middle = np.partition(values, (half - 1, half))
    return (middle[half - 1] + middle[half]) / 2


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Tiles 4-adjacent to `mask` (and `mask` itself): a binary dilation by the cross, by slices."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _component(passable: np.ndarray, spawn: tuple[int, int]) -> np.ndarray:
    labels, _ = ndimage.label(passable, CROSS)
    return labels == labels[spawn]


def reachable(rules: Rules, grid: np.ndarray, spawn: tuple[int, int]) -> np.ndarray:
    """The tiles a player at `spawn` can walk to (never through lava)."""
    return _component(_tables(rules)[0][grid], spawn)


def _tables(rules: Rules) -> tuple[np.ndarray, np.ndarray]:
    """Per material: safe to walk on; safe or minable (ores may be dug to)."""
    safe = rules.tables["walkable"] & ~rules.tables["deadly"]
    minable = safe.copy()
    minable[[rules.mat(x) for x in ("stone", "coal", "iron", "diamond")]] = True
    return safe, minable


def generate(rules: Rules, task: Task, size: int, seed: int) -> Layout:
    """The world of (`task`, `size`, `seed`): deterministic, solvable, reachable."""
    params = {**rules.raw["worldgen"], **task.world}
    needed = set(rules.materials_needed(task)) | {"water", "cow"}
    frame, tables = _frame(size), _tables(rules)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, attempt])
        layout = _attempt(rules, params, needed, frame, tables, rng)
        if layout is not None:
            return layout
    raise WorldGenerationError(f"no solvable {task.name} world of size {size} for seed {seed}: "
                               "use a larger size (at least 32)")


def _attempt(rules: Rules, p: dict, needed: set[str], frame: _Frame, tables: tuple[np.ndarray, np.ndarray],
             rng: np.random.Generator) -> Layout | None:
    m = rules.mat
    size, spawn, ring = frame.size, frame.spawn, frame.ring
    area = size * size
    (mountain_fractal, water_fractal, forest_fractal, tunnel_noise, cave_fractal), uniform = _noise(frame, rng)

    mountain_noise = mountain_fractal - frame.pull
    mountain = _top(mountain_noise, np.ones((size, size), bool), int(p["mountain_fraction"] * area))
    water_noise = water_fractal - frame.pull
    water = _top(water_noise, ~mountain, int(p["water_fraction"] * area))
    sand = _top(water_noise, ~mountain & ~water, int(p["beach_fraction"] * area))
    grass = ~mountain & ~water & ~sand
    forest = _top(forest_fractal, grass, int(p["forest_fraction"] * area))
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
    depth[mountain] = (values - values.min()) / max(np.ptp(values), 1e-9)
    centre = _median(tunnel_noise[mountain]) if mountain.any() else 0.5
    tunnels = mountain & (abs(tunnel_noise - centre) < p["tunnel_width"])
    caves = _top(cave_fractal, mountain, int(p["cave_fraction"] * mountain.sum()))
    stone = mountain & ~tunnels & ~caves
    grid[mountain] = m("stone")
    grid[tunnels | caves] = m("path")
    grid[caves & (depth > p["lava_depth"])] = m("lava")
    grid[stone & (uniform[1] < p["coal_rate"])] = m("coal")
    grid[stone & (depth > p["iron_depth"]) & (uniform[2] < p["iron_rate"])] = m("iron")
    grid[stone & (depth > p["diamond_depth"]) & (uniform[3] < p["diamond_rate"])] = m("diamond")

    safe, minable = tables
    reach = _component(safe[grid], spawn)
    if reach.sum() < 0.08 * area:
        return None

    # Diamonds: at least min_diamonds reachable by digging, each ringed by lava at distance 2.
    if "diamond" in needed:  # (only a task that needs diamonds adds any; digging is checked for it alone)
        missing = int(p["min_diamonds"]) - int(((grid == m("diamond")) & _component(minable[grid], spawn)).sum())
        if missing > 0:
            dig = _component(minable[grid], spawn)
            deepest = _top(depth, dig & (grid == m("stone")) & (depth > p["diamond_depth"]), missing)
            grid[deepest] = m("diamond")
    _lava_rings(grid, m, int(p["lava_near_diamond"]), rng)

    # Recompute reachability after lava was added, then check every need.
    reach = _component(safe[grid], spawn)
    near_reach = _neighbours(reach)
    ores = needed & {"coal", "iron", "diamond"}  # ores may be dug to
    dig = _component(minable[grid], spawn) if ores else None
    for material in needed - {"cow"}:
        if not ((grid == m(material)) & (dig if material in ores else near_reach)).any():
            return None

    pasture = np.argwhere(reach & (grid == m("grass")) & (ring > 1))
    wanted = round(p["cow_density"] * len(pasture))
    count = min(max(wanted, int(p["min_cows"])), int(rules.raw["world"]["max_cows"]), len(pasture))
    if count < int(p["min_cows"]):
        return None
    chosen = pasture[np.sort(rng.choice(len(pasture), size=count, replace=False))]
    grid[chosen[:, 0], chosen[:, 1]] = m("cow")
    return Layout(grid, spawn, tuple((int(y), int(x)) for y, x in chosen))


def _lava_rings(grid: np.ndarray, m, count: int, rng: np.random.Generator) -> None:
    """Put `count` lava tiles on the stone or path of each diamond's ring at distance 2, diamond by
    diamond in row-major order (an earlier diamond's lava is no longer stone for a later one)."""
    size = grid.shape[0]
    allowed = np.zeros(256, bool)
    allowed[[m("stone"), m("path")]] = True
    diamonds = np.argwhere(grid == m("diamond"))
    tiles = diamonds[:, None, :] + np.array(RING2)  # (diamond, ring tile, y and x)
    gap = np.abs(diamonds[:, None, :] - diamonds[None, :, :]).max(axis=2)
    if (gap <= 4).sum() > len(diamonds):  # two rings overlap: one diamond at a time
        for ring in tiles:
            ring = ring[((ring >= 0) & (ring < size)).all(axis=1)]
            ring = ring[allowed[grid[ring[:, 0], ring[:, 1]]]]
            lava = ring[rng.permutation(len(ring))[:count]]
            grid[lava[:, 0], lava[:, 1]] = m("lava")
        return
    # Rings apart: every ring's candidates can be read before any lava is placed.
    inside = ((tiles >= 0) & (tiles < size)).all(axis=2)
    clipped = np.clip(tiles, 0, size - 1)
    ok = inside & allowed[grid[clipped[..., 0], clipped[..., 1]]]
    for ring, keep in zip(tiles, ok, strict=True):
        ring = ring[keep]
        lava = ring[rng.permutation(len(ring))[:count]]
        grid[lava[:, 0], lava[:, 1]] = m("lava")
