"""Typesetting onto pymupdf pages, kept apart from what is said so page geometry lives in one place.

Text is measured with the base-14 font metrics and wrapped here, and every fact is recorded with the
page it actually lands on, which is what lets the questions cite evidence pages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import pymupdf

from turngym.envs.longdoc.facts import Fact, Pending

PAGE_W, PAGE_H = 595.0, 842.0  # A4 in points
X0, X1, TOP, BOTTOM = 56.0, PAGE_W - 56.0, 72.0, PAGE_H - 64.0
GUTTER = 20.0
BODY, LEAD = 10.0, 13.5  # body font size and baseline distance
PARA_GAP = 7.0
BLOCK_GAP = 12.0


@lru_cache(maxsize=1 << 16)
def text_width(text: str, font: str, size: float) -> float:
    return pymupdf.get_text_length(text, fontname=font, fontsize=size)


Word = tuple[str, tuple[Pending, ...]]  # an unbreakable run of text and the facts printed in it


def split_words(text: str, facts: tuple[Pending, ...] = ()) -> list[Word]:
    """Split a filled template into words; `\\x01i\\x02` marks fact i, whose text is kept unbroken."""
    out: list[Word] = []
    for raw in text.split():
        found = tuple(facts[int(i)] for i in re.findall(r"\x01(\d+)\x02", raw))
        out.append((re.sub(r"\x01(\d+)\x02", lambda m: facts[int(m.group(1))].text, raw), found))
    return out


def wrap(words: list[Word], width: float, font: str, size: float) -> list[list[Word]]:
    lines: list[list[Word]] = [[]]
    used, space = 0.0, text_width(" ", font, size)
    for word in words:
        w = text_width(word[0], font, size)
        if lines[-1] and used + space + w > width:
            lines.append([])
            used = 0.0
        used += (space if lines[-1] else 0.0) + w
        lines[-1].append(word)
    return [line for line in lines if line]


def nice_top(vmax: float) -> float:
    step = 10 ** math.floor(math.log10(max(vmax, 1e-9)))
    return math.ceil(vmax * 1.12 / step) * step


class Layout:
    """Places blocks on pre-made pages, column by column, tracking the page each fact lands on."""

    def __init__(self, doc: pymupdf.Document, font: str, columns: int) -> None:
        self.doc, self.font, self.columns = doc, font, columns
        self.facts: list[Fact] = []
        self.pending: dict[int, pymupdf.Shape] = {}  # per page, the text set since its last drawing
        self.page = self.col = self.last = 0
        self.y = self.top = TOP
        self.col_w = (X1 - X0 - GUTTER * (columns - 1)) / columns

    @property
    def x(self) -> float:
        return X0 + self.col * (self.col_w + GUTTER)

    def record(self, pending: Pending, source: str | None = None) -> None:
        self.facts.append(Fact(pending.key, pending.value, pending.text, self.page + 1, source or pending.source))

    def start(self, page: int, last: int) -> None:
        self.page, self.last, self.col = page, last, 0
        self.y = self.top = TOP

    def advance(self) -> bool:
        """Move to the next column or page of the current section; False at its end."""
        if self.col + 1 < self.columns:
            self.col += 1
        elif self.page < self.last:
            self.page, self.col, self.top = self.page + 1, 0, TOP
        else:
            return False
        self.y = self.top
        return True

    def reserve(self, height: float) -> pymupdf.Rect | None:
        """A column-wide rect of `height` here or at the next column/page with room; None past the section."""
        if height > BOTTOM - TOP:
            return None
        state = (self.page, self.col, self.y, self.top)
        while self.y + height > BOTTOM:
            if not self.advance():
                self.page, self.col, self.y, self.top = state
                return None
        rect = pymupdf.Rect(self.x, self.y, self.x + self.col_w, self.y + height)
        self.y += height + BLOCK_GAP
        return rect

    def capacity(self) -> int:
        """Body lines that still fit in the current section."""
        per_col = int((BOTTOM - TOP) // LEAD)
        here = int((BOTTOM - self.y) // LEAD)
        rest_cols = (self.columns - self.col - 1) * int((BOTTOM - self.top) // LEAD)
        return here + rest_cols + (self.last - self.page) * self.columns * per_col

    def text(self, x: float, y: float, lines: list[str], font: str, size: float, lead: float,
             color: tuple[float, float, float] = (0, 0, 0)) -> None:
        """Lines with their first baseline at y, into the page's pending text (see `flush`)."""
        if lines:
            shape = self.pending.get(self.page)
            if shape is None:
                shape = self.pending[self.page] = self.doc[self.page].new_shape()
            shape.insert_text((x, y), "\n".join(lines), fontname=font, fontsize=size, lineheight=lead / size,
                              color=color)

    def flush(self, page: int | None = None) -> None:
        """Write the pending text of `page` (default: of every page). Called before anything is drawn
        on a page and at the end, it gives the text and stacking order of one `insert_text` per run
        at half the cost: each such call builds and commits a shape (about 3 ms here), and a
        document sets several hundred runs."""
        for number in list(self.pending) if page is None else [page]:
            shape = self.pending.pop(number, None)
            if shape is not None:
                shape.commit()

    def commit(self, shape: pymupdf.Shape) -> None:
        """Commit a drawing above the text set on its page so far."""
        self.flush(shape.page.number)
        shape.commit()

    def canvas(self, page: int) -> pymupdf.Page:
        """Page `page` to draw on directly (`draw_rect`, `draw_line`), its text so far written first."""
        self.flush(page)
        return self.doc[page]

    def paragraph(self, sentences: list[list[Word]]) -> bool:
        """Flow sentences through columns and pages, dropping trailing sentences that do not fit."""
        while sentences:
            lines = wrap([w for s in sentences for w in s], self.col_w, self.font, BODY)
            if len(lines) <= self.capacity():
                break
            sentences = sentences[:-1]
        else:
            return False
        run: list[str] = []
        start = self.y
        for line in lines:
            if self.y + LEAD > BOTTOM:
                self.text(self.x, start + BODY, run, self.font, BODY, LEAD)
                run = []
                self.advance()
                start = self.y
            for _, facts in line:
                for fact in facts:
                    self.record(fact)
            run.append(" ".join(w for w, _ in line))
            self.y += LEAD
        self.text(self.x, start + BODY, run, self.font, BODY, LEAD)
        self.y += PARA_GAP
        return True


@dataclass
class Chart:
    metric: str
    period: str
    page: int
    values: dict[str, float] = field(default_factory=dict)
