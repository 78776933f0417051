"""Training worlds made ahead in background processes, for `CraftVectorEnv(..., worldgen_workers=k)`.

A short episode (collect_wood, wood_pickaxe) resets every few dozen steps, and a new world costs
about a millisecond of NumPy: at 1024 envs that is most of a vector step. A world is a pure function
of (task, size, seed), and an env's next training seed is known as soon as it resets (the next draw
of its generator, `next_train_seed`), so worker processes can make that world while the env plays.
At its next reset the env takes the world if a worker has made it or is making it, and otherwise
makes it itself, so no work is done twice and the world is the same either way: the pool changes
how fast worlds arrive, never which.
"""

from __future__ import annotations

import multiprocessing
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from turngym.envs.craft.rules import load_rules
from turngym.envs.craft.worldgen import Layout, generate

_job: tuple | None = None  # in a worker: (rules, task, size)


def _start(task: str, size: int) -> None:
    global _job
    rules = load_rules()
    _job = (rules, rules.tasks[task], size)


def _make(seed: int) -> Layout:
    rules, task, size = _job
    return generate(rules, task, size, seed)


class WorldPool:
    """Worlds of one task and size, each env's next one made ahead by `workers` processes."""

    def __init__(self, task: str, size: int, workers: int) -> None:
        # forkserver: a worker never inherits the threads (torch's, Ray's) of the process that made it
        context = multiprocessing.get_context("forkserver")
        self._executor: ProcessPoolExecutor | None = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start, initargs=(task, size))
        self._ahead: dict[int, tuple[int, Future]] = {}

    def submit(self, env: int, seed: int) -> None:
        """Start making the world of `seed`, env `env`'s next; replaces what was ahead for it."""
        self.discard(env)
        if self._executor is None:
            return
        try:
            self._ahead[env] = (seed, self._executor.submit(_make, seed))
        except (BrokenProcessPool, RuntimeError) as exc:  # the env goes on making its worlds itself
            self.close()
            warnings.warn(f"Craft world workers stopped ({exc.__class__.__name__}); the vector env makes its worlds "
                          "itself now. A script that starts them must guard its entry point with "
                          "`if __name__ == '__main__':`", RuntimeWarning, stacklevel=4)

    def discard(self, env: int) -> None:
        ahead = self._ahead.pop(env, None)
        if ahead is not None:
            ahead[1].cancel()

    def take(self, env: int, seed: int) -> Layout | None:
        """The world of `seed` if it was submitted for `env` and a worker has made it or is making
        it (then this waits for it); None where the env should make it itself."""
        ahead = self._ahead.pop(env, None)
        if ahead is None:
            return None
        expected, future = ahead
        if expected != seed:  # (a reseed or an explicit task id changed the env's next world)
            future.cancel()
            return None
        if future.cancel():  # not started: making it here is as fast
            return None
        try:
            return future.result()
        except Exception:  # a worker that died (BrokenProcessPool) costs speed, never a world
            return None

    def close(self) -> None:
        self._ahead.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
