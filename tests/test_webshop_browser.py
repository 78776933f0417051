"""WebShopBrowser-v0 in real headless Chromium: pages and screenshots, element actions, errors,
parity with text mode, crash recovery, no leftover processes, the missing-browser error, vector envs.

Envs are shared per module (a browser context each, ~0.1 s); every test resets before it acts,
which also reopens a page whose Chromium another test killed."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym import rollout
from turngym.agents import make_agent
from turngym.envs.webshop import browser

BROWSER = "turngym/WebShopBrowser-v0"
TEXT = "turngym/WebShop-v0"
VOLATILE = ("url", "timings")  # measurements of a run, not state


@pytest.fixture(scope="module")
def shop():
    """A browser env with screenshots and timings, as an agent with vision would use it."""
    env = gym.make(BROWSER, timings=True, max_turns=10**6)
    yield env
    env.close()


@pytest.fixture(scope="module")
def quick():
    """A browser env without screenshots (faster) and a long turn budget, for fuzzing."""
    env = gym.make(BROWSER, screenshot=False, max_turns=10**6)
    yield env
    env.close()


@pytest.fixture(scope="module")
def text():
    return gym.make(TEXT, max_turns=10**6)


def task(index: int) -> dict:
    """Reset options for the `index`-th frozen test task."""
    return {"split": "test", "index": index}


def state(env) -> dict:
    """The true state without the turn counter (which every action, valid or not, advances)."""
    return {k: v for k, v in env.unwrapped.state_dict().items() if k != "turn"}


def element(obs, role: str, name: str | None = None) -> int:
    """The number of the first element of `role` (and accessible `name`) in the observation."""
    label = r' "[^"]*"' if name is None else f' "{re.escape(name)}"'
    match = re.search(rf"\[(\d+)\] {role}{label}", obs["text"])
    assert match, f"no {role} {name or ''} in:\n{obs['text']}"
    return int(match.group(1))


def chromium_descendants(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of the Chromium and Playwright driver processes under `pid` (default: us)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
    found, todo = [], [pid or os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "chrom" in command or "playwright" in command:
                found.append((child, command))
    return found


# ---- pages, screenshots, a whole episode ---------------------------------------------------------
def test_the_oracle_buys_in_the_browser_and_every_page_is_seen(shop):
    obs, info = shop.reset(seed=0, options=task(0))
    assert obs["text"].startswith(f"Instruction: {info['instruction']}\n")
    assert '[1] searchbox "Search query"' in obs["text"] and '[2] button "Search"' in obs["text"]
    assert "/url:" not in obs["text"] and shop.observation_space.contains(obs)
    image = obs["image"]
    assert image.shape == (768, 1024, 3) and image.dtype == np.uint8 and image.std() > 20
    assert info["url"].startswith("http://127.0.0.1:") and {"load_ms", "observe_ms"} <= info["timings"].keys()
    oracle = make_agent("oracle", shop)
    oracle.reset(obs, info)
    done, page = False, "search"
    while not done:
        action = oracle.act(obs, info)
        obs, reward, terminated, truncated, info = shop.step(action)
        done = terminated or truncated
        assert info["valid"], (action, info["error"])
        assert shop.observation_space.contains(obs) and obs["image"].std() > 20
        change = np.abs(obs["image"].astype(np.int16) - image).mean()
        now = shop.unwrapped.state_dict()["page"]
        assert change > (5 if now != page else 0.02), (action, change)  # a new page, or a chosen option
        assert {"action_ms", "load_ms", "observe_ms"} <= info["timings"].keys()
        assert all(v >= 0 for v in info["timings"].values())
        labels = [a[len("click["):-1] for a in info["actions"] if a.startswith("click[")]
        assert all(label in obs["text"] for label in labels)  # the page shows what the store allows
        image, page = obs["image"], now
    assert terminated and not truncated and reward == 1.0 and info["success"] and info["score"] == 1.0
    assert "Thank you for shopping with us!" in obs["text"]


def test_timings_are_opt_in_and_render_takes_a_screenshot():
    env = gym.make(BROWSER, screenshot=False, render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=0, options=task(1))
        assert "image" not in obs and "timings" not in info
        frame = env.render()
        assert frame.shape == (768, 1024, 3) and frame.dtype == np.uint8 and frame.std() > 20
    finally:
        env.close()


# ---- element actions -----------------------------------------------------------------------------
@pytest.fixture
def fresh():
    """A browser env of its own: its history holds only this test's pages."""
    env = gym.make(BROWSER)
    yield env
    env.close()


