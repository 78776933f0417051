"""HopVQA's multi-hop questions as CLEVR-style functional programs over a scene's objects.

A query is a chain of hops; each hop is one sentence and a small program of typed steps whose output
(an object, a set of objects or a number) later hops build on, and the last hop yields the integer
answer. Steps are JSON-ready dicts `{"op": ..., "in": [earlier step indices], ...params}`, executed
by `execute`, so every hop's ground truth can be re-derived from the scene alone, and a hop's claim
is checked by `hop_value_matches`. `execute` refuses anything ambiguous (a "the X" that matches
several objects, a near-tie for nearest or a superlative); generate.py draws the chains and runs
each hop through it as it writes it, so a generated chain has exactly one reading.

`strict=True` (HopVQA-v1's queries) also refuses the readings that people could settle differently
from the rules (found by checking v0's frozen queries against their scene graphs): a size filter
that a container passes on containers' scale but not on the objects' (or the reverse) in a set of
both, "not in any container" over a set that holds a container (moot for a container), a side relation
with an object within `SIDE_MARGIN` of the anchor's edge, a superlative that the drawn areas and
the boxes' areas would settle differently (a star covers 30% of its box, a square all of it), and
a nearest object that is not also nearest edge to edge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from turngym.envs.hopvqa.scene import REF, Obj, Scene, drawn_area

STEP_TYPES: tuple[str, ...] = ("scene", "hop", "filter", "relate", "unique", "extreme", "count", "read",
                               "arithmetic")
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below", "inside", "nearest")
MARGIN = 0.1  # a nearest object or a superlative's winner must beat the runner-up by 10%
MAX_ANSWER = 99
SIDE_MARGIN = 8  # px at a 768-pixel image: an edge this close to the anchor's is on the line (strict)


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


def _beyond(obj: Obj, anchor: Obj, rel: str) -> float:
    """How far `obj`'s box lies beyond `anchor`'s along a side relation (negative: not beyond;
    image y grows downward)."""
    return {"left": anchor.box[0] - obj.box[2], "right": obj.box[0] - anchor.box[2],
            "above": anchor.box[1] - obj.box[3], "below": obj.box[1] - anchor.box[3]}[rel]


def related(obj: Obj, anchor: Obj, rel: str) -> bool:
    """Whether `obj` stands in `rel` to `anchor`: sides mean the whole box lies beyond the anchor's
    box along that axis; inside means held by the anchor container."""
    if rel in ("left", "right", "above", "below"):
        return _beyond(obj, anchor, rel) >= 0
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


def _gap(a: Obj, b: Obj) -> float:
    """The distance between two boxes' nearest edges (0 when they touch or overlap)."""
    dx = max(b.box[0] - a.box[2], a.box[0] - b.box[2], 0)
    dy = max(b.box[1] - a.box[3], a.box[1] - b.box[3], 0)
    return math.hypot(dx, dy)


def _nearest(objs: dict[int, Obj], ids: list[int], anchor: Obj, strict: bool) -> int:
    ax, ay = anchor.center
    dist = sorted((math.hypot(objs[i].center[0] - ax, objs[i].center[1] - ay), i) for i in ids if i != anchor.id)
    if not dist:
        raise ProgramError("Nothing to be nearest to the anchor.")
    if len(dist) > 1 and dist[1][0] <= dist[0][0] * (1 + MARGIN):
        raise ProgramError("Two objects are about equally near the anchor.")
    if strict and min((_gap(objs[i], anchor), i) for _, i in dist)[1] != dist[0][1]:
        raise ProgramError("The nearest object centre to centre is not the nearest edge to edge.")
    return dist[0][1]


def _check_sides(objs: dict[int, Obj], ids: list[int], anchor: Obj, rel: str, size: int) -> None:
    margin = SIDE_MARGIN * size / REF
    for i in ids:
        if i != anchor.id and abs(_beyond(objs[i], anchor, rel)) < margin:
            raise ProgramError(f"Object {i} is on the line: it is neither clearly {rel} of object {anchor.id} "
                               "nor clearly not.")


def _check_filter(objs: dict[int, Obj], ids: list[int], attr: str, value: Any) -> None:
    """Refuses a filter that the two readings of a container settle differently: "not in any
    container" with a container in the set, and a size class that a container has on containers'
    scale but not on the objects' (where every container is large) when the set mixes the two."""
    boxes = [objs[i] for i in ids if objs[i].is_container]
    if attr == "placement" and value == "loose" and boxes:
        raise ProgramError("Whether a container is in no container is moot: filter the containers out first.")
    if attr == "size" and len(boxes) < len(ids) and any((b.size == value) != (value == "large") for b in boxes):
        raise ProgramError("A container's size class is on containers' scale, not the objects': filter by kind first.")


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


def _run(objs: dict[int, Obj], step: dict, args: list[Any], inputs: dict, strict: bool, size: int) -> Any:
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
        if strict:
            _check_filter(objs, _as_set(args[0]), step["attr"], step["value"])
        return [i for i in _as_set(args[0]) if matches(objs[i], step["attr"], step["value"])]
    if op == "relate":
        ids, anchor = _as_set(args[0]), _as_instance(args[1], objs)
        if step["rel"] == "nearest":
            return _nearest(objs, ids, anchor, strict)
        if step["rel"] == "inside" and not anchor.is_container:
            raise ProgramError(f"Object {anchor.id} is a {anchor.category}, not a container.")
        if strict and step["rel"] != "inside":
            _check_sides(objs, ids, anchor, step["rel"], size)
        return [i for i in ids if i != anchor.id and related(objs[i], anchor, step["rel"])]
    if op == "unique":
        ids = _as_set(args[0])
        if len(ids) != 1:
            raise ProgramError(f"The description matches {len(ids)} objects, not exactly one.")
        return ids[0]
    if op == "extreme":
        ids, fn = _as_set(args[0]), step["fn"]
        if fn in ("largest", "smallest"):
            if not strict:
                return _winner([(objs[i].area, i) for i in ids], higher=fn == "largest")
            winner = _winner([(drawn_area(objs[i]), i) for i in ids], higher=fn == "largest")
            boxes = sorted((objs[i].area, i) for i in ids)
            if (boxes[-1] if fn == "largest" else boxes[0])[1] != winner:
                raise ProgramError(f"The {fn} by drawn area is not the {fn} by extent.")
            return winner
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


def execute(scene: Scene, steps: Sequence[dict], inputs: dict, strict: bool = False) -> Any:
    """The value of a hop's program: each step runs on the outputs of the steps its "in" names, and
    the last step's output is the hop's value. `inputs` maps earlier hop indices (int or str) to their
    values. Raises ProgramError when a step is ill-typed or its referent is ambiguous or missing, and
    with `strict` (HopVQA-v1) also where people could read it differently (see the module's doc)."""
    objs = {o.id: o for o in scene.objects}
    out: list[Any] = []
    for step in steps:
        ins = step.get("in", [])
        if any(not 0 <= i < len(out) for i in ins):
            raise ProgramError(f"Step {len(out)} reads a step that has not run yet.")
        out.append(_run(objs, step, [out[i] for i in ins], inputs, strict, scene.size))
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
