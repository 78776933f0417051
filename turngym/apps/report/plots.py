"""The report's plots: success by entry, score and turn distributions, learning curves, task mix."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from turngym.apps.report.runs import Run
from turngym.trajectory import atomic_write_bytes


def write_plots(runs: list[Run], episodes: list[dict[str, Any]], folder: Path) -> list[dict[str, str]]:
    """The plots the runs and their `episodes` (summaries from `write_episodes`) have data for, as
    PNG files in `folder`: [{file, title}] (paths relative to the report folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    series = [(run, agent) for run in runs for agent in run.agents]
    name = (lambda run, agent: agent) if len(runs) == 1 else (lambda run, agent: f"{run.label}: {agent}")
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate((run.label, agent) for run, agent in series)}
    entries = list(dict.fromkeys([*(entry for run in runs for entry in run.entries), *(e["entry"] for e in episodes)]))
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in episodes:
        if (e["run"], e["agent"]) in colors:  # an agent the run's results know
            groups.setdefault((e["run"], e["agent"], e["entry"]), []).append(e)
    labelled = [(name(run, agent), colors[run.label, agent], run.label, agent) for run, agent in series]
    plots = []
    if any(r["task_type"] == "" for run in runs for r in run.results["rows"]):
        plots.append(_save(_success_figure(runs, entries, labelled), folder / "success.png",
                           "Success rate by entry and agent", crop=True))
    if groups:
        plots.append(_save(_per_entry_figure(entries, labelled, groups, "score"), folder / "scores.png",
                           "Score distribution by entry and agent (box: quartiles; dots: episodes)"))
        plots.append(_save(_per_entry_figure(entries, labelled, groups, "turns"), folder / "turns.png",
                           "Turns per episode by entry and agent"))
    curves = {label: rows for run in runs for label, rows in run.curves.items()}
    if curves:
        plots.append(_save(_curves_figure(curves), folder / "curves.png",
                           "Learning curves of the training runs in the folder (metrics.jsonl)"))
    mixes = {label: rows for label, rows in curves.items() if any(k.startswith("mix/") for r in rows for k in r)}
    if mixes:
        plots.append(_save(_mix_figure(mixes), folder / "task_mix.png",
                           "Task mix of the curriculum runs: share of groups by where their task came from, by "
                           "modifier, and with all-equal returns (zero advantage)"))
    return plots


Series = list[tuple[str, Any, str, str]]  # (legend label, color, run label, agent)


def _save(fig: Any, path: Path, title: str, *, crop: bool = False) -> dict[str, str]:
    """Write `fig` as a PNG. Figures laid out by tight_layout are saved as they are; `crop` (the
    success plot, whose legend sits outside its axes) crops to what is drawn, at the cost of a
    second draw of the whole figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight" if crop else None)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return {"file": f"{path.parent.name}/{path.name}", "title": title}


def _success_figure(runs: list[Run], entries: list[str], series: Series) -> Any:
    rates = {(run.label, r["agent"], r["entry"]): r.get("success_rate") for run in runs for r in run.results["rows"]
             if r["task_type"] == ""}
    x = np.arange(len(entries))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(4 + 0.5 * len(entries) * len(series), 16), 4.2))
    for k, (label, color, run, agent) in enumerate(series):
        values = [rates.get((run, agent, e)) for e in entries]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, [np.nan if v is None else v for v in values], width,
               label=label, color=color)
    ax.set_xticks(x, entries, rotation=30 if len(entries) > 3 else 0, ha="right" if len(entries) > 3 else "center")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    # no tight_layout: the legend sits outside the axes, and savefig(bbox_inches="tight") makes room for it
    return fig


def _per_entry_figure(entries: list[str], series: Series, groups: dict[tuple[str, str, str], list[dict]],
                      kind: str) -> Any:
    """One panel per entry: the episodes' scores as boxes with jittered dots, or their turn counts
    as histograms, one per agent."""
    shown = [e for e in entries if any((run, agent, e) in groups for _, _, run, agent in series)]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.2 * rows), squeeze=False)
    jitter = np.random.default_rng(0)  # the same dots on every rebuild of the report
    for ax, entry in zip(axes.flat, shown, strict=False):
        present = [(label, color, groups[run, agent, entry]) for label, color, run, agent in series
                   if (run, agent, entry) in groups]
        if kind == "score":
            values = [[float(e["score"]) for e in group] for _, _, group in present]
            boxes = ax.boxplot(values, widths=0.5, showfliers=False, patch_artist=True)
            for patch, (_, color, _) in zip(boxes["boxes"], present, strict=True):
                patch.set(facecolor=(*color[:3], 0.25), edgecolor=color)
            for k, (v, (_, color, _)) in enumerate(zip(values, present, strict=True)):
                ax.scatter(k + 1 + jitter.uniform(-0.15, 0.15, len(v)), v, s=10, color=color, zorder=3)
            ax.set_xticks(range(1, len(present) + 1), [label for label, _, _ in present], rotation=20, ha="right",
                          fontsize=8)
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel("score")
        else:
            turns = [[e["turns"] for e in group] for _, _, group in present]
            top = max(max(t, default=0) for t in turns)
            # one bar per turn count while they fit, else 30 equal bins
            bins = np.arange(top + 2) - 0.5 if top < 30 else np.linspace(0, top + 1, 31)
            for (label, color, _), t in zip(present, turns, strict=True):
                ax.hist(t, bins=bins, histtype="step", linewidth=1.6, color=color, label=label)
            ax.set_xlabel("turns")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("episodes")
            ax.legend(fontsize=7)
        ax.set_title(entry, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _curves_figure(curves: dict[str, list[dict[str, Any]]]) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("success", "return"), strict=True):
        for label, rows in curves.items():
            points = [(r.get("env_steps", r.get("update")), r[key]) for r in rows
                      if key in r and r.get("env_steps", r.get("update")) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), label=label, linewidth=1.6)
        ax.set_xlabel("env steps")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _mix_figure(mixes: dict[str, list[dict[str, Any]]]) -> Any:
    """Per training run with a curriculum (rows with `mix/<source>` shares): the sources stacked
    over env steps, and the shares of groups by task modifier (`mod/<key>`) and with zero advantage."""
    fig, axes = plt.subplots(len(mixes), 2, figsize=(11, 3.6 * len(mixes)), squeeze=False)
    for (left, right), (label, rows) in zip(axes, mixes.items(), strict=True):
        rows = [r for r in rows if "mix/fresh" in r]
        x = [r.get("env_steps", r.get("update")) for r in rows]
        sources = list(dict.fromkeys(k for r in rows for k in r if k.startswith("mix/")))
        left.stackplot(x, *([r.get(k, 0.0) for r in rows] for k in sources),
                       labels=[k.removeprefix("mix/") for k in sources], alpha=0.8)
        left.set_title(f"{label}: task sources", fontsize=10)
        for key in [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("mod/")]:
            right.plot(x, [r.get(key, 0.0) for r in rows], label=key.removeprefix("mod/"), linewidth=1.4)
        right.plot(x, [r.get("zero_adv_groups", np.nan) for r in rows], "k--", label="zero advantage", linewidth=1.4)
        right.set_title(f"{label}: task modifiers, zero-advantage groups", fontsize=10)
        for ax in (left, right):
            ax.set_xlabel("env steps")
            ax.set_ylabel("share of groups")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
