"""HopVQA: scene-plus-query generation time, render time, and step latency.

    .venv/bin/python bench/hopvqa.py

Generation and rendering are timed per task without caches (test seeds, the default "full"
variant, 768 px); step latency is whole `env.step` calls for zoom, claim and answer actions.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table
from timing import p50_p95_ms

import turngym  # noqa: F401  (registers the env ids)
from turngym.envs.hopvqa.env import chain_length, make_task
from turngym.envs.hopvqa.scene import render
from turngym.envs.hopvqa.tasks import manifest


def main() -> None:
    seeds = manifest()["test"]["full"][:200]
    build, draw = [], []
    for seed in seeds:
        make_task.cache_clear()
        start = time.perf_counter()
        scene, _ = make_task(seed, chain_length(seed, "full", None), 768)
        build.append(time.perf_counter() - start)
        start = time.perf_counter()
        render(scene)
        draw.append(time.perf_counter() - start)
    total = [b + d for b, d in zip(build, draw, strict=True)]
    gen = Table(title=f"Task generation on {len(seeds)} test seeds (target: scene + query + render <= 30 ms)")
    for column in ("ms per task", "p50", "p95"):
        gen.add_column(column, justify="right")
    for name, samples in (("scene + query", build), ("render", draw), ("total", total)):
        gen.add_row(name, *(f"{x:.1f}" for x in p50_p95_ms(samples)))

    env = gym.make("turngym/HopVQA-v0", max_turns=10**6)
    steps: dict[str, list[float]] = {"zoom": [], "zoom out": [], "claim": [], "answer": []}
    rng = np.random.default_rng(0)
    for i in range(100):
        env.reset(options={"split": "test", "index": i})
        for name, action in (("zoom", "zoom[{:.2f}, {:.2f}, {:.2f}, {:.2f}]"), ("zoom out", "zoom[0, 0, 1, 1]"),
                             ("claim", "claim[1, 3]"), ("answer", "answer[3]")):
            x, y = rng.uniform(0, 0.6, 2)
            start = time.perf_counter()
            env.step(action.format(x, y, x + 0.3, y + 0.3))
            steps[name].append(time.perf_counter() - start)
    latency = Table(title="env.step latency, ms (target: <= 5)")
    for column in ("action", "p50", "p95"):
        latency.add_column(column, justify="right")
    for name, samples in steps.items():
        latency.add_row(name, *(f"{x:.2f}" for x in p50_p95_ms(samples)))
    console = Console(width=max(Console().width, 100))
    console.print(gen)
    console.print(latency)


if __name__ == "__main__":
    main()
