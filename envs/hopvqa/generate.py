"""HopVQA query generation: draws a chain of hops over a scene, hop by hop, from a seeded `Draw`.

Each hop is written as a program (program.py's typed steps) and executed on the spot, so a hop whose
referent is ambiguous or empty, or whose number leaves 0..MAX_ANSWER, is redrawn rather than kept,
and a chain that comes out of `build_query` has exactly one reading. Wording is data:
assets/hopvqa/queries.yaml. The draws are frozen: changing their order or number changes every
task, which the fingerprints in assets/hopvqa/splits.yaml catch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from turngym.envs.draw import Draw
from turngym.envs.hopvqa.program import MAX_ANSWER, Hop, ProgramError, Query, execute, matches, related
from turngym.envs.hopvqa.scene import Obj, Scene

ATTEMPTS = 6  # fresh draws per hop before the whole chain gives up


@cache
def wording() -> dict[str, Any]:
    """assets/hopvqa/queries.yaml: phrasing templates for every step type."""
    return yaml.safe_load(resources.files("turngym.assets").joinpath("hopvqa/queries.yaml").read_text())


class _Steps:
    """A hop's program under construction."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def add(self, op: str, *ins: int, **params: Any) -> int:
        self.steps.append({"op": op, "in": list(ins), **params})
        return len(self.steps) - 1


@dataclass
class _Phrase:
    """An object phrase and the step that computes it."""

    text: str
    noun: str  # singular noun a later hop can mention it by ("star", "object", "container")
    step: int


# Attribute combinations that describe one object (unique) or a set (count, find all).
UNIQUE_ATTRS = (("category",), ("color", "category"), ("size", "category"), ("size", "color", "category"),
                ("color",), ("label", "category"), ("labeled", "category"))
SET_ATTRS = (("category",), ("color",), ("color", "category"), ("size", "category"), ("size",), ("labeled",),
             ("labeled", "category"), ("placement", "category"), ("size", "color"))
REL_SET_ATTRS = ((), ("category",), ("color",), ("size",), ("labeled",))


