"""Throughput of every env family with a random agent: one table for `turngym bench`.

    from turngym.apps.benchmark import run_bench, bench_table
    rows = run_bench(["turngym/Craft-v0"], seconds=3)

Each configuration runs in a fresh spawned process, so its peak RSS is its own and an env that
crashes, hangs or cannot be built becomes an error row instead of ending the run.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from importlib import resources
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import turngym

Config = tuple[str, dict[str, Any], str]  # (env id, gym.make kwargs, label)



def load_configs() -> list[Config]:
    """What `turngym bench` measures, from assets/bench/envs.yaml (data, not code)."""
    text = resources.files("turngym.assets").joinpath("bench/envs.yaml").read_text()
    return [(str(c["env_id"]), dict(c.get("kwargs") or {}), str(c["label"])) for c in yaml.safe_load(text)]


CONFIGS: list[Config] = load_configs()

# How long a configuration may run past its budget (process start, setup, finishing its one
# episode) before its process is killed and it is reported as an error.
GRACE_S = 120.0

METRICS = ("steps_per_s", "step_p50_ms", "step_p95_ms", "reset_ms", "setup_s", "rss_mb", "episodes", "steps",
           "seconds")


def p50_p95_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """The median and 95th percentile of durations in seconds, in milliseconds."""
    ms = np.asarray(seconds, dtype=float) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def measure(env_id: str, kwargs: dict[str, Any], seconds: float, seed: int = 0) -> dict[str, Any]:
    """Play `env_id` with a seeded random agent for `seconds` (and at least one whole episode)
    in this process and return the metrics of one row.

    Episode i plays test task i (cycling), like `turngym run`: frozen tasks keep the numbers
    comparable, and LongDocVQA's test documents are built once (`turngym longdoc build`) where
    each training task would generate a new one. `gym.make` and a first reset are the untimed
    setup, so first-time data generation and caches (the WebShop catalog, Chromium) do not count.
    steps/s is over the whole measured loop (resets and the agent included, as a rollout
    collector sees it); the latencies are of `env.step` and `env.reset` alone.
    """
    from turngym.agents import make_agent  # the kernel imports agents only when it runs them

    start = time.perf_counter()
    env = gym.make(env_id, **kwargs)
    try:
        agent = make_agent("random", env)
        env.reset(seed=seed)
        setup = time.perf_counter() - start
        tasks = len(env.unwrapped.splits["test"])
        step_s: list[float] = []
        reset_s: list[float] = []
        episodes, done, elapsed = 0, True, 0.0
        begin = time.perf_counter()
        while elapsed < seconds or not episodes:
            if done:
                index = len(reset_s)
                t = time.perf_counter()
                obs, info = env.reset(seed=seed + 1 + index, options={"split": "test", "index": index % tasks})
                reset_s.append(time.perf_counter() - t)
                agent.reset(obs, info, seed=seed + 1 + index)
            action = agent.act(obs, info)
            t = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            step_s.append(time.perf_counter() - t)
            done = terminated or truncated
            episodes += done
            elapsed = time.perf_counter() - begin
    finally:
        env.close()
    p50, p95 = p50_p95_ms(step_s)
    return {"steps_per_s": len(step_s) / elapsed, "step_p50_ms": p50, "step_p95_ms": p95,
            "reset_ms": p50_p95_ms(reset_s)[0], "setup_s": setup, "rss_mb": _peak_rss_mb(),
            "episodes": episodes, "steps": len(step_s), "seconds": elapsed}


def run_bench(envs: list[str] | None = None, seconds: float = 3.0, progress: bool = True, *,
              configs: Sequence[Config] | None = None) -> list[dict[str, Any]]:
    """Measure each configuration of `envs` (default: every registered env) in its own process.

    `envs` takes ids as `turngym list` shows them (the `turngym/` prefix may be left out);
    `configs` replaces CONFIGS. Returns one JSON-serializable row per configuration: env_id,
    label, kwargs, the METRICS (None on an error row) and error (None, or what went wrong).
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    chosen = _select(envs, list(CONFIGS if configs is None else configs))
    rows = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True,
                  disable=not progress) as bar:
        job = bar.add_task("", total=len(chosen))
        for env_id, kwargs, label in chosen:
            bar.update(job, description=f"bench {env_id} ({label})")
            result = _in_fresh_process(env_id, kwargs, seconds)
            error = result.pop("error", None)
            rows.append({"env_id": env_id, "label": label, "kwargs": dict(kwargs),
                         **{key: None if error else result[key] for key in METRICS}, "error": error})
            bar.advance(job)
    return rows


