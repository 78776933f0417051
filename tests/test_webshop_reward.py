"""WebShop's reward as a pure function: the formula and its edge cases."""

from __future__ import annotations

import pytest

from turngym.envs.webshop.reward import normalize_color, nouns, score, similarity

GOAL = {
    "name": "Lumera Sulfate Free Shampoo with Argan Oil, 12 Fl Oz",
    "query": "shampoo",
    "product_category": "Beauty & Personal Care › Hair Care › Shampoos",
    "attributes": ["sulfate free", "cruelty free"],
    "goal_options": {"size": "12 fl oz", "scent": "lavender"},
    "price_upper": 30.0,
}
PRODUCT = {
    "name": "Lumera Sulfate Free Shampoo with Argan Oil, 12 Fl Oz",
    "Title": "Lumera Sulfate Free Shampoo with Argan Oil, 12 Fl Oz",
    "query": "shampoo",
    "product_category": "Beauty & Personal Care › Hair Care › Shampoos",
    "Attributes": ["sulfate free", "cruelty-free formula"],
    "BulletPoints": ["Gentle on color treated hair."],
    "Description": "A daily shampoo.",
    "price": 18.5,
    "options": {"size": "12 Fl Oz", "scent": "Lavender"},
}


def test_the_exact_product_with_the_right_options_scores_one():
    result = score(GOAL, PRODUCT)
    assert result == {"r_type": 1.0, "r_att": 1.0, "r_option": 1.0, "r_price": 1.0, "reward": 1.0}


def test_formula_counts_attributes_options_and_price():
    wrong_option = {**PRODUCT, "options": {"size": "8 Fl Oz", "scent": "Lavender"}}
    assert score(GOAL, wrong_option)["reward"] == pytest.approx((2 + 1 + 1) / 5)
    too_expensive = {**PRODUCT, "price": 30.01}
    r = score(GOAL, too_expensive)
    assert r["r_price"] == 0.0 and r["reward"] == pytest.approx(4 / 5)
    assert score(GOAL, {**PRODUCT, "price": 30.0})["r_price"] == 1.0  # at most the bound
    missing = {**PRODUCT, "Attributes": [], "BulletPoints": [], "Description": ""}
    r = score(GOAL, missing)
    assert r["r_att"] == 0.5 and r["reward"] == pytest.approx((1 + 2 + 1) / 5)  # "sulfate free" is in the title
    split = {**missing, "Title": "Shampoo, sulfate", "BulletPoints": ["free of parabens"]}
    assert score(GOAL, split)["r_att"] == 0.0  # a phrase across two fields is not found


def test_goals_without_options_or_bound():
    goal = {**GOAL, "goal_options": {}, "price_upper": None}
    r = score(goal, {**PRODUCT, "options": {}})
    assert r["r_option"] is None and r["r_price"] == 1.0 and r["reward"] == 1.0
    assert score({**GOAL, "goal_options": []}, PRODUCT)["r_option"] is None


def test_options_as_lists_and_color_normalisation():
    goal = {**GOAL, "goal_options": ["navy blue", "large"]}
    bought = {**PRODUCT, "options": ["Blue", "Large"]}
    assert score(goal, bought)["r_option"] == 1.0  # "navy blue" and "Blue" both normalise to blue
    assert normalize_color("Heather Grey") == "grey" and normalize_color("Large") == "Large"
    bought = {**PRODUCT, "options": [("color", "Red"), ("size", "Large")]}
    assert score(goal, bought)["r_option"] == 0.5


def test_fuzzy_matching_threshold():
    assert score({**GOAL, "attributes": ["free sulfate"]}, PRODUCT)["r_att"] == 1.0  # token set ratio 100
    assert score({**GOAL, "attributes": ["long lasting"]}, PRODUCT)["r_att"] == 0.0
    near = {**GOAL, "goal_options": {"size": "12 fl oz (pack of 2)"}}
    assert score(near, PRODUCT)["r_option"] == 1.0  # the chosen tokens are a subset: ratio 100
    far = {**GOAL, "goal_options": {"size": "16.9 fl oz"}}
    assert score(far, PRODUCT)["r_option"] == 0.0
    # a ratio of 85.19 is 85 once rounded, as WebShop's thefuzz reports it: not above the threshold
    assert similarity("high definition wireless bluetooth", "high quality wireless bluetooth") > 85
    close = {**GOAL, "attributes": ["high definition wireless bluetooth"]}
    assert score(close, {**PRODUCT, "Attributes": ["high quality wireless bluetooth"]})["r_att"] == 0.0


def test_type_reward_tiers():
    other_type = {**PRODUCT, "query": "conditioner", "name": "Lumera Argan Oil Conditioner",
                  "product_category": "Beauty & Personal Care › Hair Care › Conditioners"}
    assert score(GOAL, other_type)["r_type"] == 1.0  # the category path shares two segments
    unrelated = {**other_type, "product_category": "Garden › Hoses", "name": "Hose Reel"}
    assert score(GOAL, unrelated)["r_type"] == 0.0 and score(GOAL, unrelated)["reward"] == 0.0
    weak = {**unrelated, "name": "Argan Oil Hose Reel for Garden Plants"}
    goal = {**GOAL, "name": "shampoo conditioner brush comb towel dryer spray mask serum argan"}
    r = score(goal, weak)["r_type"]
    assert r == 0.5 or r == 0.1  # some noun overlap without query or category match
    title = "Lumera Sulfate Free Shampoo with Argan Oil, 12 Fl Oz"
    assert nouns(title) == ["lumera", "sulfate", "shampoo", "argan", "oil"]
    # WebShop divides by the goal's noun list, repeats included: "bar" is 1 of 5 nouns, 0.2 is no match
    assert score({**GOAL, "name": "Soap Soap Soap Soap Bar", "query": "soap", "product_category": "Soap"},
                 {**PRODUCT, "name": "Bar Stool"})["r_type"] == 0.5


def test_a_ranged_price_is_judged_by_the_price_charged():
    ranged = {**PRODUCT, "pricing": [12.0, 45.0]}
    assert score(GOAL, {**ranged, "price": 29.99})["r_price"] == 1.0
    assert score(GOAL, {**ranged, "price": 44.0})["r_price"] == 0.0  # the low end is under the bound; the charge is not
