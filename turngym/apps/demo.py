"""`make demo` / `turngym demo`: the demo suite played by the built-in agents, a short training run,
and one report of both.

The demo is data: the versioned suite `assets/suites/demo-v4.yaml` says which envs, tasks and agents
it plays. This module only runs it like `turngym eval --suite demo-v4` would (resumable, in worker
processes), trains two estimators on sparse Craft like `turngym train` would, and writes the report
of the folder like `turngym report` would: the family-specific columns come from the episodes'
`score_parts`, and the learning curves from the training runs' metrics.jsonl.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from turngym.console import progress_bar

SUITE = "demo-v4"
# the suite's entries say who plays what; hf:smollm2 is SmolLM2-135M-Instruct, which make install converts
AGENTS = ("random", "heuristic:no-options", "heuristic", "oracle", "hf:smollm2", "hf:smollm2?mode=score")
TRAIN_TASK, TRAIN_STEPS, TRAIN_ALGOS = "wood_pickaxe", 40_000, ("grpo", "prm")


def run_demo(out: Path, console: Console, episodes: int | None = None, train_steps: int | None = None
             ) -> tuple[Path, Path]:
    """Play the demo suite into `out` (the first `episodes` tasks of each entry, default all), train
    `train_steps` env steps per estimator (default TRAIN_STEPS) into `out/training`, and write the
    report; returns the paths of report.md and index.html."""
    from turngym.apps.harness import pending, run_eval
    from turngym.apps.report import write_report
    from turngym.results import results_table
    from turngym.suites import load_suite

    moved = set_aside(out)
    if moved is not None:
        console.print(f"{out} held an earlier demo; it is now in {moved}")
    suite = load_suite(SUITE).head(episodes)
    todo = pending(suite, list(AGENTS), out)
    with progress_bar(console=console, transient=True) as progress:
        bar = progress.add_task(f"{SUITE}: {todo} episodes", total=todo)
        results = run_eval(suite, list(AGENTS), out, workers=min(os.cpu_count() or 1, 4),
                           on_episode=lambda job, record: progress.advance(bar))
    console.print(results_table(results))
    train(out / "training", console, train_steps or TRAIN_STEPS)
    html, markdown = write_report([out])
    return markdown, html


def set_aside(out: Path) -> Path | None:
    """Move a folder that holds another suite's demo (an earlier demo version) to `<out>-<suite>`,
    so that `make demo` after an upgrade plays the new demo instead of refusing to mix the two;
    returns where it went, or None when there was nothing to move."""
    try:
        name = json.loads((out / "run.json").read_text())["suite"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no run yet (or not one this function can read: the harness will say so)
    if name == SUITE:
        return None
    aside, n = out.with_name(f"{out.name}-{name}"), 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}-{name}-{n}")
    out.rename(aside)
    return aside


def train(out: Path, console: Console, steps: int) -> None:
    """A short from-scratch run per estimator on sparse Craft (the symbolic policy on
    CraftVectorEnv), each in its own folder with its metrics.jsonl. A run that has its `steps` is
    kept; a shorter or interrupted one goes on from its checkpoint."""
    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.ppo import train as run_training
    from turngym.trainers.runlog import read_metrics

    for algo in TRAIN_ALGOS:
        folder = out / algo
        rows = read_metrics(folder) if (folder / "policy.pt").exists() else []
        if not rows or rows[-1]["env_steps"] < steps:  # none yet, or shorter than asked: resumed and extended
            rows = run_training(NeuralTrainConfig(env_id="turngym/Craft-v0", task=TRAIN_TASK, algo=algo,
                                                  steps=steps, out=str(folder), tensorboard=False, resume=True),
                                progress=False)
        console.print(f"training {algo} on Craft {TRAIN_TASK}: success {rows[0]['success']:.0%} -> "
                      f"{rows[-1]['success']:.0%} in {rows[-1]['env_steps']:,} env steps")
