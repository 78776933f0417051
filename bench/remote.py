"""The env service under load: many RemoteEnv sessions stepping at once against a server in its own
process, each session checked against a local replay.

    .venv/bin/python bench/remote.py [--sessions 64] [--steps 100]

Half the sessions are Craft-v0 (with its 144x144 image, sent as PNG), half WebShop-v0. Each
session is a client thread: it opens its session, waits for the others, then takes `--steps`
steps of a seeded random agent (`info["actions"]`, templates filled with a word of the page),
resetting with the next seed when an episode ends. Step latency is the wall time of
`RemoteEnv.step` (HTTP, JSON and PNG included; resets are left out of it but not of the wall
time). Afterwards every session is replayed locally with `gym.make` and the same seeds: any
observation (text or image), reward, flag or info that differs is a mismatch. Server memory is
the RSS that `GET /health` reports, polled during the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
from rich.console import Console
from rich.table import Table
from timing import p50_p95_ms

import turngym  # noqa: F401  (registers the envs)
from turngym.agents.base import RandomAgent
from turngym.serve import RemoteEnv
from turngym.trajectory import jsonable

ENVS = ("turngym/Craft-v0", "turngym/WebShop-v0")
MIB = 2**20


def digest(obs: dict[str, Any], info: dict[str, Any], *rest: Any) -> str:
    """A fingerprint of one reset or step: text, image bytes, info, reward and flags."""
    image = obs.get("image")
    data = json.dumps([obs["text"], jsonable(info), *rest]).encode()
    if image is not None:
        data += str((image.dtype, image.shape)).encode() + image.tobytes()
    return hashlib.sha1(data).hexdigest()


def play(env: gym.Env, seed: int, steps: int, latencies: list[float] | None = None) -> list[tuple[str | None, str]]:
    """(action, digest) of every reset (action None) and step of a seeded random agent."""
    agent, episode, record = RandomAgent(), 0, []
    obs, info = env.reset(seed=seed)
    agent.reset(obs, info, seed=seed)
    record.append((None, digest(obs, info)))
    for _ in range(steps):
        action = agent.act(obs, info)
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        record.append((action, digest(obs, info, reward, terminated, truncated)))
        if terminated or truncated:
            episode += 1
            obs, info = env.reset(seed=seed + episode * 1000)
            agent.reset(obs, info, seed=seed + episode * 1000)
            record.append((None, digest(obs, info)))
    return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, max_sessions: int, log: Path) -> subprocess.Popen:
    """`turngym.serve.env_server.serve` in a child process, once it answers /health."""
    code = f"from turngym.serve.env_server import serve; serve(port={port}, max_sessions={max_sessions})"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the env server exited: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the env server did not answer within 120 s: see {log}")


class MemoryWatch:
    """Polls the server's RSS through /health until stopped; keeps the peak."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self.stop = url, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        rss = int(httpx.get(f"{self.url}/health", timeout=30).json()["rss_bytes"])
        self.peak = max(self.peak, rss)
        return rss

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            self.rss()

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def run(url: str, sessions: int, steps: int) -> dict[str, Any]:
    """All sessions at once; returns per-session env ids, seeds, records and step latencies, and
    the wall time from the moment every session was open until the last one finished."""
    jobs = [(ENVS[i % 2], 1000 + i) for i in range(sessions)]
    ready = threading.Barrier(sessions + 1)
    latencies: list[list[float]] = [[] for _ in jobs]

    def session(i: int) -> list[tuple[str | None, str]]:
        env_id, seed = jobs[i]
        env = RemoteEnv(url, env_id)
        try:
            ready.wait()
            return play(env, seed, steps, latencies[i])
        finally:
            env.close()

    with ThreadPoolExecutor(sessions) as pool:
        futures = [pool.submit(session, i) for i in range(sessions)]
        ready.wait()
        begin = time.perf_counter()
        records = [f.result() for f in futures]
        wall = time.perf_counter() - begin
    return {"jobs": jobs, "records": records, "latencies": latencies, "wall": wall}


def mismatches(result: dict[str, Any], steps: int) -> list[int]:
    """The sessions whose local replay differs anywhere from what the server sent."""
    bad = []
    for i, ((env_id, seed), record) in enumerate(zip(result["jobs"], result["records"], strict=True)):
        env = gym.make(env_id)
        if play(env, seed, steps) != record:
            bad.append(i)
        env.close()
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions (half Craft, half WebShop)")
    parser.add_argument("--steps", type=int, default=100, help="steps per session")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 120))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="turngym-bench-remote-")) / "server.log"
    with console.status("starting the env server..."):
        server = start_server(port, max(256, args.sessions), log)
    try:
        with MemoryWatch(url) as memory:
            before = memory.rss()
            with console.status(f"{args.sessions} sessions x {args.steps} steps..."):
                result = run(url, args.sessions, args.steps)
            after = memory.rss()
    finally:
        server.terminate()
        server.wait(timeout=30)
    with console.status("replaying every session locally..."):
        bad = mismatches(result, args.steps)

    table = Table(title=f"Env service under load: {args.sessions} concurrent RemoteEnv sessions x {args.steps} steps, "
                        f"server in its own process, {os.cpu_count()} cores")
    for c in ("env", "sessions", "steps", "step p50 ms", "step p95 ms", "mismatches"):
        table.add_column(c, justify="left" if c == "env" else "right")
    for env_id in (*ENVS, "all"):
        chosen = [i for i, (e, _) in enumerate(result["jobs"]) if env_id in (e, "all")]
        times = [t for i in chosen for t in result["latencies"][i]]
        table.add_row(env_id.removeprefix("turngym/"), str(len(chosen)), str(len(times)),
                      *(f"{x:.1f}" for x in p50_p95_ms(times)), str(sum(i in bad for i in chosen)))
    total = sum(len(t) for t in result["latencies"])
    summary = Table(title="Throughput and server memory (RSS from GET /health)")
    for c in ("total steps", "wall s", "steps/s", "RSS before MiB", "RSS peak MiB", "RSS after MiB",
              "mismatches"):
        summary.add_column(c, justify="right")
    summary.add_row(str(total), f"{result['wall']:.1f}", f"{total / result['wall']:.0f}", f"{before / MIB:.0f}",
                    f"{memory.peak / MIB:.0f}", f"{after / MIB:.0f}", str(len(bad)))
    console.print(table)
    console.print(summary)
    if bad:
        console.print(f"[red]mismatched sessions: {bad}[/red]")
        sys.exit(1)


if __name__ == "__main__":
    main()
