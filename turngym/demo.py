"""`make demo` / `turngym demo`: every family's agents on its built-in test split, as a report."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

from turngym.evaluate import Summary, progress_bar, run_episodes, summarize
from turngym.trajectory import Trajectory, atomic_write_bytes, write_jsonl

CRAFT = "turngym/Craft-v0"
AGENTS = ("random", "oracle")


def run_demo(out: Path, console: Console, episodes: int | None = None) -> Path:
    """Run the demo into `out` and return the path of its Markdown report."""
    from turngym.envs.craft import load_rules

    out.mkdir(parents=True, exist_ok=True)
    with gym.make(CRAFT) as env:
        n = episodes or len(env.unwrapped.splits["test"])
    jobs = [(task, agent) for task in load_rules().tasks for agent in AGENTS]
    results: dict[tuple[str, str], Summary] = {}
    with progress_bar(console=console, transient=True) as progress, \
            ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 4)) as pool:
        bar = progress.add_task(f"Craft-v0: {len(jobs)} task/agent pairs x {n} episodes", total=len(jobs) * n)
        futures = {pool.submit(_craft_job, task, agent, n): (task, agent) for task, agent in jobs}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            progress.advance(bar, n)
        sample = run_episodes(CRAFT, "oracle", 1, env_kwargs={"task": "collect_diamond"}, record_images=True)
    rows = [{"task": task, **results[task, agent].as_dict()} for task, agent in jobs]
    console.print(_pivot(rows, n))

    atomic_write_bytes(out / "results.json", json.dumps(rows, indent=2).encode())
    write_jsonl(out / "craft_oracle_diamond.jsonl", sample)
    _plot_success(rows, out / "craft_success.png")
    _filmstrip(sample[0], out / "craft_oracle_diamond.png")
    report = out / "report.md"
    atomic_write_bytes(report, _markdown(rows, n, sample[0]).encode())
    return report


def _craft_job(task: str, agent: str, n: int) -> Summary:
    trajs = run_episodes(CRAFT, agent, n, env_kwargs={"task": task, "image": False})
    return summarize(CRAFT, agent, trajs)


def _pivot(rows: list[dict], n: int) -> Table:
    """One row per task, success and mean turns per agent."""
    table = Table(title=f"Craft-v0 test split, {n} episodes per task")
    table.add_column("task", no_wrap=True)
    for agent in AGENTS:
        table.add_column(f"{agent}\nsuccess", justify="right")
        table.add_column(f"{agent}\nturns", justify="right")
    for task in dict.fromkeys(r["task"] for r in rows):
        cells = []
        for agent in AGENTS:
            r = next(r for r in rows if r["task"] == task and r["agent"] == agent)
            cells += [f"{r['success_rate']:.0%}", f"{r['mean_turns']:.0f}"]
        table.add_row(task, *cells)
    return table


def _plot_success(rows: list[dict], path: Path) -> None:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, agent in enumerate(AGENTS):
        rate = [next(r["success_rate"] for r in rows if r["task"] == t and r["agent"] == agent) for t in tasks]
        ax.bar(x + (k - 0.5) * 0.4, rate, width=0.4, label=agent)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.set_title("Craft-v0 test split: success by task")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _filmstrip(traj: Trajectory, path: Path, frames: int = 12) -> None:
    """Evenly spaced frames of an episode side by side."""
    images = [t.image for t in traj.turns if t.image is not None]
    picks = [images[int(i)] for i in np.linspace(0, len(images) - 1, min(frames, len(images)))]
    gap = np.full((picks[0].shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([x for image in picks for x in (image, gap)][:-1], axis=1)
    plt.imsave(path, strip)


def _markdown(rows: list[dict], n: int, sample: Trajectory) -> str:
    lines = [
        "# turngym demo report", "",
        f"## Craft-v0: random and oracle agents on the frozen test split ({n} episodes per task)", "",
        "| task | agent | success | mean score ± s.e. | mean turns | invalid actions |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['agent']} | {r['success_rate']:.1%} | {r['mean_score']:.3f} ± "
                     f"{r['score_se']:.3f} | {r['mean_turns']:.1f} | {r['invalid_rate']:.1%} |")
    lines += [
        "", "![success by task](craft_success.png)", "",
        f"## A sample episode: the oracle mines a diamond ({len(sample)} turns, task {sample.task_id})", "",
        "![frames of the episode](craft_oracle_diamond.png)", "",
        "The full trajectory (text, actions, rewards, infos, images) is `craft_oracle_diamond.jsonl`; "
        "read it with `turngym.read_jsonl`.", "",
    ]
    return "\n".join(lines)
