"""Train the symbolic neural policy on sparse Craft tasks with every advantage estimator.

Each (task, estimator, seed) run gets the same env-step budget, from scratch (no cloning). The
table gives the training success rate (sampled policy, fresh training worlds) at two budgets,
averaged over seeds, with the ratio to GRPO, and the mean outcome reward; one learning-curve plot
per task goes to runs/bench/train_compare/. Runs are cached in their folders: a rerun only
trains what is missing (`--fresh` starts over).

    python bench/train_compare.py                      # the default grid (about 20-25 min on 2 cores)
    python bench/train_compare.py --tasks wood_pickaxe --seeds 1 --steps 60000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from turngym.rewards.estimators import ESTIMATORS
from turngym.trajectory import atomic_write_json

# wood_pickaxe: the success reward alone (1 or 0 at the end). stone_pickaxe: from scratch, random
# play succeeds in 0.1% of episodes, so no estimator gets a signal from success alone within a
# CPU budget; its outcome reward is the fraction of the tech-tree chain done (still paid only at
# the end of the episode: the turn-level credit is the estimators' job).
TASKS = {"wood_pickaxe": ("success", 150_000), "stone_pickaxe": ("progress", 300_000)}
OUT = Path("runs/bench/train_compare")


def run_one(job: tuple[str, str, str, int, int]) -> tuple[str, str, int, list[dict], float]:
    task, reward, algo, seed, steps = job
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.ppo import train
    from turngym.trainers.runlog import read_metrics

    torch.set_num_threads(1)
    folder = OUT / task / algo / f"seed{seed}"
    done = folder / "done.json"
    if done.exists():
        return task, algo, seed, read_metrics(folder), json.loads(done.read_text())["seconds"]
    start = time.perf_counter()
    config = NeuralTrainConfig(env_id="turngym/Craft-v0", task=task, algo=algo, steps=steps, seed=seed, out=str(folder),
                               env_kwargs={"reward": reward}, resume=True, tensorboard=False)
    rows = train(config, progress=False)
    seconds = time.perf_counter() - start
    atomic_write_json(done, {"seconds": seconds})
    return task, algo, seed, rows, seconds


def at_budget(rows: list[dict], budget: float, key: str) -> float:
    """Mean of `key` over the updates in the last fifth of the budget (one update is noisy)."""
    window = [r[key] for r in rows if 0.8 * budget < r["env_steps"] <= budget * 1.02]
    return float(np.mean(window)) if window else float(rows[-1][key]) if rows else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--algos", nargs="+", default=list(ESTIMATORS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="env-step budget per run (default: per task)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    if args.fresh and OUT.exists():
        shutil.rmtree(OUT)
    jobs = [(task, TASKS.get(task, ("success", 0))[0], algo, seed, args.steps or TASKS[task][1])
            for task in args.tasks for seed in range(args.seeds) for algo in args.algos]
    console = Console()
    results: dict[tuple[str, str], list[tuple[list[dict], float]]] = {}
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for task, algo, seed, rows, seconds in pool.map(run_one, jobs):
            results.setdefault((task, algo), []).append((rows, seconds))
            console.print(f"  {task:14} {algo:7} seed {seed}: success {rows[-1]['success']:.0%}, "
                          f"return {rows[-1]['return']:.2f} ({seconds:.0f} s)")
    console.print(f"all runs: {time.perf_counter() - start:.0f} s wall with {args.workers} workers")

    from turngym.trainers.runlog import plot_curves

    summary = {}
    for task in args.tasks:
        budget = args.steps or TASKS[task][1]
        half = budget / 2
        table = Table(title=f"Craft {task} (reward: {TASKS.get(task, ('success',))[0]}), {args.seeds} seeds, "
                            f"success at {half:,.0f} / {budget:,.0f} env steps")
        for column in ("estimator", "success @half", "success @full", "vs GRPO", "outcome reward @full",
                       "turns", "s / run"):
            table.add_column(column, justify="left" if column == "estimator" else "right")
        rows_by_algo = {algo: [r for r, _ in results[(task, algo)]] for algo in args.algos}
        scores = {algo: (np.mean([at_budget(r, half, "success") for r in runs]),
                         np.mean([at_budget(r, budget, "success") for r in runs]),
                         np.mean([at_budget(r, budget, "return") for r in runs]),
                         np.mean([at_budget(r, budget, "turns") for r in runs]),
                         np.mean([s for _, s in results[(task, algo)]]))
                  for algo, runs in rows_by_algo.items()}
        base = scores.get("grpo", (0, 0, 0, 0, 0))
        for algo, (s_half, s_full, ret, turns, secs) in scores.items():
            ratio = f"{s_full / base[1]:.2f}x" if base[1] > 0 else "-"
            table.add_row(algo, f"{s_half:.1%}", f"{s_full:.1%}", ratio, f"{ret:.3f}", f"{turns:.0f}", f"{secs:.0f}")
        console.print(table)
        curves = {}
        for algo, runs in rows_by_algo.items():
            grid = np.linspace(budget / 20, budget, 20)
            ys = [[at_budget(r, b, "success") for b in grid] for r in runs]
            curves[algo] = (grid.tolist(), np.mean(ys, axis=0).tolist())
        path = plot_curves(curves, OUT / f"{task}.png", title=f"Craft {task}: training success, mean of "
                                                                 f"{args.seeds} seeds")
        console.print(f"learning curves: {path}")
        summary[task] = {algo: dict(zip(("success_half", "success_full", "return_full", "turns", "seconds"),
                                        map(float, v), strict=True)) for algo, v in scores.items()}
    atomic_write_json(OUT / "summary.json", summary, indent=1)


if __name__ == "__main__":
    main()
