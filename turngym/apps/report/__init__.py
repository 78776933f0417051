"""`turngym report`: eval run folders as a static HTML report with an episode viewer, and report.md.

The report folder opens from disk (file://, no server) and can be moved or zipped: it holds
index.html with its CSS and JS, the plots as PNG, the episodes' images (hard-linked or copied) and
the episode data as JavaScript files. Browsers block fetch() of local files, so the data are
scripts: `data/index.js` lists the episodes and `data/episodes/<id>.js` holds one episode each,
loaded when it is picked, so that a run of thousands of long episodes still opens at once.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from turngym.trajectory import atomic_write_bytes

TEXT_CAP = 20_000  # characters kept of one text (an observation, a traceback) in the viewer
LIST_CAP = 200  # items kept of one list (admissible actions, say) in the viewer
STATIC = ("report.css", "report.js")  # copied beside index.html
DASH = "—"


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
        lines = [_md_row([*self.keys, *titles]), "|" + "---|" * len(self.keys) + "---:|" * len(titles)]
        return [*lines, *(_md_row([*row.keys, *row.cells]) for row in self.rows)]


def write_report(run_dirs: list[Path], out: Path | None = None) -> tuple[Path, Path]:
    """Write the report of one run, or of several side by side, into `out` (default: RUN_DIR/report
    for one run; required for several); returns the paths of index.html and report.md."""
    if not run_dirs:
        raise ValueError("no run folder given: pass the folder `turngym eval` wrote")
    run_dirs = [Path(p) for p in run_dirs]
    if out is None:
        if len(run_dirs) > 1:
            raise ValueError("a report of several runs needs a folder of its own: pass --out DIR")
        out = run_dirs[0] / "report"
    runs = [load_run(path, label) for path, label in zip(run_dirs, _labels(run_dirs), strict=True)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = write_episodes(runs, out)
    plots = write_plots(runs, episodes, out / "plots")
    tables = [overall_table(runs), summary_table(runs), *(results_table(run) for run in runs)]
    infos = [_run_info(run, episodes) for run in runs]
    assets = resources.files("turngym.assets").joinpath("report")
    for name in STATIC:
        atomic_write_bytes(out / name, assets.joinpath(name).read_bytes())
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True).from_string(assets.joinpath("index.html").read_text())
    html_text = template.render(title=_title(runs), runs=infos, tables=tables, plots=plots, episodes=len(episodes))
    index, markdown = out / "index.html", out / "report.md"
    atomic_write_bytes(index, html_text.encode("utf-8"))
    atomic_write_bytes(markdown, "\n".join(_markdown(runs, infos, tables, plots, episodes)).encode("utf-8"))
    return index, markdown


def load_run(path: Path, label: str) -> Run:
    """Read a run folder's summaries; results.json must exist, the rest is optional."""
    if not (path / "results.json").is_file():
        raise FileNotFoundError(f"{path} has no results.json: pass a folder written by `turngym eval`")
    spec = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
    results = json.loads((path / "results.json").read_text())
    curves = {}
    for metrics in sorted(path.rglob("metrics.jsonl")):
        folder = metrics.parent.relative_to(path).as_posix()
        curves[label if folder == "." else f"{label}/{folder}"] = _read_metrics(metrics)
    return Run(path, label, spec, results, sorted((path / "episodes").glob("*/*/*.jsonl")), curves)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line a crashed trainer was writing (runlog.py): not a point
            continue
    return rows


def _labels(paths: list[Path]) -> list[str]:
    """Each run's folder name, numbered where two runs share one."""
    names = [p.resolve().name for p in paths]
    return [name if names.count(name) == 1 else f"{name} ({i + 1})" for i, name in enumerate(names)]


def _title(runs: list[Run]) -> str:
    suites = ", ".join(s for s in dict.fromkeys(run.results.get("suite", "") for run in runs) if s)
    return f"turngym report: {' vs '.join(run.label for run in runs)}" + (f" ({suites})" if suites else "")


def _run_info(run: Run, episodes: list[dict[str, Any]]) -> dict[str, Any]:
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


# ---- tables -------------------------------------------------------------------------------------
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


