"""The episode viewer's data: one JavaScript file per episode and an index, images brought in.

Browsers block fetch() of local files, so the data are scripts: `data/index.js` lists the episodes
and `data/episodes/<id>.js` holds one episode each, loaded when it is picked, so that a run of
thousands of long episodes still opens at once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from turngym.apps.report.runs import Run
from turngym.rewards.voc import VALUE_KEYS, episode_voc
from turngym.trajectory import atomic_write_bytes

TEXT_CAP = 20_000  # characters kept of one text (an observation, a traceback) in the viewer
LIST_CAP = 200  # items kept of one list (admissible actions, say) in the viewer


def cap(value: Any) -> Any:
    """`value` with long strings and lists cut, so that one huge prompt cannot bloat the report, and
    NaN or infinite numbers (a diverged value estimate, say) as None, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value if len(value) <= TEXT_CAP else \
            value[:TEXT_CAP] + f"\n… [{len(value) - TEXT_CAP:,} more characters cut by the report]"
    if isinstance(value, list):
        kept = [cap(v) for v in value[:LIST_CAP]]
        return kept if len(value) <= LIST_CAP else [*kept, f"… [{len(value) - LIST_CAP:,} more items]"]
    if isinstance(value, dict):
        return {k: cap(v) for k, v in value.items()}
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
    view = {"text": cap(turn.get("text", "")), "action": cap(turn.get("action", "")),
            "reward": turn.get("reward", 0.0), "valid": info.pop("valid", True), "error": info.pop("error", None),
            "image": _image(base / turn["image"], images) if turn.get("image") else None,
            "actions": cap(actions or []), "extras": cap(turn.get("extras") or {}), "tokens": {}}
    for key in ("turn", "task_id", "instruction", "actions"):  # shown once per episode, or with the next turn
        info.pop(key, None)
    view["info"] = cap(info)
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
    return {**{key: cap(record.get(key)) for key in keep},
            "meta": cap({k: meta.get(k) for k in ("agent", "entry", "index", "split", "task_type", "env_kwargs",
                                                   "seconds")}),
            "error": cap(meta.get("error")), "turns": turns}


def _error_line(error: dict[str, Any] | None) -> str | None:
    if error is None:
        return None
    return f"{error.get('type', 'Error')}: {error.get('message', '')}".splitlines()[0]


def episode_vocs(record: dict[str, Any]) -> dict[str, float | None]:
    """VOC of each kind of per-turn value the episode carries (`turngym.rewards.voc.VALUE_KEYS`),
    None where it is NaN (JSON has no NaN); kinds it does not carry are absent."""
    out = {}
    for key in VALUE_KEYS:
        value = episode_voc(record, key)
        if value is not None:
            out[key] = None if math.isnan(value) else value
    return out


def write_episodes(runs: list[Run], out: Path) -> list[dict[str, Any]]:
    """Write the viewer's data: `data/episodes/<id>.js` (one episode each, loaded on demand through
    a script tag, the one way to load local data from file://) and `data/index.js` (the list the
    viewer picks from); returns that list, one summary per episode, in run, agent, entry, index order,
    with the VOC of its per-turn values (`episode_vocs`) for the tables."""
    listing = []
    for run in runs:
        for file in run.files:
            # (split on newlines only: splitlines() would also cut a record at a U+2028 inside its text)
            for line in file.read_text(encoding="utf-8").split("\n"):
                if not line.strip():
                    continue
                record = json.loads(line)
                meta = record.get("meta") or {}
                number = len(listing)
                listing.append({"id": number, "run": run.label, "agent": meta.get("agent", file.parent.parent.name),
                                "entry": meta.get("entry", file.parent.name), "index": meta.get("index", file.stem),
                                "task_id": cap(record.get("task_id", "")), "task_type": meta.get("task_type", ""),
                                "success": bool(record.get("success")), "score": cap(float(record.get("score") or 0.0)),
                                "turns": len(record.get("turns", [])), "error": cap(_error_line(meta.get("error"))),
                                "voc": episode_vocs(record)})
                view = _episode_view(record, file, out / "images")
                atomic_write_bytes(out / "data" / "episodes" / f"{number}.js",
                                   f"turngymEpisode({number}, {js(view)});\n".encode(), durable=False)
    # Files come in folder order (agent slugs); list them in the order of the run's agents and entries.
    order = {run.label: (k, run.agents, run.entries) for k, run in enumerate(runs)}

    def key(e: dict[str, Any]) -> tuple[int, int, int, int, str]:
        k, agents, entries = order[e["run"]]
        index = str(e["index"])
        return (k, agents.index(e["agent"]) if e["agent"] in agents else len(agents),
                entries.index(e["entry"]) if e["entry"] in entries else len(entries), len(index), index)

    listing.sort(key=key)
    data = {"runs": [run.label for run in runs], "episodes": listing}
    atomic_write_bytes(out / "data" / "index.js", f"window.TURNGYM_REPORT = {js(data)};\n".encode())
    return listing


def js(value: Any) -> str:
    # ASCII-only JSON is valid JavaScript whatever encoding the browser assumes for the file.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, default=str)
