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
    pasture: np.ndarray  # where cows may start: not next to the spawn point
    scales: np.ndarray  # the ten noise layers' scales
    cells: tuple[int, ...]  # their lattice sides
    coords: np.ndarray  # 0 .. size-1 as floats
    # An attempt draws all its noise's random numbers in one call (`_noise`); where each lies:
    draws: int  # how many there are
    row_layer: np.ndarray  # (rows,): the layer of each lattice row of all ten layers, layer by layer
    row_at: np.ndarray  # (rows, 1): where the row's first lattice point is among the draws
    row_first: np.ndarray  # (layers, 1): each layer's first row
    phases_at: np.ndarray  # (layers, 2): each layer's two phases
    uniform_at: int  # the first of the (4, size, size) uniform tiles


@cache
def _frame(size: int) -> _Frame:
    yy, xx = np.mgrid[0:size, 0:size]
    spawn = (size // 2, size // 2)
    start = 1 / (1 + ((yy - spawn[0]) ** 2 + (xx - spawn[1]) ** 2) / (size / 6) ** 2)
    ring = np.maximum(abs(yy - spawn[0]), abs(xx - spawn[1]))
    scales = tuple(s for f in FRACTAL_SCALES for s in (size / f, size / f / 3))
    cells = tuple(int(np.ceil(size / s)) + 2 for s in scales)
    # The order in which a layer-by-layer generator draws: each layer's lattice (row-major), then
    # its two phases; the uniform tiles come before the layers of fractal UNIFORM_AFTER.
    at, uniform_at, row_at, phases_at = 0, 0, [], []
    for k, side in enumerate(cells):
        if k == 2 * UNIFORM_AFTER:
            uniform_at, at = at, at + 4 * size * size
        row_at += range(at, at + side * side, side)
        phases_at.append((at + side * side, at + side * side + 1))
        at += side * side + 2
    row_layer = np.repeat(np.arange(len(cells)), cells)
    row_first = np.cumsum((0, *cells[:-1]))[:, None]
    return _Frame(size, spawn, 1.5 * start, ring, ring > 1, np.array(scales), cells, np.arange(size).astype(np.float64),
                  at, row_layer, np.array(row_at)[:, None], row_first, np.array(phases_at), uniform_at)


class _Scratch(threading.local):
    """Work arrays for `_noise`, reused from call to call (one set per thread and map size):
    temporaries this big would otherwise get fresh pages from the system on every call, which
    costs more than the arithmetic on them."""

    def get(self, frame: _Frame) -> tuple[np.ndarray, ...]:
        arrays = self.__dict__.get(frame.size)
        if arrays is None:
            layers, size = len(frame.scales), frame.size
            arrays = self.__dict__[frame.size] = (
                np.empty(frame.draws), np.empty((layers, size, size)), np.empty((layers, size, size)))
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
    size = frame.size
    draws, field, upper = _scratch.get(frame)
    # One call draws what the layers drew one after another: the same numbers, in the same order.
    rng.random(out=draws)
    uniform = draws[frame.uniform_at:frame.uniform_at + 4 * size * size].reshape(4, size, size)
    phases = draws[frame.phases_at]
    coord = (frame.coords + (phases * frame.scales[:, None])[:, :, None]) / frame.scales[:, None, None]
    index = coord.astype(np.int64)  # (layer, y or x, tile)
    frac = coord - index
    smooth = frac * frac * (3 - 2 * frac)
    # Along x: every lattice row of every layer (rows, x), read straight from the draws.
    ix, fx = frame.row_at + index[frame.row_layer, 1], smooth[frame.row_layer, 1]
    rows = np.take(draws, ix, mode="clip") * (1 - fx) + np.take(draws, ix + 1, mode="clip") * fx
    # Along y: (layer, y, x). Gathers copy whole rows (fast), never single elements. (Every index
    # is in range: mode="clip" only spares np.take the copy it makes to check them.)
    iy, fy = frame.row_first + index[:, 0], smooth[:, 0][:, :, None]
    np.take(rows, iy, axis=0, out=field, mode="clip")
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
    return mask & (field >= _threshold(values, min(count, values.size)))


def _threshold(values: np.ndarray, count: int) -> float:
    """The `count`-th highest of `values` (1 <= count <= values.size)."""
    return np.partition(values, values.size - count)[values.size - count]


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
    return _component(np.take(_tables(rules)[0], grid), spawn)


def _tables(rules: Rules) -> tuple[np.ndarray, np.ndarray]:
    """Per material: safe to walk on; safe or minable (ores may be dug to)."""
    safe = rules.tables["walkable"] & ~rules.tables["deadly"]
    minable = safe.copy()
    minable[[rules.mat(x) for x in ("stone", "coal", "iron", "diamond")]] = True
    return safe, minable


@dataclass(frozen=True)
class _Plan:
    """What generating a task's worlds needs from the rules, looked up once per task."""

    params: dict
    ids: dict[str, int]  # material ids by name
    safe: np.ndarray  # per material: safe to walk on
    minable: np.ndarray  # per material: safe or minable (ores may be dug to)
    diamonds: bool  # the task needs diamonds: make sure some can be dug to
    checks: tuple[tuple[int, bool], ...]  # each material that must be reachable: id, by digging (else walking)
    max_cows: int


_plans: dict[tuple[int, int], tuple[Rules, Task, _Plan]] = {}  # by (id(rules), id(task)); holds both


def _plan(rules: Rules, task: Task) -> _Plan:
    # (Rules and Task hold dicts, so they cannot be keys of a functools cache.)
    entry = _plans.get((id(rules), id(task)))
    if entry is None:
        needed = set(rules.materials_needed(task)) | {"water", "cow"}
        ores = needed & {"coal", "iron", "diamond"}  # ores may be dug to
        names = ("grass", "sand", "water", "tree", "stone", "path", "lava", "coal", "iron", "diamond", "cow")
        plan = _Plan({**rules.raw["worldgen"], **task.world}, {n: rules.mat(n) for n in names}, *_tables(rules),
                     "diamond" in needed, tuple((rules.mat(n), n in ores) for n in sorted(needed - {"cow"})),
                     int(rules.raw["world"]["max_cows"]))
        entry = _plans[id(rules), id(task)] = (rules, task, plan)
    return entry[2]


def generate(rules: Rules, task: Task, size: int, seed: int) -> Layout:
    """The world of (`task`, `size`, `seed`): deterministic, solvable, reachable."""
    plan, frame = _plan(rules, task), _frame(size)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, attempt])
        layout = _attempt(plan, frame, rng)
        if layout is not None:
            return layout
    raise WorldGenerationError(f"no solvable {task.name} world of size {size} for seed {seed}: "
                               "use a larger size (at least 32)")