def results_table(run: Run) -> Table:
    """Every row of a run's results.json: agent x entry x task type."""
    rows = [TableRow([r["agent"], r["entry"], r["task_type"] or "all"], [cell(r) for _, _, cell in COLUMNS],
                     {"run": run.label, "agent": r["agent"], "entry": r["entry"], "task-type": r["task_type"]},
                     sub=bool(r["task_type"]), errors=bool(r.get("errors")))
            for r in _sorted_rows(run)]
    return Table(f"results-{_slug(run.label)}", ["agent", "entry", "task type"],
                 [("", [(key, title) for key, title, _ in COLUMNS])], rows, links=True)


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


def _md_row(cells: list[str]) -> str:
    """A Markdown table row; markup in a cell (an error message, say) shows as text."""
    return "| " + " | ".join(html.escape(c, quote=False).replace("|", "\\|") for c in cells) + " |"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


# ---- plots --------------------------------------------------------------------------------------
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
                           "Success rate by entry and agent"))
    if groups:
        plots.append(_save(_per_entry_figure(entries, labelled, groups, "score"), folder / "scores.png",
                           "Score distribution by entry and agent (box: quartiles; dots: episodes)"))
        plots.append(_save(_per_entry_figure(entries, labelled, groups, "turns"), folder / "turns.png",
                           "Turns per episode by entry and agent"))
    curves = {label: rows for run in runs for label, rows in run.curves.items()}
    if curves:
        plots.append(_save(_curves_figure(curves), folder / "curves.png",
                           "Learning curves of the training runs in the folder (metrics.jsonl)"))
    return plots


Series = list[tuple[str, Any, str, str]]  # (legend label, colour, run label, agent)


def _save(fig: Any, path: Path, title: str) -> dict[str, str]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
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


# ---- the viewer's data --------------------------------------------------------------------------
def _cap(value: Any) -> Any:
    """`value` with long strings and lists cut, so that one huge prompt cannot bloat the report."""
    if isinstance(value, str):
        return value if len(value) <= TEXT_CAP else \
            value[:TEXT_CAP] + f"\n… [{len(value) - TEXT_CAP:,} more characters cut by the report]"
    if isinstance(value, list):
        kept = [_cap(v) for v in value[:LIST_CAP]]
        return kept if len(value) <= LIST_CAP else [*kept, f"… [{len(value) - LIST_CAP:,} more items]"]
    if isinstance(value, dict):
        return {k: _cap(v) for k, v in value.items()}
    return value


def _image(source: Path, folder: Path) -> str | None:
    """Bring an episode image into the report (a hard link, else a copy) and return its relative
    path; None if the file is missing. Names are content hashes (turngym.trajectory), so a name
    already there is the same picture, from this run or another."""
    if not source.is_file():
        return None
    target = folder / source.name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(source, target)
    return f"{folder.name}/{source.name}"


def _turn_view(turn: dict[str, Any], actions: Any, base: Path, images: Path) -> dict[str, Any]:
    """One turn for the viewer; `actions` are the admissible actions the agent saw (the previous
    step's info, or reset's), not the ones in this turn's info, which are the next turn's."""
    info = dict(turn.get("info") or {})
    view = {"text": _cap(turn.get("text", "")), "action": _cap(turn.get("action", "")),
            "reward": turn.get("reward", 0.0), "valid": info.pop("valid", True), "error": info.pop("error", None),
            "image": _image(base / turn["image"], images) if turn.get("image") else None,
            "actions": _cap(actions or []), "extras": _cap(turn.get("extras") or {}), "tokens": {}}
    for key in ("turn", "task_id", "instruction", "actions"):  # shown once per episode, or with the next turn
        info.pop(key, None)
    view["info"] = _cap(info)
    for key, name in (("prompt_ids", "prompt"), ("completion_ids", "completion")):
        if turn.get(key):
            view["tokens"][name] = len(turn[key])
    if turn.get("logprobs"):
        view["tokens"]["log-prob"] = round(float(sum(turn["logprobs"])), 4)
    return view


