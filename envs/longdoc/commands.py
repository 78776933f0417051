"""`turngym longdoc build`: write generated splits as a benchmark folder (MMLongBench-Doc's layout)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from turngym.trajectory import atomic_write_bytes, atomic_write_json

app = typer.Typer(no_args_is_help=True, help="LongDocVQA documents: generate the frozen splits once, reuse them.")
console = Console()


@app.command()
def build(split: Annotated[list[str] | None, typer.Option(help="test or dev (repeatable; default both)")] = None,
          out: Annotated[Path | None, typer.Option(help="folder to write samples.json and documents/ into "
                                                        "(default: the cache, which the env reads)")] = None) -> None:
    """Generate the documents of the frozen splits; with --out, also a samples.json for dataset=OUT."""
    from turngym.console import progress_bar
    from turngym.envs.longdoc.dataset import GeneratedSet

    data = GeneratedSet()
    names = split or ["test", "dev"]
    for name in names:
        if name not in ("test", "dev"):
            raise typer.BadParameter("use test or dev (train documents are made on first use)", param_hint="--split")
    tasks = [task for name in names for task in data.splits[name]]
    seeds = sorted({data.parse(task)[0] for task in tasks})
    start = time.perf_counter()
    with progress_bar(console=console) as progress:
        bar = progress.add_task(f"{len(seeds)} documents", total=len(seeds))
        for seed in seeds:
            data.questions_of(seed)
            progress.advance(bar)
    records = [data.question(task).record() for task in tasks]
    folder = data.root
    if out is not None:
        for seed in seeds:
            name = f"gen-{seed:06d}.pdf"
            atomic_write_bytes(out / "documents" / name, (data.root / "documents" / name).read_bytes())
        atomic_write_json(out / "samples.json", records, indent=1)
        folder = out
    console.print(f"{len(records)} questions over {len(seeds)} documents in {folder} "
                  f"({time.perf_counter() - start:.1f} s)")
