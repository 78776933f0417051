"""Seeded, offline generation of WebShop products and goals.

The vocabulary is data (assets/webshop/catalog.yaml: categories, product types, brands,
attributes, specs, option groups, title/feature/description templates, brand price levels;
instructions.yaml: the instruction templates and how shoppers word options and attributes).
Product i is a pure function of (seed, i), so catalogs nest: `small` is the first 1,000 products
of `medium` and `full`. Goal k asks for product k mod n and is a pure function of (seed, k).
Every choice is drawn through envs/draw.py, which stays the same across Python versions.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import yaml

from turngym.envs.draw import Draw

SEED = 20_261_122
RANGE_SHARE = 0.3  # products whose price is a range (the charged price lies within it)
NO_RATING = 0.1
PATH_SEP = " › "
ASIN_STEP = 1_743_541_808_669  # coprime with 36**8 (about 0.618 of it): distinct, scattered ASINs


@dataclass(frozen=True)
class ProductType:
    key: str
    category: str
    spec: dict[str, Any]

    @property
    def path(self) -> str:
        return PATH_SEP.join([self.spec["root"], *self.spec["path"]])


class Vocabulary(NamedTuple):
    types: list[ProductType]
    wording: dict[str, Any]  # instructions.yaml: templates, option and attribute wording
    reviews: list[dict[str, str]]
    price_levels: list[float]


@cache
def vocabulary() -> Vocabulary:
    """The product types, the instruction wording, the review templates and the brand price levels."""
    assets = resources.files("turngym.assets").joinpath("webshop")
    catalog = yaml.safe_load(assets.joinpath("catalog.yaml").read_text())
    instructions = yaml.safe_load(assets.joinpath("instructions.yaml").read_text())
    instructions["option_rewrites"] = [(re.compile(p), r) for p, r in instructions["option_rewrites"]]
    types = [ProductType(key, category, {**spec, "root": body["root"]})
             for category, body in catalog["categories"].items() for key, spec in body["types"].items()]
    return Vocabulary(types, instructions, list(catalog["reviews"]), list(catalog["price_levels"]))


def asin(i: int) -> str:
    n, digits = (i * ASIN_STEP) % 36**8, []
    for _ in range(8):
        n, d = divmod(n, 36)
        digits.append("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[d])
    return "B0" + "".join(reversed(digits))


def _listing(words: list[str]) -> str:
    """a; a and b; a, b and c."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _fill(template: str, values: dict[str, str]) -> str:
    return " ".join(template.format(**values).split())


def product(i: int, seed: int = SEED) -> dict[str, Any]:
    """Product i of the catalog generated from `seed`, as a WebShop-style record."""
    types, _, reviews, levels = vocabulary()
    d = Draw(seed, 1, i)
    kind = d.pick(types)
    s = kind.spec
    attributes = d.sample(s["attributes"], d.between(2, 5))
    options = {group: d.sample(values, d.between(2, min(6, len(values)))) for group, values in s["options"].items()}
    first_option = next(iter(options.values()))[0]
    brand, spec = d.pick(s["brands"]), d.pick(s["specs"])

    def values() -> dict[str, str]:
        a, a2 = d.sample(attributes, 2) if len(attributes) > 1 else (attributes * 2)
        return {"brand": brand, "name": s["name"], "Name": s["name"].title(), "attribute": a,
                "Attribute": a.title(), "ATTRIBUTE": a.upper(), "attribute2": a2, "spec": spec,
                "option": first_option}

    title = _fill(d.pick(s["titles"]), values())
    bullets = [_fill(t, values()) for t in d.sample(s["features"], d.between(4, 6))]
    description = _fill(d.pick(s["descriptions"]), values())
    low, high = s["price"]
    price = round(d.uniform(low, high) * levels[zlib.crc32(brand.encode()) % len(levels)], 2)
    pricing = [price]
    if d.rng.random() < RANGE_SHARE:
        pricing = [round(price * d.uniform(0.7, 0.95), 2), round(price * d.uniform(1.05, 1.5), 2)]
    rating = None if d.rng.random() < NO_RATING else round(d.uniform(3.0, 5.0), 1)
    product_reviews = [{"score": d.between(3, 5), **{k: _fill(v, values()) for k, v in d.pick(reviews).items()}}
                       for _ in range(d.between(0, 3))]
    return {
        "asin": asin(i), "name": title, "Title": title, "brand": brand, "query": s["name"],
        "category": kind.category,
        "product_category": kind.path, "Description": description, "BulletPoints": bullets,
        "Attributes": attributes, "options": options, "pricing": pricing, "price": price,
        "Rating": rating, "Reviews": product_reviews, "type": kind.key,
    }


def goal(k: int, products: int, seed: int = SEED) -> dict[str, Any]:
    """Goal k of a catalog of `products` products: an instruction asking for product k mod n.

    1-3 of the product's attributes and 0-3 of its options (both worded as shoppers word them),
    and a price bound drawn as WebShop draws it: the larger of two of the first four $10 steps
    above the price.
    """
    wording = vocabulary().wording
    target = product(k % products, seed)
    d = Draw(seed, 2, k)
    attributes = d.sample(target["Attributes"], d.between(1, min(3, len(target["Attributes"]))))
    count = 0 if d.rng.random() < wording["no_option_share"] else d.between(1, min(3, len(target["options"])))
    options = {g: d.pick(target["options"][g]) for g in d.sample(list(target["options"]), count)}
    steps = [10.0 * i for i in range(1, 100) if 10.0 * i > target["price"]][:4]
    price_upper = max(d.sample(steps, 2)) if len(steps) >= 2 else 1000.0
    phrases = [_say_option(d, wording, g, v) for g, v in options.items()]
    said = [_say_attribute(d, wording, a) for a in attributes]
    instruction = _fill(d.pick(wording["templates"]), {"attrs": _listing(said), "name": target["query"],
                                                       "options": " with " + _listing(phrases) if phrases else "",
                                                       "price": f"{price_upper:.2f}"})
    return {
        "asin": target["asin"], "category": target["category"], "query": target["query"], "name": target["name"],
        "product_category": target["product_category"], "instruction_text": instruction,
        "attributes": attributes, "goal_options": options, "price_upper": price_upper, "weight": 1.0,
    }


def _say_attribute(d: Draw, wording: dict[str, Any], attribute: str) -> str:
    other_words = wording["attribute_wording"].get(attribute)
    if other_words and d.rng.random() < wording["attribute_reworded_share"]:
        return d.pick(other_words)
    return attribute


def _say_option(d: Draw, wording: dict[str, Any], group: str, value: str) -> str:
    said = value.lower()
    if d.rng.random() < wording["reworded_share"]:
        for pattern, replacement in wording["option_rewrites"]:
            said = pattern.sub(replacement, said)
    phrasings = wording["option_phrasings"]["any"]
    if group in wording["named_groups"]:
        phrasings = phrasings + wording["option_phrasings"]["named"]
    return d.pick(phrasings).format(group=group, value=said)
