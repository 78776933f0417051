"""Writes a document's content: what goes on which page, drawing facts from the world as it goes.

The writer decides the section plan and interleaves prose with tables, charts, figures and callouts;
the layout does the typesetting. Its record of sections and bar charts feeds the questions.
"""

from __future__ import annotations

import math
import re

import pymupdf

from turngym.envs.draw import Draw
from turngym.envs.longdoc.facts import Pending, cap, slug
from turngym.envs.longdoc.layout import (
    BODY,
    LEAD,
    PAGE_H,
    PAGE_W,
    TOP,
    X0,
    X1,
    Chart,
    Layout,
    Word,
    nice_top,
    split_words,
    text_width,
    wrap,
)
from turngym.envs.longdoc.vocab import DOC_TYPE_NAMES, vocabulary
from turngym.envs.longdoc.world import World

MAX_SECTIONS = 36  # rows that fit on the one contents page
FACT_SENTENCE = 0.12  # share of prose sentences that state a fact: the rest is context
CALLOUT = 0.05
EXTRA_VISUAL = 0.04  # chance of a table/chart/figure on top of the one every 2-4 pages
BOLD = {"helv": "hebo", "tiro": "tibo", "cour": "cobo"}
PALETTE = [(0.20, 0.42, 0.66), (0.85, 0.49, 0.18), (0.30, 0.62, 0.37), (0.75, 0.27, 0.30), (0.52, 0.40, 0.68),
           (0.55, 0.55, 0.55), (0.16, 0.63, 0.68), (0.80, 0.70, 0.25)]
GREY = (0.35, 0.35, 0.35)
LIGHT = (0.92, 0.94, 0.97)


