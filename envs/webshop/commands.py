"""`turngym webshop ...` and `turngym serve webshop`: build catalogs, serve the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from turngym.envs.webshop.catalog import SIZES, build_generated, generated_path, open_catalog

app = typer.Typer(no_args_is_help=True, help="WebShop catalogs: build them once, reuse them everywhere.")
console = Console()


@app.command()
def build(size: Annotated[str, typer.Option(help=f"catalog size: {', '.join(SIZES)}")] = "small",
          from_webshop: Annotated[Path | None, typer.Option(
              help="folder with the original WebShop data (items_shuffle*.json, items_ins_v2*.json, "
                   "items_human_ins.json) to build from instead")] = None,
          out: Annotated[Path | None, typer.Option(help="catalog file to write (default: the cache)")] = None) -> None:
    """Build a catalog file (generated, or from the original WebShop data) and print its path."""
    start = time.perf_counter()
    with console.status("building the catalog (full: a few minutes)..."):
        if from_webshop is not None:
            from turngym.envs.webshop.original import build_from_webshop

            path = build_from_webshop(from_webshop, out or (Path.cwd() / "webshop-original.sqlite"))
        else:
            if size not in SIZES:
                raise typer.BadParameter(f"use one of {', '.join(SIZES)}", param_hint="--size")
            existed = (out or generated_path(size)).exists()
            path = build_generated(size, out)
            if existed:
                console.print("already built")
    catalog = open_catalog(path)
    console.print(f"{path} ({path.stat().st_size / 1e6:.0f} MB, {catalog.size:,} products, "
                  f"{catalog.goal_count:,} goals) in {time.perf_counter() - start:.1f} s")


def serve(port: int, catalog: str, host: str) -> None:
    import uvicorn

    from turngym.envs.webshop.server import create_app

    console.print(f"WebShop on http://{host}:{port}/ (catalog {catalog})")
    uvicorn.run(create_app(open_catalog(catalog)), host=host, port=port, log_level="warning")