def _episode_view(record: dict[str, Any], file: Path, images: Path) -> dict[str, Any]:
    meta = record.get("meta") or {}
    keep = ("env_id", "task_id", "seed", "instruction", "success", "score", "score_parts", "terminated", "truncated",
            "final_text")
    turns, actions = [], (record.get("reset_info") or {}).get("actions")
    for turn in record.get("turns", []):
        turns.append(_turn_view(turn, actions, file.parent, images))
        actions = (turn.get("info") or {}).get("actions")
    return {**{key: _cap(record.get(key)) for key in keep},
            "meta": _cap({k: meta.get(k) for k in ("agent", "entry", "index", "split", "task_type", "env_kwargs",
                                                   "seconds")}),
            "error": _cap(meta.get("error")), "turns": turns}


def _error_line(error: dict[str, Any] | None) -> str | None:
    if error is None:
        return None
    return f"{error.get('type', 'Error')}: {error.get('message', '')}".splitlines()[0]


def write_episodes(runs: list[Run], out: Path) -> list[dict[str, Any]]:
    """Write the viewer's data: `data/episodes/<id>.js` (one episode each, loaded on demand through
    a script tag, the one way to load local data from file://) and `data/index.js` (the list the
    viewer picks from); returns that list, one summary per episode, in run, agent, entry, index order."""
    listing = []
    for run in runs:
        for file in run.files:
            for line in file.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                record = json.loads(line)
                meta = record.get("meta") or {}
                number = len(listing)
                listing.append({"id": number, "run": run.label, "agent": meta.get("agent", file.parent.parent.name),
                                "entry": meta.get("entry", file.parent.name), "index": meta.get("index", file.stem),
                                "task_id": record.get("task_id", ""), "task_type": meta.get("task_type", ""),
                                "success": bool(record.get("success")), "score": float(record.get("score") or 0.0),
                                "turns": len(record.get("turns", [])), "error": _error_line(meta.get("error"))})
                view = _episode_view(record, file, out / "images")
                atomic_write_bytes(out / "data" / "episodes" / f"{number}.js",
                                   f"turngymEpisode({number}, {_js(view)});\n".encode())
    # Files come in folder order (agent slugs); list them in the order of the run's agents and entries.
    order = {run.label: (k, run.agents, run.entries) for k, run in enumerate(runs)}

    def key(e: dict[str, Any]) -> tuple[int, int, int, int, str]:
        k, agents, entries = order[e["run"]]
        index = str(e["index"])
        return (k, agents.index(e["agent"]) if e["agent"] in agents else len(agents),
                entries.index(e["entry"]) if e["entry"] in entries else len(entries), len(index), index)

    listing.sort(key=key)
    data = {"runs": [run.label for run in runs], "episodes": listing}
    atomic_write_bytes(out / "data" / "index.js", f"window.TURNGYM_REPORT = {_js(data)};\n".encode())
    return listing


def _js(value: Any) -> str:
    # ASCII-only JSON is valid JavaScript whatever encoding the browser assumes for the file.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, default=str)


# ---- report.md ----------------------------------------------------------------------------------
def _markdown(runs: list[Run], infos: list[dict[str, Any]], tables: list[Table], plots: list[dict[str, str]],
              episodes: list[dict[str, Any]]) -> list[str]:
    overall, summary, *details = tables
    lines = [f"# {_title(runs)}", ""]
    lines += [f"- **{run.label}** (`{run.path}`): suite {info['suite']} v{info['version']}, "
              f"agents {', '.join(run.agents)}, {len(run.entries)} entries, {info['episodes']} episodes"
              + (f", {info['errors']} with errors" if info["errors"] else "")
              for run, info in zip(runs, infos, strict=True)]
    lines += ["", "Open `index.html` (from disk, no server needed) to step through the episodes.", "",
              "## Overall (mean over entries)", "", *overall.markdown(), "",
              "## Success · mean score by entry and task type", "", *summary.markdown()]
    for run, table in zip(runs, details, strict=True):
        lines += ["", f"## Results: {run.label}", "", *table.markdown()]
    lines += ["", "## Plots", ""]
    lines += [line for plot in plots for line in (f"![{plot['title']}]({plot['file']})", "")]
    failed = [e for e in episodes if e["error"] is not None]
    if failed:
        lines += ["## Episodes with errors", "", "| run | agent | entry | episode | error |", "|---|---|---|---:|---|"]
        lines += [_md_row([e["run"], e["agent"], e["entry"], str(e["index"]), e["error"]]) for e in failed]
        lines.append("")
    return lines
