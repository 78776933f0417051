"""WebShop-v0: catalog and search, goals and splits, the store's pages and actions, agents, the site."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from html import escape
from html.parser import HTMLParser

import gymnasium as gym
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym import rollout
from turngym.agents import make_agent
from turngym.envs.bm25 import tokenize
from turngym.envs.webshop import generate
from turngym.envs.webshop.catalog import open_catalog, write_catalog
from turngym.envs.webshop.tasks import fingerprint, frozen


@pytest.fixture(scope="module")
def catalog():
    return open_catalog("small")


def make(**kwargs):
    return gym.make("turngym/WebShop-v0", **kwargs)


# ---- catalog, search, goals --------------------------------------------------------------------
def test_products_are_realistic_seeded_and_nested(catalog):
    first = catalog.product(0)
    assert first == generate.product(0)  # the file holds exactly the generated product
    assert {"asin", "Title", "Description", "BulletPoints", "Attributes", "options", "pricing", "price",
            "product_category", "query", "category"} <= first.keys()
    categories = {catalog.product(i)["category"] for i in range(300)}
    assert categories == {"beauty", "electronics", "fashion", "garden", "grocery"}
    asins = [catalog.product(i)["asin"] for i in range(catalog.size)]
    assert len(set(asins)) == catalog.size and all(re.fullmatch(r"B0[0-9A-Z]{8}", a) for a in asins)
    for i in range(200):
        p = catalog.product(i)
        low, *high = p["pricing"]
        assert (low <= p["price"] <= high[0]) if high else p["price"] == low
        assert len(p["BulletPoints"]) >= 4 and p["options"] and all(len(v) >= 2 for v in p["options"].values())
        assert "{" not in p["Title"] + p["Description"] + "".join(p["BulletPoints"])


def reference_search(catalog, query: str, k: int = 50) -> list[int]:
    """BM25 top-k the slow, obvious way: every term's weights summed, every document sorted."""
    scores = np.zeros(catalog.size, np.float32)
    for term in sorted(set(tokenize(query)), key=lambda t: (catalog.conn.execute(
            "SELECT df FROM postings WHERE term = ?", (t,)).fetchone() or (0,))[0]):
        row = catalog.conn.execute("SELECT docs, weights FROM postings WHERE term = ?", (term,)).fetchone()
        if row:
            np.add.at(scores, np.frombuffer(row[0], np.uint32), np.frombuffer(row[1], np.float32))
    ranked = sorted(range(catalog.size), key=lambda d: (-scores[d], d))
    return [d for d in ranked[:k] if scores[d] > 0]


def test_search_is_exact_bm25_top_k(catalog):
    target = catalog.product(123)
    assert 123 in catalog.search(target["Title"])[:10]
    rng = np.random.default_rng(0)
    queries = [catalog.goal(k)["instruction_text"] for k in range(20)] + ["lumera", "usb", "zzzz lumera"]
    for _ in range(30):
        words = tokenize(" ".join(catalog.product(int(rng.integers(catalog.size)))["BulletPoints"]))
        queries.append(" ".join(rng.choice(words, size=min(int(rng.integers(1, 9)), len(words)), replace=False)))
    for query in queries:
        assert catalog.search(query) == reference_search(catalog, query), query
    assert catalog.search("") == [] and catalog.search("zzzz qqqq") == [] and catalog.search("the of and") == []
    assert len(catalog.search("lumera", k=7)) == 7


def test_goals_are_deterministic_and_describe_their_target(catalog):
    for k in (0, 7, 499, 1234):
        goal = catalog.goal(k)
        assert goal == generate.goal(k, catalog.size)
        target = catalog.product(k % catalog.size)
        assert goal["asin"] == target["asin"] and goal["price_upper"] >= target["price"]
        assert set(goal["attributes"]) <= set(target["Attributes"]) and 1 <= len(goal["attributes"]) <= 3
        for group, value in goal["goal_options"].items():
            assert value in target["options"][group]
        assert target["query"] in goal["instruction_text"] and f"{goal['price_upper']:.2f}" in goal["instruction_text"]
    templates = yaml.safe_load(generate.resources.files("turngym.assets").joinpath(
        "webshop/instructions.yaml").read_text())["templates"]
    assert len(templates) >= 30
    phrasings = {catalog.goal(k)["instruction_text"].split()[0:2][0] for k in range(300)}
    assert len(phrasings) >= 5


