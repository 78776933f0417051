"""Seeded generation of long PDF documents whose every fact is known, with MMLongBench-Doc-style questions.

A document is a small world (an organisation, its people, items such as branches or models, and
quantities per item and period) written out as a real PDF with pymupdf: a title page, a table of
contents, then sections of prose, ruled tables, vector charts (bar, line, pie), box diagrams and
callouts, one or two text columns, a page number in every footer. Each fact is recorded with the page
it landed on and its source kind, so questions (single-page, cross-page and unanswerable ones, in
MMLongBench-Doc's schema) are computed from the fact base and checked against the PDF's extracted
text before they are emitted.

The vocabulary is data: assets/longdoc/world.yaml (names, places, the doc types with their items,
metrics and headings), prose.yaml (sentence and caption templates), questions.yaml (question
templates). Everything is a pure function of (seed, pages, doc_type), drawn from one
`random.Random(seed).random()` stream (the part of Python's random module that is stable across
versions), so the same arguments give byte-identical PDFs. Only base-14 fonts and ASCII are used, and
text is set in multi-line runs gathered into one shape per page (layout.py's `flush`) because pymupdf's
per-call cost dominates: a 50-page document takes about 1.3 s on a slow 2-core machine (2.4 s with one
`insert_text` call per run).

The stages live in their own modules: vocab.py (the YAML vocabulary), facts.py (fact records and
text helpers), world.py (the fact base), layout.py (typesetting), writer.py (the document's content)
and questions.py (the questions); this module ties them together. The random stream is envs/draw.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pymupdf

from turngym.envs.draw import Draw
from turngym.envs.longdoc.facts import Fact, norm
from turngym.envs.longdoc.questions import Asker
from turngym.envs.longdoc.vocab import DOC_TYPE_NAMES, DOC_TYPES, vocabulary
from turngym.envs.longdoc.world import World
from turngym.envs.longdoc.writer import Writer

__all__ = ["DOC_TYPES", "DOC_TYPE_NAMES", "MAX_PAGES", "MIN_PAGES", "Fact", "GeneratedDocument", "generate",
           "vocabulary"]

MIN_PAGES, MAX_PAGES = 4, 150


@dataclass
class GeneratedDocument:
    doc_id: str
    doc_type: str
    seed: int
    pages: int
    pdf: bytes
    facts: list[Fact]
    questions: list[dict]


def generate(seed: int, *, pages: int | None = None, doc_type: str | None = None) -> GeneratedDocument:
    """Document `seed`: a PDF of `pages` pages (default 20-60, drawn) of `doc_type` (default drawn)."""
    d = Draw(seed)
    kind = doc_type if doc_type is not None else d.pick(DOC_TYPES)
    if kind not in DOC_TYPES:
        raise ValueError(f"unknown doc_type {kind!r}: use one of {', '.join(DOC_TYPES)}")
    n = pages if pages is not None else d.between(20, 60)
    if not MIN_PAGES <= n <= MAX_PAGES:
        raise ValueError(f"pages={n} is out of range: use {MIN_PAGES} to {MAX_PAGES}")
    world = World(d, kind, n)
    writer = Writer(d, world, n)
    pdf = writer.write()
    facts = sorted(writer.lay.facts, key=lambda f: (f.page, f.key))
    with pymupdf.open(stream=pdf, filetype="pdf") as reread:
        texts = [norm(page.get_text()) for page in reread]
    doc_id = f"gen-{seed:06d}.pdf"
    questions = Asker(d, world, writer, facts, texts, doc_id).ask()
    return GeneratedDocument(doc_id, kind, seed, n, pdf, facts, questions)