class _Chain:
    """Writes one query hop by hop, executing each hop's program as soon as it is written."""

    def __init__(self, scene: Scene, draw: Draw, strict: bool = False) -> None:
        self.scene, self.d, self.w, self.strict = scene, draw, wording(), strict
        self.objs = {o.id: o for o in scene.objects}
        self.hops: list[Hop] = []
        self.nouns: dict[int, str] = {}  # how later hops mention hop k

    # -- words --

    def say(self, templates: str | list[str], **values: str) -> str:
        return (templates if isinstance(templates, str) else self.d.pick(templates)).format(**values)

    def plural(self, noun: str) -> str:
        irregular = self.w["plurals"]
        if noun in irregular:
            return irregular[noun]
        return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")

    def noun_phrase(self, obj: Obj, attrs: Sequence[str], plural: bool = False) -> tuple[str, str]:
        """("small green star", "star") for obj's values of `attrs`; plural gives "small green stars"."""
        a = self.w["attributes"]
        words = [getattr(obj, k) for k in ("size", "color") if k in attrs]
        if "labeled" in attrs:
            words.append(a["labeled"])
        noun = obj.category if "category" in attrs else "object"
        text = " ".join([*words, self.plural(noun) if plural else noun])
        if "label" in attrs:
            text += " " + a["label"].format(value=obj.label)
        if "placement" in attrs:
            text += " " + self.d.pick(a["placement"]["loose" if obj.container is None else "contained"])
        return text, noun

    def add_filters(self, p: _Steps, start: int, obj: Obj, attrs: Sequence[str]) -> int:
        step = start
        if self.strict:  # the category first, so a size or placement filter sees one kind of object
            attrs = sorted(attrs, key=lambda k: k != "category")
        for k in attrs:
            if k == "labeled":
                step = p.add("filter", step, attr="labeled", value=True)
            elif k == "placement":
                step = p.add("filter", step, attr="placement", value="loose" if obj.container is None else "contained")
            else:
                step = p.add("filter", step, attr=k, value=getattr(obj, k))
        return step

    def usable(self, obj: Obj, attrs: Sequence[str]) -> bool:
        if "label" in attrs:  # a word label names an object; a printed number is what read asks for
            return obj.label is not None and not obj.label.isdigit()
        if "labeled" in attrs:
            return obj.label is not None
        if "placement" in attrs:
            return not obj.is_container
        return True

    def mention(self, k: int, pronoun: bool = True) -> str:
        """How the current hop refers to hop k: "it"/"them" for the hop just before, else by noun,
        with an ordinal when several earlier hops of the same kind share that noun."""
        m, hop, noun = self.w["mention"], self.hops[k - 1], self.nouns[k]
        if pronoun and hop.kind != "number" and k == len(self.hops) and self.d.random() < 0.6:
            return m["it"] if hop.kind == "instance" else m["them"]
        same = [j for j in self.nouns if self.hops[j - 1].kind == hop.kind and self.nouns[j] == noun]
        shown = self.plural(noun) if hop.kind == "set" else noun
        if len(same) > 1:
            return m["ordinal"].format(ord=m["ordinals"][same.index(k)], noun=shown)
        if hop.kind == "number":
            return m["number"].format(noun=noun)
        return self.say(m["that"] if hop.kind == "instance" else m["those"], noun=noun, nouns=shown)

    # -- object phrases --

    def unique(self, p: _Steps, pool: int, ids: list[int], clause: str = "", digit: bool = False) -> _Phrase:
        """"the small green star [clause]": one object of `ids` (the output of step `pool`) by the
        fewest-or-random attributes that single it out."""
        candidates = [i for i in ids if not digit or (self.objs[i].label or "").isdigit()]
        if not candidates:
            raise ProgramError("No object to describe.")
        obj = self.objs[self.d.pick(candidates)]
        for attrs in self.d.shuffled(UNIQUE_ATTRS):
            if self.usable(obj, attrs) and sum(all(matches(self.objs[i], k, v) for k, v in self.values(obj, attrs))
                                               for i in ids) == 1:
                text, noun = self.noun_phrase(obj, attrs)
                step = p.add("unique", self.add_filters(p, pool, obj, attrs))
                np = f"{text} {clause}".strip()
                return _Phrase(self.say(self.w["filter"]["unique"], np=np), noun, step)
        raise ProgramError("No description singles the object out.")

    def values(self, obj: Obj, attrs: Sequence[str]) -> list[tuple[str, Any]]:
        out = []
        for k in attrs:
            if k == "labeled":
                out.append((k, True))
            elif k == "placement":
                out.append((k, "loose" if obj.container is None else "contained"))
            else:
                out.append((k, getattr(obj, k)))
        return out

    def superlative(self, p: _Steps, pool: int, ids: list[int], clause: str = "") -> _Phrase:
        """"the largest star [clause]" over `ids`, filtered by one attribute of a random member."""
        if len(ids) < 2:
            raise ProgramError("Too few objects for a superlative.")
        obj = self.objs[self.d.pick(ids)]
        attrs = self.d.pick(((), ("category",), ("category",), ("color",), ("color", "category")))
        text, noun = self.noun_phrase(obj, attrs)
        fn = self.d.pick(("largest", "smallest"))
        step = p.add("extreme", self.add_filters(p, pool, obj, attrs), fn=fn)
        return _Phrase(self.say(self.w["extreme"][fn], np=f"{text} {clause}".strip()), noun, step)

    def instance(self, p: _Steps, src: int | None, digit: bool = False) -> _Phrase:
        """An object phrase, fresh (src None) or built on hop src's instance or set."""
        if src is None:
            scene = p.add("scene")
            everything = sorted(self.objs)
            mode = self.d.pick(("unique", "unique", "superlative", "nearest", "most"))
            if mode == "unique":
                return self.unique(p, scene, everything, digit=digit)
            if mode == "superlative":
                return self.superlative(p, scene, everything)
            if mode == "most":
                return self.most(p, scene)
            anchor = self.unique(p, scene, everything)
            return self.nearest(p, scene, self.objs[self.anchor_id(p, anchor)], anchor)
        hop = self.hops[src - 1]
        ref = self.mention(src)
        h = p.add("hop", hop=src)
        if hop.kind == "set":
            if len(hop.value) < 2:
                raise ProgramError("Too few objects for a superlative.")
            fn = self.d.pick(("largest", "smallest"))
            step = p.add("extreme", h, fn=fn)
            return _Phrase(self.say(self.w["extreme"][f"{fn}_of"], ref=ref), self.nouns[src], step)
        x = self.objs[hop.value]
        scene = p.add("scene")
        modes = ["nearest", "related"]
        if x.is_container:
            modes += ["inside", "inside"]
        mode = self.d.pick(modes)
        if mode == "nearest":
            return self.nearest(p, scene, x, _Phrase(ref, self.nouns[src], h))
        rel = "inside" if mode == "inside" else self.d.pick(("left", "right", "above", "below"))
        clause = self.say(self.w["relate"][rel], ref=ref)
        near = p.add("relate", scene, h, rel=rel)
        ids = [i for i in sorted(self.objs) if i != x.id and related(self.objs[i], x, rel)]
        if mode == "inside" and self.d.random() < 0.6:
            return self.superlative(p, near, ids, clause)
        return self.unique(p, near, ids, clause, digit=digit)

    def anchor_id(self, p: _Steps, phrase: _Phrase) -> int:
        return execute(self.scene, p.steps[: phrase.step + 1], self.inputs(), self.strict)

    def nearest(self, p: _Steps, scene: int, anchor: Obj, ref: _Phrase) -> _Phrase:
        """"the star nearest to {ref}": the kind comes from a random other object."""
        others = [i for i in sorted(self.objs) if i != anchor.id]
        obj = self.objs[self.d.pick(others)]
        attrs = self.d.pick((("category",), ("category",), ("color",), ("color", "category")))
        text, noun = self.noun_phrase(obj, attrs)
        step = p.add("relate", self.add_filters(p, scene, obj, attrs), ref.step, rel="nearest")
        return _Phrase(self.say(self.w["relate"]["nearest"], np=text, ref=ref.text), noun, step)

    @property
    def kind_noun(self) -> str:
        return self.w["attributes"]["kind"]["container"]

    def most(self, p: _Steps, scene: int) -> _Phrase:
        """"the container that holds the most stars" (or the box, when several boxes compete)."""
        boxes = [o for o in self.objs.values() if o.is_container]
        held = [o for o in self.objs.values() if o.container is not None]
        if len(boxes) < 2 or not held:
            raise ProgramError("Too few containers for a superlative.")
        kind = self.d.pick(held).category
        if all(b.category == boxes[0].category for b in boxes) and self.d.random() < 0.5:
            pool, noun = p.add("filter", scene, attr="category", value=boxes[0].category), boxes[0].category
        else:
            pool, noun = p.add("filter", scene, attr="kind", value="container"), self.kind_noun
        step = p.add("extreme", pool, fn="most", category=kind)
        return _Phrase(self.say(self.w["extreme"]["most"], np=noun, things=self.plural(kind)), noun, step)

    def objects(self, p: _Steps, src: int | None) -> tuple[str, str, str, int]:
        """(singular phrase, plural phrase, noun, step) of a set: filtered objects, optionally only
        those in a relation to an anchor (a fresh object, or hop src's instance)."""
        scene = p.add("scene")
        rel = anchor = None
        if src is not None:
            anchor = _Phrase(self.mention(src), self.nouns[src], p.add("hop", hop=src))
            x = self.objs[self.hops[src - 1].value]
        elif self.d.random() < 0.4:
            anchor = self.unique(p, scene, sorted(self.objs))
            x = self.objs[self.anchor_id(p, anchor)]
        if anchor is not None:
            rel = "inside" if x.is_container and self.d.random() < 0.5 else self.d.pick(("left", "right", "above",
                                                                                            "below"))
            pool = [o for o in self.objs.values() if o.id != x.id and related(o, x, rel)]
            options = REL_SET_ATTRS
        else:
            pool, options = list(self.objs.values()), SET_ATTRS
        seed = self.d.pick(pool) if pool else self.objs[self.d.pick(sorted(self.objs))]
        attrs = self.d.pick([a for a in options if self.usable(seed, a)])
        one, noun = self.noun_phrase(seed, attrs)
        many, _ = self.noun_phrase(seed, attrs, plural=True)
        step = self.add_filters(p, scene, seed, attrs)
        if anchor is not None:
            clause = self.say(self.w["relate"][rel], ref=anchor.text)
            one, many = f"{one} {clause}", f"{many} {clause}"
            step = p.add("relate", step, anchor.step, rel=rel)
        return one, many, noun, step

    # -- hops --

    def inputs(self) -> dict[int, Any]:
        return {h.index: h.value for h in self.hops}

    def commit(self, text: str, kind: str, p: _Steps, noun: str) -> int:
        value = execute(self.scene, p.steps, self.inputs(), self.strict)
        ok = {"instance": isinstance(value, int), "set": isinstance(value, list), "number": isinstance(value, int)}
        if not ok[kind]:
            raise ProgramError(f"The hop was meant to give a {kind}, got {value!r}.")
        if kind == "number" and not 0 <= value <= MAX_ANSWER:
            raise ProgramError(f"{value} is outside 0..{MAX_ANSWER}.")
        if kind == "set" and len(value) < 2:
            raise ProgramError("A set hop should gather at least two objects.")
        if kind == "number" and value == 0 and p.steps[-1]["op"] == "count" and self.d.random() < 0.6:
            raise ProgramError("Too many counts of nothing make dull answers.")
        index = len(self.hops) + 1
        label = self.objs[value].label if kind == "instance" else None
        self.hops.append(Hop(index, text, kind, value, tuple(p.steps), label))
        self.nouns[index] = noun
        return index

    def hop(self, want: str, src: int | None) -> int:
        """Writes one hop that produces `want` from hop src (None: from the scene alone), retrying
        fresh draws a few times."""
        for _ in range(ATTEMPTS):
            try:
                return self.try_hop(want, src)
            except ProgramError:
                continue
        raise ProgramError(f"No {want} hop found.")

    def try_hop(self, want: str, src: int | None) -> int:
        p, f = _Steps(), self.w["filter"]
        src_kind = None if src is None else self.hops[src - 1].kind
        if want == "instance":
            phrase = self.instance(p, src)
            return self.commit(self.say(f["find"], obj=phrase.text), "instance", p, phrase.noun)
        if want == "set":
            one, many, noun, _ = self.objects(p, src)
            return self.commit(self.say(f["find_set"], np=one, nps=many), "set", p, noun)
        nouns = self.w["mention"]["number_nouns"]
        if src_kind == "set":
            h = p.add("hop", hop=src)
            ref = self.mention(src)
            c = self.w["count"]
            if self.d.random() < 0.7:
                obj = self.objs[self.d.pick(self.hops[src - 1].value)]
                # "Among the small objects, how many are small?" says nothing: filter on something new.
                known = {s.get("attr") for s in self.hops[src - 1].steps}
                if any(s.get("rel") == "inside" for s in self.hops[src - 1].steps):
                    known.add("placement")
                attr = self.d.pick([a for a in ("color", "size", "labeled", "placement")
                                    if a not in known and self.usable(obj, (a,))] or [None])
                if attr is None:
                    raise ProgramError("The set's objects share every attribute it could be counted by.")
                step = self.add_filters(p, h, obj, (attr,))
                adj = self.noun_phrase(obj, (attr,))[0].removesuffix(" object").removeprefix("object ")
                p.add("count", step)
                return self.commit(self.say(c["set_filtered"], ref=ref, adj=adj), "number", p, nouns["count"])
            p.add("count", h)
            return self.commit(self.say(c["set"], ref=ref), "number", p, nouns["count"])
        if self.d.random() < 0.5:
            _, many, _, step = self.objects(p, src)
            p.add("count", step)
            return self.commit(self.say(self.w["count"]["scene"], nps=many), "number", p, nouns["count"])
        if src_kind == "instance" and (self.objs[self.hops[src - 1].value].label or "").isdigit() \
                and self.d.random() < 0.4:
            text, step = self.mention(src), p.add("hop", hop=src)
        else:
            phrase = self.instance(p, src, digit=True)
            text, step = phrase.text, phrase.step
        p.add("read", step)
        return self.commit(self.say(self.w["read"], obj=text), "number", p, nouns["read"])

    def arithmetic(self, a: int, b: int) -> int:
        """Combines two number hops with an operation whose result stays in 0..MAX_ANSWER."""
        va, vb = self.hops[a - 1].value, self.hops[b - 1].value
        if va < vb:
            a, b, va, vb = b, a, vb, va
        fns = ["subtract"] + (["add", "add"] if va + vb <= MAX_ANSWER else []) \
            + (["multiply"] if vb >= 2 and va * vb <= MAX_ANSWER else [])
        fn = self.d.pick(fns)
        p = _Steps()
        p.add("arithmetic", p.add("hop", hop=a), p.add("hop", hop=b), fn=fn)
        t, noun_a, noun_b = self.w["arithmetic"], self.nouns[a], self.nouns[b]
        numbers = [n for j, n in self.nouns.items() if self.hops[j - 1].kind == "number"]
        if noun_a == noun_b and numbers.count(noun_a) == 2:
            text = self.say(t[f"{fn}_pair"], nouns=self.plural(noun_a))
        else:
            text = self.say(t[fn], a=self.mention(a), b=self.mention(b))
        return self.commit(text, "number", p, self.w["mention"]["number_nouns"][fn])

    # -- chains --

    def thread(self, length: int, link: int | None = None) -> int:
        """`length` hops, each built on the one before (the first on `link`, or fresh), ending in a number."""
        src = link
        for j in range(length):
            if j == length - 1:
                want = "number"
            elif src is not None and self.hops[src - 1].kind == "set":
                want = "instance"
            else:
                want = self.d.pick(("instance", "instance", "instance", "set"))
            src = self.hop(want, src)
        return src

    def build(self, n: int) -> None:
        shapes: list[tuple[int, ...]] = [(n,)]
        shapes += [(a, n - 1 - a) for a in range(1, n - 1)]
        if n == 5:
            shapes.append((1, 1, 1))
        shape = self.d.pick(shapes[:1] * max(1, len(shapes) - 1) + shapes[1:])
        if len(shape) == 1:
            self.thread(n)
            return
        first = self.thread(shape[0])
        # The second thread may start from an object the first one found, as in "... above that box".
        found = [h.index for h in self.hops if h.kind == "instance"]
        link = self.d.pick(found) if found and self.d.random() < 0.5 else None
        second = self.thread(shape[1], link)
        total = self.arithmetic(first, second)
        if len(shape) == 3:
            self.arithmetic(total, self.thread(shape[2]))

    def question(self) -> str:
        parts = []
        for h in self.hops:
            text = h.text
            if 1 < h.index < len(self.hops) and self.d.random() < 0.4:
                text = f"{self.d.pick(self.w['connectors'])}, {text[0].lower()}{text[1:]}"
            parts.append(text)
        return " ".join(parts)


def build_query(scene: Scene, draw: Draw, hops: int, strict: bool = False) -> Query | None:
    """A chain of exactly `hops` hops (1-5) over `scene`, or None when this draw cannot make a valid one.
    `strict` (HopVQA-v1) also rejects every hop that people could read differently (program.py)."""
    if not 1 <= hops <= 5:
        raise ValueError(f"A query has 1 to 5 hops, not {hops}.")
    chain = _Chain(scene, draw, strict)
    try:
        chain.build(hops)
    except ProgramError:
        return None
    if len(chain.hops) != hops:
        return None
    last = chain.hops[-1]
    return Query(chain.question(), tuple(chain.hops), last.value)