def test_shopper_wording_never_names_another_attribute_or_option():
    vocab = generate.vocabulary()
    taken = {a.lower() for t in vocab.types for a in t.spec["attributes"]}
    taken |= {v.lower() for t in vocab.types for values in t.spec["options"].values() for v in values}
    wording = vocab.wording["attribute_wording"]
    assert len(wording) >= 50 and set(wording) <= taken
    clashes = {w for words in wording.values() for w in words if w.lower() in taken}
    assert not clashes, clashes


def test_brands_keep_their_price_level(catalog):
    """Each brand's listings fit one price level; a type's listings span budget to premium."""
    vocab = generate.vocabulary()
    ranges = {t.key: t.spec["price"] for t in vocab.types}
    groups: dict[tuple[str, str], list[float]] = {}
    for i in range(catalog.size):
        p = catalog.product(i)
        groups.setdefault((p["type"], p["brand"]), []).append(p["price"])
    for (kind, _), prices in groups.items():
        low, high = ranges[kind]
        assert any(level * low - 0.01 <= min(prices) and max(prices) <= level * high + 0.01
                   for level in vocab.price_levels)
    spread = [max(max(ps) for (k, _), ps in groups.items() if k == kind) /
              min(min(ps) for (k, _), ps in groups.items() if k == kind) for kind in ranges]
    assert np.median(spread) > 3


def test_splits_are_frozen(catalog):
    env = make()
    splits = env.unwrapped.splits
    assert (len(splits["test"]), len(splits["dev"])) == (500, 1000)
    assert len(splits["train"]) == catalog.goal_count - 1500 and splits["train"][0] == "ws-1500"
    assert fingerprint(catalog) == frozen()["fingerprints"]["small"], "the frozen test tasks changed"
    assert env.reset(seed=0, options={"split": "test", "index": 7})[1]["task_id"] == "ws-7"
    with pytest.raises(ValueError):
        env.reset(options={"task_id": "ws-nope"})


# ---- pages and actions ---------------------------------------------------------------------------
def test_a_full_episode_by_hand():
    env = make()
    obs, info = env.reset(seed=0, options={"task_id": "ws-3"})
    goal = env.unwrapped.state_dict()["goal"]
    assert obs["text"].startswith("Instruction: [SEP] " + goal["instruction_text"]) and obs["text"].endswith("Search")
    assert info["actions"] == ["search[<query>]"]
    obs, _, _, _, info = env.step(f"SEARCH[ {goal['name']} ]")
    assert info["valid"] and "Page 1 (Total results: 50)" in obs["text"]
    assert {"click[Back to Search]", "click[Next >]", f"click[{goal['asin']}]"} <= set(info["actions"])
    assert "search[<query>]" not in info["actions"]
    obs, _, _, _, info = env.step(f"click[{goal['asin'].lower()}]")  # labels match case-insensitively
    assert info["valid"] and "Buy Now" in obs["text"] and "Price: $" in obs["text"]
    for detail in ("Description", "Features", "Reviews"):
        obs, _, _, _, info = env.step(f"click[{detail}]")
        assert info["valid"] and "< Prev" in obs["text"]
        env.step("click[< Prev]")
    for group, value in goal["goal_options"].items():
        obs, _, _, _, info = env.step(f"click[{value}]")
        assert info["valid"] and env.unwrapped.state_dict()["options"][group] == value
    obs, reward, terminated, truncated, info = env.step("click[Buy Now]")
    assert terminated and not truncated and reward == 1.0 and info["success"]
    assert info["score_parts"] == {"r_type": 1.0, "r_att": 1.0, "r_option": 1.0 if goal["goal_options"] else None,
                                   "r_price": 1.0, "reward": 1.0}