class Writer:
    """Lays out one document: title page, contents, sections of prose and visuals."""

    def __init__(self, d: Draw, world: World, pages: int) -> None:
        self.d, self.w, self.pages = d, world, pages
        self.prose = vocabulary()["prose"]
        self.doc = pymupdf.open()
        for _ in range(pages):
            self.doc.new_page(width=PAGE_W, height=PAGE_H)
        self.lay = Layout(self.doc, world.spec["font"], world.spec["columns"])
        self.bold = BOLD[world.spec["font"]]
        self.tables = self.figures = 0
        self.bars: list[Chart] = []
        self.sections: list[tuple[str, int]] = []  # heading, first page (1-based)
        self.focus: str | None = None
        # A table, chart or figure every 2-4 pages (`gap`), cycling through the kinds.
        self.last_visual, self.gap = 1, d.between(2, 4)
        self.visuals = d.shuffled(["table", "bar", "line", "pie", "diagram", "orgchart", "roster", "table"])

    # --- words -------------------------------------------------------------------------------------

    def fill(self, template: str, facts: tuple[Pending, ...] = (), **values: str) -> list[Word]:
        """A filled template as words; fact placeholders are named in `values` as `\\x01i\\x02` marks."""
        w, d = self.w, self.d
        topics = d.sample(w.spec["topics"], 2)
        base = {"org": w.org, "doc": w.spec["doc"], "field": w.field, "topic": topics[0], "topic2": topics[1],
                "the_item": w.the(self.focus or d.pick(w.items)), "since": w.spec["since"]}
        return split_words(cap(template.format(**{**base, **values})), facts)

    def mark(self, i: int) -> str:
        return f"\x01{i}\x02"

    def fact_sentence(self) -> list[Word] | None:
        """A sentence stating one unplaced fact: mostly quantities, else a person or the organisation."""
        w, d = self.w, self.d
        roll = d.random()
        if roll < 0.72:
            for _ in range(12):
                metric = d.pick(list(w.spec["metrics"]))
                item = self.focus if self.focus and d.random() < 0.7 else d.pick(w.items)
                period = d.pick(w.periods)
                if w.free(metric, item, period):
                    p = w.metric(metric, item, period)
                    w.placed.add(p.key)
                    s = w.metric_spec(metric)
                    return self.fill(d.pick(self.prose["metric"]), (Pending(p.key, p.value, p.text, "Pure-text"),),
                                     what=w.what(metric, item), when=w.when(period), value=self.mark(0), unit=s["unit"])
            return None
        if roll < 0.92:
            free = [r for r in w.people if f"role_{slug(r)}" not in w.placed]
            if not free:
                return None
            role = d.pick(free)
            key = f"role_{slug(role)}"
            w.placed.add(key)
            fact = Pending(key, w.people[role], w.people[role], "Pure-text")
            return self.fill(d.pick(self.prose["person"]), (fact,), name=self.mark(0), role=role)
        kind = "founded" if roll < 0.96 else "hq"
        if kind in w.placed:
            return None
        w.placed.add(kind)
        value = w.founded if kind == "founded" else w.hq
        fact = Pending(kind, value, str(value), "Pure-text")
        return self.fill(d.pick(self.prose[kind]), (fact,), value=self.mark(0))

    def paragraph(self) -> bool:
        sentences = []
        for _ in range(self.d.between(3, 6)):
            fact = self.fact_sentence() if self.d.random() < FACT_SENTENCE else None
            sentences.append(fact or self.fill(self.d.pick(self.prose["filler"])))
        placed = self.lay.paragraph(sentences)
        # Facts in sentences dropped for lack of room were never printed: free their keys again.
        printed = {f.key for f in self.lay.facts}
        for sentence in sentences:
            for _, facts in sentence:
                for fact in facts:
                    if fact.key not in printed:
                        self.w.placed.discard(fact.key)
        return placed

    # --- pages -------------------------------------------------------------------------------------

    def title_page(self) -> None:
        w, lay = self.w, self.lay
        lay.start(0, 0)
        lay.canvas(0).draw_rect(pymupdf.Rect(0, 0, PAGE_W, 150), color=None, fill=PALETTE[self.d.index(len(PALETTE))])
        lay.text(X0, 230, [w.org], "helv", 15, 18, GREY)
        lines = [" ".join(x for x, _ in line) for line in wrap(split_words(w.title), X1 - X0, "hebo", 26)]
        lay.text(X0, 290, lines, "hebo", 26, 32)
        y = 290 + 32 * len(lines) + 20
        lay.text(X0, y, [DOC_TYPE_NAMES[w.kind].split(" / ")[0]], "helv", 13, 16, GREY)
        lay.text(X0, y + 40, [w.date], "helv", 13, 16)
        for key, value in (("title", w.title), ("organisation", w.org), ("date", w.date)):
            lay.record(Pending(key, value, value, "Layout"))

    def contents_page(self, plan: list[tuple[str, int]]) -> None:
        lay = self.lay
        lay.start(1, 1)
        lay.text(X0, TOP + 18, ["Contents"], "hebo", 20, 24)
        lines = []
        dot = text_width(".", "helv", 10.5)
        for heading, first in plan:
            room = X1 - X0 - text_width(f"{heading}  {first}", "helv", 10.5)
            lines.append(f"{heading} {'.' * max(3, int(room / dot) - 2)} {first}")
        lay.text(X0, TOP + 60, lines, "helv", 10.5, 17.5)

    def furniture(self) -> None:
        """Running header and the page number in the footer of every page after the title."""
        for n in range(2, self.pages + 1):
            self.lay.page = n - 1
            self.lay.text(X0, 40, [self.w.org], "helv", 8, 10, GREY)
            self.lay.canvas(n - 1).draw_line((X0, 46), (X1, 46), color=GREY, width=0.4)
            label = str(n)
            self.lay.text((PAGE_W - text_width(label, "helv", 9)) / 2, PAGE_H - 34, [label], "helv", 9, 11, GREY)
            self.lay.record(Pending(f"page_number_{n}", n, label, "Layout"))

    def plan_sections(self) -> list[tuple[str, str | None, int, int]]:
        """(heading, focus item or None, first page, last page) per section; pages are 0-based."""
        d, spec = self.d, self.w.spec
        content = self.pages - 2
        k = min(MAX_SECTIONS, max(1, round(content / d.uniform(2.5, 4.5))))
        lengths = d.shuffled([content // k + (1 if i < content % k else 0) for i in range(k)])
        for _ in range(k):
            i, j = d.index(k), d.index(k)
            if lengths[i] > 1:
                lengths[i] -= 1
                lengths[j] += 1
        n_items = max(k - len(spec["sections"]), d.between(0, min(3, k // 3)))
        fixed: list[tuple[str, str | None]] = [(h, None) for h in d.sample(spec["sections"], k - n_items)]
        pairs = [(t, item) for item in self.w.items for t in spec["item_sections"]]
        for template, item in d.shuffled(pairs)[:n_items]:
            at = 1 + d.index(max(1, len(fixed) - 1)) if len(fixed) > 1 else len(fixed)
            fixed.insert(at, (template.format(item=item), item))
        out, first = [], 2
        for (heading, item), n in zip(fixed, lengths, strict=True):
            out.append((heading, item, first, first + n - 1))
            first += n
        return out

    def section(self, index: int, heading: str, focus: str | None, first: int, last: int) -> None:
        lay, d = self.lay, self.d
        lay.start(first, last)
        lay.text(X0, TOP + 14, [heading], self.bold, 16, 20)
        lay.record(Pending(f"section_{index + 1}", heading, heading, "Layout"))
        lay.y = lay.top = TOP + 34
        self.focus = focus
        while True:
            due = lay.page - self.last_visual >= self.gap or d.random() < EXTRA_VISUAL
            placed = False
            if due:
                for _ in range(len(self.visuals)):
                    kind = self.visuals.pop(0)
                    self.visuals.append(kind)
                    if getattr(self, kind)():
                        placed, self.last_visual, self.gap = True, lay.page, d.between(2, 4)
                        break
                else:
                    self.last_visual = lay.page  # nothing fits or nothing is left to show: try on a later page
            if not placed and d.random() < CALLOUT:
                placed = self.callout()
            if not placed and not self.paragraph():
                return

    # --- visuals -----------------------------------------------------------------------------------

    def caption(self, rect_x: float, y: float, label: str, text: str, facts: tuple[Pending, ...]) -> float:
        """Caption lines at y (top); returns their height. Facts in it are recorded on this page."""
        words = split_words(f"{label}: {cap(text)}", facts)
        lines = wrap(words, self.lay.col_w, "helv", 8)
        self.lay.text(rect_x, y + 8, [" ".join(x for x, _ in line) for line in lines], "helv", 8, 10.5, GREY)
        return 10.5 * len(lines)

    def caption_height(self, label: str, text: str) -> float:
        return 10.5 * len(wrap(split_words(f"{label}: {text}"), self.lay.col_w, "helv", 8)) + 4

    def metric_table(self) -> bool:
        w, d, lay = self.w, self.d, self.lay
        for _ in range(6):
            metric = d.pick(list(w.spec["metrics"]))
            n_cols = d.between(2, 2 if lay.columns > 1 else min(4, len(w.periods)))
            start = d.index(len(w.periods) - n_cols + 1)
            periods = w.periods[start:start + n_cols]
            rows = [i for i in d.shuffled(w.items) if all(w.free(metric, i, p) for p in periods)]
            rows = rows[:d.between(3, 8)]
            if len(rows) < 3:
                continue
            s = w.metric_spec(metric)
            text = d.pick(self.prose["table_caption"]).format(label=s["label"], noun=s["noun"], nouns=s["nouns"])
            text = f"{cap(text)} ({s['header']})"
            header = [cap(s["noun"]), *periods]
            cells = [[(i, None), *((None, w.metric(metric, i, p)) for p in periods)] for i in rows]
            return self.draw_table(text, header, cells, "Table")
        return False

    def table(self) -> bool:
        return self.metric_table()

    def roster(self) -> bool:
        w, d = self.w, self.d
        free = [r for r in w.people if f"role_{slug(r)}" not in w.placed]
        if len(free) < 3:
            return False
        roles = d.sample(free, d.between(3, min(5, len(free))))
        cells = []
        for role in roles:
            name = w.people[role]
            cells.append([(None, Pending(f"role_{slug(role)}", name, name, "Table")), (role, None),
                          (None, Pending(f"base_{slug(name)}", w.base[name], w.base[name], "Table"))])
        text = d.pick(self.prose["roster_caption"]).format(org=w.org, doc=w.spec["doc"])
        return self.draw_table(cap(text), ["Name", "Role", "Based in"], cells, "Table")

    def draw_table(self, text: str, header: list[str], cells: list[list[tuple[str | None, Pending | None]]],
                   source: str) -> bool:
        """A ruled table with a header row; a cell is (plain text, None) or (None, fact)."""
        lay, row_h = self.lay, 16.0
        self.tables += 1
        label = f"Table {self.tables}"
        cap_h = self.caption_height(label, text)
        rect = lay.reserve(cap_h + row_h * (len(cells) + 1))
        if rect is None:
            self.tables -= 1
            return False
        for row in cells:
            for _, fact in row:
                if fact:
                    self.w.placed.add(fact.key)
                    lay.record(fact, source)
        self.caption(rect.x0, rect.y0, label, text, ())
        texts = [[t if fact is None else fact.text for t, fact in row] for row in cells]
        # Columns as wide as their longest cell, the font shrunk until they fit, the rest shared out.
        need = [max(text_width(t, "hebo", 8.5) for t in [header[c]] + [r[c] for r in texts]) + 8
                for c in range(len(header))]
        size = max(6.0, min(8.5, 8.5 * rect.width / sum(need)))
        spare = max(0.0, rect.width - sum(n * size / 8.5 for n in need)) / len(header)
        xs = [rect.x0]
        for n in need:
            xs.append(xs[-1] + n * size / 8.5 + spare)
        top = rect.y0 + cap_h
        page = self.doc[lay.page]
        shape = page.new_shape()
        shape.draw_rect(pymupdf.Rect(rect.x0, top, rect.x1, top + row_h))
        shape.finish(color=None, fill=LIGHT)
        for r in range(len(cells) + 2):
            shape.draw_line((rect.x0, top + r * row_h), (rect.x1, top + r * row_h))
        for x in xs:
            shape.draw_line((x, top), (x, top + row_h * (len(cells) + 1)))
        shape.finish(color=GREY, width=0.5, closePath=False)
        lay.commit(shape)
        for c in range(len(header)):
            lay.text(xs[c] + 4, top + 11.5, [header[c]], "hebo", size, row_h)
            lay.text(xs[c] + 4, top + row_h + 11.5, [row[c] for row in texts], "helv", size, row_h)
        return True

    def bar(self) -> bool:
        w, d = self.w, self.d
        for _ in range(6):
            metric, period = d.pick(list(w.spec["metrics"])), d.pick(w.periods)
            items = [i for i in d.shuffled(w.items) if w.free(metric, i, period)][:d.between(3, 4 + 2 * (
                self.lay.columns == 1))]
            if len(items) < 3 or any(c.metric == metric and c.period == period for c in self.bars):
                continue
            facts = [w.metric(metric, i, period) for i in items]
            return self.draw_chart("bar", metric, period, items, facts)
        return False

    def line(self) -> bool:
        w, d = self.w, self.d
        if w.spec["periods"] != "years":
            return False
        for _ in range(6):
            metric, item = d.pick(list(w.spec["metrics"])), d.pick(w.items)
            periods = [p for p in w.periods if w.free(metric, item, p)]
            if len(periods) >= 4:
                return self.draw_chart("line", metric, item, periods, [w.metric(metric, item, p) for p in periods])
        return False

    def pie(self) -> bool:
        w, d = self.w, self.d
        metric = w.spec["pie"]["key"]
        periods = [p for p in w.periods if w.free(metric, w.pie_items[0], p)]
        if not periods:
            return False
        period = d.pick(periods)
        return self.draw_chart("pie", metric, period, w.pie_items, [w.metric(metric, i, period) for i in w.pie_items])

    def draw_chart(self, kind: str, metric: str, subject: str, labels: list[str], facts: list[Pending]) -> bool:
        """A vector bar/line/pie chart; value labels are printed text, so they are the chart's facts."""
        w, d, lay = self.w, self.d, self.lay
        s = w.metric_spec(metric)
        when = w.when(subject) if kind != "line" else ""
        period_title = re.sub(r"^(in|on) ", "", when)
        template = d.pick(self.prose[f"{kind}_caption"])
        text = template.format(label=s["label"], noun=s["noun"], nouns=s["nouns"], period_title=period_title,
                               the_item=w.the(subject), first=labels[0], last=labels[-1])
        label = f"Figure {self.figures + 1}"
        plot_h = 150.0 if kind == "pie" else 170.0
        cap_h = self.caption_height(label, text)
        rect = lay.reserve(plot_h + cap_h)
        if rect is None:
            return False
        self.figures += 1
        for fact in facts:
            w.placed.add(fact.key)
            lay.record(fact, "Chart")
        page = self.doc[lay.page]
        shape = page.new_shape()
        values = [f.value for f in facts]
        if kind == "pie":
            self.draw_pie(shape, rect, labels, facts)
        else:
            self.draw_axes(shape, rect, kind, s["header"], labels, facts, plot_h)
        lay.commit(shape)
        self.caption(rect.x0, rect.y0 + plot_h, label, text, ())
        if kind == "bar":
            self.bars.append(Chart(metric, subject, lay.page + 1, dict(zip(labels, values, strict=True))))
        return True

    def draw_axes(self, shape: pymupdf.Shape, rect: pymupdf.Rect, kind: str, header: str, labels: list[str],
                  facts: list[Pending], plot_h: float) -> None:
        lay = self.lay
        left, right, top, bottom = rect.x0 + 34, rect.x1 - 6, rect.y0 + 22, rect.y0 + plot_h - 30
        vmax = nice_top(max(f.value for f in facts))
        lay.text(rect.x0, rect.y0 + 9, [header], "hebo", 7.5, 9)
        shape.draw_line((left, top - 4), (left, bottom))
        shape.draw_line((left, bottom), (right, bottom))
        shape.finish(color=GREY, width=0.7, closePath=False)
        for tick in (0.0, vmax / 2, vmax):
            y = bottom - (bottom - top) * tick / vmax
            t = f"{tick:g}"
            lay.text(left - 4 - text_width(t, "helv", 7), y + 2.5, [t], "helv", 7, 9, GREY)
            shape.draw_line((left - 2, y), (left, y))
        shape.finish(color=GREY, width=0.5, closePath=False)
        slot = (right - left) / len(labels)
        points = []
        for i, (name, fact) in enumerate(zip(labels, facts, strict=True)):
            cx = left + slot * (i + 0.5)
            y = bottom - (bottom - top) * fact.value / vmax
            if kind == "bar":
                shape.draw_rect(pymupdf.Rect(cx - slot * 0.28, y, cx + slot * 0.28, bottom))
                shape.finish(color=None, fill=PALETTE[i % len(PALETTE)])
            points.append(pymupdf.Point(cx, y))
            lay.text(cx - text_width(fact.text, "helv", 7) / 2, y - 3.5, [fact.text], "helv", 7, 9)
            # Alternate rows keep long category names from running into each other.
            low = 10 + 9 * (i % 2) if max(text_width(n, "helv", 7) for n in labels) > slot - 4 else 10
            lay.text(cx - text_width(name, "helv", 7) / 2, bottom + low, [name], "helv", 7, 9)
        if kind == "line":
            shape.draw_polyline(points)
            shape.finish(color=PALETTE[0], width=1.4, closePath=False)
            for p in points:
                shape.draw_circle(p, 2.2)
            shape.finish(color=PALETTE[0], fill=PALETTE[0])

    def draw_pie(self, shape: pymupdf.Shape, rect: pymupdf.Rect, labels: list[str], facts: list[Pending]) -> None:
        radius = min(58.0, rect.width * 0.2)
        c = pymupdf.Point(rect.x0 + radius + 8, rect.y0 + 12 + radius)
        angle = -90.0
        for i, fact in enumerate(facts):
            sweep = 3.6 * fact.value
            steps = max(2, int(sweep / 4) + 1)
            turns = [math.radians(angle + sweep * k / steps) for k in range(steps + 1)]
            arc = [pymupdf.Point(c.x + radius * math.cos(t), c.y + radius * math.sin(t)) for t in turns]
            shape.draw_polyline([c, *arc, c])
            shape.finish(color=(1, 1, 1), fill=PALETTE[i % len(PALETTE)], width=0.6, closePath=True)
            angle += sweep
        x = c.x + radius + 14
        for i, (name, fact) in enumerate(zip(labels, facts, strict=True)):
            y = rect.y0 + 20 + 15 * i
            shape.draw_rect(pymupdf.Rect(x, y - 6, x + 6, y))
            shape.finish(color=None, fill=PALETTE[i % len(PALETTE)])
            self.lay.text(x + 10, y, [f"{cap(name)}: {fact.text}"], "helv", 7.5, 9)

    def boxes(self, rect: pymupdf.Rect, top: list[str], children: list[list[str]]) -> None:
        """A box diagram: one box above, its children below, joined by elbow lines; lines are centred."""
        lay = self.lay
        shape = self.doc[lay.page].new_shape()
        bw = min(170.0, rect.width * 0.55)
        mid_x = (rect.x0 + rect.x1) / 2
        head = pymupdf.Rect(mid_x - bw / 2, rect.y0 + 6, mid_x + bw / 2, rect.y0 + 42)
        n = len(children)
        cw = (rect.width - 10 * (n - 1)) / n
        kids = [pymupdf.Rect(rect.x0 + i * (cw + 10), rect.y0 + 82, rect.x0 + i * (cw + 10) + cw, rect.y0 + 124)
                for i in range(n)]
        mid = rect.y0 + 62
        shape.draw_line(((head.x0 + head.x1) / 2, head.y1), ((head.x0 + head.x1) / 2, mid))
        for k in kids:
            shape.draw_line(((k.x0 + k.x1) / 2, mid), ((k.x0 + k.x1) / 2, k.y0))
        shape.draw_line(((kids[0].x0 + kids[0].x1) / 2, mid), ((kids[-1].x0 + kids[-1].x1) / 2, mid))
        shape.finish(color=GREY, width=0.8, closePath=False)
        for i, box in enumerate([head, *kids]):
            shape.draw_rect(box)
            shape.finish(color=PALETTE[0], fill=LIGHT if i else (0.85, 0.9, 0.97), width=0.8)
        lay.commit(shape)
        for box, lines in zip([head, *kids], [top, *children], strict=True):
            wrapped = [lines[0]] + [" ".join(x for x, _ in ln) for t in lines[1:]
                                    for ln in wrap(split_words(t), box.width - 6, "helv", 7)]
            y = (box.y0 + box.y1) / 2 - 9 * len(wrapped) / 2 + 7
            for j, t in enumerate(wrapped):
                font = "hebo" if j == 0 else "helv"
                lay.text((box.x0 + box.x1) / 2 - text_width(t, font, 7.5) / 2, y + 9 * j, [t], font, 7.5, 9)

    def diagram(self) -> bool:
        w, d, lay = self.w, self.d, self.lay
        items = [i for i in w.items if f"since_{slug(i)}" not in w.placed]
        if not items:
            return False
        item = self.focus if self.focus in items else d.pick(items)
        fact = w.since(item)
        text = d.pick(self.prose["diagram_caption"]).format(the_item=w.the(item), since=w.spec["since"],
                                                            value="\x010\x02")
        label = f"Figure {self.figures + 1}"
        rect = lay.reserve(130 + self.caption_height(label, text.replace("\x010\x02", fact.text)))
        if rect is None:
            return False
        self.figures += 1
        w.placed.add(fact.key)
        lay.record(fact, "Figure")
        topics = d.sample(w.spec["topics"], 2 if lay.columns > 1 else 3)
        self.boxes(rect, [item, cap(w.spec["noun"])], [[cap(t)] for t in topics])
        self.caption(rect.x0, rect.y0 + 130, label, text, (fact,))
        return True

    def orgchart(self) -> bool:
        w, d, lay = self.w, self.d, self.lay
        free = [r for r in w.people if f"role_{slug(r)}" not in w.placed]
        n = 3 if lay.columns > 1 else 4
        if len(free) < n:
            return False
        roles = free[:1] + d.sample(free[1:], n - 1)
        names = [w.people[r] for r in roles]
        text = d.pick(self.prose["orgchart_caption"]).format(org=w.org, name=names[0])
        label = f"Figure {self.figures + 1}"
        rect = lay.reserve(130 + self.caption_height(label, text))
        if rect is None:
            return False
        self.figures += 1
        for role, name in zip(roles, names, strict=True):
            key = f"role_{slug(role)}"
            w.placed.add(key)
            lay.record(Pending(key, name, name, "Figure"))
        self.boxes(rect, [names[0], roles[0]], [[name, role] for name, role in zip(names[1:], roles[1:], strict=True)])
        self.caption(rect.x0, rect.y0 + 130, label, text, ())
        return True

    def callout(self) -> bool:
        """A shaded box stating one quantity: a layout fact (its place on the page is the point)."""
        w, d, lay = self.w, self.d, self.lay
        for _ in range(8):
            metric, item, period = d.pick(list(w.spec["metrics"])), d.pick(w.items), d.pick(w.periods)
            if not w.free(metric, item, period):
                continue
            fact = w.metric(metric, item, period)
            s = w.metric_spec(metric)
            words = self.fill(d.pick(self.prose["metric"]), (fact,), what=w.what(metric, item), when=w.when(period),
                              value=self.mark(0), unit=s["unit"])
            lines = wrap(words, lay.col_w - 24, self.lay.font, BODY)
            rect = lay.reserve(30 + LEAD * len(lines))
            if rect is None:
                return False
            w.placed.add(fact.key)
            lay.record(fact, "Layout")
            lay.canvas(lay.page).draw_rect(rect, color=PALETTE[1], fill=(0.99, 0.95, 0.88), width=1.2)
            lay.text(rect.x0 + 12, rect.y0 + 16, [d.pick(self.prose["callout_title"])], "hebo", 9, 11, PALETTE[1])
            lay.text(rect.x0 + 12, rect.y0 + 30, [" ".join(x for x, _ in ln) for ln in lines], lay.font, BODY, LEAD)
            return True
        return False

    def write(self) -> bytes:
        plan = self.plan_sections()
        self.title_page()
        self.contents_page([(h, first + 1) for h, _, first, _ in plan])
        for i, (heading, focus, first, last) in enumerate(plan):
            self.sections.append((heading, first + 1))
            self.section(i, heading, focus, first, last)
        self.furniture()
        self.lay.flush()
        self.doc.set_metadata({"title": self.w.title, "author": self.w.org, "producer": "turngym longdoc",
                               "creator": "turngym longdoc"})
        return self.doc.tobytes(garbage=3, deflate=True, no_new_id=True)
