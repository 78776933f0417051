"""Shortest paths on a Craft map, shared by the skill planner and the oracle.

Maps are flat byte arrays with an `edge` border (see world.py), so a tile is an integer and its
neighbours are four offsets. Entering a tile costs `cost[material]`: 1 to walk, 2 to mine it first
(`do` then move), None where the path may never go (lava among them, always).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

from turngym.envs.craft.rules import Rules

Costs = Sequence[int | None]


def step_costs(rules: Rules, inventory: Sequence[int], dig: bool) -> list[int | None]:
    """Per material: 1 if walkable and safe, 2 if `dig` and the inventory can mine it, else None."""
    t = rules.tables
    costs: list[int | None] = []
    for m in range(len(rules.materials)):
        if t["walkable"][m] and not t["deadly"][m]:
            costs.append(1)
        elif (dig and t["collectable"][m] and t["walkable"][t["leaves"][m]]
              and (t["requires"][m] < 0 or inventory[t["requires"][m]] > 0)):
            costs.append(2)
        else:
            costs.append(None)
    return costs


def search(cells: bytes | bytearray, width: int, start: int | Iterable[int], cost: Costs,
           goal: Callable[[int], bool] | None = None,
           max_cost: int | None = None) -> tuple[int | None, dict[int, int], dict[int, int]]:
    """Dijkstra from `start` (one tile or several); stops at the first tile where `goal` holds.

    Returns (that tile or None, cost to each settled tile, parent of each reached tile). Ties
    break on the tile index, so the same map always gives the same path.
    """
    offsets = (-width, width, 1, -1)
    starts = [start] if isinstance(start, int) else sorted(start)
    dist, parent = dict.fromkeys(starts, 0), {}
    heap = [(0, s) for s in starts]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        if goal is not None and goal(u):
            return u, dist, parent
        for off in offsets:
            v = u + off
            c = cost[cells[v]]
            if c is None:
                continue
            nd = d + c
            if (max_cost is None or nd <= max_cost) and nd < dist.get(v, 1 << 30):
                dist[v], parent[v] = nd, u
                heapq.heappush(heap, (nd, v))
    return None, dist, parent


def explore_target(cells: bytes | bytearray, width: int, start: int, cost: Costs, way: int,
                   reach: int) -> list[int]:
    """The walk of `explore <way>`: to the tile within `reach` steps that lies farthest that way
    (then nearest, then lowest index). Empty if no tile lies even one step that way."""
    _, dist, parent = search(cells, width, start, cost, max_cost=reach)
    dy, dx = ((-1, 0), (1, 0), (0, 1), (0, -1))[way]
    y0, x0 = divmod(start, width)

    def gain(tile: int) -> tuple[int, int, int]:
        y, x = divmod(tile, width)
        return (y - y0) * dy + (x - x0) * dx, -dist[tile], -tile

    best = max(dist, key=gain)
    return trace(parent, best) if gain(best)[0] >= 1 else []


def trace(parent: dict[int, int], tile: int) -> list[int]:
    """The tiles from the start (excluded) to `tile` (included)."""
    path = []
    while tile in parent:
        path.append(tile)
        tile = parent[tile]
    return path[::-1]


def direction(width: int, a: int, b: int) -> int:
    """The direction id (north, south, east, west) from tile `a` to its neighbour `b`."""
    return (-width, width, 1, -1).index(b - a)
