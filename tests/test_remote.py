"""The env server (turngym.serve.env_server) and its gymnasium client RemoteEnv, against a real uvicorn
server on a free port of 127.0.0.1: endpoints, gymnasium's checker, step-by-step parity with local
envs (images included), every kind of bad request, the session cap, idle expiry, fuzzed actions,
and concurrent sessions."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import httpx
import numpy as np
import pytest
from conftest import serving as running
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import turngym
from turngym.agents.base import RandomAgent
from turngym.serve import RemoteEnv, RemoteEnvError
from turngym.serve.env_server import create_app
from turngym.trajectory import jsonable

CRAFT, WEBSHOP, BROWSER = "turngym/Craft-v0", "turngym/WebShop-v0", "turngym/WebShopBrowser-v0"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(create_app()) as address:
        yield address


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def play(env: gym.Env, seed: int, steps: int, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`steps` steps of a seeded random agent, resetting (seed + 1, + 2, ...) when an episode ends:
    every reset and step as a record."""
    agent, records, episode = RandomAgent(), [], 0
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(obs, info, seed=seed)
    records.append({"obs": obs, "info": info})
    for _ in range(steps):
        action = agent.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        records.append({"action": action, "obs": obs, "reward": reward, "terminated": terminated,
                        "truncated": truncated, "info": info})
        if terminated or truncated:
            episode += 1
            obs, info = env.reset(seed=seed + episode, options=options)
            agent.reset(obs, info, seed=seed + episode)
            records.append({"obs": obs, "info": info})
    return records


def assert_same(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> None:
    """Identical records: observations (image arrays exactly), rewards, flags and infos."""
    assert len(local) == len(remote)
    for i, (a, b) in enumerate(zip(local, remote, strict=True)):
        assert a.keys() == b.keys() and a["obs"].keys() == b["obs"].keys(), i
        assert a["obs"]["text"] == b["obs"]["text"], i
        if "image" in a["obs"]:
            assert b["obs"]["image"].dtype == np.uint8 and np.array_equal(a["obs"]["image"], b["obs"]["image"]), i
        assert jsonable(a["info"]) == b["info"], i
        for key in ("action", "reward", "terminated", "truncated"):
            assert a.get(key) == b.get(key) and type(a.get(key)) is type(b.get(key)), (i, key)


def test_lists_envs_and_health(http: httpx.Client) -> None:
    envs = http.get("/envs").json()["envs"]
    assert [e["id"] for e in envs] == turngym.list_envs()
    assert all(e["description"] == turngym.describe(e["id"]) for e in envs)
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["rss_bytes"] > 0 and health["max_sessions"] == 256


def test_session_roundtrip(http: httpx.Client) -> None:
    created = http.post("/sessions", json={"env_id": CRAFT, "kwargs": {"task": "wood_pickaxe"}}).json()
    sid = created["session_id"]
    assert created["observation_space"]["type"] == "Dict" and created["action_space"]["type"] == "Text"
    reset = http.post(f"/sessions/{sid}/reset", json={"seed": 0}).json()
    assert reset["info"]["turn"] == 0 and "__png__" in reset["observation"]["image"]
    step = http.post(f"/sessions/{sid}/step", json={"action": "move north"}).json()
    assert step["info"]["turn"] == 1 and step["reward"] == 0.0 and step["terminated"] is False
    listed = {s["session_id"]: s for s in http.get("/sessions").json()["sessions"]}
    assert listed[sid]["env_id"] == CRAFT and isinstance(listed[sid]["idle_seconds"], float)  # (a field, not a timing)
    assert http.delete(f"/sessions/{sid}").json() == {"session_id": sid, "closed": True}
    assert http.post(f"/sessions/{sid}/step", json={"action": "noop"}).status_code == 404
    assert sid not in {s["session_id"] for s in http.get("/sessions").json()["sessions"]}


@pytest.mark.parametrize("env_id, kwargs", [(CRAFT, {"task": "wood_pickaxe"}), (WEBSHOP, {})])
def test_remote_env_passes_gymnasium_checker(url: str, env_id: str, kwargs: dict[str, Any]) -> None:
    env = RemoteEnv(url, env_id, **kwargs)
    local = gym.make(env_id, **kwargs)
    try:
        assert env.observation_space == local.observation_space and env.action_space == local.action_space
        assert env.action_space.character_list == local.action_space.character_list  # what sample() draws from
        assert env.metadata == local.metadata
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env)
    finally:
        env.close()
        env.close()  # closing twice is fine
        local.close()
    with pytest.raises(RemoteEnvError, match="closed"):
        env.step("noop")


def test_drop_in_for_gym_make(url: str, http: httpx.Client) -> None:
    """A `with` block closes the session; `gym.make(env.spec)` opens another session like it
    (gymnasium's wrappers included)."""
    with RemoteEnv(url, CRAFT, task="wood_pickaxe") as env:
        obs, _ = env.reset(seed=5, options={"split": "test", "index": np.int64(2)})
        copy = gym.make(env.spec)
        try:
            again, _ = copy.reset(seed=5, options={"split": "test", "index": 2})
            assert np.array_equal(again["image"], obs["image"]) and copy.unwrapped is not env
        finally:
            copy.close()
        sid = env.unwrapped.session_id
    assert sid not in {s["session_id"] for s in http.get("/sessions").json()["sessions"]}


