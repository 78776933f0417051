"""LongDocVQA: document generation time, view/zoom/search latency, and memory with a long document.

    .venv/bin/python bench/longdoc.py

Step latencies are whole `env.step` calls on a generated 150-page document: `view` cold (a page
not shown before) and cached (the same page again) at 72, 96 and 144 dpi, `zoom`, and `search`.
RSS is measured in a fresh process that opens the document, searches it and views 40 pages at 96 dpi.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table
from timing import p50_p95_ms

import turngym  # noqa: F401  (registers the env ids)
from turngym.envs.longdoc.generate import generate

RSS = """
import json, sys
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
import gymnasium as gym, turngym
env = gym.make("turngym/LongDocVQA-v0", dataset=sys.argv[1], max_turns=10**6)
env.reset(options={"split": "test", "index": 0})
env.step("search[revenue growth in 2021]")  # extracts every page's text and builds the index
for page in range(1, 41):
    env.step(f"view[{page}]")
print(json.dumps({"rss": rss()}))
"""


QUERIES = ["revenue 2021", "total staff employed", "figure growth chart", "who leads the program",
           "percentage of budget", "conclusion and outlook", "table population by region", "director"] * 5


def main() -> None:
    console = Console(width=max(Console().width, 110))
    folder = Path(tempfile.mkdtemp(prefix="turngym-longdoc-bench-"))
    gen = Table(title="Generation (target: 50 pages <= 3 s)")
    for column in ("pages", "seconds", "file MB", "facts", "questions"):
        gen.add_column(column, justify="right")
    for pages in (50, 150):
        times = []
        for seed in range(3):
            start = time.perf_counter()
            doc = generate(seed, pages=pages)
            times.append(time.perf_counter() - start)
        (folder / f"doc{pages}.pdf").write_bytes(doc.pdf)
        gen.add_row(str(pages), f"{np.median(times):.2f}", f"{len(doc.pdf) / 1e6:.1f}", str(len(doc.facts)),
                    str(len(doc.questions)))

    (folder / "documents").mkdir()
    (folder / "documents" / doc.doc_id).write_bytes(doc.pdf)  # the 150-page one, as a one-document benchmark
    (folder / "samples.json").write_text(json.dumps(doc.questions))
    views = Table(title="env.step latency (ms) on a 150-page document (target: view cached p50 <= 40 at 96 dpi)")
    for column in ("dpi", "image", "view cold p50", "cold p95", "view cached p50", "cached p95", "zoom p50"):
        views.add_column(column, justify="right")
    search = []
    for dpi in (72, 96, 144):
        env = gym.make("turngym/LongDocVQA-v0", dataset=str(folder), dpi=dpi, max_turns=10**6)
        env.reset(options={"split": "test", "index": 0})
        cold, cached, zoom = [], [], []
        for page in range(1, 41):
            for action, times in ((f"view[{page}]", cold), (f"view[{page}]", cached),
                                  (f"zoom[{page}, 0.1, 0.1, 0.5, 0.4]", zoom)):
                start = time.perf_counter()
                obs, *_ = env.step(action)
                times.append(time.perf_counter() - start)
        for query in QUERIES:
            start = time.perf_counter()
            env.step(f"search[{query}]")
            search.append(time.perf_counter() - start)
        views.add_row(str(dpi), "x".join(map(str, obs["image"].shape)),
                      *(f"{x:.1f}" for x in (*p50_p95_ms(cold), *p50_p95_ms(cached))), f"{p50_p95_ms(zoom)[0]:.1f}")
        env.close()
    rss = json.loads(subprocess.run([sys.executable, "-c", RSS, str(folder)], capture_output=True, text=True,
                                    check=True).stdout)["rss"]
    other = Table(title="search and memory")
    for column in ("search step p50 ms", "p95 ms", "target", "RSS MB (150 pages, 40 views)", "target "):
        other.add_column(column, justify="right")
    other.add_row(*(f"{x:.2f}" for x in p50_p95_ms(search)), "p50 <= 5", f"{rss:.0f}", "<= 300")
    for table in (gen, views, other):
        console.print(table)
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
