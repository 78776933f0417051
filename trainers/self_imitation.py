"""Self-imitation: the run's own best episodes so far, cloned beside the RL loss.

On a sparse task the few episodes that reach the goal are what a policy gradient hears least
from: a success among 64 rollouts moves the policy once, by one advantage, and is gone. After
self-imitation learning (Oh et al. 2018) and its filtered-cloning kin (Go-Explore's
robustification phase, ReST, RAFT), the trainer keeps the best episodes it has played so far,
ranked by a signal (`success`, or the graded `progress`, `return` or `score`; fewer turns, then
the newer episode, break ties, so the buffer drifts to the shortest successes), and every
optimizer step adds

    c_SI * mean over a minibatch of the kept turns of -log pi(a_t | s_t)

to the loss. Only an episode whose signal is above 0 is kept. Nothing comes from outside the run:
the buffer holds the policy's own play, so a run with it is still a run from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from turngym.trainers.collect import Collected
from turngym.trainers.curriculum import SIGNALS, signal_of

IMITATION_SIGNALS = ("success", *SIGNALS)


@dataclass
class Kept:
    """One kept episode: its rank (signal, -turns, serial), its turns' inputs and chosen actions."""

    rank: tuple[float, int, int]
    inputs: Any
    index: torch.Tensor


class SelfImitation:
    """The buffer of the best `episodes` episodes and the cloning loss on them."""

    def __init__(self, actor: Any, episodes: int, signal: str) -> None:
        if signal not in IMITATION_SIGNALS:
            raise ValueError(f"unknown self-imitation signal {signal!r}: use {', '.join(IMITATION_SIGNALS)}")
        self.actor, self.capacity, self.signal = actor, episodes, signal
        self.kept: list[Kept] = []
        self.serial = 0  # episodes seen, so a tie goes to the newer one
        self._joined: tuple[Any, torch.Tensor] | None = None

    def add(self, col: Collected) -> None:
        """Keep the episodes of `col` that rank among the best so far."""
        for traj, turns in zip(col.trajectories, col.turns, strict=True):
            self.serial += 1
            value = float(traj.success) if self.signal == "success" else signal_of(traj, self.signal)
            rank = (value, -len(turns), self.serial)
            if value <= 0 or not turns or (len(self.kept) >= self.capacity and rank <= self.kept[-1].rank):
                continue
            rows = np.asarray(turns)
            self.kept.append(Kept(rank, self.actor.take([col.inputs], rows), col.index[rows]))
            self.kept.sort(key=lambda k: k.rank, reverse=True)
            del self.kept[self.capacity:]
            self._joined = None

    @property
    def turns(self) -> int:
        return sum(len(k.index) for k in self.kept)

    def loss(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """-mean log pi(a|s) over `size` kept turns drawn with replacement (with gradients)."""
        if self._joined is None:
            self._joined = (self.actor.take([k.inputs for k in self.kept]), torch.cat([k.index for k in self.kept]))
        inputs, index = self._joined
        rows = torch.randint(len(index), (min(size, len(index)),), generator=generator).numpy()
        logp, _, _ = self.actor.evaluate(inputs, rows, index[rows])
        return -logp.mean()

    def stats(self) -> dict[str, float]:
        """What the buffer holds, for the metrics row."""
        kept = self.kept
        return {"si_episodes": len(kept), "si_turns": self.turns,
                "si_signal": float(np.mean([k.rank[0] for k in kept])) if kept else 0.0,
                "si_episode_turns": float(np.mean([-k.rank[1] for k in kept])) if kept else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"kept": [(k.rank, k.inputs, k.index) for k in self.kept], "serial": self.serial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = [Kept(tuple(rank), inputs, index) for rank, inputs, index in state["kept"]]
        self.serial = state["serial"]
        self._joined = None
