"""LongDocVQA: document generation time, view/zoom/search latency, and memory with a long document.

    .venv/bin/python bench/longdoc.py

View latency is measured cold (a page not rendered before) and cached (the same page again), at
72, 96 and 144 dpi, on a generated 150-page document; RSS is measured in a fresh process that opens
the 150-page document, searches it and views 40 pages at 96 dpi.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from turngym.envs.longdoc.document import PdfDocument
from turngym.envs.longdoc.generate import generate

RSS = """
import json, sys
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
import gymnasium as gym, turngym
from turngym.envs.longdoc.document import PdfDocument
doc = PdfDocument(sys.argv[1])
doc.search("revenue growth in 2021")  # extracts every page's text and builds the index
for page in range(1, 41):
    doc.render(page, 96)
print(json.dumps({"rss": rss()}))
"""


def ms(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


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

    path = folder / "doc150.pdf"
    views = Table(title="view step latency (ms) on a 150-page document (target: cached p50 <= 40 at 96 dpi)")
    for column in ("dpi", "image", "cold p50", "cold p95", "cached p50", "cached p95", "zoom p50"):
        views.add_column(column, justify="right")
    for dpi in (72, 96, 144):
        document = PdfDocument(path)
        cold, cached, zoom = [], [], []
        for page in range(1, 41):
            start = time.perf_counter()
            image = document.render(page, dpi)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            document.render(page, dpi).copy()  # the env hands out a copy
            cached.append(time.perf_counter() - start)
            start = time.perf_counter()
            document.render(page, dpi, (0.1, 0.1, 0.5, 0.4))
            zoom.append(time.perf_counter() - start)
        views.add_row(str(dpi), "x".join(map(str, image.shape)), *(f"{x:.1f}" for x in (*ms(cold), *ms(cached))),
                      f"{ms(zoom)[0]:.1f}")

    document = PdfDocument(path)
    document.search("warm up")
    queries = ["revenue 2021", "total staff employed", "figure growth chart", "who leads the program",
               "percentage of budget", "conclusion and outlook", "table population by region", "director"]
    search = []
    for _ in range(25):
        for query in queries:
            start = time.perf_counter()
            document.search(query)
            search.append(time.perf_counter() - start)
    rss = json.loads(subprocess.run([sys.executable, "-c", RSS, str(path)], capture_output=True, text=True,
                                    check=True).stdout)["rss"]
    other = Table(title="search and memory")
    for column in ("search p50 ms", "search p95 ms", "target", "RSS MB (150 pages, 40 views)", "target "):
        other.add_column(column, justify="right")
    other.add_row(*(f"{x:.2f}" for x in ms(search)), "p50 <= 5", f"{rss:.0f}", "<= 300")
    for table in (gen, views, other):
        console.print(table)
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
