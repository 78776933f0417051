"""Language-model agents against the baselines on every text-capable family: a real small model
(SmolLM2-135M-Instruct, `hf:smollm2`) writing its replies (generation mode, the compact prompt
style it gets by default) and scoring the env's proposed actions (`mode=score`), beside `random`
and the family's `heuristic`, on the first N frozen test tasks.

    .venv/bin/python bench/lm_agents.py [--episodes 10] [--families craft webshop] [--threads 1]
                                        [--agents random heuristic before generate score]
                                        [--temperature T] [--out runs/bench/lm_agents]

Columns: success rate, mean score, valid-action rate (turns the env accepted), mean turns, and
turns per second (turns over the seconds the episodes took, agent and env together; the model's
loading is not counted). `--agents ... before` adds the full prompt style SmolLM2 had before the
compact one (no example, prefill or resampling), the "before" of the comparison. Episodes are
kept under `--out/<family>/<agent>/` (rerunning with the same --episodes resumes; another count
needs another --out); `--out/results.json` holds the rows of every run into that folder (a rerun
replaces the rows it plays). A row whose agent does not exist for the family (a family without a
heuristic, say) or cannot be built (scoring mode not installed) is printed as skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import turngym  # noqa: F401  (registers the envs)
from turngym.agents.base import available_agents
from turngym.apps.harness import evaluate
from turngym.registry import env_class
from turngym.results import entry_row, load_records
from turngym.trajectory import atomic_write_json

console = Console(width=max(Console().width, 120))  # the table keeps its columns when piped

# family -> (env id, gym.make kwargs of its text mode)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "craft": ("turngym/Craft-v0", {"task": "wood_pickaxe", "action_mode": "skills", "image": False, "text_map": False}),
    "webshop": ("turngym/WebShop-v0", {"obs_mode": "text"}),
    "longdoc": ("turngym/LongDocVQA-v0", {"obs_mode": "text"}),
    "hopvqa": ("turngym/HopVQA-v0", {}),  # no text-only mode: the text names the question and the claims
}
BEFORE = {"prompt": "full", "prefill": "", "example": False, "resample": 0}  # the style before the compact one


def agents(model: str, temperature: float | None) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Each agent there is to play, by its short name: (label, spec, options)."""
    sampling = {} if temperature is None else {"temperature": temperature}
    return {"random": ("random", "random", {}), "heuristic": ("heuristic", "heuristic", {}),
            "before": (f"{model} full prompt (before)", f"hf:{model}", {**BEFORE, **sampling}),
            "generate": (f"{model} generate", f"hf:{model}", dict(sampling)),
            "score": (f"{model} score", f"hf:{model}", {"mode": "score", **sampling})}


def play(family: str, label: str, spec: str, options: dict[str, Any], episodes: int, out: Path) -> dict[str, Any]:
    """One agent on one family: its row of numbers, or a row saying why it was skipped."""
    env_id, kwargs = FAMILIES[family]
    folder = out / family / re.sub(r"[^A-Za-z0-9._-]+", "_", label)
    row: dict[str, Any] = {"family": family, "env_id": env_id, "env_kwargs": kwargs, "agent": label, "spec": spec,
                           "options": options, "episodes": episodes, "threads": torch.get_num_threads()}
    name = spec.partition(":")[0]
    if name not in available_agents(env_class(env_id)):
        return {**row, "skipped": f"no {name} agent for {env_id}"}
    try:
        results = evaluate(env_id, [spec], episodes, env_kwargs=kwargs, agent_options=options, out=folder,
                           images=False)
    except ImportError as exc:  # mode=score's module is not there (yet)
        return {**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    numbers = entry_row(results, spec)
    records = load_records(folder)
    turns = sum(len(r["turns"]) for r in records)
    seconds = sum(float(r["meta"].get("seconds") or 0.0) for r in records)
    return {**row, "success_rate": numbers["success_rate"], "mean_score": numbers["mean_score"],
            "valid_rate": 1.0 - numbers["invalid_rate"], "mean_turns": numbers["mean_turns"],
            "turns_per_s": turns / seconds if seconds else None, "errors": numbers["errors"]}


def table(rows: list[dict[str, Any]], title: str) -> Table:
    out = Table(title=title)
    for column in ("family", "agent", "success", "score", "valid", "turns", "turns/s", "errors"):
        out.add_column(column, justify="left" if column in ("family", "agent") else "right", no_wrap=True)
    for r in rows:
        if "skipped" in r:
            out.add_row(r["family"], r["agent"], "[dim]skipped[/dim]", "", "", "", "", "")
            continue
        speed = f"{r['turns_per_s']:.2f}" if r["turns_per_s"] is not None else "-"
        out.add_row(r["family"], r["agent"], f"{r['success_rate']:.0%}", f"{r['mean_score']:.2f}",
                    f"{r['valid_rate']:.0%}", f"{r['mean_turns']:.1f}", speed, str(r["errors"] or ""))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="frozen test tasks per family (default 10)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--model", default="smollm2", help="the hf: checkpoint (default smollm2)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature of the LM agents "
                        "(default: theirs, 1; 0 is greedy)")
    parser.add_argument("--agents", nargs="+", choices=list(agents("", None)),
                        default=["random", "heuristic", "generate", "score"],
                        help="which agents (default all but `before`, the full prompt style SmolLM2 had before)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/lm_agents"))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.episodes} test episodes each")
    rows = []
    for family in args.families:
        chosen = agents(args.model, args.temperature)
        for label, spec, options in (chosen[name] for name in args.agents):
            console.print(f"{family}: {label} ...")
            rows.append(play(family, label, spec, options, args.episodes, args.out))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    played = {(r["family"], r["agent"]) for r in rows}  # rows of other families or agents from earlier runs stay
    kept = [r for r in (json.loads(path.read_text())["rows"] if path.exists() else [])
            if (r["family"], r["agent"]) not in played]
    atomic_write_json(path, {"rows": kept + rows}, indent=2)
    everything = sorted(kept + rows, key=lambda r: list(FAMILIES).index(r["family"]))
    console.print(table(everything, "Language-model agents and baselines on the first test tasks (episodes and torch "
                                    "threads per row in results.json)"))
    for r in everything:
        if "skipped" in r:
            console.print(f"skipped {r['agent']} on {r['family']}: {r['skipped']}", markup=False)
    console.print(f"results.json and the episodes in {args.out}")


if __name__ == "__main__":
    main()