@pytest.mark.parametrize(("action", "error"), [
    ("click[Buy Now]", "nothing called 'Buy Now'"),
    ("search[]", "needs words"),
    ("search[   ]", "needs words"),
    ("buy it", "unknown action"),
    ("click[]", "nothing called"),
])
def test_invalid_actions_explain_themselves(action, error):
    env = make()
    env.reset(seed=0)
    before = env.unwrapped.state_dict()
    _, reward, terminated, _, info = env.step(action)
    assert not info["valid"] and error in info["error"] and reward == 0 and not terminated
    assert {**env.unwrapped.state_dict(), "turn": 0} == {**before, "turn": 0}
    env.step("search[socks]")
    _, _, _, _, info = env.step("search[shoes]")
    assert not info["valid"] and "Back to Search" in info["error"]


_shopper = make(max_turns=10**9)


def _to_page(page: str) -> None:
    """Put the shared fuzz env on a results page or on the target's item page (ws-3)."""
    _shopper.reset(seed=0, options={"task_id": "ws-3"})
    goal = _shopper.unwrapped.state_dict()["goal"]
    _shopper.step(f"search[{goal['name']}]")
    if page == "item":
        _shopper.step(f"click[{goal['asin']}]")


LABELS = st.sampled_from(["Buy Now", "< Prev", "Next >", "Back to Search", "Description", "Features", "Reviews",
                          "B000000000", "Next", "buy", "12 Fl Oz", "]", "[", ""])
STORE_ACTIONS = st.one_of(
    st.text(max_size=120),
    st.builds(lambda verb, arg, end: f"{verb}{arg}{end}", st.sampled_from(["click[", "search[", "CLICK [", " click[["]),
              st.one_of(LABELS, st.text(max_size=40)), st.sampled_from(["]", "", "]]", "] extra"])),
)


@pytest.mark.parametrize("page", ["results", "item"])
@settings(max_examples=150, deadline=None)
@given(action=STORE_ACTIONS)
def test_any_string_on_results_and_item_pages_is_handled(page, action):
    _to_page(page)
    before = _shopper.unwrapped.state_dict()
    obs, reward, terminated, _, info = _shopper.step(action)
    after = _shopper.unwrapped.state_dict()
    assert _shopper.observation_space.contains(obs) and info["valid"] == (info["error"] is None)
    if not info["valid"]:
        assert {**after, "turn": 0} == {**before, "turn": 0} and reward == 0 and not terminated
        assert info["error"] and "\n" not in info["error"]
    else:
        assert after != before or action.lower().replace(" ", "").startswith("click[")


@pytest.mark.parametrize("mode", ["text_rich", "html"])
def test_check_env_passes_in_every_observation_mode(mode):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(make(obs_mode=mode).unwrapped)
    assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("mode", ["text", "text_rich", "html"])
def test_observation_modes_show_the_same_page(mode):
    env = make(obs_mode=mode)
    env.reset(seed=0, options={"task_id": "ws-5"})
    obs, _, _, _, info = env.step("search[shoes for running]")
    text = obs["text"]
    labels = [a[6:-1] for a in info["actions"]]
    if mode == "html":
        assert "<!doctype html>" in text and all(escape(label, quote=False) in text for label in labels)
    else:
        assert all(label in text for label in labels)
    assert text.startswith("Instruction:") and env.unwrapped.instruction in text.split("\n")[0]
    if mode == "text_rich":
        assert "[button] Back to Search [button_]" in text


def test_default_turn_budget_and_train_sampling():
    env = make()
    _, info = env.reset(seed=11)
    assert env.unwrapped.max_turns == 15 and int(info["task_id"][3:]) >= 1500
    assert env.reset(seed=11)[1]["task_id"] == info["task_id"]


# ---- agents --------------------------------------------------------------------------------------
def test_oracle_buys_the_target_on_test_tasks():
    env = make()
    oracle = make_agent("oracle", env)
    wins = [rollout(env, oracle, seed=i, options={"split": "test", "index": i}).success for i in range(100)]
    assert sum(wins) >= 99