def test_render_modes_come_from_the_server(url: str) -> None:
    for mode in ("ansi", "rgb_array"):
        env, local = RemoteEnv(url, CRAFT, render_mode=mode), gym.make(CRAFT, render_mode=mode)
        env.reset(seed=3)
        local.reset(seed=3)
        remote_view, local_view = env.render(), local.render()
        assert type(remote_view) is type(local_view) and np.array_equal(remote_view, local_view)
        env.close()
        local.close()


@pytest.mark.parametrize("env_id, kwargs, seed", [(CRAFT, {"task": "collect_wood", "max_turns": 12}, 4),
                                                  (WEBSHOP, {}, 7)])
def test_remote_trajectory_equals_local(url: str, env_id: str, kwargs: dict[str, Any], seed: int) -> None:
    env, local = RemoteEnv(url, env_id, **kwargs), gym.make(env_id, **kwargs)
    try:
        assert_same(play(local, seed, 30), play(env, seed, 30))
    finally:
        env.close()
        local.close()


def test_browser_sessions_work_through_the_server(url: str) -> None:
    """WebShopBrowser-v0's Playwright calls all run on the server's env thread, even when two
    browser sessions step at once (their requests then arrive on different threads). The local
    run closes first: this process's one Chromium belongs to whichever thread started it."""
    from turngym.envs.webshop.browser import BrowserNotFound, find_chromium

    try:
        find_chromium()
    except BrowserNotFound as exc:
        pytest.skip(str(exc))
    kwargs, options = {"viewport": (640, 480), "max_turns": 4}, {"split": "test", "index": 0}
    local = gym.make(BROWSER, **kwargs)
    try:
        expected = play(local, 0, 4, options)
    finally:
        local.close()
    env, other = RemoteEnv(url, BROWSER, **kwargs), RemoteEnv(url, BROWSER, screenshot=False, max_turns=100)

    def scroll() -> list[bool]:
        other.reset(seed=1)
        return [other.step(f"scroll({way})")[-1]["valid"] for way in ("down", "up") * 6]

    try:
        with ThreadPoolExecutor(1) as pool:
            scrolled = pool.submit(scroll)
            assert_same(expected, play(env, 0, 4, options))
            assert all(scrolled.result())
    finally:
        env.close()
        other.close()


@pytest.fixture
def fresh(http: httpx.Client) -> Iterator[str]:
    """A Craft session that has not been reset."""
    sid = http.post("/sessions", json={"env_id": CRAFT, "kwargs": {}}).json()["session_id"]
    yield sid
    http.delete(f"/sessions/{sid}")