def _attempt(plan: _Plan, frame: _Frame, rng: np.random.Generator) -> Layout | None:
    p, m = plan.params, plan.ids
    size, spawn, ring = frame.size, frame.spawn, frame.ring
    area = size * size
    (mountain_fractal, water_fractal, forest_fractal, tunnel_noise, cave_fractal), uniform = _noise(frame, rng)

    mountain_noise = mountain_fractal - frame.pull
    foot = _threshold(mountain_noise.ravel(), int(p["mountain_fraction"] * area))  # (rules.yaml: >= 1 tile)
    mountain = mountain_noise >= foot
    water_noise = water_fractal - frame.pull
    lowland = ~mountain
    water = _top(water_noise, lowland, int(p["water_fraction"] * area))
    dry = lowland & ~water
    sand = _top(water_noise, dry, int(p["beach_fraction"] * area))
    grass = dry & ~sand
    forest = _top(forest_fractal, grass, int(p["forest_fraction"] * area))
    trees = grass & ((forest & (uniform[0] < p["forest_density"])) | (uniform[0] < p["lone_tree_rate"]))

    # np.putmask(grid, mask, id) is grid[mask] = id without building an index (a few times faster).
    # No trees or water this close to the spawn point, no trees at all within clear_trees_radius.
    grid = np.full((size, size), m["grass"], np.uint8)
    away = ring > p["spawn_clear_radius"]
    np.putmask(grid, sand, m["sand"])
    np.putmask(grid, water & away, m["water"])
    np.putmask(grid, trees & away & (ring > p["clear_trees_radius"]), m["tree"])

    # Mountains: depth runs from 0 at the foot to 1 at the deepest point (and below 0 off the
    # mountains, where nothing reads it). The foot is the lowest mountain tile, the peak the highest
    # tile of all; peak - foot is np.ptp of the mountain tiles.
    depth = (mountain_noise - foot) / max(mountain_noise.max() - foot, 1e-9)
    peaks = np.count_nonzero(mountain)
    centre = _median(tunnel_noise[mountain]) if peaks else 0.5
    tunnels = mountain & (abs(tunnel_noise - centre) < p["tunnel_width"])
    caves = _top(cave_fractal, mountain, int(p["cave_fraction"] * peaks))
    stone = mountain & ~tunnels & ~caves
    np.putmask(grid, mountain, m["stone"])
    np.putmask(grid, tunnels | caves, m["path"])
    np.putmask(grid, caves & (depth > p["lava_depth"]), m["lava"])
    np.putmask(grid, stone & (uniform[1] < p["coal_rate"]), m["coal"])
    np.putmask(grid, stone & (depth > p["iron_depth"]) & (uniform[2] < p["iron_rate"]), m["iron"])
    np.putmask(grid, stone & (depth > p["diamond_depth"]) & (uniform[3] < p["diamond_rate"]), m["diamond"])

    reach = _component(np.take(plan.safe, grid), spawn)
    if np.count_nonzero(reach) < 0.08 * area:
        return None

    # Diamonds: at least min_diamonds reachable by digging, each ringed by lava at distance 2.
    dig = None
    if plan.diamonds:  # (only a task that needs diamonds adds any)
        dig = _component(np.take(plan.minable, grid), spawn)
        missing = int(p["min_diamonds"]) - np.count_nonzero((grid == m["diamond"]) & dig)
        if missing > 0:  # (diamonds replace stone: digging reaches as far as before)
            deepest = _top(depth, dig & (grid == m["stone"]) & (depth > p["diamond_depth"]), missing)
            np.putmask(grid, deepest, m["diamond"])
    lava = _lava_rings(grid, m, int(p["lava_near_diamond"]), rng)

    # Lava may cut the spawn's walking (and digging) area: label again, unless it fell outside it
    # (taking tiles outside a component leaves the component as it was).
    if reach.ravel()[lava].any():
        reach = _component(np.take(plan.safe, grid), spawn)
    if any(by_digging for _, by_digging in plan.checks) and (dig is None or dig.ravel()[lava].any()):
        dig = _component(np.take(plan.minable, grid), spawn)
    near_reach = _neighbours(reach)
    for material, by_digging in plan.checks:
        if not ((grid == material) & (dig if by_digging else near_reach)).any():
            return None

    pasture = np.flatnonzero(reach & (grid == m["grass"]) & frame.pasture)  # row-major, as np.argwhere
    wanted = round(p["cow_density"] * len(pasture))
    count = min(max(wanted, int(p["min_cows"])), plan.max_cows, len(pasture))
    if count < int(p["min_cows"]):
        return None
    chosen = pasture[np.sort(rng.choice(len(pasture), size=count, replace=False))]
    grid.ravel()[chosen] = m["cow"]
    ys, xs = np.divmod(chosen, size)
    return Layout(grid, spawn, tuple(zip(ys.tolist(), xs.tolist(), strict=True)))


def _lava_rings(grid: np.ndarray, m: dict[str, int], count: int, rng: np.random.Generator) -> list[int]:
    """Put `count` lava tiles on the stone or path of each diamond's ring at distance 2, diamond by
    diamond in row-major order (an earlier diamond's lava is no longer stone for a later one).
    Returns the flat indices of the lava placed. (A ring has 16 tiles and a world a few diamonds:
    plain Python on a bytes copy of the map beats NumPy calls on arrays this small.)"""
    size, tiles = grid.shape[0], grid.tobytes()
    allowed, placed = (m["stone"], m["path"]), []
    for diamond in np.flatnonzero(grid.ravel() == m["diamond"]).tolist():
        y, x = divmod(diamond, size)
        ring = [diamond + dy * size + dx for dy, dx in RING2 if 0 <= y + dy < size and 0 <= x + dx < size]
        ring = [tile for tile in ring if tiles[tile] in allowed and tile not in placed]
        placed += [ring[i] for i in rng.permutation(len(ring))[:count].tolist()]
    grid.ravel()[placed] = m["lava"]
    return placed
