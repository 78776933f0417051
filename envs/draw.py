"""Seeded draws for the generators (WebShop's catalog, LongDocVQA's documents) that never drift.

Every choice goes through `random.Random(seed).random()`, the one part of Python's random module
guaranteed to give the same numbers on every Python version, so generated tasks stay frozen; the
order of draws is part of the output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


class Draw:
    """A stream of choices from `random.Random(key).random()` only. Several integer keys (e.g. a
    seed, a stream number and an index) combine into one, so related streams never collide."""

    def __init__(self, *key: int) -> None:
        self.rng = random.Random(sum(k << (40 * i) for i, k in enumerate(key)))

    def random(self) -> float:
        return self.rng.random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.rng.random()

    def index(self, n: int) -> int:
        return min(int(self.rng.random() * n), n - 1)

    def between(self, low: int, high: int) -> int:
        return low + self.index(high - low + 1)

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.index(len(seq))]

    def sample(self, seq: Sequence[Any], k: int) -> list[Any]:
        """k distinct items of `seq`, in `seq`'s order."""
        pool = list(range(len(seq)))
        chosen = sorted(pool.pop(self.index(len(pool))) for _ in range(min(k, len(seq))))
        return [seq[i] for i in chosen]

    def shuffled(self, seq: Sequence[Any]) -> list[Any]:
        pool, out = list(seq), []
        while pool:
            out.append(pool.pop(self.index(len(pool))))
        return out