BAD_REQUESTS = [  # method, path, JSON body or raw bytes, status, part of the error message
    ("POST", "/sessions", {"env_id": "turngym/Nope-v0"}, 404, "GET /envs lists the registered ids"),
    ("POST", "/sessions", {"env_id": CRAFT, "kwargs": {"bogus": 1}}, 400, "unexpected keyword argument 'bogus'"),
    ("POST", "/sessions", {"env_id": CRAFT, "kwargs": {"task": "nope"}}, 400, "unknown Craft task 'nope'"),
    ("POST", "/sessions", {"env_id": 3}, 422, "env_id"),
    ("POST", "/sessions", {"env_id": CRAFT, "kwarg": {}}, 422, "kwarg"),
    ("POST", "/sessions/0123456789abcdef/step", {"action": "noop"}, 404, "create a new one with POST /sessions"),
    ("DELETE", "/sessions/0123456789abcdef", None, 404, "unknown session"),
    ("POST", "/sessions/{sid}/step", b'{"action": "noop"', 400, "not valid JSON"),
    ("POST", "/sessions/{sid}/step", {"action": 5}, 422, "action: Input should be a valid string"),
    ("POST", "/sessions/{sid}/step", [1, 2], 422, "send a JSON object such as"),
    ("POST", "/sessions/{sid}/reset", {"seed": "zero"}, 422, "seed"),
    ("POST", "/sessions/{sid}/reset", {"seed": 0, "options": {"split": "nope"}}, 400, "unknown split 'nope'"),
    ("POST", "/sessions/{sid}/step", {"action": "noop"}, 400, "reset first"),
    ("GET", "/sessions/{sid}/render", None, 400, "reset first"),
    ("GET", "/nowhere", None, 404, "GET /docs"),
    # JSON's 1e400 parses to infinity, which no int() takes
    ("POST", "/sessions", b'{"env_id": "turngym/Craft-v0", "kwargs": {"max_turns": 1e400}}', 400, "infinity"),
    ("POST", "/sessions/{sid}/reset", b'{"options": {"split": "test", "index": 1e400}}', 400, "infinity"),
    ("POST", "/sessions/{sid}/step", b'{"action": "' + b"x" * (1 << 20) + b'"}', 413, "the limit is 1,048,576"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD_REQUESTS)
def test_bad_requests_get_a_json_error_and_the_server_goes_on(http: httpx.Client, fresh: str, method: str,
                                                              path: str, body: Any, status: int, message: str) -> None:
    raw = body if isinstance(body, bytes) else None
    response = http.request(method, path.format(sid=fresh), json=None if raw else body, content=raw,
                            headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"] and "\n" not in response.json()["error"]
    assert http.post(f"/sessions/{fresh}/reset", json={"seed": 1}).status_code == 200
    assert http.post(f"/sessions/{fresh}/step", json={"action": "noop"}).json()["info"]["turn"] == 1


def test_a_crash_answers_500_and_keeps_the_connection() -> None:
    # Starlette's last-resort handler re-raises after answering, and the server then drops the
    # keep-alive connection: a client's next call on it failed as if the server were gone
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with running(app) as address, httpx.Client(base_url=address, timeout=60) as client:
        for _ in range(10):
            crashed = client.get("/boom")
            assert crashed.status_code == 500 and "RuntimeError: kaboom" in crashed.json()["error"]
            assert client.get("/envs").status_code == 200


def test_client_errors_carry_the_servers_message(url: str) -> None:
    with pytest.raises(RemoteEnvError, match="GET /envs lists the registered ids") as caught:
        RemoteEnv(url, "turngym/Nope-v0")
    assert caught.value.status == 404
    with pytest.raises(RemoteEnvError, match=r"cannot reach the env server at http://127\.0\.0\.1:9 .*turngym serve"):
        RemoteEnv("http://127.0.0.1:9", CRAFT)


def test_session_cap() -> None:
    with running(create_app(max_sessions=2)) as address:
        first, second = RemoteEnv(address, CRAFT), RemoteEnv(address, WEBSHOP)
        with pytest.raises(RemoteEnvError, match=r"maximum of 2 sessions.*--max-sessions") as caught:
            RemoteEnv(address, CRAFT)
        assert caught.value.status == 429
        first.close()
        third = RemoteEnv(address, CRAFT)  # a closed session frees its place
        third.reset(seed=0)
        assert third.step("noop")[-1]["valid"]
        second.close()
        third.close()


def test_idle_sessions_expire() -> None:
    with running(create_app(idle_timeout=0.3)) as address, httpx.Client(base_url=address) as http:
        env = RemoteEnv(address, CRAFT)
        env.reset(seed=0)
        time.sleep(1.0)
        assert http.get("/health").json()["sessions"] == 0  # the background sweep closed it
        with pytest.raises(RemoteEnvError, match=r"idle for more than 0\.3 s") as caught:
            env.step("noop")
        assert caught.value.status == 404
        env.close()  # the session is gone already: closing still works
        again = RemoteEnv(address, CRAFT)
        again.reset(seed=0)
        assert again.step("noop")[-1]["turn"] == 1
        again.close()


@pytest.fixture(scope="module")
def shop(url: str) -> Iterator[RemoteEnv]:
    env = RemoteEnv(url, WEBSHOP, max_turns=10**6)
    env.reset(seed=0)
    yield env
    env.close()


ACTIONS = st.one_of(
    st.text(st.characters(categories=("L", "M", "N", "P", "S", "Z", "C")), max_size=60),  # lone surrogates too
    st.builds(lambda verb, arg: f"{verb}[{arg}]", st.sampled_from(["search", "click", "Click", "buy"]), st.text()),
    st.text(max_size=5000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=ACTIONS)
def test_any_action_string_steps(shop: RemoteEnv, action: str) -> None:
    obs, reward, terminated, truncated, info = shop.step(action)
    assert obs in shop.observation_space and isinstance(reward, float)
    assert isinstance(info["valid"], bool) and (info["error"] is None) == info["valid"]
    if terminated or truncated:
        shop.reset()


def test_concurrent_sessions_stay_apart(url: str, http: httpx.Client) -> None:
    """12 sessions (Craft with images and WebShop) step at once; each equals its local replay."""
    jobs = [(CRAFT if i % 2 else WEBSHOP, {"task": "collect_wood"} if i % 2 else {}, 100 + i) for i in range(12)]

    def remote(job: tuple[str, dict[str, Any], int]) -> list[dict[str, Any]]:
        env_id, kwargs, seed = job
        env = RemoteEnv(url, env_id, **kwargs)
        try:
            return play(env, seed, 25)
        finally:
            env.close()

    before = http.get("/health").json()["sessions"]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(remote, jobs))
    for (env_id, kwargs, seed), result in zip(jobs, results, strict=True):
        local = gym.make(env_id, **kwargs)
        assert_same(play(local, seed, 25), result)
        local.close()
    health = http.get("/health").json()
    assert health["sessions"] == before and health["rss_bytes"] < 3 * 2**30
