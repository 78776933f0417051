"""The one random stream a document is drawn from.

Every choice goes through `random.Random(seed).random()`, the part of Python's random module that is
stable across versions, so a seed gives the same document on any Python; the order of the draws is
part of the output, which is why all of them share this one stream.
"""

from __future__ import annotations

import random
from typing import Any


class Draw:
    """Choices from `random.Random(seed).random()` only (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def random(self) -> float:
        return self.rng.random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.rng.random()

    def index(self, n: int) -> int:
        return min(int(self.rng.random() * n), n - 1)

    def between(self, low: int, high: int) -> int:
        return low + self.index(high - low + 1)

    def pick(self, seq: list[Any] | tuple[Any, ...]) -> Any:
        return seq[self.index(len(seq))]

    def shuffled(self, seq: list[Any]) -> list[Any]:
        pool, out = list(seq), []
        while pool:
            out.append(pool.pop(self.index(len(pool))))
        return out

    def sample(self, seq: list[Any], k: int) -> list[Any]:
        """k distinct items of `seq`, in `seq`'s order."""
        chosen = sorted(self.shuffled(list(range(len(seq))))[:k])
        return [seq[i] for i in chosen]
