"""`turngym reward-design` in the terminal: the reward-design loop (`turngym.rewards.design`) with a
progress bar, then a table of the versions.

    from turngym.apps.reward_design import design_command
    design_command("turngym/Craft-v0", "stone_pickaxe", "openai:MODEL@URL", iterations=3, out="runs/rd")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from turngym.console import progress_bar
from turngym.rewards.design import DesignStatus, Train, run_design


class ProgressStatus(DesignStatus):
    """A rich progress bar over the versions plus one printed line per version."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def start(self, total: int, completed: int) -> None:
        self.progress = progress_bar(console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("reward design", total=total, completed=completed)

    def update(self, description: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=description)

    def done(self, line: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)
            self.progress.console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def design_command(env_id: str, task: str | None, agent: str, *, iterations: int = 3,
                   out: str | Path = "runs/reward-design", episodes: int = 20, seed: int = 0,
                   env_kwargs: dict[str, Any] | None = None, agent_options: dict[str, Any] | None = None,
                   console: Console | None = None, train: Train | None = None) -> Path:
    """What `turngym reward-design` runs: `run_design` with a progress bar, then a table of the
    versions; returns the path of summary.json."""
    console = console or Console()
    versions = run_design(env_id, task, agent, iterations=iterations, out=out, env_kwargs=env_kwargs, seed=seed,
                          episodes=episodes, agent_options=agent_options, status=ProgressStatus(console),
                          train=train)
    table = Table(title=f"reward design: {env_id} {task or ''}")
    for column in ("version", "checks", "attempts", "success", "mean return", "code reward / turn"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for v in versions:
        r = v.result or {}
        table.add_row(f"v{v.k}", "ok" if v.ok else "failed", str(v.attempts),
                      *(f"{r[key]:.3g}" if isinstance(r.get(key), (int, float)) else "-"
                        for key in ("success_rate", "mean_return", "mean_code_reward_per_turn")))
    console.print(table)
    path = Path(out) / "summary.json"
    console.print(f"every version, its checks, chat and result are in {Path(out)}; the summary is {path}")
    return path