def bench_table(rows: list[dict[str, Any]]) -> Table:
    """The rows of `run_bench` as a rich table; an error column appears only when a row failed."""
    failed = any(row["error"] for row in rows)
    table = Table(title="turngym bench: random agent, one fresh process per configuration", caption=(
        "Episodes play the test split in order. Setup (gym.make + one warm-up reset: catalog and caches, "
        "browser start) is excluded from the timings; LongDocVQA documents not yet generated (`turngym longdoc "
        "build`) are generated in its resets. steps/s: env steps per second of the measured loop, resets and "
        "agent included; step and reset: env.step / env.reset alone. RSS: peak of the worker process "
        "(Chromium's processes not included)."))
    table.add_column("env")
    table.add_column("config")
    for column in ("steps/s", "step p50 ms", "step p95 ms", "reset p50 ms", "setup s", "peak RSS MB",
                   "episodes", "steps"):
        table.add_column(column, justify="right")
    if failed:
        table.add_column("error", style="red")
    for row in rows:
        cells = [row["env_id"].removeprefix("turngym/"), row["label"]]
        if row["error"]:
            cells += ["-"] * 8 + [row["error"]]
        else:
            cells += [f"{row['steps_per_s']:,.0f}", f"{row['step_p50_ms']:.2f}", f"{row['step_p95_ms']:.2f}",
                      f"{row['reset_ms']:.1f}", f"{row['setup_s']:.1f}", f"{row['rss_mb']:.0f}",
                      str(row["episodes"]), f"{row['steps']:,}"] + ([""] if failed else [])
        table.add_row(*(Text(cell) for cell in cells))  # Text: error messages hold [brackets]
    return table


def _select(envs: list[str] | None, configs: list[Config]) -> list[Config]:
    """The configurations of the requested ids, in CONFIGS order; an id without one gets its defaults."""
    registered = turngym.list_envs()
    if envs is None:
        wanted = registered
    else:
        wanted = []
        for name in envs:
            env_id = name if name in registered else f"turngym/{name}"
            if env_id not in registered:
                raise ValueError(f"unknown env id {name!r}: run `turngym list` to see the registered ids")
            wanted.append(env_id)
    chosen = [config for config in configs if config[0] in wanted]
    return chosen + [(env_id, {}, "default") for env_id in dict.fromkeys(wanted)
                     if not any(config[0] == env_id for config in configs)]


def _in_fresh_process(env_id: str, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
    """`measure` in a spawned process; {"error": ...} if it raises, dies or overruns by GRACE_S."""
    context = multiprocessing.get_context("spawn")  # fresh interpreter: RSS and caches are this env's alone
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(send, env_id, kwargs, seconds), name=f"bench {env_id}")
    process.start()
    send.close()  # so that recv() sees EOF if the worker dies without answering
    try:
        if not receive.poll(seconds + GRACE_S):
            return {"error": f"stopped after {seconds + GRACE_S:.0f} s: check that its setup completes and that "
                             "an episode ends within max_turns"}
        try:
            return receive.recv()
        except EOFError:
            process.join()
            return {"error": f"the worker process died with exit code {process.exitcode} (a native crash or out "
                             f"of memory): rerun `turngym bench --env {env_id}` alone to reproduce it"}
    finally:
        receive.close()
        if process.is_alive():
            process.kill()
        process.join()


def _worker(send: Connection, env_id: str, kwargs: dict[str, Any], seconds: float) -> None:
    try:
        result = measure(env_id, kwargs, seconds)
    except Exception as exc:  # the env's own error, reported in its row
        result = {"error": f"{type(exc).__name__}: {exc}"}
    send.send(result)
    send.close()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
