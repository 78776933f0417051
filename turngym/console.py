"""Terminal output shared by every layer: one progress bar for long jobs."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(**kwargs: Any) -> Progress:
    """A rich progress bar: description, bar, done/total and time left (`kwargs` go to Progress)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), **kwargs)
