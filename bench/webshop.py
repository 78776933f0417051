"""WebShop catalogs: build time and size, load time and memory, search and step latency, and how
the agents fare as the catalog grows.

    .venv/bin/python bench/webshop.py [--sizes small,medium,full] [--episodes 500] [--keep]

Catalogs are built afresh into a temporary folder (so build times are real); load time and RSS
are measured in a new process per case, with 1 and with 8 env instances. The agents play the
test split, which holds the same tasks at every size: only the number of distractors changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from timing import p50_p95_ms

from turngym.apps.harness import evaluate
from turngym.envs.webshop.catalog import SIZES, build_generated, open_catalog
from turngym.results import entry_row

LOAD = """
import json, os, sys, time
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
import gymnasium as gym, turngym
base = rss()
start = time.perf_counter()
envs = [gym.make("turngym/WebShop-v0", catalog=sys.argv[1])]
envs[0].reset(seed=0)
envs[0].step("search[wireless earbuds with noise cancelling]")
load = time.perf_counter() - start
one = rss()
for seed in range(1, 8):
    env = gym.make("turngym/WebShop-v0", catalog=sys.argv[1])
    env.reset(seed=seed)
    env.step("search[gluten free coffee beans]")
    envs.append(env)
print(json.dumps({"load_s": load, "rss_1": one, "rss_8": rss(), "python": base}))
"""


ENV = "turngym/WebShop-v0"
AGENTS = ("random", "heuristic:no-options", "heuristic", "oracle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,full")
    parser.add_argument("--episodes", type=int, default=500, help="test tasks per agent and size")
    parser.add_argument("--keep", action="store_true", help="keep the built catalogs (about 2 GB with full)")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    console = Console(width=max(Console().width, 120))
    folder = Path(tempfile.mkdtemp(prefix="turngym-webshop-bench-"))
    build, memory, latency = Table(title="Build"), Table(title="Load and memory (fresh process)"), \
        Table(title="Latency (ms)")
    agents = Table(title=f"Agents on {args.episodes} test tasks: success / score (100 x reward); "
                         "WebShop's rule on its 1.18M products: 9.6% / 45.6")
    for table, columns in ((build, ("catalog", "products", "build s", "file MB")),
                           (memory, ("catalog", "load s (1 env)", "RSS 1 env MB", "RSS 8 envs MB",
                                     "per extra env MB", "target")),
                           (latency, ("catalog", "search p50", "search p95", "step p50", "step p95", "target")),
                           (agents, ("catalog", *AGENTS))):
        for c in columns:
            table.add_column(c, justify="left" if c == "catalog" or c == "target" else "right")
    for size in sizes:
        path = folder / f"{size}.sqlite"
        with console.status(f"building {size} ({SIZES[size]:,} products)..."):
            start = time.perf_counter()
            build_generated(size, path)
            built = time.perf_counter() - start
        build.add_row(size, f"{SIZES[size]:,}", f"{built:.1f}", f"{path.stat().st_size / 1e6:.0f}")

        if size != "small":
            result = json.loads(subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True,
                                               text=True, check=True).stdout)
            extra = (result["rss_8"] - result["rss_1"]) / 7
            target = "load <= 5 s, RSS <= 2 GB, extra <= 20 MB" if size == "full" else "extra <= 20 MB"
            memory.add_row(size, f"{result['load_s']:.2f}", f"{result['rss_1']:.0f}", f"{result['rss_8']:.0f}",
                           f"{extra:.1f}", target)

        catalog = open_catalog(path)
        queries = [catalog.goal(k)["instruction_text"] for k in range(300)]
        catalog.search(queries[0])  # warm the page cache
        searches = []
        for query in queries:
            start = time.perf_counter()
            catalog.search(query)
            searches.append(time.perf_counter() - start)
        steps = step_latencies(str(path))
        target = {"medium": "search p50 <= 5, step p50 <= 2", "full": "search p50 <= 20, step p50 <= 2"}.get(size, "")
        latency.add_row(size, *(f"{x:.2f}" for x in (*p50_p95_ms(searches), *p50_p95_ms(steps))), target)
        with console.status(f"agents on {size}..."):
            results = evaluate(ENV, list(AGENTS), args.episodes, env_kwargs={"catalog": str(path)})
        rows = [entry_row(results, a) for a in AGENTS]
        agents.add_row(size, *(f"{r['success_rate']:.1%} / {100 * r['mean_score']:.1f}" for r in rows))
    for table in (build, memory, latency, agents):
        console.print(table)
    if args.keep:
        console.print(f"catalogs kept in {folder}")
    else:
        shutil.rmtree(folder)


def step_latencies(catalog: str) -> list[float]:
    """Text-mode env.step times under the heuristic and random agents."""
    import gymnasium as gym

    import turngym  # noqa: F401
    from turngym.agents import make_agent

    env = gym.make("turngym/WebShop-v0", catalog=catalog)
    times = []
    for spec in ("heuristic", "random"):
        agent = make_agent(spec, env)
        for seed in range(40):
            obs, info = env.reset(seed=seed, options={"split": "test", "index": seed})
            agent.reset(obs, info, seed=seed)
            done = False
            while not done:
                action = agent.act(obs, info)
                start = time.perf_counter()
                obs, _, terminated, truncated, info = env.step(action)
                times.append(time.perf_counter() - start)
                done = terminated or truncated
    return times


if __name__ == "__main__":
    main()
