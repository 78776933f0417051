"""MMLongBench-Doc's rule-based answer scoring, as pure functions of a ground truth and a short answer.

The benchmark first has a model extract a short answer from the agent's reply; this module scores that
extracted answer against the ground truth (gt) by the gt's `answer_format`. Answers may be strings, as
the dataset stores them ("5", "2.5", "['a', 'b']", "Not answerable"), or already parsed ints, floats
and lists. Every score lies in [0, 1], and no prediction, however malformed, raises: it scores 0.

Two rule sets, picked by `scoring`:

`scoring="mmlongbench"` (the default) is MMLongBench-Doc's `eval_score` (eval/eval_score.py) rule for
rule, so reported numbers are comparable with published ones (`bench/longdoc_scoring.py` checks it
against the original on perturbed answers of the real questions):
- Cleaning: lowercase, strip, drop every parenthesised part with the whitespace before it, then one
  quote at each end, leading "$" and trailing "%". Nothing else: inner quotes, commas, trailing
  periods and doubled spaces stay.
- Int: `int(gt) == int(float(pred))` on the raw values, so "12.7" counts as 12, and "1,200", "50%" or
  " 12" with a unit score 0.
- Float: both cleaned and parsed; equal within 1% relative tolerance, or once rounded to the decimals
  of the less precise of the two as Python prints them (never fewer than 2); gt/100 and gt*100 also
  count, so "25%" and 0.25 agree.
- Str and None: exact match when the cleaned gt contains "https://" or "a.m."/"p.m.", starts with
  "page", ends with ".py" or "ipynb", or is an integer, two integers joined by "-" or a space, a
  YYYY-MM(-DD) date or an email address; otherwise ANLS, 1 - Levenshtein distance / the longer
  length, 0 unless above 0.5. A None gt is the text "Not answerable", scored like any string.
- List: a string that starts with "[" is a Python list literal, anything else one element (so
  "a, b" or " ['a', 'b']" is a one-element list); lengths must agree; elements cleaned and sorted
  as text; when the gt's first element is a number or exact-only, the lists must be equal,
  otherwise the list scores its worst pair's ANLS.
- Where the original raises (an empty gt list against an empty prediction, a prediction that starts
  with "[" but is no Python literal, a gt that its own rule cannot parse), the score is 0, as in the
  fallback of its run script. A prediction that is Python code rather than a literal ("[1+1]") is
  never evaluated: the original eval()s it.
`accuracy` is the mean score; `generalized_f1` is the benchmark's F1: recall is the mean score over
answerable questions (format other than None), precision the same sum over the predictions that are
not exactly "Not answerable".

`scoring="lenient"` is a forgiving variant for rewards, where a formatting slip should not cost the
answer:
- Int: the two integers are equal after cleaning (quotes, currency and percent signs, thousands
  commas and a trailing ".0" removed); a prediction that is no integer scores 0.
- Float: equal within 1% relative tolerance, or equal once both are rounded to the decimals of the
  less precise of the two (never fewer than 2); gt*100 and gt/100 also count, so 0.25 and "25%" agree.
- Str: exact match after cleaning when the gt is a URL, an email address, a date or a phone number;
  otherwise ANLS, 1 - normalized Levenshtein distance, which scores 0 unless it exceeds 0.5.
  Cleaning lowercases and drops quotes, bracket characters, currency and percent signs and trailing
  periods, and collapses whitespace.
- List: both sides parsed (a list, a Python list literal, or text split at commas, semicolons and
  "and"); lengths must agree; both sorted; pairs compared, numbers exactly and strings by the Str
  rule; the list scores its worst pair, so one wrong element fails it.
- None (unanswerable gt, and any gt that reads "Not answerable" whatever its format): 1 when
  `is_unanswerable(pred)`, else 0. Conversely a gt with an answer scores 0 against such a prediction.

Where lenient departs from mmlongbench:
- Int: "1,200", "$1,200", "50%" and "'7'" count; a fractional prediction ("12.7") scores 0 rather
  than being truncated to 12.
- Str cleaning removes bracket characters and keeps their text ("(Less well-off)" matches "Less
  well-off"; mmlongbench drops the parenthesised part and scores 0), drops inner quotes, currency and
  percent signs and trailing periods, and collapses whitespace, so ANLS values differ on such strings.
  Only URLs, emails, dates and phone numbers are exact-only; mmlongbench also makes bare integers,
  file names ending .py/ipynb, "page ..." strings and a.m./p.m. times exact-only.
- List: a prediction may be padded with whitespace or written as "a, b" or "a and b"; elements are
  compared pair by pair (numbers as floats, sorted by value); mmlongbench compares a whole list of
  numbers or exact-only strings as one joined string.
- None: "N/A", "cannot be determined" or "the document does not mention it" count as declining (by
  `is_unanswerable`); mmlongbench scores ANLS against "not answerable". An answerable gt against a
  declining prediction is 0 by rule rather than by ANLS.
- F1: a prediction declines when `is_unanswerable` says so, not only when it is exactly "Not
  answerable"; precision sums the scores of the questions answered rather than of those whose gt is
  answerable (the sums normally agree: the questions in only one of the two sets score 0).
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
SCORINGS = ("mmlongbench", "lenient")

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


# ---- scoring="lenient" ---------------------------------------------------------------------------
def clean(value: Any) -> str:
    """The lenient normal form every lenient comparison starts from (see the module docstring)."""
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
    """1 - normalized Levenshtein distance, or 0 when that is not above the threshold."""
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


# ---- scoring="mmlongbench": MMLongBench-Doc's eval_score -----------------------------------------
_MM_QUOTES = ("'", '"')
_MM_NUMBERS = re.compile(r"\d+(?:[-\s]\d+)?")  # "42", "555-1234", "2019 2020": phone numbers to the original
_MM_DATE = re.compile(r"\d{4}[-\s]\d{2}(?:[-\s]\d{2})?")
_MM_EMAIL = re.compile(r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}")
# What the original's eval_score raises on some inputs (its run script then scores 0): int()/float()
# on text, eval() of a prediction that is no literal, str() of an int past 4300 digits.
_MM_FAILURES = (ValueError, TypeError, OverflowError, SyntaxError, MemoryError, RecursionError)


def _mm_drop_parenthesised(text: str) -> str:
    r"""re.sub(r"\s*\([^)]*\)", "", text), the original's rule, in linear time: that regex is
    quadratic on a long run of "(" or of spaces. Each "(" that has a ")" after it goes up to the
    first such ")", with the whitespace before it (regex \s is exactly str.isspace)."""
    parts, pos = [], 0
    while (start := text.find("(", pos)) >= 0 and (end := text.find(")", start)) >= 0:
        parts.append(text[pos:start].rstrip())
        pos = end + 1
    parts.append(text[pos:])
    return "".join(parts)


def mmlongbench_clean(value: Any) -> str:
    """MMLongBench-Doc's normal form (its get_clean_string): lowercase, no parenthesised parts, one
    quote off each end, no leading "$" or trailing "%"."""
    text = _mm_drop_parenthesised(str(value).lower().strip()).strip()
    text = text[1:] if text[:1] in _MM_QUOTES else text
    text = text[:-1] if text[-1:] in _MM_QUOTES else text
    return text.strip().lstrip("$").strip().rstrip("%").strip()


def extracted_prediction(prediction: str | None) -> str:
    """An agent's answer as MMLongBench-Doc's extractor would pass it on: a decline in any case or
    quoting as exactly "Not answerable" (what its F1 counts as one), anything else as given."""
    prediction = prediction or ""
    return "Not answerable" if mmlongbench_clean(prediction) == "not answerable" else prediction


def mmlongbench_exact_only(gt: str) -> bool:
    """Whether the original compares a cleaned gt exactly rather than by ANLS (its is_exact_match)."""
    return ("https://" in gt or "a.m." in gt or "p.m." in gt or gt.startswith("page")
            or gt.endswith((".py", "ipynb")) or any(p.fullmatch(gt) for p in (_MM_NUMBERS, _MM_DATE, _MM_EMAIL)))


def mmlongbench_anls(gt: str, pred: str) -> float:
    """The original's ANLS: 1 - distance / the longer length, where the length is counted after
    upper() (which lengthens "ß"), and 0 at or below the threshold; two empty strings score 1."""
    length = max(len(gt.upper()), len(pred.upper()))
    similarity = 1.0 - (Levenshtein.distance(gt, pred) / length if length else 0.0)
    return similarity if similarity > ANLS_THRESHOLD else 0.0


def _mm_decimals(value: float) -> int:
    """The decimals Python prints `value` with, 3 when it prints none ("1e-05"), as the original counts."""
    _, dot, tail = str(value).rpartition(".")
    return len(tail) if dot else 3


def _mm_float_equal(gt: float, pred: float) -> bool:
    for target in (gt / 100, gt, gt * 100):
        if math.isclose(target, pred, rel_tol=REL_TOL):
            return True
        places = max(min(_mm_decimals(pred), _mm_decimals(target)), MIN_DECIMALS)
        if round(pred, places) == round(target, places):
            return True
    return False


def _mm_list(value: Any) -> list[Any]:
    if isinstance(value, str) and value.startswith("["):
        value = ast.literal_eval(value)  # the original eval()s it; a non-literal raises in both
    return value if isinstance(value, list) else [value]


def _mm_score(gt: Any, pred: Any, kind: str) -> float:
    if kind == "Int":
        return float(int(gt) == int(float(pred)))
    if kind == "Float":
        return float(_mm_float_equal(float(mmlongbench_clean(gt)), float(mmlongbench_clean(pred))))
    if kind in ("Str", "None"):
        gt_text, pred_text = mmlongbench_clean(gt), mmlongbench_clean(pred)
        return float(gt_text == pred_text) if mmlongbench_exact_only(gt_text) else mmlongbench_anls(gt_text, pred_text)
    gt_items, pred_items = _mm_list(gt), _mm_list(pred)
    if len(gt_items) != len(pred_items) or not gt_items:  # two empty lists: the original raises IndexError
        return 0.0
    gt_texts = sorted(mmlongbench_clean(item) for item in gt_items)
    pred_texts = sorted(mmlongbench_clean(item) for item in pred_items)
    if _is_float_text(gt_texts[0]) or mmlongbench_exact_only(gt_texts[0]):
        return float("-".join(gt_texts) == "-".join(pred_texts))
    return min(mmlongbench_anls(g, p) for g, p in zip(gt_texts, pred_texts, strict=True))


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- the API --------------------------------------------------------------------------------------
def _check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be 'mmlongbench' (MMLongBench-Doc's own rules, for reported numbers) or "
                         f"'lenient' (forgiving formatting, for rewards), not {scoring!r}.")


def score_answer(gt: Any, pred: Any, answer_format: str, scoring: str = "mmlongbench") -> float:
    """The score in [0, 1] of the extracted answer `pred` against `gt` under the rule for
    `answer_format` (one of Int, Float, Str, List, None) of the `scoring` rule set, "mmlongbench"
    (MMLongBench-Doc's eval_score) or "lenient" (see the module docstring)."""
    _check_scoring(scoring)
    kind = str(answer_format).strip().capitalize()
    if kind not in FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(FORMATS)}, not {answer_format!r}.")
    if scoring == "mmlongbench":
        try:
            return _mm_score(gt, pred, kind)
        except _MM_FAILURES:
            return 0.0
    return _lenient_score(gt, pred, kind)


def _lenient_score(gt: Any, pred: Any, kind: str) -> float:
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
    """The mean `score` of `results` (dicts with score, answer_format and pred); 0 when empty. The
    same under both rule sets."""
    return sum(float(r["score"]) for r in results) / len(results) if results else 0.0


def generalized_f1(results: Sequence[Mapping[str, Any]], scoring: str = "mmlongbench") -> float:
    """MMLongBench-Doc's generalized F1, which rewards answering what can be answered and declining
    what cannot: recall over answerable gts, precision over predictions that do not decline (exactly
    "Not answerable" under "mmlongbench", by `is_unanswerable` under "lenient"). 0 when either is
    undefined."""
    _check_scoring(scoring)
    answerable = [float(r["score"]) for r in results if r["answer_format"] != "None"]
    if scoring == "mmlongbench":
        hits = sum(answerable)  # the original's precision sums the answerable questions' scores too
        answered = sum(1 for r in results if r.get("pred") != "Not answerable")
    else:
        answered_scores = [float(r["score"]) for r in results if not is_unanswerable(r.get("pred"))]
        hits, answered = sum(answered_scores), len(answered_scores)
    if not answerable or not answered:
        return 0.0
    recall, precision = sum(answerable) / len(answerable), hits / answered
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
