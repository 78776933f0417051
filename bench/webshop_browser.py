"""WebShopBrowser-v0 (WebShop in headless Chromium): reset and step latency, throughput with 1 and
4 envs, and action-by-action parity with text mode (WebShop-v0) on the first test tasks.

    .venv/bin/python bench/webshop_browser.py [--latency-tasks 12] [--seconds 10] [--parity 50]

Latency: the oracle and the heuristic play the first test tasks; before each episode three steps
that load no page (scroll down, scroll up, typing into the search box) are timed as non-navigation
steps, every agent step (each loads a page on this site) as a navigation step. Times are
wall-clock `env.step`/`env.reset` through `gym.make`; load and observe are the env's own
`info["timings"]` (`timings=True`). Throughput: the heuristic plays training tasks and resets
when an episode ends (resets count in the time, not in the steps), in one env and in a
`gymnasium.vector.AsyncVectorEnv` of 4 (each worker process starts its own Chromium and store
site). Parity: the same agent, seed and options (`{"split": "test", "index": i}`) in both modes
must give the same actions, validity per turn, rewards, success and score.

Reference: BrowserGym launches a browser per reset and by default waits 0.5 s before every
observation, so each of its steps takes at least 500 ms.
"""

from __future__ import annotations

import argparse
import re
import time
from functools import partial
from typing import Any

import gymnasium as gym
from rich.console import Console
from rich.table import Table
from timing import p50_p95_ms

import turngym  # noqa: F401  (registers the envs)
from turngym.agents import make_agent
from turngym.agents.webshop import WebShopRuleBaseline
from turngym.rollout import rollout

TEXT, BROWSER = "turngym/WebShop-v0", "turngym/WebShopBrowser-v0"
AGENTS = ("oracle", "heuristic")
BROWSERGYM = "BrowserGym: browser per reset, 0.5 s wait before each observation"
SEARCHBOX = re.compile(r"^\s*- \[(\d+)\] searchbox", re.MULTILINE)


def test_task(i: int) -> dict[str, Any]:
    return {"split": "test", "index": i}


# ---- latency ------------------------------------------------------------------------------------
def latency(screenshot: bool, tasks: int) -> dict[str, Any]:
    """Reset and step times (seconds) of the oracle and heuristic on the first `tasks` test tasks."""
    start = time.perf_counter()
    env = gym.make(BROWSER, screenshot=screenshot, timings=True)
    env.reset(seed=0, options=test_task(0))
    cold = time.perf_counter() - start
    resets, nav, other, load, observe = [], [], [], [], []
    try:
        for spec in AGENTS:
            agent = make_agent(spec, env)
            for i in range(tasks):
                t = time.perf_counter()
                obs, info = env.reset(seed=i, options=test_task(i))
                resets.append(time.perf_counter() - t)
                agent.reset(obs, info, seed=i)
                box = SEARCHBOX.search(obs["text"])
                for action in ("scroll(down)", "scroll(up)", f'type({box.group(1)}, "bench")'):
                    t = time.perf_counter()
                    obs, _, _, _, info = env.step(action)
                    other.append(time.perf_counter() - t)
                    assert info["valid"] and "load_ms" not in info["timings"], (action, info)
                done = False
                while not done:
                    action = agent.act(obs, info)
                    t = time.perf_counter()
                    obs, _, terminated, truncated, info = env.step(action)
                    elapsed = time.perf_counter() - t
                    if "load_ms" in info["timings"]:
                        nav.append(elapsed)
                        load.append(info["timings"]["load_ms"] / 1e3)
                    else:
                        other.append(elapsed)
                    observe.append(info["timings"]["observe_ms"] / 1e3)
                    done = terminated or truncated
    finally:
        env.close()
    return {"cold": cold, "resets": resets, "nav": nav, "other": other, "load": load, "observe": observe}


# ---- throughput ---------------------------------------------------------------------------------
def make_env(screenshot: bool) -> gym.Env:
    return gym.make(BROWSER, screenshot=screenshot)


