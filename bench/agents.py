"""Agents: turns per second of the neural policy and of the tiny Hugging Face agent, and the
behavior-cloning figure of issue 6 (Craft wood_pickaxe, 200 oracle episodes, 100 test seeds).

    .venv/bin/python bench/agents.py [--quick]

"policy only" times the policy's forward pass and choice on recorded observations; "with env"
times whole turns (policy + env step), one env at a time or 64 Craft envs in a SyncVectorEnv.
`--quick` skips the behavior-cloning runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch
from rich.console import Console
from rich.table import Table
from timing import p50_p95_ms

import turngym
from turngym.agents import make_agent
from turngym.agents.neural import new_policy, proposer, unbatch
from turngym.agents.tiny import build_tiny_lm
from turngym.apps.harness import evaluate
from turngym.results import entry_row
from turngym.trainers.bc import clone, collect, demonstrations

CRAFT = "turngym/Craft-v0"
console = Console()


def neural_rows() -> list[tuple[str, ...]]:
    rows = []
    policy = new_policy(seed=0)
    for batch in (1, 64):
        envs = gym.make_vec(CRAFT, num_envs=batch, vectorization_mode="sync")
        propose = proposer(envs)
        obs, info = envs.reset(seed=0)
        generator = torch.Generator().manual_seed(0)
        policy_s, turn_s = [], []
        for _ in range(200 if batch == 1 else 20):
            start = time.perf_counter()
            observations, infos = unbatch(obs, info, batch)
            step = policy.act(observations, infos, propose, generator=generator)
            mid = time.perf_counter()
            obs, _, _, _, info = envs.step(step.actions)
            policy_s.append(mid - start)
            turn_s.append(time.perf_counter() - start)
        envs.close()
        p50, p95 = p50_p95_ms(policy_s)
        rows.append((f"neural, batch {batch}", f"{batch * len(policy_s) / sum(policy_s):,.0f}",
                     f"{batch * len(turn_s) / sum(turn_s):,.0f}", f"{p50:.1f} / {p95:.1f}"))
    return rows


def hf_row(folder: Path) -> tuple[str, ...]:
    path = build_tiny_lm(folder / "tiny")
    env = gym.make(CRAFT, max_turns=20)
    agent = make_agent(f"hf:{path}", env, max_new_tokens=32)
    turns, seconds, tokens = 0, 0.0, 0
    for seed in range(3):
        start = time.perf_counter()
        traj = turngym.rollout(env, agent, seed=seed, record_images=False)
        seconds += time.perf_counter() - start
        turns += len(traj)
        tokens += sum(len(t.completion_ids or []) for t in traj.turns)
    return ("hf: tiny LM, 32 new tokens", "-", f"{turns / seconds:,.1f}",
            f"{1e3 * seconds / turns:.0f} a turn ({tokens / seconds:,.0f} tok/s)")


def bc_rows() -> list[tuple[str, ...]]:
    kwargs = {"task": "wood_pickaxe"}
    floor = entry_row(evaluate(CRAFT, ["random"], 100, env_kwargs=kwargs), "random")
    rows = [("none (random agent)", "-", "-", "-", "-", "-", f"{floor['success_rate']:.0%}", "-",
             f"{floor['mean_turns']:.1f}")]
    with tempfile.TemporaryDirectory() as tmp:
        for noise in (0.0, 0.2):
            start = time.perf_counter()
            trajs = collect(CRAFT, 200, env_kwargs=kwargs, seed=10_000, noise=noise)
            samples = demonstrations(trajs, proposer(CRAFT))
            collected = time.perf_counter()
            policy = new_policy(seed=0)
            history = clone(policy, samples)
            trained = time.perf_counter()
            path = policy.save(Path(tmp) / "bc.pt")
            spec = f"neural:{path}"
            sampled = entry_row(evaluate(CRAFT, [spec], 100, env_kwargs=kwargs), spec)
            done = time.perf_counter()
            greedy = entry_row(evaluate(CRAFT, [spec], 100, env_kwargs=kwargs, agent_options={"sample": False}), spec)
            rows.append(("200 episodes" if noise == 0 else f"200, DART {noise}", f"{len(samples):,}",
                         f"{history[-1]['accuracy']:.1%}", f"{collected - start:.0f} s", f"{trained - collected:.0f} s",
                         f"{done - trained:.0f} s", f"{sampled['success_rate']:.0%}", f"{greedy['success_rate']:.0%}",
                         f"{sampled['mean_turns']:.1f}"))
    return rows


def main() -> None:
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    speed = Table(title="Agent speed on Craft-v0 (wood_pickaxe, primitive actions)")
    for column in ("agent", "turns/s policy only", "turns/s with env", "policy ms p50 / p95"):
        speed.add_column(column, justify="left" if column == "agent" else "right")
    for row in neural_rows():
        speed.add_row(*row)
    with tempfile.TemporaryDirectory() as tmp:
        speed.add_row(*hf_row(Path(tmp)))
    console.print(speed)
    if "--quick" in sys.argv:
        return
    bc = Table(title="Behavior cloning on Craft wood_pickaxe, 10 epochs, 100 test seeds (target: >= 80% in under "
                     "5 minutes). fit: training accuracy; success: sampled policy; greedy: its argmax")
    for column in ("expert data", "turns", "fit", "collect", "train", "eval", "success", "greedy", "turns/ep"):
        bc.add_column(column, justify="left" if column == "collection" else "right")
    for row in bc_rows():
        bc.add_row(*row)
    console.print(bc)


if __name__ == "__main__":
    main()
