"""The report's tables, each one object that renders to HTML (index.html) and to Markdown."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turngym.apps.report.runs import Run
from turngym.rewards.voc import VALUE_KEYS

DASH = "—"


@dataclass
class TableRow:
    keys: list[str]  # the row-header cells
    cells: list[str]
    data: dict[str, str] = field(default_factory=dict)  # data-* attributes: the run/agent/entry the row is about
    sub: bool = False  # a task-type row under its entry's row
    errors: bool = False  # some episode of the row raised


@dataclass
class Table:
    """One table for both outputs: row-header columns, then groups (a run each) of columns whose
    ids become the cells' data-col attributes."""

    id: str
    keys: list[str]
    groups: list[tuple[str, list[tuple[str, str]]]]  # (group title, [(column id, column title)])
    rows: list[TableRow]
    links: bool = False  # rows link to their episodes in the viewer

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [col for _, cols in self.groups for col in cols]

    def markdown(self) -> list[str]:
        named = len(self.groups) > 1  # one run's columns need no run name
        titles = [f"{group} · {title}" if named else title for group, cols in self.groups for _, title in cols]
        lines = [md_row([*self.keys, *titles]), "|" + "---|" * len(self.keys) + "---:|" * len(titles)]
        return [*lines, *(md_row([*row.keys, *row.cells]) for row in self.rows)]


def _number(value: Any, fmt: str) -> str:
    return DASH if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _score(row: dict[str, Any]) -> str:
    return f"{_number(row.get('mean_score'), '.3f')} ± {_number(row.get('score_se'), '.3f')}"


def _ci(row: dict[str, Any]) -> str:
    ci = row.get("ci95")
    return f"[{_number(ci[0], '.3f')}, {_number(ci[1], '.3f')}]" if ci else DASH


# (column id, title, cell); the ids are the cells' data-col attributes in the HTML
COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("episodes", "episodes", lambda r: _number(r.get("episodes"), "d")),
    ("success", "success", lambda r: _number(r.get("success_rate"), ".1%")),
    ("score", "score ± s.e.", _score),
    ("ci95", "95% CI", _ci),
    ("turns", "turns", lambda r: _number(r.get("mean_turns"), ".1f")),
    ("invalid", "invalid", lambda r: _number(r.get("invalid_rate"), ".1%")),
    ("tokens", "tokens", lambda r: _number(r.get("mean_tokens"), ",.0f")),
    ("errors", "errors", lambda r: _number(r.get("errors"), "d")),
]


def _sorted_rows(run: Run) -> list[dict[str, Any]]:
    """Rows by entry, the whole entry before its task types, agents side by side."""
    rows = run.results["rows"]
    agents, entries = run.agents, run.entries
    types = list(dict.fromkeys(r["task_type"] for r in rows))
    return sorted(rows, key=lambda r: (entries.index(r["entry"]), r["task_type"] != "", types.index(r["task_type"]),
                                       agents.index(r["agent"])))


def voc_cell(vocs: list[float | None]) -> str:
    """The VOC of a row's episodes that carry values of one kind: the mean over those with a
    defined VOC, and how many there are (and how many had none: constant values, or under two)."""
    if not vocs:
        return DASH
    defined = [v for v in vocs if v is not None]
    nan = f", {len(vocs) - len(defined)} NaN" if len(defined) < len(vocs) else ""
    mean = sum(defined) / len(defined) if defined else None
    return f"{_number(mean, '.3f')} (n={len(vocs)}{nan})"


