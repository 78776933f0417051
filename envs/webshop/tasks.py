"""WebShop task ids and splits.

A task id is `ws-<k>`: goal k of the catalog. As in the original WebShop, goals 0-499 are the
test split, 500-1499 dev and the rest train; assets/webshop/splits.yaml freezes the boundaries
and the fingerprint of the generated test tasks (tests/test_webshop.py checks it, so a change to
the generator that would move benchmark numbers cannot land without a new split version).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources

import yaml

from turngym.envs.base import TaskIds
from turngym.envs.webshop.catalog import Catalog


@cache
def frozen() -> dict:
    return yaml.safe_load(resources.files("turngym.assets").joinpath("webshop/splits.yaml").read_text())


def splits_for(catalog: Catalog) -> dict[str, Sequence[str]]:
    """test, dev and train. A catalog with too few goals for all three (a product subset of the
    original data) uses every goal in every split, as WebShop does then."""
    bounds, n = frozen()["splits"], catalog.goal_count
    test, dev = bounds["test"], bounds["test"] + bounds["dev"]
    if n <= dev:
        return dict.fromkeys(("test", "dev", "train"), TaskIds("ws-", range(n)))
    return {"test": TaskIds("ws-", range(0, test)), "dev": TaskIds("ws-", range(test, dev)),
            "train": TaskIds("ws-", range(dev, n))}


def goal_index(task_id: str, catalog: Catalog) -> int:
    """k of a task id `ws-<k>` (a bare number is accepted too)."""
    text = str(task_id).removeprefix("ws-")
    if not (text.isascii() and text.isdigit()) or int(text) >= catalog.goal_count:
        raise ValueError(f"bad WebShop task id {task_id!r}: expected ws-<k> with k below {catalog.goal_count}")
    return int(text)


def fingerprint(catalog: Catalog) -> str:
    """A hash of the test split: every test goal and the product it targets, as the catalog serves them."""
    digest = hashlib.sha256()
    for k in range(min(frozen()["splits"]["test"], catalog.goal_count)):
        goal = catalog.goal(k)
        product = catalog.product(catalog.asin_to_id(goal["asin"]))
        digest.update(json.dumps([goal, product], sort_keys=True).encode())
    return digest.hexdigest()[:16]
