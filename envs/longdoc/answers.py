"""LongDocVQA's answer proposals: the values of a page read, ranked by how the page ties them to
what the question names.

A page's text layer loses its layout, but each layout the generated documents use (and most
reports do) leaves a trace in word order that binds a value to its label:
- prose names the thing, then its value ("the revenue of the Innsbruck branch came to 878.3");
- a chart's text layer prints each value right before its label ("951 Botanical Garden 886 ...");
- a table's text layer runs column by column: the row labels, then each column header with its
  values in row order ("Branch Haarlem Geneva Valencia 2016 1704 511 1692 2017 799 394 2198"), so
  Valencia's 2017 value is the third number after 2017.
Values are ranked by kind first (names where the question asks who, which or where, numbers
otherwise; no share or year unless asked), then the table cell that the question's name and year
both point to, then by distance in tokens to the question's names, then to its years, word pairs
and other words, then by the words their sentence shares with the question. Nothing here sees the
answer: it reads the observation only.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re

from turngym.envs.bm25 import STOP_WORDS, WORD

MAX_ANSWERS = 12
NAMED = re.compile(r"[A-Z][A-Za-z&'-]+|\d[\d,.]*\d|\d")  # capitalised words and numbers of a question
ANSWER = re.compile(r"-?\d[\d,]*(?:\.\d+)?%?|(?:[A-Z][A-Za-z&'-]+:? )*[A-Z][A-Za-z&'-]+")
TOKEN = re.compile(r"-?\d[\d,]*(?:\.\d+)?%?|[A-Za-z][A-Za-z&'-]*")
PHRASE = re.compile(r"(?:[A-Z][A-Za-z&'-]+ )*[A-Z][A-Za-z&'-]+|\d[\d,.]*\d|\d")
LABELS = frozenset("figure table page chart section".split())  # "Figure 10" numbers a figure, not a value
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?%?")
YEAR = re.compile(r"(?:19|20)\d\d")
ASKS_NAME = re.compile(r"^(?:who|which|where|name)\b|\b(?:which|what) (?:section|city|branch|attraction|office|"
                       r"district|region|name|date|title)\b|\btitle of\b", re.IGNORECASE)
QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how many much large big high does did do is was were are according "
    "document report paper workbook guide brochure manual tutorial page shown listed mentioned given total name "
    "names list all".split()
)
ASKING = QUESTION_WORDS | {"figure", "give", "gives", "value"}  # words that ask, not name what is asked about
ASKS_SHARE = re.compile(r"share|percent|rate|margin|ratio|%", re.IGNORECASE)
ASKS_YEAR = re.compile(r"\b(?:when|what year|which year|founded|established|opened)\b", re.IGNORECASE)
ASKS_PAGE = re.compile(r"\b(?:which|what) page\b", re.IGNORECASE)
SENTENCE_GAP = 10  # tokens a binding costs when the name sits in another sentence
FAR = 30  # tokens beyond which a name does not bind a value at all


def named(question: str) -> list[str]:
    """The names and numbers a question gives (its capitalised words after the first, and numbers)."""
    return [w for w in NAMED.findall(question)[1:] if w.lower() not in STOP_WORDS]


def phrases(question: str) -> list[list[str]]:
    """The question's names as phrases ("Cathedral Square", "2017"), lowercased word by word."""
    start = len(question.split(" ", 1)[0])  # a question's first word is capitalised anyway
    found = [m.group().split(" ") for m in PHRASE.finditer(question, start)]
    return [[_norm(w) for w in p if w.lower() not in STOP_WORDS] for p in found if p[-1].lower() not in STOP_WORDS]


def _norm(token: str) -> str:
    return token.lower().replace(",", "").rstrip("%")


def names_all(page: str, question: str) -> bool:
    """Whether a page names every name and number the question gives (its phrases, word by word
    in order): a page that lacks one does not answer it."""
    low = [_norm(t) for t in TOKEN.findall(page)]
    return all(_spans(low, p) for p in phrases(question))


def _table_cells(tokens: list[str], names: list[str]) -> set[int]:
    """Token positions of the cells that a table's text layer puts at the row of a name the question
    gives and the column of a year it gives (see the module docstring): the column's values follow
    its header in row order, and the rows are the names run just before the first year column."""
    low = [_norm(t) for t in tokens]
    years = {n for n in names if YEAR.fullmatch(n)}
    words = [n.lower() for n in names if not n[0].isdigit()]
    cells: set[int] = set()
    for at, token in enumerate(low):
        if token not in words or (at and low[at - 1] in words):  # a name's first word
            continue
        label = next(k for k in range(at, len(low) + 1) if k == len(low) or low[k] not in words) - at
        first = next((k for k in range(at, len(low)) if not tokens[k][0].isalpha()), None)
        if first is None or not YEAR.fullmatch(low[first]):
            continue
        rows = 0  # the first column's values: numbers up to the next year header
        while first + 1 + rows < len(low) and NUMBER.fullmatch(tokens[first + 1 + rows]) and not (
                YEAR.fullmatch(low[first + 1 + rows]) and 0 < int(low[first + 1 + rows]) - int(low[first]) < 30):
            rows += 1
        span = first - at  # the row labels from this name on, each taken as long as this one
        if rows == 0 or span % label:
            continue
        row = rows - span // label
        if not 0 <= row < rows:
            continue
        for header in (k for k in range(first, len(low)) if low[k] in years):
            if header + 1 + row < len(low) and NUMBER.fullmatch(tokens[header + 1 + row]):
                cells.add(header + 1 + row)
    return cells


