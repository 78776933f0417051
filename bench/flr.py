"""FLR as a reward model: pairwise accuracy against env outcomes, as Zhang et al. 2024 measure one.

    .venv/bin/python bench/flr.py [--pairs 16] [--lm smollm2] [--threads 1] [--out DIR]

A pair is two episodes of the same test task that both ended with a final action (a purchase, an
answer), one a success and one a failure; a scorer is right on a pair when it scores the success's
final turn higher (a tie counts half). The final turn is scored as `FLRReward` scores it: the
observation acted on as the user message, the action as the response. Episodes come from the
family's agents in order (heuristic, oracle, WebShop's heuristic:no-options, then random with
seeds 0-9): the success is the first that succeeds, the failure the first that fails and whose
final (observation, action) differs from the success's. (WebShop's item page does not show the
options picked, so a purchase without the asked-for options often reads exactly like the right
one: no scorer of that turn can tell them apart, and such failures are passed over and counted.)

Scorers, all from one follow-up LM (SmolLM2-135M-Instruct by default): FLR with the general and
the family's follow-up set, each as the paper's log-likelihood, the public code's raw logit (each
token at the position that predicts it) and its exact bag of logits at one position; and the
baseline, the response's own mean log-likelihood given the conversation. `--out DIR` writes
DIR/results.json (every pair's scores included).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

import turngym  # noqa: F401  (registers the envs)
from turngym.agents import make_agent
from turngym.rewards.flr import VARIANTS, FollowUpLikelihood, FollowUps, Measures, load_followups, trajectory_item
from turngym.rollout import rollout
from turngym.trajectory import Trajectory, atomic_write_json

# family -> (env id, gym.make kwargs, the agents tried before random)
FAMILIES = {"webshop": ("turngym/WebShop-v0", {"obs_mode": "text"}, ("heuristic", "oracle", "heuristic:no-options")),
            "longdoc": ("turngym/LongDocVQA-v0", {}, ("heuristic", "oracle"))}
RANDOM_SEEDS = 10
VARIANT_NAMES = {"loglik": "FLR log-lik", "logit": "FLR raw logit", "logit_bag": "FLR logit bag (public code)"}
PAIRS_PER_PASS = 2  # items of a measure() call: the progress bar moves once per pair


@dataclass
class Pair:
    task_id: str
    success: Trajectory
    failure: Trajectory
    success_agent: str
    failure_agent: str


def collect_pairs(family: str, wanted: int) -> tuple[list[Pair], dict[str, int]]:
    """Up to `wanted` pairs from the family's test tasks in order, and how many tasks were tried and
    passed over (no success, no ended failure, or only failures that read like the success)."""
    env_id, kwargs, agents = FAMILIES[family]
    env = gym.make(env_id, **kwargs)
    players = [(spec, 0) for spec in agents] + [("random", seed) for seed in range(RANDOM_SEEDS)]
    made = {spec: make_agent(spec, env) for spec in {spec for spec, _ in players}}
    pairs: list[Pair] = []
    counts = {"tasks": 0, "no_success": 0, "no_failure": 0, "only_identical_failures": 0,
              "identical_failures_passed_over": 0}
    for index in range(len(env.unwrapped.splits["test"])):
        if len(pairs) == wanted:
            break
        counts["tasks"] += 1
        episodes = [(f"{spec}" if spec != "random" else f"random@{seed}",
                     rollout(env, made[spec], seed=seed, options={"split": "test", "index": index},
                             record_images=False)) for spec, seed in players]
        ended = [(who, t) for who, t in episodes if t.terminated]
        success = next(((who, t) for who, t in ended if t.success), None)
        failures = [(who, t) for who, t in ended if not t.success]
        if success is None or not failures:
            counts["no_success" if success is None else "no_failure"] += 1
            continue
        different = [(who, t) for who, t in failures if trajectory_item(t) != trajectory_item(success[1])]
        counts["identical_failures_passed_over"] += len(failures) - len(different)
        failure = different[0] if different else None
        if failure is None:
            counts["only_identical_failures"] += 1
            continue
        pairs.append(Pair(success[1].task_id, success[1], failure[1], success[0], failure[0]))
    env.close()
    return pairs, counts


def accuracy(good: np.ndarray, bad: np.ndarray) -> float:
    """Share of pairs where the success scores higher; ties (and NaN) count half."""
    right = np.where(good > bad, 1.0, np.where(good < bad, 0.0, 0.5))
    return float(right.mean()) if len(right) else float("nan")


def measure_pairs(flr: FollowUpLikelihood, pairs: list[Pair], followups: tuple[str, ...],
                  family: str) -> Measures:
    """Every follow-up and the response baseline on each pair's two final turns (success, failure, ...)."""
    items = [trajectory_item(t) for p in pairs for t in (p.success, p.failure)]
    parts = [flr.measure(items[i:i + 2 * PAIRS_PER_PASS], followups)
             for i in track(range(0, len(items), 2 * PAIRS_PER_PASS), description=f"scoring {family}",
                            transient=True)]
    return Measures(followups, {v: np.concatenate([m.variants[v] for m in parts]) for v in VARIANTS},
                    np.concatenate([m.response for m in parts]))


