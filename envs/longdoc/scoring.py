"""MMLongBench-Doc's rule-based answer scoring, as pure functions of a ground truth and a short answer.

The benchmark first has a model extract a short answer from the agent's reply; this module scores that
extracted answer against the ground truth (gt) by the gt's `answer_format`. Answers may be strings, as
the dataset stores them ("5", "2.5", "['a', 'b']", "Not answerable"), or already parsed ints, floats
and lists. Every score lies in [0, 1], and no prediction, however malformed, raises: it scores 0.

- Int: the two integers are equal after cleaning (quotes, currency and percent signs, thousands
  commas and a trailing ".0" removed); a prediction that is no integer scores 0.
- Float: equal within 1% relative tolerance, or equal once both are rounded to the decimals of the
  less precise of the two (never fewer than 2); gt*100 and gt/100 also count, so 0.25 and "25%" agree.
- Str: exact match after cleaning when the gt is a URL, an email address, a date or a phone number;
  otherwise ANLS, 1 - normalised Levenshtein distance, which scores 0 unless it exceeds 0.5.
  Cleaning lowercases and drops quotes, bracket characters, currency and percent signs and trailing
  periods, and collapses whitespace.
- List: both sides parsed (a list, a Python list literal, or text split at commas, semicolons and
  "and"); lengths must agree; both sorted; pairs compared, numbers exactly and strings by the Str
  rule; the list scores its worst pair, so one wrong element fails it.
- None (unanswerable gt, and any gt that reads "Not answerable" whatever its format): 1 when
  `is_unanswerable(pred)`, else 0. Conversely a gt with an answer scores 0 against such a prediction.

`accuracy` is the mean score; `generalized_f1` is the benchmark's F1, with recall the mean score over
answerable questions and precision the mean score over questions the prediction claims to answer.

Deliberate differences from MMLongBench-Doc's eval_score.py:
- Int: a fractional prediction ("12.7") scores 0; the original truncates it to 12.
- Str cleaning removes bracket characters and keeps their text; the original drops a parenthesised
  part entirely. Only URLs, emails, dates and phone numbers are exact-only; the original also makes
  bare integers, file names ending .py/.ipynb, "page ..." strings and a.m./p.m. times exact-only.
- List elements are compared pair by pair (numbers as floats); the original compares a whole list
  of numbers or exact-only strings as one joined string. Numbers sort by value, text after them.
- None: the original scores ANLS against "not answerable", so "N/A" or "the document does not mention
  it" score 0 there; here they count as unanswerable. An answerable gt against an unanswerable
  prediction is 0 by rule rather than by ANLS.
- F1: a prediction counts as declining when `is_unanswerable` says so, not only when it is exactly
  "Not answerable"; precision sums the scores of the questions answered rather than of those whose gt
  is answerable (the sums normally agree: the questions in only one of the two sets score 0).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rapidfuzz.distance import Levenshtein

ANLS_THRESHOLD = 0.5  # ANLS at or below this is a miss, as in DocVQA and MMLongBench-Doc
REL_TOL = 0.01
MIN_DECIMALS = 2  # rounding never coarser than this, or 3 would equal 3.4
FORMATS = ("Int", "Float", "Str", "List", "None")

_STRIP_CHARS = re.compile(r"[\"'`\u2018\u2019\u201c\u201d()\[\]{}$€£¥₹%]")
_SPACES = re.compile(r"\s+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,100}")  # longer is no answer, and int() refuses past 4300 digits
_DECIMALS = re.compile(r"[+-]?[0-9]*\.([0-9]+)")

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/\S*")
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t|tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DATE = re.compile(
    r"\d{4}[-/.]\d{1,2}(?:[-/.]\d{1,2})?"  # 2019-05-04, 2019/05
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"  # 04/05/2019
    rf"|(?:\d{{1,2}}(?:st|nd|rd|th)? )?{_MONTH},? \d{{4}}"  # 4 may 2019, may 2019
    rf"|{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}"  # may 4, 2019
)
_PHONE = re.compile(r"\+?[0-9][0-9 .-]{5,}[0-9]")  # brackets are gone by the time this runs

# Short declines that only count as the whole answer ("none" inside a sentence is often an answer).
_DECLINE_WORDS = frozenset({"n/a", "na", "none", "unknown", "null"})
_DECLINE = re.compile(
    r"\b(?:not answerable|unanswerable|no answer|n/a|(?:can ?not|cant|could not|couldnt|unable to) "
    r"(?:be )?(?:answered|answer|determined|determine|found|find|identified)|not (?:possible|able) to "
    r"(?:answer|determine)|not (?:mentioned|provided|specified|stated|given|included|found|shown|available)"
    r"|(?:no|not enough|insufficient) (?:information|data|details)|(?:does|do)(?: not|nt) "
    r"(?:contain|mention|provide|specify|say|state|include))\b"
)


def clean(value: Any) -> str:
    """The normal form every comparison starts from (see the module docstring)."""
    try:
        text = str(value)
    except ValueError:  # an int past Python's 4300-digit limit on str(); no answer is that long
        text = ""
    text = _STRIP_CHARS.sub("", text.lower())
    return _SPACES.sub(" ", text).strip().rstrip(".").strip()


def is_unanswerable(pred: Any) -> bool:
    """Whether a prediction declines to answer: "Not answerable", "N/A", "cannot be determined",
    "the document does not mention it" and the like. Non-string predictions never decline."""
    if not isinstance(pred, str):
        return False
    text = clean(pred)
    return text in _DECLINE_WORDS or _DECLINE.search(text) is not None


def _number_text(value: Any) -> str:
    return clean(value).replace(",", "").replace(" ", "")


def _to_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = re.sub(r"\.0+$", "", _number_text(value))
    return int(text) if _INTEGER.fullmatch(text) else None


def _to_float(value: Any) -> tuple[float, int] | None:
    """The number and the decimals it was written with, or None when `value` is no finite number."""
    if isinstance(value, bool):
        return None
    try:
        text = repr(value) if isinstance(value, (int, float)) else _number_text(value)
        number, exponent = float(text), Decimal(text).as_tuple().exponent
    except (ValueError, ArithmeticError):  # decimal.InvalidOperation is an ArithmeticError
        return None
    if not math.isfinite(number) or not isinstance(exponent, int):
        return None
    return number, max(-exponent, 0)


def _float_equal(gt: tuple[float, int], pred: tuple[float, int]) -> bool:
    value, decimals = gt
    candidates = ((value, decimals), (value * 100, max(decimals - 2, 0)), (value / 100, decimals + 2))
    for target, target_decimals in candidates:
        if math.isclose(target, pred[0], rel_tol=REL_TOL):
            return True
        places = max(min(target_decimals, pred[1]), MIN_DECIMALS)
        if round(target, places) == round(pred[0], places):
            return True
    return False


def is_exact_only(gt: str) -> bool:
    """Whether a cleaned gt is a URL, email address, date or phone number, which ANLS would let
    pass with a wrong character, so they must match exactly."""
    return any(p.fullmatch(gt) for p in (_URL, _EMAIL, _DATE)) or (
        _PHONE.fullmatch(gt) is not None and sum(c.isdigit() for c in gt) >= 7)


def anls(gt: str, pred: str) -> float:
    """1 - normalised Levenshtein distance, or 0 when that is not above the threshold."""
    similarity = Levenshtein.normalized_similarity(gt, pred)
    return similarity if similarity > ANLS_THRESHOLD else 0.0


def _score_str(gt: Any, pred: Any) -> float:
    gt_text, pred_text = clean(gt), clean(pred)
    if is_exact_only(gt_text):
        return float(gt_text == pred_text)
    return anls(gt_text, pred_text)


_LIST_SPLIT = re.compile(r"\s*(?:;|,(?![0-9]{3}(?![0-9])))\s*(?:and\s+)?|\s+and\s+")


def _to_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    if text and text[0] in "[(":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, (list, tuple)):
            return list(parsed)
        text = text.strip("[]()")
    return [item for item in _LIST_SPLIT.split(text) if item.strip()]


def _sort_key(item: Any) -> tuple[int, float, str]:
    number = _to_float(item)
    return (0, number[0], "") if number else (1, 0.0, clean(item))


def _score_list(gt: Any, pred: Any) -> float:
    gt_items, pred_items = sorted(_to_list(gt), key=_sort_key), sorted(_to_list(pred), key=_sort_key)
    if len(gt_items) != len(pred_items):
        return 0.0
    if not gt_items:
        return 1.0
    scores = []
    for g, p in zip(gt_items, pred_items, strict=True):
        g_number = _to_float(g)
        if g_number:
            p_number = _to_float(p)
            scores.append(float(p_number is not None and p_number[0] == g_number[0]))
        else:
            scores.append(_score_str(g, p))
    return min(scores)


def score_answer(gt: Any, pred: Any, answer_format: str) -> float:
    """The score in [0, 1] of the extracted answer `pred` against `gt` under the rule for
    `answer_format` (one of Int, Float, Str, List, None; see the module docstring)."""
    kind = str(answer_format).strip().capitalize()
    if kind not in FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(FORMATS)}, not {answer_format!r}.")
    if kind == "None" or (isinstance(gt, str) and clean(gt) == "not answerable"):
        return float(is_unanswerable(pred))
    if is_unanswerable(pred) and not is_unanswerable(gt):
        return 0.0
    if kind == "Int":
        gt_int, pred_int = _to_int(gt), _to_int(pred)
        return float(gt_int is not None and gt_int == pred_int)
    if kind == "Float":
        gt_float, pred_float = _to_float(gt), _to_float(pred)
        return float(gt_float is not None and pred_float is not None and _float_equal(gt_float, pred_float))
    if kind == "Str":
        return _score_str(gt, pred)
    return _score_list(gt, pred)


def accuracy(results: Sequence[Mapping[str, Any]]) -> float:
    """The mean `score` of `results` (dicts with score, answer_format and pred); 0 when empty."""
    return sum(float(r["score"]) for r in results) / len(results) if results else 0.0


def generalized_f1(results: Sequence[Mapping[str, Any]]) -> float:
    """MMLongBench-Doc's generalized F1, which rewards answering what can be answered and declining
    what cannot: recall over answerable gts, precision over predictions that do not decline."""
    answerable = [float(r["score"]) for r in results if r["answer_format"] != "None"]
    answered = [float(r["score"]) for r in results if not is_unanswerable(r.get("pred"))]
    if not answerable or not answered:
        return 0.0
    recall, precision = sum(answerable) / len(answerable), sum(answered) / len(answered)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