def single_throughput(screenshot: bool, seconds: float) -> tuple[float, float]:
    """Steps/s and episodes/s of one env under the heuristic, resets included in the time."""
    env = make_env(screenshot)
    agent = WebShopRuleBaseline(env)
    try:
        obs, info = env.reset(seed=0)
        agent.reset(obs, info)
        steps = episodes = 0
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            steps += 1
            if terminated or truncated:
                episodes += 1
                obs, info = env.reset()
                agent.reset(obs, info)
        elapsed = time.perf_counter() - begin
    finally:
        env.close()
    return steps / elapsed, episodes / elapsed


def vector_throughput(screenshot: bool, seconds: float, num_envs: int = 4) -> tuple[float, float, float]:
    """Steps/s, episodes/s and start-up seconds of an AsyncVectorEnv of browser envs under the
    heuristic (one per env); gymnasium's next-step autoreset turns the step after an episode's
    end into its reset, which is not counted as a step."""
    start = time.perf_counter()
    envs = gym.vector.AsyncVectorEnv([partial(make_env, screenshot)] * num_envs, shared_memory=False,
                                     context="spawn")
    try:
        _, info = envs.reset(seed=list(range(num_envs)))
        startup = time.perf_counter() - start
        agents = [WebShopRuleBaseline(None) for _ in range(num_envs)]
        for j, agent in enumerate(agents):
            agent.reset({}, _info_of(info, j))
        resetting = [False] * num_envs
        steps = episodes = 0
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds:
            actions = ["click[Buy Now]" if resetting[j] else agent.act({}, _info_of(info, j))
                       for j, agent in enumerate(agents)]  # a resetting env ignores its action
            _, _, terminated, truncated, info = envs.step(actions)
            for j, agent in enumerate(agents):
                if resetting[j]:
                    agent.reset({}, _info_of(info, j))
                    resetting[j] = False
                else:
                    steps += 1
                    if terminated[j] or truncated[j]:
                        episodes += 1
                        resetting[j] = True
        elapsed = time.perf_counter() - begin
    finally:
        envs.close()
    return steps / elapsed, episodes / elapsed, startup


def _info_of(info: dict[str, Any], j: int) -> dict[str, Any]:
    return {"instruction": info["instruction"][j], "actions": info["actions"][j]}


# ---- parity -------------------------------------------------------------------------------------
def parity(tasks: int) -> dict[str, dict[str, Any]]:
    """Per agent: how many tasks match in each respect between text and browser mode, and the
    success rates of both."""
    text_env, browser_env = gym.make(TEXT), gym.make(BROWSER, screenshot=False)
    out: dict[str, dict[str, Any]] = {}
    try:
        for spec in AGENTS:
            text_agent, browser_agent = make_agent(spec, text_env), make_agent(spec, browser_env)
            counts = dict.fromkeys(("actions", "valid", "rewards", "success", "score", "identical"), 0)
            successes, mismatches = [0, 0], []
            for i in range(tasks):
                t = rollout(text_env, text_agent, seed=i, options=test_task(i), record_images=False)
                b = rollout(browser_env, browser_agent, seed=i, options=test_task(i), record_images=False)
                same = {"actions": [x.action for x in t.turns] == [x.action for x in b.turns],
                        "valid": [x.info["valid"] for x in t.turns] == [x.info["valid"] for x in b.turns],
                        "rewards": [x.reward for x in t.turns] == [x.reward for x in b.turns],
                        "success": t.success == b.success, "score": t.score == b.score}
                same["identical"] = all(same.values())
                for key, value in same.items():
                    counts[key] += value
                successes[0] += t.success
                successes[1] += b.success
                if not same["identical"]:
                    mismatches.append(i)
            out[spec] = {**counts, "text_success": successes[0] / tasks, "browser_success": successes[1] / tasks,
                         "mismatches": mismatches}
    finally:
        text_env.close()
        browser_env.close()
    return out


