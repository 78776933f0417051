"""`turngym report`: run folders as a static HTML report with an episode viewer, and report.md.

A run folder is what `turngym run --out`, `turngym eval`, `turngym train --eval` and `turngym demo`
write (run.json, results.json, episodes/, and any training metrics.jsonl below it). The report
folder opens from disk (file://, no server) and can be moved or zipped: it holds index.html with its
CSS and JS, the plots as PNG, the episodes' images (hard-linked or copied) and the episode data as
JavaScript files.

    runs.py     reading a run folder
    tables.py   the tables (HTML and Markdown from one object)
    plots.py    the plots
    viewer.py   the episode viewer's data
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from turngym.apps.report.plots import write_plots
from turngym.apps.report.runs import Run, labels, load_run, run_info, title
from turngym.apps.report.tables import (
    Table,
    analysis_table,
    md_row,
    md_text,
    overall_table,
    parts_tables,
    results_table,
    summary_table,
    training_table,
)
from turngym.apps.report.viewer import LIST_CAP, TEXT_CAP, cap, write_episodes
from turngym.trajectory import atomic_write_bytes

__all__ = ["LIST_CAP", "TEXT_CAP", "cap", "load_run", "write_report"]

STATIC = ("report.css", "report.js")  # copied beside index.html


def write_report(run_dirs: list[Path], out: Path | None = None) -> tuple[Path, Path]:
    """Write the report of one run, or of several side by side, into `out` (default: RUN_DIR/report
    for one run; required for several); returns the paths of index.html and report.md."""
    if not run_dirs:
        raise ValueError("no run folder given: pass a folder that `turngym eval` (or run --out, train --eval, "
                         "demo) wrote")
    run_dirs = [Path(p) for p in run_dirs]
    if out is None:
        if len(run_dirs) > 1:
            raise ValueError("a report of several runs needs a folder of its own: pass --out DIR")
        out = run_dirs[0] / "report"
    runs = [load_run(path, label) for path, label in zip(run_dirs, labels(run_dirs), strict=True)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = write_episodes(runs, out)
    plots = write_plots(runs, episodes, out / "plots")
    tables = [overall_table(runs), summary_table(runs), *(results_table(run, episodes) for run in runs)]
    parts, training, analysis = parts_tables(runs), training_table(runs), analysis_table(runs)
    infos = [run_info(run, episodes) for run in runs]
    assets = resources.files("turngym.assets").joinpath("report")
    for name in STATIC:
        atomic_write_bytes(out / name, assets.joinpath(name).read_bytes())
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True).from_string(assets.joinpath("index.html").read_text())
    html_text = template.render(title=title(runs), runs=infos, tables=tables, parts=parts, training=training,
                                analysis=analysis, plots=plots, episodes=len(episodes))
    index, markdown = out / "index.html", out / "report.md"
    atomic_write_bytes(index, html_text.encode("utf-8"))
    lines = _markdown(runs, infos, tables, parts, training, analysis, plots, episodes)
    atomic_write_bytes(markdown, "\n".join(lines).encode("utf-8"))
    return index, markdown


def _markdown(runs: list[Run], infos: list[dict[str, Any]], tables: list[Table], parts: list[tuple[str, Table]],
              training: Table | None, analysis: Table | None, plots: list[dict[str, str]],
              episodes: list[dict[str, Any]]) -> list[str]:
    overall, summary, *details = tables
    lines = [f"# {md_text(title(runs))}", ""]
    lines += [f"- **{md_text(run.label)}** (`{run.path}`): suite {md_text(info['suite'])} v{info['version']}, "
              f"agents {md_text(', '.join(run.agents))}, {len(run.entries)} entries, {info['episodes']} episodes"
              + (f", {info['errors']} with errors" if info["errors"] else "")
              for run, info in zip(runs, infos, strict=True)]
    lines += ["", "Open `index.html` (from disk, no server needed) to step through the episodes.", "",
              "## Overall (mean over entries)", "", *overall.markdown(), "",
              "## Success · mean score by entry and task type", "", *summary.markdown()]
    for run, table in zip(runs, details, strict=True):
        lines += ["", f"## Results: {md_text(run.label)}", "", *table.markdown()]
    if any(col.startswith("voc-") for table in details for col, _ in table.columns):
        lines += ["", "VOC · *key*: the value-order correlation (Spearman's, of an episode's per-turn values "
                  "`extras[key]` with time; turngym.rewards.voc), mean over the episodes that carry such values; "
                  "n counts them, NaN those whose values cannot be ordered (constant, or fewer than two)."]
    if parts:
        lines += ["", "## Score parts by entry (mean over episodes)"]
        for entry, table in parts:
            lines += ["", f"### {md_text(entry)}", "", *table.markdown()]
    if training is not None:
        lines += ["", "## Training runs", "", *training.markdown(), "",
                  "The learning curves are in the plots below (`curves.png`)."]
    if analysis is not None:
        lines += ["", "## Training analysis", "", *analysis.markdown(), "",
                  "Over each run's training episodes (its analysis.json): how the agent died, how often each "
                  "reward term fired, and the furthest recipe step failed episodes reached."]
    lines += ["", "## Plots", ""]
    lines += [line for plot in plots for line in (f"![{md_text(plot['title'])}]({plot['file']})", "")]
    failed = [e for e in episodes if e["error"] is not None]
    if failed:
        lines += ["## Episodes with errors", "", "| run | agent | entry | episode | error |", "|---|---|---|---:|---|"]
        lines += [md_row([e["run"], e["agent"], e["entry"], str(e["index"]), e["error"]]) for e in failed]
        lines.append("")
    return lines
