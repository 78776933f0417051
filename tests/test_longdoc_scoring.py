"""MMLongBench-Doc's answer scoring: each format's rule and edge cases, the batch metrics, and robustness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym.envs.longdoc.scoring import accuracy, generalized_f1, is_unanswerable, score_answer

FORMATS = ["Int", "Float", "Str", "List", "None"]


@pytest.mark.parametrize(("gt", "pred", "expected"), [
    ("1200", "1,200", 1.0),
    ("1,200", "1200", 1.0),
    ("1200", "$1,200", 1.0),
    ("$1,200", 1200, 1.0),
    ("12", "12.0", 1.0),
    (12, 12.0, 1.0),
    ("50%", "50", 1.0),
    ("7", " '7' ", 1.0),
    ("12", "13", 0.0),
    ("12", "12.5", 0.0),  # MMLongBench truncates this to 12; an integer answer must be whole
    ("12", "twelve", 0.0),
    ("12", "", 0.0),
    ("12", None, 0.0),
])
def test_int(gt, pred, expected):
    assert score_answer(gt, pred, "Int") == expected


@pytest.mark.parametrize(("gt", "pred", "expected"), [
    ("100", "100.9", 1.0),  # 0.9% above
    ("100", "99.1", 1.0),  # 0.9% below
    ("100", "101.5", 0.0),  # 1.5% above
    ("100", "98.5", 0.0),  # 1.5% below
    ("3.14", "3.1416", 1.0),
    ("3.1416", 3.14, 1.0),
    ("0.1", "0.104", 1.0),  # 4% off, but both are 0.10 at two decimals
    ("0.1", "0.106", 0.0),  # rounds to 0.11
    ("0.012", "0.0124", 1.0),  # 3% off, equal at the gt's three decimals
    ("0.25", "25", 1.0),
    ("0.25", "25%", 1.0),
    (0.25, 25, 1.0),
    ("25", "0.25", 1.0),
    ("25%", 0.25, 1.0),
    ("$2.5", "2.50", 1.0),
    ("0.25", "2.5", 0.0),
    ("2.5", "abc", 0.0),
    ("2.5", float("nan"), 0.0),
])
def test_float(gt, pred, expected):
    assert score_answer(gt, pred, "Float") == expected


@pytest.mark.parametrize(("gt", "pred", "expected"), [
    ("Hong Kong", "Hong Kong", 1.0),
    ("Hong Kong", "hong kng", 8 / 9),  # one edit in nine characters
    ("abcdef", "abcdxy", 4 / 6),
    ("abcdef", "abcxyz", 0.0),  # exactly 0.5 is not above the threshold
    ("Hong Kong", "Singapore", 0.0),
    ("Hong Kong", '"HONG KONG"', 1.0),
    ("Hong Kong", "(Hong Kong)", 1.0),
    ("Hong Kong", "  Hong   Kong. ", 1.0),
    ("'Hong Kong'", "[hong kong]", 1.0),
    ("None", "none", 1.0),  # a gt that is itself a "none" keeps its plain string rule
])
def test_str_anls(gt, pred, expected):
    assert score_answer(gt, pred, "Str") == pytest.approx(expected)


@pytest.mark.parametrize(("gt", "near_miss"), [
    ("https://www.example.com/report", "https://www.example.com/reports"),
    ("www.example.org/about", "www.example.com/about"),
    ("info@example.com", "info@example.org"),
    ("2019-05-04", "2019-05-05"),
    ("04/05/2019", "04/05/2018"),
    ("May 4, 2019", "May 4, 2018"),
    ("555-123-4567", "555-123-4568"),
    ("+1 (555) 123-4567", "+1 (555) 123-4568"),
])
def test_str_exact_only(gt, near_miss):
    assert score_answer(gt, gt, "Str") == 1.0
    assert score_answer(gt, gt.upper(), "Str") == 1.0  # cleaning still applies
    assert score_answer(gt, near_miss, "Str") == 0.0


HK_SG = "['Hong Kong', 'Singapore']"


@pytest.mark.parametrize(("gt", "pred", "expected"), [
    (HK_SG, "['singapore', 'hong kong']", 1.0),
    (HK_SG, ["Singapore", "Hong Kong"], 1.0),
    (HK_SG, "Singapore, Hong Kong", 1.0),
    (HK_SG, "Singapore and Hong Kong", 1.0),
    (["Hong Kong", "Singapore"], HK_SG, 1.0),
    (HK_SG, "['Hong Kong']", 0.0),
    (HK_SG, "['Hong Kong', 'Singapore', 'Tokyo']", 0.0),
    (HK_SG, "['Hong Kong', 'Tokyo']", 0.0),
    (HK_SG, "['hong kng', 'Singapore']", 8 / 9),  # the worst pair
    ("[1, 2, 3]", "[3, 2, 1]", 1.0),
    ("[1, 2, 3]", "[1, 2, 4]", 0.0),
    ("[2.5]", "[2.51]", 0.0),  # numbers in a list are exact, unlike Float's 1%
    ("['1,200', '5']", [5, 1200], 1.0),
    ("['9', '10']", "10; 9", 1.0),
    ([1, "a"], "a, 1", 1.0),
    (HK_SG, "Hong Kong", 0.0),
])
def test_list(gt, pred, expected):
    assert score_answer(gt, pred, "List") == pytest.approx(expected)


@pytest.mark.parametrize("pred", [
    "Not answerable",
    "not answerable.",
    "The question is unanswerable",
    "N/A",
    "none",
    "Cannot be determined from the document",
    "The document doesn't mention it",
    "No information is given",
    "It is not mentioned",
])
def test_none_accepts_declines(pred):
    assert is_unanswerable(pred)
    assert score_answer("Not answerable", pred, "None") == 1.0
    assert score_answer("Not answerable", pred, "Str") == 1.0  # the gt's text overrides its format


@pytest.mark.parametrize("pred", ["5", "Hong Kong", "No", "", None, 0, ["Not answerable"]])
def test_none_rejects_answers(pred):
    assert not is_unanswerable(pred)
    assert score_answer("Not answerable", pred, "None") == 0.0


@pytest.mark.parametrize(("gt", "answer_format"), [
    ("5", "Int"), ("2.5", "Float"), ("Hong Kong", "Str"), (HK_SG, "List"),
])
def test_declining_an_answerable_question_scores_zero(gt, answer_format):
    assert score_answer(gt, "Not answerable", answer_format) == 0.0
    assert score_answer(gt, "N/A", answer_format) == 0.0


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="answer_format"):
        score_answer("5", "5", "Number")


def test_accuracy_and_generalized_f1_on_a_batch():
    results = [
        {"score": 1.0, "answer_format": "Int", "pred": "5"},
        {"score": 0.8, "answer_format": "Str", "pred": "hong kng"},
        {"score": 0.0, "answer_format": "Float", "pred": "Not answerable"},
        {"score": 0.0, "answer_format": "Int", "pred": "not answerable"},
        {"score": 1.0, "answer_format": "None", "pred": "N/A"},
        {"score": 0.0, "answer_format": "None", "pred": "7"},
    ]
    # accuracy = 2.8 / 6
    # R = mean over the four answerable gts = 1.8 / 4 = 0.45
    # P = mean over the three non-declining preds ("5", "hong kng", "7") = 1.8 / 3 = 0.6
    # F1 = 2 * 0.45 * 0.6 / (0.45 + 0.6) = 0.54 / 1.05
    assert accuracy(results) == pytest.approx(2.8 / 6)
    assert generalized_f1(results) == pytest.approx(0.54 / 1.05)


def test_metrics_degenerate_batches():
    assert accuracy([]) == 0.0
    assert generalized_f1([]) == 0.0
    only_unanswerable = [{"score": 1.0, "answer_format": "None", "pred": "Not answerable"}]
    assert accuracy(only_unanswerable) == 1.0
    assert generalized_f1(only_unanswerable) == 0.0  # no answerable question: recall undefined
    all_declined = [{"score": 0.0, "answer_format": "Str", "pred": "Not answerable"}]
    assert generalized_f1(all_declined) == 0.0  # no answered question: precision undefined
    all_wrong = [{"score": 0.0, "answer_format": "Int", "pred": "3"}]
    assert generalized_f1(all_wrong) == 0.0


GTS = {
    "Int": ["5", "1,200"],
    "Float": ["2.5", "0.25"],
    "Str": ["Hong Kong", "https://example.com/a", "2019-05-04"],
    "List": [HK_SG, "[1, 2]"],
    "None": ["Not answerable"],
}
texts = st.one_of(st.text(), st.lists(st.text(max_size=8), max_size=4).map(str),
                  st.from_regex(r"[\[\]\(\)'\",;0-9.%$ a-z-]{0,20}", fullmatch=True))
anything = st.one_of(texts, st.none(), st.integers(), st.floats(), st.booleans(), st.lists(st.integers()))


@settings(max_examples=300, deadline=None)
@given(answer_format=st.sampled_from(FORMATS), data=st.data(), pred=anything)
def test_score_never_raises_and_stays_in_range(answer_format, data, pred):
    gt = data.draw(st.sampled_from(GTS[answer_format]))
    assert 0.0 <= score_answer(gt, pred, answer_format) <= 1.0
    assert 0.0 <= score_answer(gt, pred, FORMATS[(FORMATS.index(answer_format) + 1) % 5]) <= 1.0


PATHOLOGICAL = ["[" * 100_000, "(" * 5000, "[1e999, 2]", "1" * 5000, 10**5000, [10**5000], "nan"]


@pytest.mark.parametrize("pred", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))  # str(10**5000) would raise
def test_pathological_predictions_score_zero(pred):
    assert [score_answer(GTS[f][0], pred, f) for f in FORMATS] == [0.0] * 5