def voc_columns(run: Run, episodes: list[dict[str, Any]]) -> list[tuple[str, str, Callable[[dict[str, Any]], str]]]:
    """One VOC column per kind of per-turn value (`VALUE_KEYS`) that some episode of the run
    carries (`viewer.episode_vocs`); none when no episode has values."""
    mine = [e for e in episodes if e["run"] == run.label]
    keys = [key for key in VALUE_KEYS if any(key in e.get("voc", {}) for e in mine)]

    def cell(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: voc_cell([e["voc"][key] for e in mine if key in e.get("voc", {})
                                   and e["agent"] == r["agent"] and e["entry"] == r["entry"]
                                   and r["task_type"] in ("", e["task_type"])])

    return [(f"voc-{key}", f"VOC · {key}", cell(key)) for key in keys]


def results_table(run: Run, episodes: list[dict[str, Any]] | None = None) -> Table:
    """Every row of a run's results.json: agent x entry x task type; with the run's `episodes`
    (`viewer.write_episodes`), a VOC column per kind of per-turn value they carry."""
    columns = COLUMNS + voc_columns(run, episodes or [])
    rows = [TableRow([r["agent"], r["entry"], r["task_type"] or "all"], [cell(r) for _, _, cell in columns],
                     {"run": run.label, "agent": r["agent"], "entry": r["entry"], "task-type": r["task_type"]},
                     sub=bool(r["task_type"]), errors=bool(r.get("errors")))
            for r in _sorted_rows(run)]
    return Table(f"results-{_slug(run.label)}", ["agent", "entry", "task type"],
                 [("", [(key, title) for key, title, _ in columns])], rows, links=True)


def summary_table(runs: list[Run]) -> Table:
    """Success and mean score of each (entry, task type), an agent column per run, runs side by side."""
    lookup = {(run.label, r["agent"], r["entry"], r["task_type"]): r for run in runs for r in run.results["rows"]}
    keys = list(dict.fromkeys((r["entry"], r["task_type"]) for run in runs for r in _sorted_rows(run)))
    groups = [(run.label, [(f"{run.label}|{agent}", agent) for agent in run.agents]) for run in runs]

    def cell(run: Run, agent: str, entry: str, task_type: str) -> str:
        r = lookup.get((run.label, agent, entry, task_type))
        return DASH if r is None else f"{_number(r.get('success_rate'), '.0%')} · {_number(r.get('mean_score'), '.3f')}"

    rows = [TableRow([entry, task_type or "all"], [cell(run, agent, entry, task_type) for run in runs
                                                    for agent in run.agents],
                     {"entry": entry, "task-type": task_type}, sub=bool(task_type))
            for entry, task_type in keys]
    return Table("summary", ["entry", "task type"], groups, rows)


def overall_table(runs: list[Run]) -> Table:
    """Each agent's mean over the entries, runs side by side."""
    lookup = {(run.label, r["agent"]): r for run in runs for r in run.results.get("overall", [])}
    agents = list(dict.fromkeys(agent for run in runs for agent in run.agents))
    groups = [(run.label, [(f"{run.label}|{key}", title) for key, title in
                           (("mean_score", "mean score"), ("success_rate", "success"), ("entries", "entries"))])
              for run in runs]

    def cells(run: Run, agent: str) -> list[str]:
        r = lookup.get((run.label, agent), {})
        return [_number(r.get("mean_score"), ".3f"), _number(r.get("success_rate"), ".1%"),
                _number(r.get("entries"), "d")]

    rows = [TableRow([agent], [c for run in runs for c in cells(run, agent)], {"agent": agent}) for agent in agents]
    return Table("overall", ["agent"], groups, rows)


def md_text(text: str) -> str:
    """`text` as inline Markdown that shows as written: markup escaped, on one line, `|` kept out of
    table syntax (an error message, an agent spec, a suite or entry name)."""
    return " ".join(html.escape(str(text), quote=False).split()).replace("|", "\\|")


def md_row(cells: list[str]) -> str:
    """A Markdown table row; markup in a cell shows as text."""
    return "| " + " | ".join(md_text(c) for c in cells) + " |"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def parts_tables(runs: list[Run]) -> list[tuple[str, Table]]:
    """Per entry, the family's own measures by agent, runs side by side: its set-level metrics
    (LongDocVQA's accuracy and F1) and the mean of each numeric score part (WebShop's reward
    components, Craft's achievements, LongDoc's evidence recall, ...); [(entry, table)] for the
    entries that have any."""
    out = []
    for entry in dict.fromkeys(e for run in runs for e in run.entries):
        rows = {(run.label, r["agent"]): {**(r.get("metrics") or {}), **(r.get("parts") or {})}
                for run in runs for r in run.results["rows"] if r["entry"] == entry and not r["task_type"]}
        parts = list(dict.fromkeys(key for values in rows.values() for key in values))
        if not parts:
            continue
        groups = [(run.label, [(f"{run.label}|{agent}", agent) for agent in run.agents if (run.label, agent) in rows])
                  for run in runs]
        groups = [(label, cols) for label, cols in groups if cols]
        table_rows = [TableRow([part], [_number(rows[column.split("|", 1)[0], column.split("|", 1)[1]].get(part),
                                                ".3f") for _, cols in groups for column, _ in cols],
                               {"entry": entry, "part": part})
                      for part in parts]
        out.append((entry, Table(f"parts-{_slug(entry)}", ["score part"], groups, table_rows)))
    return out


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def training_table(runs: list[Run]) -> Table | None:
    """One row per training run found in the folders (its metrics.jsonl): updates, env steps,
    training success and return at the first and last update, and the mean share of groups with
    all-equal returns (zero group-relative advantage: wasted rollouts, what a curriculum cuts)."""
    curves = {label: rows for run in runs for label, rows in run.curves.items() if rows}
    if not curves:
        return None
    columns = [("updates", "updates"), ("env_steps", "env steps"), ("first", "success, first update"),
               ("last", "success, last update"), ("return", "return, last update"),
               ("zero_adv", "zero-advantage groups")]

    def cells(rows: list[dict[str, Any]]) -> list[str]:
        first, last = rows[0], rows[-1]
        return [_number(last.get("update", len(rows)), "d"), _number(last.get("env_steps"), ",d"),
                _number(first.get("success"), ".1%"), _number(last.get("success"), ".1%"),
                _number(last.get("return"), ".3f"), _number(_mean(rows, "zero_adv_groups"), ".1%")]

    return Table("training", ["training run"], [("", columns)],
                 [TableRow([label], cells(rows), {"curve": label}) for label, rows in curves.items()])


def analysis_table(runs: list[Run]) -> Table | None:
    """One row per training run with an analysis.json below the folders (trainers/ppo.py, after
    Auto MC-Reward's trajectory analyzer): episodes, the share of steps whose reward code failed
    (no code reward then), deaths per episode by cause, each reward term's
    firing rate per step, and where failed episodes stalled most often."""
    found = {}
    for run in runs:
        for path in sorted(run.path.rglob("analysis.json")):
            folder = path.parent.relative_to(run.path).as_posix()
            found[run.label if folder == "." else f"{run.label}/{folder}"] = json.loads(path.read_text())
    if not found:
        return None
    causes = sorted({c for a in found.values() for c in a.get("death_causes", {})})
    terms = sorted({t for a in found.values() for t in a.get("terms", {})})
    columns = [("episodes", "episodes"), ("code_errors", "reward-code errors / step"), ("deaths", "deaths / episode"),
               *((f"death_{c}", f"{c} deaths / episode") for c in causes),
               *((f"term_{t}", f"{t} fired / step") for t in terms), ("stall", "failures stalled at (share)")]

    def cells(a: dict[str, Any]) -> list[str]:
        stalls = list(a.get("stalls", {}).items())[:3]  # the most common first (analysis.summarize)
        return [_number(a.get("episodes"), ",d"), _number(a.get("code_errors_per_step"), ".2%"),
                _number(a.get("deaths_per_episode"), ".3f"),
                *(_number(a["death_causes"].get(c, {}).get("per_episode", 0.0), ".3f") for c in causes),
                *(_number(a["terms"].get(t, {}).get("fired_per_step"), ".1%") for t in terms),
                ", ".join(f"{name} {s['share']:.0%}" for name, s in stalls) or DASH]

    return Table("analysis", ["training run"], [("", columns)],
                 [TableRow([label], cells(a)) for label, a in found.items()])
