"""Turn and Trajectory: the one record of an episode that rewards, trainers and the harness share.

On disk a trajectory file is JSONL, one trajectory per line. Images are written as PNG files in a
folder beside it (`runs.jsonl` -> `runs_images/`), named by content hash so that identical frames
are stored once and files from several runs never collide; each turn stores the relative path,
and so does the trajectory for its final observation's image (`final_image`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class Turn:
    """One turn: what the agent saw, what it did, and what came back."""

    text: str  # obs["text"] the agent acted on
    action: str
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # the info returned by step()
    image: np.ndarray | None = None  # obs["image"] the agent acted on, if the env has one
    prompt_ids: list[int] | None = None  # token ids of the prompt, for language-model agents
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None  # per completion token (or one per action for small policies)
    extras: dict[str, Any] = field(default_factory=dict)  # values, advantages, ... written by trainers


@dataclass
class Trajectory:
    """The turns of one episode plus its task, seed and outcome."""

    env_id: str
    task_id: str
    seed: int | None
    instruction: str = ""
    turns: list[Turn] = field(default_factory=list)
    success: bool = False
    score: float = 0.0
    score_parts: dict[str, Any] = field(default_factory=dict)
    terminated: bool = False
    truncated: bool = False
    final_text: str = ""  # the observation after the last action
    # its image: the frame a turn-by-turn image record lacks, and the last one a progress estimator
    # (GVL) sees; None when the env has no image or images were not recorded
    final_image: np.ndarray | None = None
    reset_info: dict[str, Any] = field(default_factory=dict)  # info from reset: the first turn's actions
    meta: dict[str, Any] = field(default_factory=dict)  # agent spec, env kwargs, errors, ...

    @property
    def total_reward(self) -> float:
        return float(sum(t.reward for t in self.turns))

    def __len__(self) -> int:
        return len(self.turns)


def jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays, tuples and non-str keys to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def png_bytes(image: np.ndarray) -> tuple[str, bytes]:
    """PNG-encode `image`; returns a content-hash file name and the bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    data = buf.getvalue()
    return hashlib.sha1(data).hexdigest()[:20] + ".png", data


def _load_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def images_dir(path: str | os.PathLike) -> Path:
    """Where the PNG images of a trajectory file live."""
    path = Path(path)
    return path.with_name(path.stem + "_images")


def trajectory_record(traj: Trajectory, image_folder: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A JSON-ready dict of `traj` whose images are referenced as `image_folder/<hash>.png`, and
    those PNG files' contents by name (for writers that are not where the files go: pool workers)."""
    images: dict[str, bytes] = {}

    def reference(image: np.ndarray | None) -> str | None:
        if image is None:
            return None
        name, data = png_bytes(image)
        images[name] = data
        return f"{image_folder}/{name}"

    record = {f.name: getattr(traj, f.name) for f in fields(traj) if f.name != "turns"}
    record["final_image"] = reference(traj.final_image)
    turns = []
    for turn in traj.turns:
        row = {f.name: getattr(turn, f.name) for f in fields(turn)}
        row["image"] = reference(turn.image)
        turns.append(row)
    record["turns"] = turns
    return jsonable(record), images


def save_images(images: dict[str, bytes], folder: Path) -> None:
    """Write PNG files by name into `folder`, skipping those already there (names are content hashes)."""
    for name, data in images.items():
        if not (folder / name).exists():
            atomic_write_bytes(folder / name, data)


def trajectory_to_json(traj: Trajectory, image_folder: Path) -> dict[str, Any]:
    """A JSON-ready dict of `traj`; its images are written into `image_folder`."""
    record, images = trajectory_record(traj, image_folder.name)
    save_images(images, image_folder)
    return record


def trajectory_from_json(record: dict[str, Any], base: Path, load_images: bool = True) -> Trajectory:
    """Inverse of `trajectory_to_json`; image paths are resolved against `base`. Records written
    before `final_image` existed load with it None."""

    def load(image: str | None) -> np.ndarray | None:
        return _load_png(base / image) if (image and load_images) else None

    turns = []
    for row in record.get("turns", []):
        row = dict(row)
        image = row.pop("image", None)
        turns.append(Turn(**row, image=load(image)))
    known = {f.name for f in fields(Trajectory)} - {"turns", "final_image"}
    return Trajectory(**{k: v for k, v in record.items() if k in known}, turns=turns,
                      final_image=load(record.get("final_image")))


def write_jsonl(path: str | os.PathLike, trajectories: Iterable[Trajectory]) -> Path:
    """Write trajectories to `path` atomically (a reader never sees a half-written file)."""
    path = Path(path)
    folder = images_dir(path)
    lines = [json.dumps(trajectory_to_json(t, folder), ensure_ascii=False) + "\n" for t in trajectories]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))
    return path


def iter_jsonl(path: str | os.PathLike, load_images: bool = True) -> Iterator[Trajectory]:
    """Read trajectories one by one (images as uint8 arrays unless `load_images=False`)."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield trajectory_from_json(json.loads(line), path.parent, load_images)


def read_jsonl(path: str | os.PathLike, load_images: bool = True) -> list[Trajectory]:
    """All trajectories of a file written by `write_jsonl`."""
    return list(iter_jsonl(path, load_images))


def atomic_write_json(path: str | os.PathLike, value: Any, **dumps: Any) -> None:
    """`json.dumps(value, **dumps)` written to `path` by `atomic_write_bytes` (durable)."""
    atomic_write_bytes(path, json.dumps(value, **dumps).encode())


def _file_mode() -> int:
    umask = os.umask(0o022)  # (reading the umask means setting it: put it back at once)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()  # what open() would give a new file in this process


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see the old file or the
    new one, never a part. `durable` also flushes it to the disk first (fsync), so a crash cannot
    leave an empty file behind: results and checkpoints want that; files rebuilt from them, such as a
    report's thousands of episode views, can skip its cost (about 1.6 ms a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp's file is private (0600); a result should read like any file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
