"""Build a catalog from the original WebShop data, so this engine serves WebShop's own tasks.

    turngym webshop build --from-webshop data/ --out webshop.sqlite
    gym.make("turngym/WebShop-v0", catalog="webshop.sqlite")

The folder holds items_shuffle.json (or items_shuffle_1000.json), items_ins_v2.json (or
items_ins_v2_1000.json) and, for the human-written goals the benchmark reports on,
items_human_ins.json. Products are converted as WebShop's `load_products` does (titles,
descriptions, bullets, `$a - $b` price ranges, lowercased options with `/` as ` | `, mined
attributes or DUMMY_ATTR); goals as `get_human_goals` does (or `get_synthetic_goals` without the
human file), then shuffled with WebShop's seed 233, so goals 0-499 are WebShop's test split.

Two deliberate differences: the price charged for a ranged product and each goal's price bound
are drawn from a seeded generator (WebShop draws them unseeded, so its price clauses change from
run to run), and text is folded to ASCII (the observation's character set).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from turngym.envs.base import ascii_text
from turngym.envs.draw import Draw
from turngym.envs.webshop.catalog import write_catalog

PRICE_STEPS = [10.0 * i for i in range(1, 100)]
SHUFFLE_SEED = 233
def _first(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if (folder / n).exists()), None)


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


def _pricing(raw: Any) -> list[float]:
    if not raw:
        return [100.0]
    prices = [float(Decimal(re.sub(r"[^\d.]", "", p))) for p in str(raw).split("$")[1:] if re.search(r"\d", p)]
    return prices[:2] or [100.0]


def convert(raw: dict[str, Any], mined: dict[str, Any]) -> dict[str, Any]:
    """One items_shuffle record as a catalog product (WebShop's `load_products`)."""
    asin = raw["asin"]
    bullets = raw.get("small_description") or []
    bullets = bullets if isinstance(bullets, list) else [bullets]
    options = {}
    for name, contents in (raw.get("customization_options") or {}).items():
        if contents:
            options[ascii_text(name).lower()] = [ascii_text(c["value"]).strip().replace("/", " | ").lower()
                                                 for c in contents]
    pricing = _pricing(raw.get("pricing"))
    price = pricing[0] if len(pricing) == 1 else round(Draw(_key(asin)).uniform(*pricing), 2)
    title = ascii_text(raw.get("name", ""))
    return {
        "asin": asin, "name": title, "Title": title, "query": str(raw.get("query", "")).lower().strip(),
        "category": raw.get("category", ""), "product_category": raw.get("product_category", ""),
        "Description": ascii_text(raw.get("full_description") or ""), "BulletPoints": [ascii_text(b) for b in bullets],
        "Attributes": mined.get(asin, {}).get("attributes") or ["DUMMY_ATTR"], "options": options,
        "pricing": pricing, "price": price, "Rating": None, "Reviews": [],
    }


def _price_upper(product: dict[str, Any], draw: Draw) -> tuple[float, str]:
    steps = [p for p in PRICE_STEPS if p > product["price"]][:4]
    if len(steps) < 2:
        return 1_000_000.0, ""
    upper = max(draw.sample(steps, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def _goal(product: dict[str, Any], text: str, attributes: list[str], options: Any, upper: float) -> dict[str, Any]:
    return {"asin": product["asin"], "category": product["category"], "query": product["query"],
            "name": product["name"], "product_category": product["product_category"],
            "instruction_text": ascii_text(text), "attributes": attributes, "goal_options": options,
            "price_upper": upper, "weight": 1.0}


def goals_for(products: list[dict[str, Any]], mined: dict[str, Any], human: dict[str, Any] | None) -> list[dict]:
    """Human goals (items_human_ins) if given, else synthetic ones, in WebShop's order."""
    goals = []
    for product in products:
        asin = product["asin"]
        if human is not None:
            for n, record in enumerate(human.get(asin, [])):
                attributes = record.get("instruction_attributes") or []
                if attributes:
                    upper, clause = _price_upper(product, Draw(_key(f"{asin}/{n}")))
                    options = [ascii_text(o).lower() for o in record.get("instruction_options") or []]
                    goals.append(_goal(product, record["instruction"].strip(".") + clause, attributes, options, upper))
        elif mined.get(asin, {}).get("instruction"):
            upper, clause = _price_upper(product, Draw(_key(asin)))
            names = sorted(product["options"])
            for combination in itertools.product(*(product["options"][n] for n in names)):
                options = dict(zip(names, combination, strict=True))
                said = ", and ".join(f"{k}: {v}" for k, v in options.items())
                text = mined[asin]["instruction"] + (f" with {said}" if said else "") + clause
                goals.append(_goal(product, text, mined[asin].get("instruction_attributes") or [], options, upper))
    random.Random(SHUFFLE_SEED).shuffle(goals)
    return goals


def build_from_webshop(folder: str | Path, out: str | Path) -> Path:
    """Write a catalog file from the original WebShop data files in `folder`."""
    folder = Path(folder)
    items = _first(folder, "items_shuffle.json", "items_shuffle_1000.json")
    mined_path = _first(folder, "items_ins_v2.json", "items_ins_v2_1000.json")
    if items is None or mined_path is None:
        raise FileNotFoundError(f"{folder} lacks WebShop's data: it needs items_shuffle*.json and items_ins_v2*.json "
                                "(download them with WebShop's setup.sh)")
    mined = json.loads(mined_path.read_text())
    human_path = folder / "items_human_ins.json"
    human = json.loads(human_path.read_text()) if human_path.exists() else None
    seen, products = set(), []
    for raw in json.loads(items.read_text()):
        asin = str(raw.get("asin", ""))
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        products.append(convert(raw, mined))
    goals = goals_for(products, mined, human)
    meta = {"source": "webshop", "name": folder.name, "goal_kind": "human" if human is not None else "synthetic",
            "files": [p.name for p in (items, mined_path, human_path if human is not None else None) if p]}
    return write_catalog(Path(out), meta, products, goals)
