"""The loader for the original WebShop data files, on a small fixture in WebShop's own schema."""

from __future__ import annotations

import json

import gymnasium as gym
from typer.testing import CliRunner

from turngym import rollout
from turngym.agents import make_agent
from turngym.apps.cli import app
from turngym.envs.base import ascii_text
from turngym.envs.webshop import generate
from turngym.envs.webshop.original import goals_for


def raw_record(i: int) -> dict:
    """Generated product i written the way items_shuffle.json stores products."""
    p = generate.product(i)
    low, *high = p["pricing"]
    return {
        "asin": p["asin"], "name": p["Title"], "full_description": p["Description"],
        "small_description": p["BulletPoints"], "pricing": f"${low}" + (f" - ${high[0]}" if high else ""),
        "images": [f"https://example.com/{p['asin']}.jpg"], "category": p["category"], "query": p["query"],
        "product_category": p["product_category"], "brand": "dropped on load",
        "customization_options": {g.title(): [{"value": v, "image": None} for v in vals]
                                  for g, vals in p["options"].items()},
    }


def write_fixture(folder):
    records = [raw_record(i) for i in range(40)]
    records[0]["name"] = "Café “Crème” Shampoo – 12 Fl Oz™"  # folded to ASCII
    records[1]["pricing"] = ""  # no price: WebShop charges $100.0
    records[2]["customization_options"]["Color"] = None  # a missing group is skipped
    records[3]["small_description"] = "One bullet as a string"
    records += [dict(records[5]), {**records[6], "asin": "nan"}]  # a duplicate and a junk asin
    mined = {r["asin"]: {"attributes": generate.product(i)["Attributes"], "instruction": f"find product {i}",
                         "instruction_attributes": generate.product(i)["Attributes"][:1]}
             for i, r in enumerate(records[:40])}
    human = {}
    for i in range(40):
        g = generate.goal(i, 40)
        human[g["asin"]] = [{"instruction": g["instruction_text"].split(",")[0] + ".",
                             "instruction_attributes": g["attributes"],
                             "instruction_options": list(g["goal_options"].values()),
                             "worker_id": "W", "assignment_id": "A"}]
    human[records[7]["asin"]].append({"instruction": "no attributes: skipped", "instruction_attributes": [],
                                      "instruction_options": []})
    (folder / "items_shuffle_1000.json").write_text(json.dumps(records))
    (folder / "items_ins_v2_1000.json").write_text(json.dumps(mined))
    (folder / "items_human_ins.json").write_text(json.dumps(human))


def test_build_from_the_original_files_and_play(tmp_path):
    write_fixture(tmp_path)
    out = tmp_path / "original.sqlite"
    result = CliRunner().invoke(app, ["webshop", "build", "--from-webshop", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "40 products" in result.output and "40 goals" in result.output
    env = gym.make("turngym/WebShop-v0", catalog=str(out))
    catalog = env.unwrapped.catalog
    assert catalog.meta["source"] == "webshop" and catalog.meta["goal_kind"] == "human"
    first = catalog.product(0)
    assert first["Title"] == 'Cafe "Creme" Shampoo - 12 Fl Oz' and "brand" not in first
    assert catalog.product(1)["pricing"] == [100.0] and catalog.product(1)["price"] == 100.0
    assert "color" not in catalog.product(2)["options"]
    assert catalog.product(3)["BulletPoints"] == ["One bullet as a string"]
    ranged = next(catalog.product(i) for i in range(40) if len(catalog.product(i)["pricing"]) == 2)
    assert ranged["pricing"][0] <= ranged["price"] <= ranged["pricing"][1]
    assert all(v == v.lower() for i in range(40) for vals in catalog.product(i)["options"].values() for v in vals)
    goal = catalog.goal(0)
    assert isinstance(goal["goal_options"], list) and goal["instruction_text"].endswith(
        f", and price lower than {goal['price_upper']:.2f} dollars")
    splits = env.unwrapped.splits
    assert len(splits["test"]) == len(splits["train"]) == 40  # a subset: every split is every goal
    oracle = make_agent("oracle", env)
    wins = [rollout(env, oracle, seed=i, options={"split": "test", "index": i}).success for i in range(40)]
    assert sum(wins) >= 39
    heuristic = rollout(env, make_agent("heuristic", env), seed=0, options={"split": "test", "index": 0})
    assert heuristic.terminated


def test_goal_order_and_prices_are_reproducible(tmp_path):
    write_fixture(tmp_path)
    products = [{**generate.product(i), "price": generate.product(i)["price"]} for i in range(40)]
    human = json.loads((tmp_path / "items_human_ins.json").read_text())
    first, second = goals_for(products, {}, human), goals_for(products, {}, human)
    assert first == second and len(first) == 40
    assert [g["asin"] for g in first] != [p["asin"] for p in products]  # shuffled, with WebShop's seed
    assert ascii_text("Ångström naïve — “x”\x07") == 'Angstrom naive - "x"'


def test_an_option_label_with_a_slash_is_clickable_as_listed(tmp_path):
    # the loader writes WebShop's "Black / White" as "black  |  white" (two spaces each side); the
    # click compared the raw label with the action's squashed spaces, so the listed action failed
    from turngym.envs.webshop.original import build_from_webshop

    record = {**raw_record(0), "customization_options": {"Color": [{"value": "Black / White"}, {"value": "Red"}]}}
    (tmp_path / "items_shuffle_1000.json").write_text(json.dumps([record]))
    (tmp_path / "items_ins_v2_1000.json").write_text(json.dumps({record["asin"]: {
        "instruction": "find it", "instruction_attributes": ["soft"]}}))
    build_from_webshop(tmp_path, tmp_path / "one.sqlite")
    env = gym.make("turngym/WebShop-v0", catalog=str(tmp_path / "one.sqlite")).unwrapped
    env.reset(seed=0, options={"split": "test", "index": 0})
    env.step(f"search[{record['name']}]")
    _, _, _, _, info = env.step(f"click[{record['asin']}]")
    option = next(a for a in info["actions"] if "|" in a)
    _, _, _, _, info = env.step(option)
    assert info["valid"], info["error"]
    assert env.state_dict()["options"] == {"color": "black  |  white"}
