"""Live text observations for Gymnasium's AsyncVectorEnv.

AsyncVectorEnv keeps observations in shared memory and reads them out once, when it is built:
arrays come back as views that later steps fill in, but a `Text` space comes back as a tuple of
strings frozen at that moment, so every later `obs["text"]` is stale (Gymnasium 1.4). turngym's
observations are text first, so importing turngym registers, through Gymnasium's own extension
point, a reader that returns a live view for `Text`: decoded from the buffer whenever it is
indexed, and turned into a plain tuple of the current strings when AsyncVectorEnv copies it
(its default) before handing it out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from gymnasium.spaces import Text
from gymnasium.vector.utils import read_from_shared_memory

_read_once = read_from_shared_memory.dispatch(Text)  # Gymnasium's decoder, applied on every read


class LiveTexts(Sequence[str]):
    """The strings in a Text shared-memory buffer, as they are now."""

    def __init__(self, space: Text, shared_memory: Any, n: int) -> None:
        self.space, self.shared_memory, self.n = space, shared_memory, n

    def now(self) -> tuple[str, ...]:
        return _read_once(self.space, self.shared_memory, n=self.n)

    def __getitem__(self, index):  # type: ignore[override]
        return self.now()[index]

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[str]:
        return iter(self.now())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self.now())

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return self.now()

    def __repr__(self) -> str:
        return repr(self.now())


@read_from_shared_memory.register(Text)
def _read_live(space: Text, shared_memory: Any, n: int = 1) -> LiveTexts:
    return LiveTexts(space, shared_memory, n)