def test_element_actions_do_what_webshop_actions_do(fresh, text):
    shop = fresh
    obs, info = shop.reset(seed=0, options=task(0))
    text.reset(seed=0, options=task(0))
    goal = state(shop)["goal"]
    box = element(obs, "searchbox", "Search query")
    obs, _, _, _, info = shop.step(f'type({box}, "{goal["name"]}")')
    assert info["valid"] and state(shop)["page"] == "search"  # typing alone sends nothing
    assert goal["name"] in obs["text"]  # the box shows what was typed
    obs, _, _, _, info = shop.step(f'press({box}, "Enter")')
    _, _, _, _, text_info = text.step(f"search[{goal['name']}]")
    assert info["valid"] and state(shop)["page"] == "results" and state(shop) == state(text)
    assert info["actions"][:len(text_info["actions"])] == text_info["actions"]

    top = obs["image"]
    obs, _, _, _, info = shop.step("scroll(down)")
    assert info["valid"] and state(shop) == state(text) and np.abs(obs["image"].astype(np.int16) - top).mean() > 5
    obs, _, _, _, info = shop.step("scroll(up)")
    assert info["valid"] and np.array_equal(obs["image"], top)

    obs, _, _, _, info = shop.step(f"click({element(obs, 'link', goal['asin'])})")
    text.step(f"click[{goal['asin']}]")
    assert info["valid"] and state(shop)["page"] == "item" and state(shop) == state(text)
    assert '[2] button "< Prev"' in obs["text"] and "Buy Now" in obs["text"]

    for value in goal["goal_options"].values():
        radio = element(obs, "radio", value)
        obs, _, _, _, info = shop.step(f"click({radio})")
        text.step(f"click[{value}]")
        assert info["valid"] and state(shop) == state(text) and f'[{radio}] radio "{value}" [checked]' in obs["text"]
        obs, _, _, _, info = shop.step(f"click({radio})")  # choosing it again changes nothing, as in text mode
        text.step(f"click[{value}]")
        assert info["valid"] and state(shop) == state(text)

    obs, _, _, _, info = shop.step("back()")  # history holds the earlier pages; the store keeps its state
    assert info["valid"] and state(shop) == state(text) and "Buy Now" in obs["text"]
    errors = []
    for _ in range(10):
        _, _, _, _, info = shop.step("back()")
        errors.append(info["error"])
        if not info["valid"]:
            break
    assert errors[-1] == "there is no earlier page in this session" and state(shop) == state(text)

    obs, reward, terminated, _, info = shop.step(f"press({element(obs, 'button', 'Buy Now')}, \"Enter\")")
    _, text_reward, _, _, text_info = text.step("click[Buy Now]")
    assert info["valid"] and terminated and state(shop) == state(text)
    assert reward == text_reward == 1.0 and info["score_parts"] == text_info["score_parts"]


def test_back_never_reaches_an_earlier_episode(fresh):
    fresh.reset(seed=0, options=task(2))
    fresh.step("search[shoes]")
    fresh.reset(seed=0, options=task(3))
    _, _, _, _, info = fresh.step("back()")
    assert not info["valid"] and info["error"] == "there is no earlier page in this session"


def test_a_key_that_follows_a_link_or_picks_a_radio_is_a_page_load(shop, text):
    obs, _ = shop.reset(seed=0, options=task(1))
    text.reset(seed=0, options=task(1))
    goal = state(shop)["goal"]
    shop.step(f"search[{goal['name']}]")
    obs, _, _, _, info = shop.step("scroll(down)")
    text.step(f"search[{goal['name']}]")
    obs, _, _, _, info = shop.step(f"press({element(obs, 'link', goal['asin'])}, \"Enter\")")
    text.step(f"click[{goal['asin']}]")
    assert info["valid"] and state(shop) == state(text) and {"load_ms", "observe_ms"} <= info["timings"].keys()
    radio = element(obs, "radio")
    obs, _, _, _, info = shop.step(f'press({radio}, " ")')
    chosen = re.search(rf'\[{radio}\] radio "([^"]*)" \[checked\]', obs["text"])
    assert info["valid"] and chosen and "load_ms" in info["timings"]
    text.step(f"click[{chosen.group(1)}]")
    assert state(shop) == state(text)