# ---- report -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-tasks", type=int, default=12, help="test tasks per agent for latency")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput measurement")
    parser.add_argument("--parity", type=int, default=50, help="test tasks per agent for the parity run")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 120))
    begin = time.perf_counter()

    runs = {}
    for screenshot in (True, False):
        label = "screenshot" if screenshot else "no screenshot"
        with console.status(f"latency, {label}..."):
            runs[label] = latency(screenshot, args.latency_tasks)
    resets = Table(title=f"Reset latency (ms), {args.latency_tasks} test tasks x {len(AGENTS)} agents")
    steps = Table(title="Step latency (ms), p50 / p95: oracle and heuristic episodes; nav = the step loads a page")
    for table, columns in ((resets, ("setting", "resets", "p50", "p95", "make + first reset", "target")),
                           (steps, ("setting", "steps", "all", "nav", "non-nav", "load p50", "observe p50",
                                    "target"))):
        for c in columns:
            table.add_column(c, justify="left" if c in ("setting", "target") else "right", no_wrap=True)
    for label, run in runs.items():
        resets.add_row(label, str(len(run["resets"])), *(f"{x:.0f}" for x in p50_p95_ms(run["resets"])),
                       f"{run['cold'] * 1e3:.0f}", "p50 <= 500")
        both = run["nav"] + run["other"]
        steps.add_row(label, f"{len(both)} ({len(run['nav'])} nav)",
                      *("{:.0f} / {:.0f}".format(*p50_p95_ms(x)) for x in (both, run["nav"], run["other"])),
                      f"{p50_p95_ms(run['load'])[0]:.0f}", f"{p50_p95_ms(run['observe'])[0]:.0f}",
                      "p50 <= 250" if label == "screenshot" else "p50 <= 150")
    resets.caption = steps.caption = f"Reference: {BROWSERGYM} (>= 500 ms a step)."

    throughput = Table(title=f"Throughput: heuristic on training tasks, resets included, {args.seconds:.0f} s each",
                       caption="4 envs: AsyncVectorEnv, one Chromium and store site per worker process; "
                               f"this machine has {_cores()} cores.")
    for c in ("setting", "1 env steps/s", "1 env episodes/s", "4 envs steps/s", "4 envs episodes/s", "speed-up",
              "4-env start-up s"):
        throughput.add_column(c, justify="left" if c == "setting" else "right")
    for screenshot in (True, False):
        label = "screenshot" if screenshot else "no screenshot"
        with console.status(f"throughput, {label}..."):
            one = single_throughput(screenshot, args.seconds)
            four = vector_throughput(screenshot, args.seconds)
        throughput.add_row(label, f"{one[0]:.1f}", f"{one[1]:.2f}", f"{four[0]:.1f}", f"{four[1]:.2f}",
                           f"{four[0] / one[0]:.2f}x", f"{four[2]:.1f}")

    with console.status(f"parity on {args.parity} test tasks..."):
        same = parity(args.parity)
    table = Table(title=f"Parity, text vs browser mode (screenshot=False), first {args.parity} test tasks: "
                        "tasks that match")
    for c in ("agent", "identical", "actions", "valid flags", "rewards", "success", "score", "success text",
              "success browser", "mismatched tasks"):
        table.add_column(c, justify="left" if c in ("agent", "mismatched tasks") else "right")
    for spec, r in same.items():
        table.add_row(spec, *(f"{r[k]}/{args.parity}" for k in ("identical", "actions", "valid", "rewards", "success",
                                                                   "score")),
                      f"{r['text_success']:.1%}", f"{r['browser_success']:.1%}",
                      ", ".join(map(str, r["mismatches"])) or "none")

    for t in (resets, steps, throughput, table):
        console.print(t)
    console.print(", ".join(f"{spec} {r['identical']}/{args.parity} identical" for spec, r in same.items()) +
                  f"; whole bench {time.perf_counter() - begin:.0f} s")


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
