"""WebShop's purchase reward, as a pure function of a goal and the purchased product.

    R = r_type * (n_att + n_opt + r_price) / (|A| + |O| + 1)

- n_att: goal attributes matched by one of the product's attributes (rapidfuzz token-set ratio
  above 85), or found verbatim in its title, bullet points or description;
- n_opt: goal options matched (ratio above 85) by a selected option, after color normalization;
- r_price: 1 if the price is at most the goal's upper bound (a goal without a bound counts 1);
- r_type: 1, 0.5, 0.1 or 0 from query match, category-path match (two shared segments) and the
  overlap of the nouns of the two product names, as in WebShop's `get_type_reward`.

WebShop finds the nouns of a product name with spaCy's tagger. To stay offline and
dependency-light, a word counts as a noun here when it is alphabetic, at least three letters
long, and not a stop word, a unit, a plain color or a common modifier (the list below). Product names
are noun phrases, so this keeps the head nouns ("shampoo", "earbuds", "jerky") and drops the
describing words that spaCy would tag as adjectives, numbers or determiners.
"""

from __future__ import annotations

import re
from typing import Any

from rapidfuzz import fuzz, utils

FUZZY = 85  # token-set ratio that counts as a match


def similarity(a: str, b: str) -> float:
    """WebShop's fuzzy score: the token-set ratio after fuzzywuzzy's preprocessing (lowercase,
    punctuation to spaces), which rapidfuzz applies only when asked."""
    return fuzz.token_set_ratio(a, b, processor=utils.default_process)


def _similar(a: str, b: str) -> bool:
    # WebShop's thefuzz rounds the ratio to an integer before its `> 85`: 85.2 is not a match there
    return round(similarity(a, b)) > FUZZY

# WebShop's color list (web_agent_site/engine/normalize.py), in its alphabetical order: every
# option, on both sides, is reduced to the first of these it contains ("navy blue" -> "blue").
COLORS = tuple("""
    alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown burgundy
    camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee cognac copper coral
    cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold granite grape graphite grass
    gray green grey heather indigo ivory ivy khaki lavender lemon leopard light lilac lime magenta maroon
    mauve merlot midnight mint mocha multicolor mushroom mustard natural navy nude olive orange peach pewter
    pink plum purple rainbow red rose royal rust sand sapphire seashell silver skull slate steel stone
    stonewash sunflower tan taupe teal tiger turquoise violet walnut wheat white wine yellow""".split())
NOT_NOUNS = frozenset(
    """a an the and or of for with without in on at to by from as is are be it its this that these those your our
    my his her their new best top premium quality natural organic original classic ultra super extra large small
    medium mini big long short high low soft hard light heavy dark bright free plus pro max pack count size
    inch inches ounce ounces oz fl lb lbs pound pounds gram grams kg ml liter liters feet foot ft mm cm
    x xl xxl set pcs piece pieces men mens women womens kids unisex adult adults all one two three four five
    six eight ten dozen easy compatible portable professional durable lightweight waterproof wireless
    multi perfect great ideal fresh pure black white red blue green yellow orange purple pink brown grey gray
    beige navy silver""".split()
)
WORD = re.compile(r"[a-z]+")


def nouns(name: str) -> list[str]:
    """The words of a product name that act as nouns, in order, repeats kept (see the module
    docstring); WebShop divides by this list's length, so a repeated noun weighs twice."""
    return [w for w in WORD.findall(name.lower()) if len(w) >= 3 and w not in NOT_NOUNS]


def normalize_color(option: str) -> str:
    """The first of WebShop's colors that `option` contains, else `option` unchanged (a plain
    substring test, as WebShop's: "rectangular" becomes "tan")."""
    lowered = option.lower()
    return next((c for c in COLORS if c in lowered), option)


def _category(path: str) -> set[str]:
    return {part.strip().lower() for part in re.split(r"›|>", path) if part.strip()}


def type_reward(goal: dict[str, Any], purchased: dict[str, Any]) -> dict[str, Any]:
    query_match = bool(goal.get("query")) and purchased.get("query") == goal.get("query")
    category_match = len(_category(purchased.get("product_category", "")) &
                         _category(goal.get("product_category", ""))) >= 2
    wanted, got = nouns(goal.get("name", "")), nouns(purchased.get("name", ""))
    title_score = len(set(wanted) & set(got)) / len(wanted) if wanted else 0.2
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match,
            "title_score": title_score}


def attribute_matches(goal_attributes: list[str], purchased: dict[str, Any]) -> int:
    """Goal attributes matched by a product attribute, or found in one of its texts (each field on
    its own, as WebShop: a phrase split across title and bullets does not count)."""
    texts = [purchased.get("Title", ""), " ".join(purchased.get("BulletPoints", [])),
             purchased.get("Description", "")]
    texts = [t.lower() for t in texts]
    matches = 0
    for wanted in goal_attributes:
        if any(_similar(have, wanted) for have in purchased.get("Attributes", [])) \
                or any(wanted.lower() in text for text in texts):
            matches += 1
    return matches


def option_matches(goal_options: list[str], selected: list[str]) -> int:
    chosen = [normalize_color(o) for o in selected]
    return sum(any(_similar(have, normalize_color(wanted)) for have in chosen) for wanted in goal_options)


def _values(options: Any) -> list[str]:
    """Option values from a dict name -> value, a list of values, or a list of (name, value)."""
    if isinstance(options, dict):
        return [str(v) for v in options.values()]
    return [str(o[1]) if isinstance(o, (list, tuple)) else str(o) for o in options or []]


def score(goal: dict[str, Any], purchased: dict[str, Any]) -> dict[str, Any]:
    """WebShop's reward for buying `purchased` (with its selected `options`) against `goal`.

    Returns `r_type`, `r_att`, `r_option` (None when the goal names no options), `r_price`
    and `reward`; WebShop's dict shapes are accepted (see the module docstring)."""
    attributes = list(goal.get("attributes", []))
    wanted_options = _values(goal.get("goal_options", []))
    selected = _values(purchased.get("options", {}))
    upper = goal.get("price_upper")
    r_price = 1.0 if not upper or float(purchased.get("price", 0.0)) <= float(upper) else 0.0
    n_att = attribute_matches(attributes, purchased)
    n_opt = option_matches(wanted_options, selected)
    types = type_reward(goal, purchased)
    reward = types["r_type"] * (n_att + n_opt + r_price) / (len(attributes) + len(wanted_options) + 1)
    return {
        "r_type": types["r_type"],
        "r_att": n_att / len(attributes) if attributes else 1.0,
        "r_option": n_opt / len(wanted_options) if wanted_options else None,
        "r_price": r_price,
        "reward": reward,
    }
