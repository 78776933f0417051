"""Questions in MMLongBench-Doc's schema, computed from the fact base rather than from the text.

Each answer's fact is checked against the PDF's extracted text before the question is emitted, so a
question never cites a page its evidence did not land on.
"""

from __future__ import annotations

import math
from typing import Any

from turngym.envs.draw import Draw
from turngym.envs.longdoc.facts import NOT_ANSWERABLE, SOURCES, Fact, cap, format_value, norm, slug
from turngym.envs.longdoc.vocab import DOC_TYPE_NAMES, vocabulary
from turngym.envs.longdoc.world import World
from turngym.envs.longdoc.writer import Writer


class Asker:
    """Questions computed from the fact base and checked against the PDF's extracted text."""

    def __init__(self, d: Draw, world: World, writer: Writer, facts: list[Fact], texts: list[str],
                 doc_id: str) -> None:
        self.d, self.w, self.writer, self.facts, self.texts = d, world, writer, facts, texts
        self.full = " ".join(texts).lower()
        self.doc_id = doc_id
        self.by_key = {f.key: f for f in facts}
        self.t = vocabulary()["questions"]
        self.metric_facts = [f for f in facts if f.key in world.meta]

    def on_page(self, text: str, page: int) -> bool:
        return 1 <= page <= len(self.texts) and norm(text) in self.texts[page - 1]

    def record(self, question: str, answer: str, facts: list[Fact], fmt: str) -> dict[str, Any] | None:
        """The question in MMLongBench-Doc's schema, or None when a fact is not on its page (never emitted)."""
        if not all(self.on_page(f.text, f.page) for f in facts):
            return None
        sources = {f.source for f in facts}
        return {"doc_id": self.doc_id, "doc_type": DOC_TYPE_NAMES[self.w.kind], "question": cap(question),
                "answer": answer, "evidence_pages": sorted({f.page for f in facts}),
                "evidence_sources": [s for s in SOURCES if s in sources], "answer_format": fmt}

    def words(self, **values: str) -> dict[str, str]:
        return {"org": self.w.org, "doc": self.w.spec["doc"], "since": self.w.spec["since"], **values}

    # --- single page -------------------------------------------------------------------------------

    def single(self) -> dict[str, Any] | None:
        kinds = ["metric"] * 5 + ["person"] * 2 + ["person_city", "founded", "hq", "since", "section_title",
                                                   "section_page", "cover_date", "chart_max"]
        kind = self.d.pick(kinds)
        q = getattr(self, f"q_{kind}")()
        if q is None:
            return None
        question, fact, answer, fmt = q
        # The check the brief asks for in code: the answer's fact is printed on its evidence page.
        if not (self.on_page(fact.text, fact.page) and self.on_page(answer, fact.page)):
            return None
        return self.record(question, answer, [fact], fmt)

    def template(self, kind: str, **values: str) -> str:
        return self.d.pick(self.t["single"][kind]).format(**self.words(**values))

    def q_metric(self) -> tuple[str, Fact, str, str] | None:
        if not self.metric_facts:
            return None
        by_source: dict[str, list[Fact]] = {}
        for f in self.metric_facts:
            by_source.setdefault(f.source, []).append(f)
        fact = self.d.pick(by_source[self.d.pick(sorted(by_source))])
        metric, item, period = self.w.meta[fact.key]
        fmt = self.w.metric_spec(metric)["format"]
        q = self.template("metric", what=self.w.what(metric, item), when=self.w.when(period))
        return q, fact, fact.text, "Int" if fmt == "int" else "Float"

    def q_person(self) -> tuple[str, Fact, str, str] | None:
        roles = [r for r in self.w.people if f"role_{slug(r)}" in self.by_key]
        if not roles:
            return None
        role = self.d.pick(roles)
        fact = self.by_key[f"role_{slug(role)}"]
        return self.template("person", role=role), fact, fact.text, "Str"

    def q_person_city(self) -> tuple[str, Fact, str, str] | None:
        facts = [f for f in self.facts if f.key.startswith("base_")]
        if not facts:
            return None
        fact = self.d.pick(facts)
        name = next(n for n in self.w.people.values() if f"base_{slug(n)}" == fact.key)
        return self.template("person_city", name=name), fact, fact.text, "Str"

    def q_founded(self) -> tuple[str, Fact, str, str] | None:
        fact = self.by_key.get("founded")
        return (self.template("founded"), fact, fact.text, "Int") if fact else None

    def q_hq(self) -> tuple[str, Fact, str, str] | None:
        fact = self.by_key.get("hq")
        return (self.template("hq"), fact, fact.text, "Str") if fact else None

    def q_since(self) -> tuple[str, Fact, str, str] | None:
        facts = [f for f in self.facts if f.key.startswith("since_")]
        if not facts:
            return None
        fact = self.d.pick(facts)
        item = next(i for i in self.w.items if f"since_{slug(i)}" == fact.key)
        return self.template("since", the_item=self.w.the(item)), fact, fact.text, "Int"

    def q_section_title(self) -> tuple[str, Fact, str, str] | None:
        fact = self.d.pick([f for f in self.facts if f.key.startswith("section_")])
        return self.template("section_title", page=str(fact.page)), fact, fact.text, "Str"

    def q_section_page(self) -> tuple[str, Fact, str, str] | None:
        headings = [h for h, _ in self.writer.sections]
        fact = self.d.pick([f for f in self.facts if f.key.startswith("section_")])
        if headings.count(fact.text) != 1:
            return None
        return self.template("section_page", heading=fact.text), fact, str(fact.page), "Int"

    def q_cover_date(self) -> tuple[str, Fact, str, str] | None:
        fact = self.by_key["date"]
        return self.template("cover_date"), fact, fact.text, "Str"

    def q_chart_max(self) -> tuple[str, Fact, str, str] | None:
        if not self.writer.bars:
            return None
        chart = self.d.pick(self.writer.bars)
        ranked = sorted(chart.values.items(), key=lambda kv: -kv[1])
        if ranked[0][1] == ranked[1][1]:
            return None
        s = self.w.metric_spec(chart.metric)
        fact = self.by_key[f"{chart.metric}_{slug(ranked[0][0])}_{slug(chart.period)}"]
        q = self.template("chart_max", label=s["label"], when=self.w.when(chart.period), noun=s["noun"])
        return q, fact, ranked[0][0], "Str"

    # --- cross page --------------------------------------------------------------------------------

    def groups(self, additive: bool = False) -> list[list[Fact]]:
        """Quantity facts of one (metric, period), one per item, printed on at least two pages."""
        out: dict[tuple[str, str], list[Fact]] = {}
        for f in self.metric_facts:
            metric, _, period = self.w.meta[f.key]
            s = self.w.metric_spec(metric)
            if not s["pie"] and (s["additive"] or not additive):
                out.setdefault((metric, period), []).append(f)
        return [g for _, g in sorted(out.items()) if len({f.page for f in g}) >= 2]

    def cross(self) -> dict[str, Any] | None:
        kind = self.d.pick(["compare", "sum", "diff", "list", "count"])
        groups = self.groups(additive=kind in ("sum", "diff"))
        if not groups:
            return None
        group = self.d.pick(groups)
        metric, _, period = self.w.meta[group[0].key]
        s = self.w.metric_spec(metric)
        item = {f.key: self.w.meta[f.key][1] for f in group}
        base = self.words(label=s["label"], noun=s["noun"], nouns=s["nouns"], when=self.w.when(period))
        template = self.d.pick(self.t["cross"][kind])
        if kind in ("compare", "sum", "diff"):
            a = self.d.pick(group)
            others = [f for f in group if f.page != a.page and f.value != a.value]
            if not others:
                return None
            b = self.d.pick(others)
            if kind == "diff" and a.value < b.value:
                a, b = b, a
            names = {"a": item[a.key], "b": item[b.key], "the_a": self.w.the(item[a.key]),
                     "the_b": self.w.the(item[b.key]), "what_a": self.w.what(metric, item[a.key]),
                     "what_b": self.w.what(metric, item[b.key])}
            question = template.format(**base, **names)
            if kind == "compare":
                return self.record(question, item[max((a, b), key=lambda f: f.value).key], [a, b], "Str")
            total = a.value + b.value if kind == "sum" else a.value - b.value
            fmt = "Int" if s["format"] == "int" else "Float"
            return self.record(question, format_value(total, "int" if fmt == "Int" else "float"), [a, b], fmt)
        if len(group) < 3:
            return None
        if len({f.page for f in group}) > 4:
            # Too spread out to ask about all of them: ask about 3-4 named ones on 2-4 pages.
            group = self.d.sample(group, self.d.between(3, min(4, len(group))))
            if len({f.page for f in group}) < 2:
                return None
            names = [self.w.the(item[f.key]) for f in group]
            base["among"] = ", ".join(names[:-1]) + " and " + names[-1]
            template = self.d.pick(self.t["cross"][f"{kind}_among"])
        values = sorted({f.value for f in group})
        k = self.d.between(1, len(values) - 1)
        threshold = (values[k - 1] + values[k]) / 2
        threshold = math.floor(threshold) if s["format"] == "int" else math.floor(threshold * 10) / 10
        if not values[k - 1] < threshold < values[k]:
            return None
        above = sorted((f for f in group if f.value > threshold), key=lambda f: (f.page, item[f.key]))
        question = template.format(**base, threshold=format_value(threshold, s["format"]) + s["unit"])
        if kind == "count":
            return self.record(question, str(len(above)), group, "Int")
        if len(above) < 2:
            return None
        return self.record(question, str([item[f.key] for f in above]), group, "List")

    # --- unanswerable ------------------------------------------------------------------------------

    def unanswerable(self) -> dict[str, Any] | None:
        w, d = self.w, self.d
        kind = d.pick(["metric_period", "metric_item", "person"])
        if kind == "person":
            absent = d.pick(w.absent_people)
            question = d.pick(self.t["unanswerable"]["person"]).format(**self.words(name=absent))
        else:
            metric = d.pick(list(w.spec["metrics"]))
            if kind == "metric_period":
                absent = d.pick(w.absent_periods)
                item, period = d.pick(w.items), absent
            else:
                absent = d.pick(w.absent_items)
                item, period = absent, d.pick(w.periods)
            question = self.template("metric", what=w.what(metric, item), when=w.when(period))
        # The question must be about something the document never mentions.
        if absent.lower() in self.full:
            return None
        return self.record(question, NOT_ANSWERABLE, [], "None")

    def ask(self) -> list[dict[str, Any]]:
        d = self.d
        n = d.between(5, 10)
        n_none, n_cross = max(1, round(n / 5)), max(1, round(n / 3))
        plan = ["unanswerable"] * n_none + ["cross"] * n_cross + ["single"] * (n - n_none - n_cross)
        out: list[dict[str, Any]] = []
        for slot in plan:
            for attempt in range(60):
                # A document too short for a cross-page question gets a single-page one instead.
                kind = "single" if slot == "cross" and attempt >= 30 else slot
                q = getattr(self, kind)()
                if q is not None and all(q["question"] != o["question"] for o in out):
                    out.append(q)
                    break
        for _ in range(200):  # every document has at least five questions (the train split relies on it)
            if len(out) >= 5:
                break
            q = self.single()
            if q is not None and all(q["question"] != o["question"] for o in out):
                out.append(q)
        return d.shuffled(out)