def test_oracle_finds_a_target_whose_title_many_listings_share(tmp_path):
    """In a big catalog more than 50 listings can share a title; the oracle then searches the
    target's whole listing text. Here 79 copies of one listing bury the target, which differs only
    by a longer description, for any query but its own text."""
    products = [{**generate.product(0), "asin": generate.asin(i)} for i in range(80)]
    target = products[-1]
    target["Description"] += " Lot codes: " + " ".join(f"lot{i}" for i in range(300))  # longer: ranks last
    goal = {**generate.goal(0, 80), "asin": target["asin"]}
    path = write_catalog(tmp_path / "copies.sqlite", {"source": "test", "name": "copies"}, products, [goal])
    for query in (goal["name"], goal["instruction_text"]):
        assert target["asin"] not in [products[i]["asin"] for i in open_catalog(path).search(query)]
    env = make(catalog=str(path))
    traj = rollout(env, make_agent("oracle", env), seed=0, options={"split": "test", "index": 0})
    assert traj.success and [t.action.startswith("search[") for t in traj.turns].count(True) == 2


def test_heuristic_is_a_middling_baseline():
    env = make()
    agent = make_agent("heuristic", env)
    runs = [rollout(env, agent, seed=i, options={"split": "test", "index": i}) for i in range(60)]
    mean = sum(r.score for r in runs) / len(runs)
    assert 0.2 < mean < 0.95 and all(len(r) <= 10 for r in runs)


# ---- the web site --------------------------------------------------------------------------------
class Clickables(HTMLParser):
    """The labels a person could click on a served page."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self.search = False
        self._link = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if (tag == "button" and attrs.get("name") == "label") or (tag == "input" and attrs.get("type") == "radio"):
            self.labels.append(attrs["value"])
        elif tag == "input" and attrs.get("type") == "search":
            self.search = True
        self._link = tag == "a" and "product" in (attrs.get("class") or "")

    def handle_data(self, data):
        if self._link and data.strip():
            self.labels.append(data.strip())
            self._link = False


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from turngym.envs.webshop.server import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(open_catalog("small")), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(5)


def fetch(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.geturl(), response.read().decode()


def test_the_site_walks_a_task_like_text_mode(server):
    env = make()
    oracle = make_agent("oracle", env)
    obs, info = env.reset(seed=0, options={"task_id": "ws-42"})
    oracle.reset(obs, info)
    page_url, html = fetch(f"{server}/start?task=ws-42")
    base = page_url.rstrip("/")
    assert "Instruction:" in html and env.unwrapped.instruction in html
    done = False
    while not done:
        parsed = Clickables()
        parsed.feed(html)
        assert parsed.labels == [a[6:-1] for a in info["actions"] if a.startswith("click[")]
        assert parsed.search == ("search[<query>]" in info["actions"])
        action = oracle.act(obs, info)
        verb, argument = action.split("[", 1)
        route = "search?q=" if verb == "search" else "click?label="
        _, html = fetch(f"{base}/{route}{urllib.parse.quote(argument[:-1])}")
        obs, reward, done, _, info = env.step(action)
    state = json.loads(fetch(f"{base}/state")[1])
    assert state["done"] and state["score"]["reward"] == reward == 1.0
    _, html = fetch(f"{base}/click?label=nonsense")
    assert "Thank you" in html
    other_url, other = fetch(f"{server}/start?task=ws-42")  # a second session: its own id, same start
    assert other_url != page_url and env.unwrapped.instruction in other
    _, bad = fetch(f"{other_url.rstrip('/')}/click?label=Buy%20Now")
    assert 'role="alert"' in bad and "nothing called" in bad


def test_turngym_serve_webshop_serves_pages(tmp_path):
    """The real command: `turngym serve webshop --port P` in its own process, then plain HTTP."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "turngym", "serve", "webshop", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _, index = fetch(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.1)
        assert "/start?task=ws-0" in index
        url, page = fetch(f"http://127.0.0.1:{port}/start?task=ws-0")
        assert re.search(r"/s/[0-9a-f]{16}/$", url) and 'type="search"' in page
        url, page = fetch(f"{url}search?q=usb+c+cable")
        assert "Total results: 50" in page and "Next &gt;" in page
        try:
            fetch(f"http://127.0.0.1:{port}/start?task=ws-nope")
            raise AssertionError("a bad task id should be refused")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and "ws-nope" in exc.read().decode()
    finally:
        server.terminate()
        server.wait(10)
