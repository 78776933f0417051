"""What every training run writes: metrics (JSONL and TensorBoard) and resumable checkpoints.

A run lives in one folder: `config.json` (the resolved config, which `turngym train --config`
reads back), `metrics.jsonl` (one JSON object per update, appended and flushed, so
a crash loses at most the line being written), `tb/` (the same scalars for TensorBoard) and
`checkpoint.pt` (written atomically: a crash mid-write leaves the previous checkpoint whole).
`--resume` reloads the checkpoint and cuts `metrics.jsonl` back to the checkpoint's update, so the
curve has no duplicated or orphaned points.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from turngym.trajectory import atomic_write_bytes, atomic_write_json, jsonable


class Metrics:
    """Appends one row per update to `metrics.jsonl` and mirrors the numbers to TensorBoard."""

    def __init__(self, folder: str | Path, *, tensorboard: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used
            self.writer = SummaryWriter(str(self.folder / "tb"))

    def truncate(self, update: int) -> None:
        """Keep only the rows up to `update` (a resumed run rewrites what came after)."""
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("update", 0) <= update]
        atomic_write_bytes(self.path, "".join(r + "\n" for r in rows).encode())

    def log(self, row: dict[str, Any]) -> None:
        row = jsonable(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            step = int(row.get("env_steps", row.get("update", 0)))
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write_config(folder: str | Path, config: Any) -> Path:
    """`config` (a trainer config dataclass) as `FOLDER/config.json`, written atomically."""
    path = Path(folder) / "config.json"
    atomic_write_json(path, jsonable(asdict(config)), indent=1)
    return path


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save `state` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | Path, *, xlabel: str = "env steps",
                ylabel: str = "success rate", title: str = "") -> Path:
    """Learning curves (label -> (x, y)) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label, linewidth=1.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