# ---- errors --------------------------------------------------------------------------------------
ELEMENT_ERRORS = [
    ("click(999)", "there is no element [999] on this page"),
    ("click(0)", "there is no element [0]"),
    ("click(abc)", "click takes click(12)"),
    ("click(1", "click takes click(12)"),
    ("click(1) now", "click takes click(12)"),
    ('type(1, "unterminated)', "type takes"),
    ('type(1, "x", "y")', "type takes"),
    ('press(1, "NoSuchKey")', 'Unknown key: "NoSuchKey"'),
    ('press(1, "")', "Unknown key"),
    ("scroll(sideways)", "scroll takes scroll(down) or scroll(up)"),
    ("back(1)", "back takes back()"),
]


PAGES = ["search", "results", "item"]
STORE_ERRORS = ["click[nothing]", "click[]", "search[]", "search[   ]", "buy it", "click[Buy Now]", "search[shoes]",
                "click[Next >]", "click[< Prev]", "click[Back to Search]]"]


def to_page(env, page: str) -> tuple[dict, dict]:
    """Reset `env` to test task 2 and walk to `page` ("search", "results" or "item") of its target."""
    obs, info = env.reset(seed=0, options=task(2))
    goal = state(env)["goal"]
    for action in [f"search[{goal['name']}]", f"click[{goal['asin']}]"][:PAGES.index(page)]:
        obs, _, _, _, info = env.step(action)
    assert state(env)["page"] == page
    return obs, info


@pytest.mark.parametrize("page", PAGES)
def test_bad_actions_change_nothing_and_say_why(shop, text, page):
    obs, info = to_page(shop, page)
    button = element(obs, "button")
    cases = [(action, error, False) for action, error in ELEMENT_ERRORS]  # (action, error, word for word)
    cases.append((f'type({button}, "red")', f"[{button}] is a button, not a text box", False))
    for action in STORE_ERRORS:
        to_page(text, page)
        _, _, _, _, text_info = text.step(action)
        if not text_info["valid"]:  # the browser gives text mode's message, word for word
            cases.append((action, text_info["error"], True))
    if page == "search":  # an empty search sent by the page: the server's alert is text mode's message
        empty = text.step("search[]")[4]["error"]
        box, go = element(obs, "searchbox"), element(obs, "button", "Search")
        cases += [(f'press({box}, "Enter")', empty, True), (f"click({go})", empty, True),
                  (f'press({go}, "Enter")', empty, True)]
    before, turn = state(shop), info["turn"]
    for action, error, exact in cases:
        obs, reward, terminated, truncated, info = shop.step(action)
        turn += 1
        assert not info["valid"] and info["error"] and "\n" not in info["error"], action
        assert (info["error"] == error) if exact else (error in info["error"]), (action, info["error"])
        assert info["turn"] == turn and reward == 0 and not terminated and not truncated
        assert state(shop) == before, action
        assert shop.observation_space.contains(obs)


ELEMENT_VERBS = st.sampled_from(["click", "type", "press", "scroll", "back", "CLICK", " type "])
ARGUMENT = st.one_of(st.integers(-3, 40).map(str), st.text(max_size=12),
                     st.builds(lambda k, s: f'{k}, "{s}"', st.integers(0, 30),
                               st.one_of(st.sampled_from(["Enter", "Tab", " ", "ArrowDown", "Escape", "Nope"]),
                                         st.text(max_size=8))),
                     st.sampled_from(["down", "up", ""]))
ANY_ACTION = st.one_of(
    st.text(max_size=60),
    st.builds(lambda verb, argument, end: f"{verb}({argument}{end}", ELEMENT_VERBS, ARGUMENT,
              st.sampled_from([")", "", ") x", "))"])),
    st.builds(lambda verb, argument: f"{verb}[{argument}]", st.sampled_from(["click", "search"]),
              st.one_of(st.sampled_from(["Buy Now", "< Prev", "Next >", "Back to Search", "Features", ""]),
                        st.text(max_size=20))),
)