def family_results(measures: Measures, sets: dict[str, FollowUps]) -> dict[str, Any]:
    """Accuracies per follow-up set and variant, per aspect (log-lik), and the baseline's."""
    out: dict[str, Any] = {"baseline": accuracy(measures.response[0::2], measures.response[1::2]), "sets": {}}
    for label, followups in sets.items():
        scores = {v: measures.flr(followups, v) for v in VARIANTS}
        aspects = {}
        for aspect, (pos, neg) in followups.aspects.items():
            one = measures.flr(FollowUps(aspect, {aspect: (pos, neg)}), "loglik")
            aspects[aspect] = accuracy(one[0::2], one[1::2])
        out["sets"][label] = {"name": followups.name, "aspects_loglik": aspects,
                              **{v: accuracy(s[0::2], s[1::2]) for v, s in scores.items()},
                              "scores": {v: s.tolist() for v, s in scores.items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16, help="pairs per family (fewer if the test split runs out)")
    parser.add_argument("--lm", default="smollm2", help="the follow-up LM: a checkpoint folder or short name")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=8, help="items per forward pass")
    parser.add_argument("--out", type=Path, help="write DIR/results.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=max(Console().width, 120))
    start = time.perf_counter()
    flr = FollowUpLikelihood(args.lm, batch_size=args.batch_size)
    general = load_followups("general")
    results: dict[str, Any] = {"lm": flr.lm.name, "pairs_requested": args.pairs, "families": {}}
    table = Table(title=f"FLR pairwise accuracy (success vs failure of the same task), follow-up LM {args.lm}")
    for column in ("family", "follow-up set", "pairs", *VARIANT_NAMES.values(), "response log-lik (baseline)"):
        table.add_column(column, justify="left" if column in ("family", "follow-up set") else "right")
    for family in args.families.split(","):
        begun = time.perf_counter()
        pairs, counts = collect_pairs(family, args.pairs)
        sets = {"general": general, "family": load_followups(family)}
        followups = tuple(dict.fromkeys(f for s in sets.values() for f in s.positive + s.negative))
        measures = measure_pairs(flr, pairs, followups, family)
        found = family_results(measures, sets)
        found.update(pairs=len(pairs), tasks=counts, seconds=round(time.perf_counter() - begun, 1),
                     failures_by_agent=dict(Counter(p.failure_agent for p in pairs)),
                     successes_by_agent=dict(Counter(p.success_agent for p in pairs)),
                     pair_list=[{"task_id": p.task_id, "success": p.success_agent, "failure": p.failure_agent,
                                 "success_score": p.success.score, "failure_score": p.failure.score,
                                 "response_loglik": [float(measures.response[2 * i]),
                                                     float(measures.response[2 * i + 1])]}
                                for i, p in enumerate(pairs)])
        results["families"][family] = found
        for row in found["sets"].values():
            table.add_row(family, row["name"], str(len(pairs)),
                          *(f"{row[v]:.3f}" for v in VARIANTS), f"{found['baseline']:.3f}")
    results["seconds"] = round(time.perf_counter() - start, 1)
    console.print(table)
    for family, found in results["families"].items():
        console.print(f"{family}: {found['tasks']}; failures from "
                      f"{found['failures_by_agent']}; successes from {found['successes_by_agent']}; "
                      f"{found['seconds']} s", markup=False)
    n = min((f["pairs"] for f in results["families"].values()), default=0)
    console.print(f"One standard error of an accuracy near 0.5 over {n} pairs: {0.5 / max(n, 1) ** 0.5:.3f}. "
                  f"Total {results['seconds']} s.")
    if args.out:
        atomic_write_json(args.out / "results.json", results, indent=1)
        console.print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