def _spans(low: list[str], phrase: list[str], where: dict[str, list[int]] | None = None) -> list[tuple[int, int]]:
    """(first, last) token positions of each occurrence of a phrase (`where`: each token's
    positions, to start from)."""
    n = len(phrase)
    starts = range(len(low)) if where is None else where.get(phrase[0], [])
    return [(k, k + n - 1) for k in starts if low[k:k + n] == phrase]


def _distance(first: int, last: int, spans: list[tuple[int, int]], sentence: list[int], labelled: bool) -> int:
    """Tokens between a value and the nearest occurrence of a phrase: a phrase right after the
    value (a chart's label) counts as adjacent, one further after it double (prose names a thing,
    then gives its value), one in another sentence SENTENCE_GAP more. `labelled` False: no value
    comes before its label (a contents page lists a title, then its page)."""
    return min((0 if a == last + 1 and labelled else 2 * (a - last) if a > last else first - b)
               + SENTENCE_GAP * (sentence[a] != sentence[first]) for a, b in spans)


def candidate_answers(page: str, question: str, limit: int = MAX_ANSWERS) -> list[str]:
    """The numbers and names of a page (runs of capitalised words, and their words and word pairs:
    a table's text layer runs its cells together), leaving out what the question itself says,
    ranked by binding to the question's names (see the module docstring); at most `limit`."""
    said = question.lower()
    keywords = {w for w in WORD.findall(said) if w not in STOP_WORDS | ASKING and not w.isdigit()}
    matches = list(TOKEN.finditer(page))
    tokens, starts = [m.group() for m in matches], [m.start() for m in matches]
    low = [_norm(t) for t in tokens]
    where: dict[str, list[int]] = {}
    for k, token in enumerate(low):
        where.setdefault(token, []).append(k)
    asked = phrases(question)
    name_words = {w for p in asked for w in p}
    pairs = [p.split(" ") for p in re.findall(r"(?=\b([a-z]+ [a-z]+)\b)", said)]  # "staff costs"
    names = [spans for p in asked if not YEAR.fullmatch(p[0]) and (spans := _spans(low, p, where))]
    others = [(0.5, spans) for p in asked if YEAR.fullmatch(p[0]) and (spans := _spans(low, p, where))] + \
        [(1.0, spans) for p in pairs if not set(p) & (STOP_WORDS | ASKING) and (spans := _spans(low, p, where))]
    near = [spans for w in keywords if (spans := _spans(low, [w], where))]
    cells = _table_cells(tokens, named(question))
    wants_name = ASKS_NAME.search(question) is not None
    asks_page = ASKS_PAGE.search(question) is not None
    wants_share, wants_year = ASKS_SHARE.search(question) is not None, ASKS_YEAR.search(question) is not None
    ends = [m.end() for m in re.finditer(r"(?<!\.)[.!?](?!\.)(?:\s|$)", page)]  # not a leader's dots
    sentence_of = [bisect.bisect_right(ends, s) for s in starts]
    bounds = [0, *ends, len(page)]
    overlap = [len(keywords & set(WORD.findall(page[a:b].lower()))) for a, b in itertools.pairwise(bounds)]

    def distance(first: int, last: int, spans: list[tuple[int, int]]) -> int:
        return min(_distance(first, last, spans, sentence_of, not asks_page), FAR)

    @functools.cache  # a run's word pairs and words share their ends
    def binding(first: int, last: int) -> tuple[float, float]:
        """Tokens to the question's names (summed), then to its years (half), word pairs and
        nearest other words, each at most FAR: a name binds a value more surely than a caption's
        year or words, which every value of a chart shares."""
        words = sorted(distance(first, last, spans) for spans in near)[:3]
        return (sum(distance(first, last, spans) for spans in names),
                sum(w * distance(first, last, spans) for w, spans in others) + (sum(words) / len(words) if words
                                                                                  else 0))

    def misfit(value: str) -> bool:
        """A name where the question asks for a number (or the reverse), a share or a year unasked."""
        if value[0].isalpha():
            return not wants_name
        return wants_name or (value.endswith("%") and not wants_share) or (
            YEAR.fullmatch(value) is not None and not wants_year)

    ranked: dict[str, tuple] = {}
    for m in ANSWER.finditer(page):
        words = m.group().rstrip(".,").split(" ")
        first = min(bisect.bisect_left(starts, m.start()), len(tokens) - 1)
        if first and low[first - 1] in LABELS and words[0][0].isdigit():
            continue
        n = len(words)
        parts = [(0, n)] + ([(i, i + size) for size in (2, 1) for i in range(n - size + 1)] if n > 2 else [])
        for i, j in parts:
            while i < j - 1 and words[i].lower() in STOP_WORDS:  # "The Riga" -> "Riga"
                i += 1
            value = " ".join(words[i:j])
            if (not value or value.lower() in said or value.lower() in STOP_WORDS
                    or any(_norm(w) in name_words for w in words[i:j])):
                continue
            key = (misfit(value), first + i not in cells, *binding(first + i, first + j - 1),
                   j - i == 1, -overlap[sentence_of[first]], m.start())
            if value not in ranked or key < ranked[value]:
                ranked[value] = key
    return sorted(ranked, key=ranked.__getitem__)[:limit]
