"""Results of an evaluation run: per agent, entry and task type, with uncertainty.

Each row gives the success rate, the mean score with its standard error and a bootstrap 95%
interval, mean turns, the invalid-action rate, mean tokens per episode (language-model agents) and
the number of episodes that ended in an error (counted as failures with score 0). A row with
`task_type == ""` covers a whole entry; the others break it down by the env's task type. `overall`
is each agent's mean over the suite's entries (every entry weighs the same).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

BOOTSTRAP = 2000


def episode_files(run_dir: Path) -> Iterator[Path]:
    yield from sorted((run_dir / "episodes").glob("*/*/*.jsonl"))


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """The episode records of a run (trajectory JSON; images stay file names)."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in episode_files(run_dir)]


def stats(records: list[dict[str, Any]], label: str = "") -> dict[str, Any]:
    """The numbers of one group of episodes; `label` seeds the bootstrap so reruns give the same
    interval."""
    scores = np.array([r["score"] for r in records], float)
    n = len(scores)
    turns = [len(r["turns"]) for r in records]
    invalid = sum(not t["info"].get("valid", True) for r in records for t in r["turns"])
    tokens = [sum(len(t.get("prompt_ids") or []) + len(t.get("completion_ids") or []) for t in r["turns"])
              for r in records]
    return {"episodes": n, "errors": sum(r["meta"].get("error") is not None for r in records),
            "success_rate": float(np.mean([r["success"] for r in records])), "mean_score": float(scores.mean()),
            "score_se": float(scores.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
            "ci95": bootstrap_ci(scores, label), "mean_turns": float(np.mean(turns)),
            "invalid_rate": invalid / max(sum(turns), 1), "mean_tokens": float(np.mean(tokens)),
            "parts": score_parts(records)}


def score_parts(records: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of each numeric score part over the episodes that report it: the family's own
    columns (WebShop's reward components, Craft's achievements, LongDoc's evidence recall, ...)."""
    values: dict[str, list[float]] = {}
    for r in records:
        for key, value in (r.get("score_parts") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    return {key: float(np.mean(v)) for key, v in values.items()}


def bootstrap_ci(values: np.ndarray, label: str = "", level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean."""
    if len(values) < 2:
        return [float(values.mean()), float(values.mean())]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(label.encode()).digest()[:8], "little"))
    means = values[rng.integers(len(values), size=(BOOTSTRAP, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


RunMetrics = Callable[[str, dict[str, Any], list[dict[str, Any]]], dict[str, float]]


def aggregate(run_dir: str | Path, run_metrics: RunMetrics | None = None) -> dict[str, Any]:
    """The results of the episodes saved in `run_dir`, in run.json's order of agents and entries.
    `run_metrics(env_id, kwargs, score_parts)` adds an entry's set-level measures to its rows (the
    harness passes the env class's `run_metrics`)."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in load_records(run_dir):
        groups.setdefault((record["meta"]["agent"], record["meta"]["entry"]), []).append(record)
    env_ids = {e["name"]: e["env_id"] for e in run["entries"]}
    kwargs = {e["name"]: e.get("kwargs", {}) for e in run["entries"]}

    def stats_of(records: list[dict[str, Any]], label: str, entry: str) -> dict[str, Any]:
        row = stats(records, label)
        if run_metrics is not None:
            row["metrics"] = run_metrics(env_ids[entry], kwargs[entry], [r["score_parts"] for r in records])
        return row

    rows, overall = [], []
    for agent in run["agents"]:
        played = []
        for entry in (e["name"] for e in run["entries"]):
            records = sorted(groups.get((agent, entry), []), key=lambda r: r["meta"]["index"])
            if not records:
                continue
            played.append(stats_of(records, f"{agent}/{entry}", entry))
            rows.append({"agent": agent, "entry": entry, "env_id": env_ids[entry], "task_type": "", **played[-1]})
            types = sorted({r["meta"].get("task_type", "") for r in records} - {""})
            if len(types) > 1:
                rows += [{"agent": agent, "entry": entry, "env_id": env_ids[entry], "task_type": t,
                          **stats_of([r for r in records if r["meta"].get("task_type") == t], f"{agent}/{entry}/{t}",
                                     entry)}
                         for t in types]
        if played:
            overall.append({"agent": agent, "entries": len(played),
                            "mean_score": float(np.mean([p["mean_score"] for p in played])),
                            "success_rate": float(np.mean([p["success_rate"] for p in played])),
                            "episodes": sum(p["episodes"] for p in played),
                            "errors": sum(p["errors"] for p in played)})
    return {"suite": run["suite"]["name"], "version": run["suite"]["version"], "rows": rows, "overall": overall}


def entry_row(results: dict[str, Any], agent: str, entry: str | None = None) -> dict[str, Any]:
    """The whole-entry row of `agent` (on `entry`, default: the first entry it played)."""
    for row in results["rows"]:
        if row["agent"] == agent and row["task_type"] == "" and entry in (None, row["entry"]):
            return row
    raise KeyError(f"no results for agent {agent!r}" + (f" on entry {entry!r}" if entry else ""))


def results_table(results: dict[str, Any], title: str | None = None) -> Table:
    """The rows as a terminal table, each entry's task types indented below it (tokens and errors
    appear only when some episode has them)."""
    rows, overall = results["rows"], results["overall"]
    columns = ["agent", "entry / type", "n", "success", "score [95% CI]", "turns", "invalid"]
    show_tokens = any(r["mean_tokens"] for r in rows)
    show_errors = any(r["errors"] for r in rows)
    columns += ["tokens"] * show_tokens + ["errors"] * show_errors
    body = []
    for r in rows:
        cells = [r["agent"] if not r["task_type"] else "", r["entry"] if not r["task_type"] else f"  {r['task_type']}",
                 str(r["episodes"]), f"{r['success_rate']:.0%}",
                 f"{r['mean_score']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", f"{r['mean_turns']:.1f}",
                 f"{r['invalid_rate']:.0%}"]
        body.append((cells + [f"{r['mean_tokens']:.0f}"] * show_tokens + [str(r["errors"] or "")] * show_errors,
                     None if r["task_type"] else "bold"))
    body.append(([""] * len(columns), None))
    for o in overall:
        cells = [o["agent"], "overall", str(o["episodes"]), f"{o['success_rate']:.0%}", f"{o['mean_score']:.2f}",
                 "", ""]
        body.append((cells + [""] * show_tokens + [str(o["errors"] or "")] * show_errors, "italic"))
    # No box, and the numbers keep their width: the agent and entry names are cut (with an
    # ellipsis) where they would push the table past 80 columns, never a number.
    table = Table(title=title or f"{results['suite']} (version {results['version']})", box=None, pad_edge=False,
                  collapse_padding=True, header_style="bold underline")
    for k, column in enumerate(columns):
        width = max(len(column), *(len(cells[k]) for cells, _ in body))
        table.add_column(column, justify="left" if k < 2 else "right", no_wrap=True,
                         min_width=None if k < 2 else width, max_width=(16, 18)[k] if k < 2 else None)
    for cells, style in body:
        table.add_row(*cells, style=style)
    return table