@settings(max_examples=30, deadline=None)
@given(action=ANY_ACTION)
def test_any_string_is_handled_in_the_browser(quick, action):
    if quick.unwrapped.task_id == "" or quick.unwrapped.state_dict()["page"] == "done":
        quick.reset(seed=0, options=task(3))
    before = quick.unwrapped.state_dict()
    obs, reward, terminated, _, info = quick.step(action)
    after = quick.unwrapped.state_dict()
    assert quick.observation_space.contains(obs) and info["valid"] == (info["error"] is None)
    assert after["turn"] == before["turn"] + 1
    if not info["valid"]:
        assert {**after, "turn": 0} == {**before, "turn": 0} and reward == 0 and not terminated
        assert info["error"] and "\n" not in info["error"]


# ---- parity with text mode -----------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["oracle", "heuristic"])
def test_agents_play_the_browser_exactly_as_text_mode(agent):
    text = gym.make(TEXT)
    browser_env = gym.make(BROWSER, screenshot=False)  # the default turn budget, as in text mode
    try:
        for index in range(5):
            plain, browsed = [rollout(env, make_agent(agent, env), seed=index, options=task(index),
                                      record_images=False) for env in (text, browser_env)]
            assert [t.action for t in browsed.turns] == [t.action for t in plain.turns], index
            for b, p in zip(browsed.turns, plain.turns, strict=True):
                assert (b.info["valid"], b.info["error"], b.reward) == (p.info["valid"], p.info["error"], p.reward)
                assert b.info["actions"][:len(p.info["actions"])] == p.info["actions"]  # then the element actions
            assert (browsed.success, browsed.score, browsed.score_parts) == (plain.success, plain.score,
                                                                               plain.score_parts)
            if agent == "oracle":
                assert browsed.success
    finally:
        browser_env.close()


# ---- crash recovery, processes, the missing browser ----------------------------------------------
@pytest.mark.parametrize("kill", ["browser", "tab"])
def test_a_killed_chromium_is_restarted_and_the_episode_goes_on(shop, kill):
    obs, info = shop.reset(seed=0, options=task(4))
    oracle = make_agent("oracle", shop)
    oracle.reset(obs, info)
    obs, _, _, _, info = shop.step(oracle.act(obs, info))
    assert info["valid"] and state(shop)["page"] == "results"
    victims = [pid for pid, command in chromium_descendants()
               if "chrom" in command and (kill == "browser" or "--type=renderer" in command)]
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    before = state(shop)
    obs, reward, terminated, truncated, info = shop.step(oracle.act(obs, info))
    assert not info["valid"] and "the browser crashed and was restarted" in info["error"]
    assert "\n" not in info["error"] and state(shop) == before and not (terminated or truncated)
    assert "[1] button" in obs["text"] and obs["image"].std() > 20  # the page is back
    done = False
    while not done:
        obs, reward, terminated, truncated, info = shop.step(oracle.act(obs, info))
        assert info["valid"], info["error"]
        done = terminated or truncated
    assert info["success"] and reward == 1.0


ORPHANS = """
def settle():
    deadline = time.monotonic() + 5
    while chromium_descendants() and time.monotonic() < deadline:
        time.sleep(0.1)
    return [command[:80] for _, command in chromium_descendants()]


envs = [gym.make("turngym/WebShopBrowser-v0"), gym.make("turngym/WebShopBrowser-v0", screenshot=False)]
for env in envs:
    env.reset(seed=0)
    env.step("search[usb cable]")
running = len(chromium_descendants())
envs[0].close()
still = len(chromium_descendants())
envs[1].close()
first = settle()
again = gym.make("turngym/WebShopBrowser-v0", screenshot=False)  # after the last env closed: a new Chromium
again.reset(seed=1)
valid = again.step("search[usb]")[4]["valid"]
again.close()
print(json.dumps({"running": running, "still": still, "first": first, "valid": valid, "second": settle()}))
"""


def test_closing_the_last_env_leaves_no_browser_process():
    """In a fresh process, so that no other test's env is open: Chromium lives while any env
    does, and neither it nor the Playwright driver outlives the last one."""
    script = ("import json, os, time\nimport gymnasium as gym\nimport turngym\n\n"
              + inspect.getsource(chromium_descendants) + ORPHANS)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["running"] >= 3 and report["still"] >= 3  # the driver, Chromium and its helpers
    assert report["first"] == [] and report["second"] == [] and report["valid"]


