"""LongDocVQA document generator: determinism, the fact round trip through the PDF, layout and questions."""

from __future__ import annotations

import ast
import re
import time
from functools import cache

import pymupdf
import pytest

from turngym.envs.longdoc.generate import DOC_TYPE_NAMES, DOC_TYPES, Fact, GeneratedDocument, generate

KEYS = {"doc_id", "doc_type", "question", "answer", "evidence_pages", "evidence_sources", "answer_format"}
FORMATS = {"Str", "Int", "Float", "List", "None"}
SOURCES = {"Pure-text", "Layout", "Table", "Chart", "Figure"}
SET_SEEDS = range(100, 120)  # the 20-document question set


def norm(text: str) -> str:
    return " ".join(text.split())


@cache
def _generated(seed: int, pages: int, doc_type: str | None) -> tuple[GeneratedDocument, tuple[str, ...]]:
    d = generate(seed, pages=pages, doc_type=doc_type)
    with pymupdf.open(stream=d.pdf, filetype="pdf") as pdf:
        return d, tuple(norm(page.get_text()) for page in pdf)


def doc(seed: int, pages: int = 24, doc_type: str | None = None) -> GeneratedDocument:
    return _generated(seed, pages, doc_type)[0]


def page_texts(seed: int, pages: int = 24, doc_type: str | None = None) -> tuple[str, ...]:
    """Each page's extracted text, whitespace normalised."""
    return _generated(seed, pages, doc_type)[1]


def test_interface() -> None:
    assert len(DOC_TYPES) >= 5 and set(DOC_TYPE_NAMES) == set(DOC_TYPES)
    d = doc(1)
    assert d.doc_id == "gen-000001.pdf" and d.seed == 1 and d.pages == 24 and d.doc_type in DOC_TYPES
    assert d.pdf.startswith(b"%PDF") and all(isinstance(f, Fact) for f in d.facts)
    with pytest.raises(ValueError, match="doc_type"):
        generate(1, doc_type="novel")
    with pytest.raises(ValueError, match="pages"):
        generate(1, pages=151)


def test_determinism() -> None:
    a, b = generate(7, pages=22), generate(7, pages=22)
    assert a.pdf == b.pdf and a.facts == b.facts and a.questions == b.questions
    c = generate(8, pages=22)
    assert c.pdf != a.pdf and c.questions != a.questions
    default = generate(9)  # page count and doc type drawn from the seed
    assert 20 <= default.pages <= 60 and default == generate(9)


@pytest.mark.parametrize("doc_type", DOC_TYPES)
def test_facts_round_trip(doc_type: str) -> None:
    for seed in (3, 4):
        d, texts = doc(seed, 24, doc_type), page_texts(seed, 24, doc_type)
        assert d.doc_type == doc_type
        assert len({f.key for f in d.facts}) == len(d.facts), "fact keys are unique"
        for fact in d.facts:
            assert fact.source in SOURCES and 1 <= fact.page <= d.pages
            assert norm(fact.text) in texts[fact.page - 1], (fact, doc_type, seed)
        # Tables, charts and figures are drawn, and their facts recorded.
        assert {"Pure-text", "Layout", "Table", "Chart", "Figure"} <= {f.source for f in d.facts}, doc_type


@pytest.mark.parametrize("doc_type", DOC_TYPES)
def test_pages_contents_and_footers(doc_type: str) -> None:
    d, texts = doc(3, 24, doc_type), page_texts(3, 24, doc_type)
    assert len(texts) == d.pages == 24
    with pymupdf.open(stream=d.pdf, filetype="pdf") as pdf:
        assert len(pdf) == d.pages
        contents = pdf[1].get_text().splitlines()
        for n, page in enumerate(pdf, start=1):
            if n > 1:  # the footer (bottom of the page) carries the page number
                footer = page.get_text(clip=pymupdf.Rect(0, page.rect.height - 50, page.rect.width, page.rect.height))
                assert norm(footer) == str(n)
    entries = [m.groups() for line in contents if (m := re.match(r"^(.+?) \.{3,} (\d+)$", line))]
    headings = {f.text: f.page for f in d.facts if f.key.startswith("section_")}
    assert len(entries) == len(headings) >= 1
    starts = []
    for heading, page in entries:
        page = int(page)
        assert headings[heading] == page
        assert texts[page - 1].startswith(heading)  # the heading opens the page the contents name
        starts.append(page)
    assert starts == sorted(starts) and starts[0] == 3
    title = {f.key: f for f in d.facts if f.page == 1}
    assert {"title", "date", "organisation"} <= set(title)


