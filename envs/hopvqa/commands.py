"""`turngym hopvqa splits`: draw a version's frozen test and dev seeds, as its splits file holds them."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

app = typer.Typer(no_args_is_help=True, help="HopVQA tasks: how the frozen splits are drawn.")


@app.command()
def splits(version: Annotated[int, typer.Option(help="the env version: 0 for HopVQA-v0, 1 for HopVQA-v1")] = 1,
           cap: Annotated[float, typer.Option(help="the most one answer value may fill of a split")] = 0.1) -> None:
    """Print the test and dev seeds of every chain setting as YAML (tasks.py `draw_split`): seeds in
    order, capped per answer value, in balanced order. The version's splits file must match it."""
    from turngym.envs.hopvqa.env import task_answer
    from turngym.envs.hopvqa.tasks import CHAINS, FIRST_SEED, draw_split

    lists = {split: {chain: draw_split(lambda seed, c=chain: task_answer(seed, c, version), split, cap)
                     for chain in CHAINS} for split in FIRST_SEED}
    typer.echo(yaml.safe_dump({"answer_cap": cap, **lists}, default_flow_style=None, width=10**6, sort_keys=False))
