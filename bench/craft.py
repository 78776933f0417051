"""Craft throughput and reset time, side by side with the `crafter` package (1.8.3).

    make bench            # or: .venv/bin/python bench/craft.py [--seconds 5]

Every loop picks random actions and resets when an episode ends, so resets count in steps/s as
they do in training. Our single env is measured through `gym.make` (with Gymnasium's wrappers),
crafter through its own wrapper-free `crafter.Env` loop.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import turngym  # noqa: F401  (registers the envs)
from turngym.envs.craft import CraftVectorEnv

TASK = "collect_diamond"  # the full map and tech tree; long episodes


def single_env(image: bool, seconds: float) -> tuple[float, list[float]]:
    env = gym.make("turngym/Craft-v0", task=TASK, image=image)
    rng = np.random.default_rng(0)
    resets = []
    start = time.perf_counter()
    _, info = env.reset(seed=0)
    resets.append(time.perf_counter() - start)
    steps, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        actions = info["actions"]
        _, _, terminated, truncated, info = env.step(actions[rng.integers(len(actions))])
        steps += 1
        if terminated or truncated:
            t = time.perf_counter()
            _, info = env.reset()
            resets.append(time.perf_counter() - t)
    return steps / (time.perf_counter() - begin), resets


def vector_env(num_envs: int, seconds: float, task: str = TASK, workers: int = 0) -> float:
    """Steps/s of random play (`workers`: world-generation processes). It runs at least two episode
    lengths (`max_turns`), because the envs start together and truncate together: a shorter run
    would miss their resets."""
    env = CraftVectorEnv(num_envs, task=task, worldgen_workers=workers)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.single_action_space.n, size=(64, num_envs))
    steps, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds or steps < 2 * env.max_turns:
        env.step(actions[steps % 64])
        steps += 1
    rate = steps * num_envs / (time.perf_counter() - begin)
    env.close()
    return rate


def reference(seconds: float) -> tuple[float, list[float]] | None:
    try:
        import crafter
    except ImportError:
        return None
    env = crafter.Env(seed=0)
    rng = np.random.default_rng(0)
    resets = []
    t = time.perf_counter()
    env.reset()
    resets.append(time.perf_counter() - t)
    steps, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds or len(resets) < 3:
        _, _, done, _ = env.step(int(rng.integers(env.action_space.n)))
        steps += 1
        if done:
            t = time.perf_counter()
            env.reset()
            resets.append(time.perf_counter() - t)
    return steps / (time.perf_counter() - begin), resets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 110))  # keep the tables on one line in logs
    with console.status("crafter 1.8.3 (the reference; about a second per reset)..."):
        crafter = reference(max(args.seconds * 3, 20))
    rows = []
    with console.status("Craft single env..."):
        text_rate, text_resets = single_env(False, args.seconds)
        image_rate, image_resets = single_env(True, args.seconds)
    rows.append(("Craft-v0 single env, text obs", text_rate, ">= 5,000 and >= 50x crafter", 50))
    rows.append(("Craft-v0 single env, text + image obs", image_rate, ">= 10x crafter", 10))
    for n in (1, 64, 1024):
        with console.status(f"CraftVectorEnv x{n}..."):
            rate = vector_env(n, args.seconds)
        rows.append((f"CraftVectorEnv, {n} envs (symbolic obs)", rate, ">= 200,000" if n == 1024 else "", None))
    # Short episodes reset often: these rows show what world generation costs in training.
    default = inspect.signature(CraftVectorEnv).parameters["task"].default
    for task in dict.fromkeys((default, "wood_pickaxe", "collect_wood")):
        with console.status(f"CraftVectorEnv x1024, {task}..."):
            rate = vector_env(1024, args.seconds, task)
        name = f"CraftVectorEnv, 1024 envs, {task}" + (" (the default task)" if task == default else "")
        rows.append((name, rate, ">= 200,000" if task in (default, "wood_pickaxe") else "", None))
    # The next worlds made ahead on the other core (worldgen_workers=1): the same worlds, sooner.
    for task in ("wood_pickaxe", "collect_wood"):
        with console.status(f"CraftVectorEnv x1024, {task}, 1 world worker..."):
            rate = vector_env(1024, args.seconds, task, workers=1)
        rows.append((f"CraftVectorEnv, 1024 envs, {task}, 1 world worker", rate,
                     ">= 200,000" if task == "wood_pickaxe" else "", None))

    base = crafter[0] if crafter else None
    table = Table(title=f"Craft throughput, random actions, resets included (task {TASK} unless named, 64x64 world)")
    for column in ("loop", "steps/s", "x crafter", "target"):
        table.add_column(column, justify="left" if column in ("loop", "target") else "right")
    if crafter:
        table.add_row("crafter 1.8.3 (crafter.Env, own loop)", f"{base:,.0f}", "1.0", "reference")
    for name, rate, target, _ in rows:
        table.add_row(name, f"{rate:,.0f}", f"{rate / base:,.0f}" if base else "-", target)
    console.print(table)

    resets = Table(title="Reset time (generate a world and observe it)")
    for column in ("env", "median ms", "max ms", "resets", "target"):
        resets.add_column(column, justify="left" if column in ("env", "target") else "right")
    if crafter:
        resets.add_row("crafter 1.8.3", f"{statistics.median(crafter[1]) * 1e3:.0f}",
                       f"{max(crafter[1]) * 1e3:.0f}", str(len(crafter[1])), "reference")
    for name, samples in (("Craft-v0, text obs", text_resets), ("Craft-v0, text + image obs", image_resets)):
        resets.add_row(name, f"{statistics.median(samples) * 1e3:.1f}", f"{max(samples) * 1e3:.1f}",
                       str(len(samples)), "<= 10 ms")
    console.print(resets)
    if not crafter:
        console.print("crafter is not installed: `make bench` installs it (pip install -e '.[bench]').", markup=False)


if __name__ == "__main__":
    main()