def test_questions_schema_and_checks() -> None:
    formats, total, unanswerable, cross = set(), 0, 0, 0
    for seed in SET_SEEDS:
        d, texts = doc(seed, 20 + seed % 11), page_texts(seed, 20 + seed % 11)
        full = " ".join(texts).lower()
        assert 5 <= len(d.questions) <= 10
        for q in d.questions:
            assert set(q) == KEYS
            assert q["doc_id"] == d.doc_id and q["doc_type"] == DOC_TYPE_NAMES[d.doc_type]
            assert isinstance(q["question"], str) and isinstance(q["answer"], str) and q["answer"]
            assert all(isinstance(p, int) and 1 <= p <= d.pages for p in q["evidence_pages"])
            assert q["evidence_pages"] == sorted(set(q["evidence_pages"]))
            assert set(q["evidence_sources"]) <= SOURCES and q["answer_format"] in FORMATS
            formats.add(q["answer_format"])
            total += 1
            if q["answer_format"] == "None":
                unanswerable += 1
                assert q["answer"] == "Not answerable" and q["evidence_pages"] == [] == q["evidence_sources"]
                # Something it asks about (a name, a place, a period: a capitalised phrase or a number,
                # after the first word) never occurs in the document.
                spans = re.findall(r"[A-Z0-9][\w.-]*(?: [A-Z][\w-]*)*", q["question"].split(" ", 1)[1])
                assert any(s.lower().rstrip(".") not in full for s in spans), q
                continue
            assert q["evidence_pages"] and q["evidence_sources"]
            if q["answer_format"] == "Int":
                int(q["answer"])
            if q["answer_format"] == "Float":
                float(q["answer"].rstrip("%"))
            if q["answer_format"] == "List":
                answer = ast.literal_eval(q["answer"])
                assert isinstance(answer, list) and len(answer) >= 2
            if len(q["evidence_pages"]) == 1:
                assert norm(q["answer"]) in texts[q["evidence_pages"][0] - 1], q
            else:
                cross += 1
                assert 2 <= len(q["evidence_pages"]) <= 4
    assert formats == FORMATS
    assert 0.12 <= unanswerable / total <= 0.3
    assert 0.2 <= cross / total <= 0.45


def test_single_page_questions_match_facts() -> None:
    """A single-page answer is a fact's printed text (or, for a chart's tallest bar, its label)."""
    for seed in (100, 101, 102):
        d = doc(seed, 20 + seed % 11)
        for q in d.questions:
            if len(q["evidence_pages"]) == 1 and q["answer_format"] != "None":
                page = q["evidence_pages"][0]
                on_page = [f for f in d.facts if f.page == page and f.source in q["evidence_sources"]]
                assert on_page, q


def test_fifty_and_long_documents() -> None:
    start = time.perf_counter()
    d = generate(42, pages=50)
    elapsed = time.perf_counter() - start
    print(f"\n50-page {d.doc_type}: {elapsed:.2f} s, {len(d.pdf) / 1e6:.2f} MB, {len(d.facts)} facts")
    kinds = {f.source for f in d.facts}
    assert {"Table", "Chart", "Figure"} <= kinds
    visual_pages = {f.page for f in d.facts if f.source in ("Table", "Chart", "Figure")}
    assert len(visual_pages) >= 50 // 5
    start = time.perf_counter()
    long = generate(43, pages=150)
    print(f"150-page {long.doc_type}: {time.perf_counter() - start:.2f} s")
    with pymupdf.open(stream=long.pdf, filetype="pdf") as pdf:
        assert len(pdf) == 150
        for fact in long.facts[::7]:
            assert norm(fact.text) in norm(pdf[fact.page - 1].get_text())
    assert 5 <= len(long.questions) <= 10
