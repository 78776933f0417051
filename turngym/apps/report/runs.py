"""A run folder as the report reads it: its run.json, results.json, episode files and the
training metrics anywhere below it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One run folder: run.json, results.json, the episode files and any training metrics."""

    path: Path
    label: str  # the folder name: how tables, plots and the viewer name the run
    spec: dict[str, Any]  # run.json ({} if absent)
    results: dict[str, Any]  # results.json
    files: list[Path]  # its episode files, read one at a time (a language model's token ids can be large)
    curves: dict[str, list[dict[str, Any]]]  # metrics.jsonl rows by folder label

    @property
    def agents(self) -> list[str]:
        return list(dict.fromkeys([*self.spec.get("agents", []), *(r["agent"] for r in self.results["rows"])]))

    @property
    def entries(self) -> list[str]:
        return list(dict.fromkeys([*(e["name"] for e in self.spec.get("entries", [])),
                                   *(r["entry"] for r in self.results["rows"])]))


def load_run(path: Path, label: str) -> Run:
    """Read a run folder's summaries; results.json must exist, the rest is optional."""
    if not (path / "results.json").is_file():
        raise FileNotFoundError(f"{path} has no results.json: pass a folder written by `turngym run --out`, "
                                "`turngym eval`, `turngym train --eval` or `turngym demo`")
    spec = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
    results = json.loads((path / "results.json").read_text())
    curves = {}
    for metrics in sorted(path.rglob("metrics.jsonl")):
        folder = metrics.parent.relative_to(path).as_posix()
        curves[label if folder == "." else f"{label}/{folder}"] = read_metrics(metrics)
    return Run(path, label, spec, results, sorted((path / "episodes").glob("*/*/*.jsonl")), curves)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line a crashed trainer was writing (runlog.py): not a point
            continue
    return rows


def labels(paths: list[Path]) -> list[str]:
    """Each run's folder name, numbered where two runs share one."""
    names = [p.resolve().name for p in paths]
    return [name if names.count(name) == 1 else f"{name} ({i + 1})" for i, name in enumerate(names)]


def title(runs: list[Run]) -> str:
    suites = ", ".join(s for s in dict.fromkeys(run.results.get("suite", "") for run in runs) if s)
    return f"turngym report: {' vs '.join(run.label for run in runs)}" + (f" ({suites})" if suites else "")


def run_info(run: Run, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page says about a run: its suite, agents, entries and episode counts."""
    suite = run.spec.get("suite", {})
    mine = [e for e in episodes if e["run"] == run.label]
    return {"label": run.label, "path": str(run.path), "suite": suite.get("name", run.results.get("suite", "")),
            "version": suite.get("version", run.results.get("version", "")),
            "description": suite.get("description", ""), "agents": run.agents,
            "entries": [{**e, "kwargs": json.dumps(e.get("kwargs", {})), "tasks": len(e.get("indices", []))}
                        for e in run.spec.get("entries", [])],
            "episodes": len(mine), "errors": sum(e["error"] is not None for e in mine),
            "skipped": run.results.get("skipped", [])}