def test_a_missing_chromium_is_one_sentence_naming_the_fix(monkeypatch, tmp_path):
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv(browser.ENV_VAR, str(missing))
    with pytest.raises(browser.BrowserNotFound) as raised:
        browser.find_chromium()
    message = str(raised.value)
    assert message == f"TURNGYM_CHROMIUM={missing} is not a file: point it at a Chromium executable"

    monkeypatch.delenv(browser.ENV_VAR)  # and none installed anywhere: not on PATH, not Playwright's own

    class Nowhere:
        def __init__(self, path):
            pass

        def is_file(self):
            return False

    monkeypatch.setattr(browser, "Path", Nowhere)
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # as if Playwright had no driver
    with pytest.raises(browser.BrowserNotFound) as raised:
        browser.find_chromium()
    message = str(raised.value)
    assert "apt-get install chromium" in message and "TURNGYM_CHROMIUM" in message and "\n" not in message


def test_gym_make_with_a_bad_chromium_path_fails_clearly(tmp_path):
    """In a fresh process (this one's Chromium is already running), with nothing on PATH either."""
    script = ("import gymnasium as gym, turngym\n"
              "try:\n    gym.make('turngym/WebShopBrowser-v0')\n"
              "except Exception as exc:\n    print(type(exc).__name__ + ': ' + str(exc))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": "", "TURNGYM_CHROMIUM": str(tmp_path / "chromium")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (f"BrowserNotFound: TURNGYM_CHROMIUM={tmp_path / 'chromium'} is not a file: "
                                   "point it at a Chromium executable")


# ---- vector envs and determinism ----------------------------------------------------------------
def test_async_vector_env_of_four_browsers():
    # Shared memory, Gymnasium's default: turngym.vector keeps the texts live (see its docstring).
    envs = gym.make_vec(BROWSER, num_envs=4, vectorization_mode="async")
    try:
        obs, info = envs.reset(seed=0, options=task(5))
        assert obs["image"].shape == (4, 768, 1024, 3) and all(t == "ws-5" for t in info["task_id"])
        obs, _, _, _, info = envs.step(["search[usb c cable]", "search[shoes]", 'type(1, "socks")', "click[nothing]"])
        assert list(info["valid"]) == [True, True, True, False] and "Total results" in obs["text"][0]
        obs, _, _, _, info = envs.step(["click[Next >]", "click[Back to Search]", 'press(1, "Enter")', "scroll(down)"])
        assert list(info["valid"]) == [True, True, True, True]
        assert "Page 2" in obs["text"][0] and "[1] searchbox" in obs["text"][1] and "Total results" in obs["text"][2]
        assert obs["image"].std() > 20
    finally:
        envs.close()
    assert envs.closed and not any(p.is_alive() for p in envs.processes)


DETERMINISM_ACTIONS = ['type(1, "lamp")', "click[nothing]", "search[desk lamp]", "scroll(down)", "click(5)",
                       "click(3)", "press(2, \"Tab\")", "click[Features]", "back()", "click[< Prev]", "click(999)",
                       "click[Buy Now]"]


def test_same_seed_and_actions_give_the_same_pages_and_pixels(shop):
    other = gym.make(BROWSER, timings=True)  # another context of the same Chromium
    try:
        runs = []
        for env in (shop, other, shop):
            obs, info = env.reset(seed=6, options=task(6))
            record = [(obs, info)]
            for action in DETERMINISM_ACTIONS:
                obs, reward, terminated, truncated, info = env.step(action)
                record.append((obs, info, reward, terminated, truncated))
            runs.append(record)
        first = runs[0]
        assert any(not turn[1]["valid"] for turn in first[1:]) and first[-1][3]  # errors seen, then bought
        for run in runs[1:]:
            for a, b in zip(first, run, strict=True):
                assert a[0]["text"] == b[0]["text"] and np.array_equal(a[0]["image"], b[0]["image"])
                assert {k: v for k, v in a[1].items() if k not in VOLATILE} == {
                    k: v for k, v in b[1].items() if k not in VOLATILE}
                assert a[2:] == b[2:]
    finally:
        other.close()
