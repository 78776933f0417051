"""HopVQA's multi-hop questions as CLEVR-style functional programs over a scene's objects.

A query is a chain of hops; each hop is one sentence and a small program of typed steps whose output
(an object, a set of objects or a number) later hops build on, and the last hop yields the integer
answer. Steps are JSON-ready dicts `{"op": ..., "in": [earlier step indices], ...params}`, executed
by `execute`, so every hop's ground truth can be re-derived from the scene alone, and a hop's claim
is checked by `hop_value_matches`. `execute` refuses anything ambiguous (a "the X" that matches
several objects, a near-tie for nearest or a superlative); generate.py draws the chains and runs
each hop through it as it writes it, so a generated chain has exactly one reading.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from turngym.envs.hopvqa.scene import Obj, Scene

STEP_TYPES: tuple[str, ...] = ("scene", "hop", "filter", "relate", "unique", "extreme", "count", "read",
                               "arithmetic")
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below", "inside", "nearest")
MARGIN = 0.1  # a nearest object or a superlative's winner must beat the runner-up by 10%
MAX_ANSWER = 99


class ProgramError(ValueError):
    """A step cannot run on this scene: wrong input type, an ambiguous or empty referent."""


@dataclass(frozen=True)
class Hop:
    """One sentence of a query and the program behind it. `label` is an instance hop's printed label,
    kept so a claim can name the object by its label without the scene."""

    index: int
    text: str
    kind: str  # "instance" | "set" | "number"
    value: Any  # instance: an object id; set: a sorted list of ids; number: an int
    steps: tuple[dict, ...]
    label: str | None = None


@dataclass(frozen=True)
class Query:
    """The hops joined into one question, and the final integer answer (the last hop's number)."""

    question: str
    hops: tuple[Hop, ...]
    answer: int


# ---- execution ------------------------------------------------------------------------------------


def matches(obj: Obj, attr: str, value: Any) -> bool:
    """Whether `obj` passes a filter on one attribute."""
    if attr in ("category", "color", "size", "label"):
        return getattr(obj, attr) == value
    if attr == "labeled":
        return (obj.label is not None) == bool(value)
    if attr == "placement":  # containers themselves are neither loose nor contained
        return not obj.is_container and (obj.container is None) == (value == "loose")
    if attr == "kind":
        return obj.is_container == (value == "container")
    raise ProgramError(f"Unknown filter attribute {attr!r}; use one of category, color, size, label, labeled, "
                       "placement, kind.")


def related(obj: Obj, anchor: Obj, rel: str) -> bool:
    """Whether `obj` stands in `rel` to `anchor`: sides mean the whole box lies beyond the anchor's
    box along that axis (image y grows downward); inside means held by the anchor container."""
    if rel == "left":
        return obj.box[2] <= anchor.box[0]
    if rel == "right":
        return obj.box[0] >= anchor.box[2]
    if rel == "above":
        return obj.box[3] <= anchor.box[1]
    if rel == "below":
        return obj.box[1] >= anchor.box[3]
    if rel == "inside":
        return obj.container == anchor.id
    raise ProgramError(f"Unknown relation {rel!r}; use one of {', '.join(RELATIONS)}.")


def _winner(scores: list[tuple[float, int]], higher: bool) -> int:
    """The id with the strictly best score, best by more than MARGIN over the runner-up."""
    if len(scores) < 2:
        raise ProgramError("A superlative needs at least two candidates.")
    ranked = sorted(scores, reverse=higher)
    (best, winner), (second, _) = ranked[0], ranked[1]
    clear = best > second * (1 + MARGIN) if higher else second > best * (1 + MARGIN)
    if not clear:
        raise ProgramError("The superlative has no clear winner.")
    return winner


def _nearest(objs: dict[int, Obj], ids: list[int], anchor: Obj) -> int:
    ax, ay = anchor.center
    dist = sorted((math.hypot(objs[i].center[0] - ax, objs[i].center[1] - ay), i) for i in ids if i != anchor.id)
    if not dist:
        raise ProgramError("Nothing to be nearest to the anchor.")
    if len(dist) > 1 and dist[1][0] <= dist[0][0] * (1 + MARGIN):
        raise ProgramError("Two objects are about equally near the anchor.")
    return dist[0][1]


def _as_set(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise ProgramError(f"The step expects a set of objects, got {value!r}.")
    return value


def _as_instance(value: Any, objs: dict[int, Obj]) -> Obj:
    if isinstance(value, bool) or not isinstance(value, int) or value not in objs:
        raise ProgramError(f"The step expects an object id, got {value!r}.")
    return objs[value]


def _as_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProgramError(f"The step expects a number, got {value!r}.")
    return value


def _run(objs: dict[int, Obj], step: dict, args: list[Any], inputs: dict) -> Any:
    op = step["op"]
    if op == "scene":
        return sorted(objs)
    if op == "hop":
        k = step["hop"]
        if k not in inputs and str(k) not in inputs:
            raise ProgramError(f"The program reads hop {k}, which the inputs do not hold.")
        value = inputs[k] if k in inputs else inputs[str(k)]
        return list(value) if isinstance(value, (list, tuple)) else value
    if op == "filter":
        return [i for i in _as_set(args[0]) if matches(objs[i], step["attr"], step["value"])]
    if op == "relate":
        ids, anchor = _as_set(args[0]), _as_instance(args[1], objs)
        if step["rel"] == "nearest":
            return _nearest(objs, ids, anchor)
        if step["rel"] == "inside" and not anchor.is_container:
            raise ProgramError(f"Object {anchor.id} is a {anchor.category}, not a container.")
        return [i for i in ids if i != anchor.id and related(objs[i], anchor, step["rel"])]
    if op == "unique":
        ids = _as_set(args[0])
        if len(ids) != 1:
            raise ProgramError(f"The description matches {len(ids)} objects, not exactly one.")
        return ids[0]
    if op == "extreme":
        ids, fn = _as_set(args[0]), step["fn"]
        if fn in ("largest", "smallest"):
            return _winner([(objs[i].area, i) for i in ids], higher=fn == "largest")
        if fn == "most":
            cat = step.get("category")
            held: dict[int, int] = {i: 0 for i in ids if objs[i].is_container}
            if len(held) != len(ids):
                raise ProgramError("Only containers can hold the most of something.")
            for o in objs.values():
                if o.container in held and (cat is None or o.category == cat):
                    held[o.container] += 1
            winner = _winner([(n, i) for i, n in held.items()], higher=True)
            if held[winner] == 0:
                raise ProgramError("No container holds any of them.")
            return winner
        raise ProgramError(f"Unknown extreme {fn!r}; use largest, smallest or most.")
    if op == "count":
        return len(_as_set(args[0]))
    if op == "read":
        label = _as_instance(args[0], objs).label
        if label is None or not (label.isascii() and label.isdigit()):
            raise ProgramError(f"Object {args[0]} carries no printed number.")
        return int(label)
    if op == "arithmetic":
        a, b = _as_number(args[0]), _as_number(args[1])
        fn = step["fn"]
        if fn == "add":
            return a + b
        if fn == "multiply":
            return a * b
        if fn == "subtract":
            if a < b:
                raise ProgramError(f"{a} - {b} is negative.")
            return a - b
        raise ProgramError(f"Unknown arithmetic {fn!r}; use add, subtract or multiply.")
    raise ProgramError(f"Unknown step {op!r}; use one of {', '.join(STEP_TYPES)}.")


def execute(scene: Scene, steps: Sequence[dict], inputs: dict) -> Any:
    """The value of a hop's program: each step runs on the outputs of the steps its "in" names, and
    the last step's output is the hop's value. `inputs` maps earlier hop indices (int or str) to their
    values. Raises ProgramError when a step is ill-typed or its referent is ambiguous or missing."""
    objs = {o.id: o for o in scene.objects}
    out: list[Any] = []
    for step in steps:
        ins = step.get("in", [])
        if any(not 0 <= i < len(out) for i in ins):
            raise ProgramError(f"Step {len(out)} reads a step that has not run yet.")
        out.append(_run(objs, step, [out[i] for i in ins], inputs))
    if not out:
        raise ProgramError("The program has no steps.")
    return out[-1]


# ---- claims ---------------------------------------------------------------------------------------

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def _integers(text: str) -> list[float]:
    """The numbers in `text` ("7.0" is 7, as answer[7.0] is; "7.5" matches no integer), else its number words."""
    found = [float(t) for t in re.findall(r"-?\d+(?:\.\d+)?", text)]
    return [int(x) if x.is_integer() else x for x in found] or \
        [_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS]


def hop_value_matches(hop: Hop, claimed: str) -> bool:
    """Whether a claim states a hop's truth: an instance by its id or its label, a set by its size or
    its ids (any order), a number by its value. Anything unparseable is simply a wrong claim."""
    try:
        text = str(claimed).strip().strip(".!\"'` ")
        if not text:
            return False
        if hop.kind == "instance":
            label = (hop.label or "").lower()
            named = re.fullmatch(r"(?:.*\blabel(?:ed)?\s+)?[\"']?([^\"']+?)[\"']?", text.lower())
            if label and named is not None and named.group(1).strip() == label:
                return True
            if re.search(r"\blabel", text.lower()):  # named by a label: the object's own label, or wrong
                return False
            numbers = _integers(text)
            return len(numbers) == 1 and (numbers[0] == hop.value or (label.isdigit() and numbers[0] == int(label)))
        numbers = _integers(text)
        if hop.kind == "set":
            ids = sorted(hop.value)
            return numbers == [len(ids)] or ((len(numbers) > 1 or len(ids) == 1) and sorted(numbers) == ids)
        return numbers == [hop.value]
    except Exception:  # a claim comes from a model: never let its shape crash the episode
        return False
