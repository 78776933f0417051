"""Shared test helpers. Loading the docs example registers it, so the contract tests cover it too."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# pytest-xdist runs one worker per core: torch's own thread pool on top would oversubscribe them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def load_example(name: str = "guess_number"):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


load_example()


def craft_layout(art: str, cows: bool = True):
    """A Craft Layout from ASCII art in the legend's characters; '@' is the player (on grass)."""
    from turngym.envs.craft import load_rules
    from turngym.envs.craft.worldgen import Layout

    rules = load_rules()
    rows = [line.strip() for line in art.strip().splitlines()]
    codes = {c: i for i, c in enumerate(rules.chars)}
    grid = np.array([[codes.get(c, codes["."]) for c in row] for row in rows], np.uint8)
    spawn = next((y, row.index("@")) for y, row in enumerate(rows) if "@" in row)
    cow_tiles = tuple(zip(*np.nonzero(grid == rules.mat("cow")), strict=True)) if cows else ()
    return Layout(grid, spawn, tuple((int(y), int(x)) for y, x in cow_tiles))


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` (ASGI) served by uvicorn in a daemon thread on a free port of 127.0.0.1; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def tiny_checkpoint(factory: pytest.TempPathFactory, name: str, *, vlm: bool = False, **kwargs: Any) -> Path:
    """A fresh copy of `build_tiny_lm(**kwargs)` (or `build_tiny_vlm`) in a new folder `name`.

    Each checkpoint is built once per test run, under a lock that the xdist workers share, and
    copied for every caller: the same arguments give the same checkpoint, and a trained one takes
    about 25 s to build, which a dozen fixtures across the workers would otherwise repeat. A copy
    (about 1 MB) leaves the shared build untouched whatever a test writes."""
    from turngym.agents.tiny import build_tiny_lm, build_tiny_vlm

    base = factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny-checkpoints"
    shared.mkdir(exist_ok=True)
    key = "-".join(["vlm" if vlm else "lm", *(f"{k}={v}" for k, v in sorted(kwargs.items()))])
    built = shared / key
    with open(shared / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first caller builds; the others wait, then copy
        if not built.exists():
            staging = shared / f"{key}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            (build_tiny_vlm if vlm else build_tiny_lm)(staging, **kwargs)
            staging.rename(built)
    return Path(shutil.copytree(built, factory.mktemp("models") / name))


def mixed_window_checkpoint(factory: pytest.TempPathFactory, name: str) -> Path:
    """A tiny random Qwen2 whose first layer attends through an 8-token sliding window and whose
    second attends to everything (the mix of Gemma 3 and long-context Qwen2), with the tiny
    checkpoint's tokenizer: a packed pass that cuts every layer to the window scores it wrong."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = tiny_checkpoint(factory, name, train_steps=0)
    with open(path / "config.json") as fh:
        base = json.load(fh)
    config = Qwen2Config(vocab_size=base["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         use_sliding_window=True, sliding_window=8, max_window_layers=1, tie_word_embeddings=True,
                         bos_token_id=base["bos_token_id"], eos_token_id=base["eos_token_id"],
                         pad_token_id=base["pad_token_id"])
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread: models this small only lose by spreading over cores that other test
    workers share, and one thread keeps the float sums, hence the samples and runs, identical."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class StopRun(Exception):
    """Raised by `stop_after_saves`: a training run cut short right after a checkpoint."""


def stop_after_saves(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    """Make the neural-policy trainer (trainers/ppo.py) raise StopRun right after writing its
    `saves`-th checkpoint, as a run killed between two updates would stop."""
    import turngym.trainers.ppo as ppo

    real, calls = ppo.save_checkpoint, []

    def save_then_stop(path: Any, state: Any) -> None:
        real(path, state)
        calls.append(1)
        if len(calls) == saves:
            raise StopRun

    monkeypatch.setattr(ppo, "save_checkpoint", save_then_stop)
