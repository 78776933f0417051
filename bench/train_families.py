"""Training on every text and vision family: the neural policy against the family's rule baselines
and the paper's numbers, at equal env-step budgets, on the frozen test split.

    python bench/train_families.py --family webshop                       # the default methods, 3 seeds
    python bench/train_families.py --family webshop --methods bc+prm bc+prm@prm_target=mc --seeds 0 1 2
    python bench/train_families.py --family hopvqa --methods grpo grpo@variant=single

Methods:
    random, heuristic   the family's agents, played once, not trained; variants and the oracle too
                        (heuristic:proposed; oracle:proposed, the ceiling of a policy choosing
                        among the proposals)
    bc                  behaviour cloning from the family's expert on training tasks (trainers/bc.py)
    ALGO                RL from scratch with an estimator (grpo, spo, prm, evpo, ...; rewards/estimators.py)
    bc+ALGO             the clone, then RL with that estimator (WebShop's paper: IL, then IL+RL)
    METHOD@k=v,...      with trainer fields (prm_target=mc, lr=1e-4) or env kwargs (variant=single,
                        evidence_weight=0) changed; env kwargs change training only, the test stays;
                        expert=SPEC clones another expert (bc@expert=oracle:guess, bc+grpo@expert=...),
                        smoothing=e smooths the clone's labels (keeps entropy for the RL after it)

Budgets: a bc+ALGO run plays `steps` env steps of RL after its clone's expert episodes; an RL run
from scratch plays those expert steps more, so every trained row has the same env steps. The
clone of each seed is made once and shared by its bc+ rows. Finished runs are cached in their
folders, so a rerun only trains what is missing. Writes DIR/FAMILY/results.json ({"family",
"rows": [{"method", "seed", "test_success", "test_score", "env_steps", "seconds", ...}]}), the
training curves (curves.png) and prints one table with the paper's figures beside ours.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Family:
    env: str
    kwargs: dict[str, Any]  # of training and test envs
    expert: str  # the agent spec that BC clones
    bc_episodes: int  # 0: no clone (the family's bc methods are off, and RL from scratch plays `steps`)
    steps: int  # RL env steps after the clone
    test: int  # test tasks
    methods: tuple[str, ...]  # the default rows
    net: dict[str, Any] = field(default_factory=dict)  # PolicyConfig fields of fresh policies
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra test settings (name: kwargs)
    paper: tuple[tuple[str, str, str], ...] = ()  # (row, success, score) reported by the paper


FAMILIES = {
    # text_rich marks the options already clicked; plain text shows an item page identically before
    # and after each click, so a policy cannot tell whether to click an option or buy.
    "webshop": Family("turngym/WebShop-v0", {"obs_mode": "text_rich"}, "oracle:instruction", 3000, 15_000, 500,
                      ("random", "heuristic", "bc", "grpo", "bc+grpo"),
                      paper=(("WebShop paper: rule baseline", "9.6%", "45.6"), ("WebShop paper: IL", "29.1%", "59.9"),
                             ("WebShop paper: IL+RL", "28.7%", "62.4"),
                             ("WebShop paper: human expert", "59.6%", "82.1"))),
    # 500 training documents (2,500 questions), generated once up front and shared by every run: a
    # fresh document per episode would cost each run an hour of generating here.
    "longdoc": Family("turngym/LongDocVQA-v0", {"obs_mode": "text", "train_documents": 500}, "oracle:proposed",
                      1000, 10_000, 300,
                      ("random", "heuristic", "heuristic:proposed", "oracle:proposed", "bc", "bc+grpo", "bc+spo",
                       "bc+grpo@evidence_weight=0.5", "bc@expert=heuristic:proposed,smoothing=0.2",
                       "bc+grpo@expert=heuristic:proposed,smoothing=0.2")),
    # The oracle claims hops, which no proposal does, so there is nothing to clone: RL from scratch.
    "hopvqa": Family("turngym/HopVQA-v0", {}, "oracle", 0, 2_000, 200,
                     ("random", "heuristic", "grpo", "grpo@variant=single"), net={"image": True},
                     tests={"single": {"variant": "single"}}),
}


def is_agent(method: str) -> bool:
    """The family's own agents (random, heuristic, heuristic:proposed, oracle:proposed, ...): played, not
    trained."""
    return method.split(":")[0] in ("random", "heuristic", "oracle")


def parse(method: str) -> tuple[bool, str, dict[str, Any]]:
    """(starts from the clone, estimator or '' for bc alone, changed fields) of a method name."""
    from turngym.apps.cli import parse_kwargs

    name, _, changes = method.partition("@")
    warm = name.startswith("bc")
    return warm, name.removeprefix("bc").removeprefix("+"), parse_kwargs(changes.split(",") if changes else [])


def write_json(path: Path, value: Any) -> None:
    from turngym.trajectory import atomic_write_json

    atomic_write_json(path, value, indent=1)


def one_thread() -> None:
    """Each worker on one torch thread: two workers share this machine's two cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


CLONE = ("expert", "smoothing")  # the method fields that make a clone


def clone_settings(changes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The clone fields of a method's changes, popped from them (as sorted pairs: one clone per value)."""
    return tuple(sorted((k, changes.pop(k)) for k in CLONE if k in changes))


def clone_of(family: str, seed: int, out: Path, settings: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any]:
    """The seed's clone (made once) of the family's expert, or of `expert=SPEC` with labels smoothed by
    `smoothing=e` where `settings` say so: its policy file and the expert's env steps."""
    one_thread()
    from turngym.agents.neural import PolicyConfig, new_policy, proposer
    from turngym.trainers.bc import clone, collect, demonstrations

    spec = FAMILIES[family]
    defaults = {"expert": spec.expert, "smoothing": 0.0}
    fields = {**defaults, **dict(settings)}
    name = ",".join(f"{k}={v}" for k, v in settings if v != defaults[k])  # the family's own clone is plain bc
    folder = out / family / (f"bc@{name}" if name else "bc") / f"seed{seed}"
    done = folder / "clone.json"
    if done.exists():
        return json.loads(done.read_text())
    start = time.perf_counter()
    trajectories = collect(spec.env, spec.bc_episodes, env_kwargs=spec.kwargs, expert=fields["expert"],
                           seed=10_000 + 100_000 * seed, images=bool(spec.net.get("image")))
    samples = demonstrations(trajectories, proposer(spec.env))
    policy = new_policy(PolicyConfig(**spec.net), seed)
    history = clone(policy, samples, epochs=10, seed=seed, label_smoothing=float(fields["smoothing"]))
    path = policy.save(folder / "policy.pt", env_id=spec.env, env_kwargs=spec.kwargs, history=history)
    record = {"policy": str(path), "env_steps": sum(len(t.turns) for t in trajectories),
              "demonstrations": len(samples), "accuracy": history[-1]["accuracy"],
              "seconds": round(time.perf_counter() - start, 1)}
    write_json(done, record)
    return record


def make_document(seed: int) -> None:
    """LongDocVQA's training document `seed`, generated into the cache unless it is there."""
    from turngym.envs.longdoc.dataset import GeneratedSet

    GeneratedSet().questions_of(seed)


def test_rows(family: str, spec_: str, folder: Path, kwargs: dict[str, Any], split: str) -> dict[str, Any]:
    """Success and score of an agent on the family's test (or dev) split, and its extra settings,
    as `{split}_success`, `{split}_score`, `{split}_success_{setting}`, ..."""
    from turngym.apps.harness import evaluate
    from turngym.results import entry_row

    spec = FAMILIES[family]
    out: dict[str, Any] = {}
    for name, extra in {"": {}, **spec.tests}.items():
        results = evaluate(spec.env, [spec_], spec.test, split=split, env_kwargs={**kwargs, **extra},
                           out=folder / f"{split}{name}", images=False)
        row = entry_row(results, spec_)
        key = f"_{name}" if name else ""
        out[f"{split}_success{key}"], out[f"{split}_score{key}"] = row["success_rate"], row["mean_score"]
    return out


def run_one(job: tuple[str, str, int, str, str]) -> dict[str, Any]:
    family, method, seed, out_dir, split = job
    one_thread()
    from turngym.trainers.config import NeuralTrainConfig, knobs
    from turngym.trainers.ppo import train
    from turngym.trainers.runlog import read_metrics

    spec, out = FAMILIES[family], Path(out_dir)
    folder = out / family / method.replace("/", "_") / f"seed{seed}"
    done = folder / ("done.json" if split == "test" else f"done_{split}.json")  # one training, either split
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"method": method, "seed": seed}
    if is_agent(method):
        record.update(test_rows(family, method, folder, spec.kwargs, split), env_steps=0, seconds=0.0, curve=[])
        write_json(done, record)
        return record
    warm, algo, changes = parse(method)
    if (warm or not algo) and not spec.bc_episodes:
        raise ValueError(f"{family} has no expert to clone: use RL from scratch (e.g. grpo), not {method}")
    settings = clone_settings(changes)
    bc = clone_of(family, seed, out, settings) if spec.bc_episodes else {"env_steps": 0, "seconds": 0.0}
    if not algo:
        record.update(test_rows(family, f"neural:{bc['policy']}", folder, spec.kwargs, split),
                      env_steps=bc["env_steps"], seconds=bc["seconds"], curve=[])
        write_json(done, record)
        return record
    names = {k.name for k in knobs()}
    trainer = {k: v for k, v in changes.items() if k in names}
    env_kwargs = {**spec.kwargs, **{k: v for k, v in changes.items() if k not in names}}
    steps = spec.steps + (0 if warm else bc["env_steps"])
    start = time.perf_counter()
    config = NeuralTrainConfig(env_id=spec.env, algo=algo, steps=steps, seed=seed, out=str(folder), resume=True,
                               tensorboard=False, env_kwargs=env_kwargs,
                               **({"policy": f"neural:{bc['policy']}", "lr": 3e-4} if warm else {"net": spec.net}),
                               **trainer)
    train(config, progress=False)
    seconds = time.perf_counter() - start + (bc["seconds"] if warm else 0.0)
    metrics = read_metrics(folder)
    record.update(test_rows(family, config.trained()[0], folder, spec.kwargs, split),
                  env_steps=metrics[-1]["env_steps"] + (bc["env_steps"] if warm else 0), seconds=round(seconds, 1),
                  curve=[(m["env_steps"] + (bc["env_steps"] if warm else 0), m["success"], m["return"])
                         for m in metrics])
    write_json(done, record)
    return record


def table(family: str, rows: list[dict[str, Any]], split: str = "test") -> Table:
    spec = FAMILIES[family]
    out = Table(title=f"{spec.env} {spec.kwargs or ''}: {split} split ({spec.test} tasks), mean over seeds (min-max)")
    extra = list(spec.tests)
    for column in ("method", "seeds", f"{split} success", "score", *(f"{name}: success" for name in extra),
                   "env steps", "minutes"):
        out.add_column(column, justify="left" if column == "method" else "right")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        success = [r[f"{split}_success"] for r in mine]
        out.add_row(method, str(len(mine)), f"{np.mean(success):.1%} ({min(success):.0%}-{max(success):.0%})",
                    f"{100 * np.mean([r[f'{split}_score'] for r in mine]):.1f}",
                    *(f"{np.mean([r[f'{split}_success_{name}'] for r in mine]):.1%}" for name in extra),
                    f"{np.mean([r['env_steps'] for r in mine]):,.0f}",
                    f"{np.mean([r['seconds'] for r in mine]) / 60:.1f}")
    for row, success, score in spec.paper:
        out.add_row(f"[dim]{row}[/]", "", success, score, *([""] * len(extra)), "", "")
    return out


SMOOTH = 5


def plot(family: str, rows: list[dict[str, Any]], path: Path, split: str = "test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in dict.fromkeys(r["method"] for r in rows if r["curve"]):
        curves = [np.array(r["curve"], float) for r in rows if r["method"] == method]
        length = min(len(c) for c in curves)
        mean = np.mean([c[:length] for c in curves], axis=0)
        smooth = np.convolve(mean[:, 1], np.ones(SMOOTH) / SMOOTH, mode="valid")  # one update's 8 tasks are noisy
        ax.plot(mean[SMOOTH - 1:, 0], smooth, label=method, linewidth=1.4)
    for method, style in (("heuristic", ":"), ("bc", "--")):
        test = [r[f"{split}_success"] for r in rows if r["method"] == method]
        if test:
            ax.axhline(float(np.mean(test)), linestyle=style, linewidth=1, color="gray", label=f"{method} ({split})")
    ax.set_xlabel("env steps (a clone's expert steps included)")
    ax.set_ylabel("training success (sampled policy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{FAMILIES[family].env}: mean over seeds, rolling mean of {SMOOTH} updates", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=list(FAMILIES), required=True)
    parser.add_argument("--methods", nargs="+", default=None, help="default: the family's own list")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/train_families"))
    parser.add_argument("--split", choices=("test", "dev"), default="test",
                        help="evaluate on the dev split to choose methods and settings; report the test split")
    args = parser.parse_args()
    spec = FAMILIES[args.family]
    methods = args.methods or list(spec.methods)
    for method in methods:  # a malformed name fails now, not in a worker
        if not is_agent(method) and (parse(method)[0] or not parse(method)[1]) \
                and not spec.bc_episodes:
            parser.error(f"{args.family} has no expert to clone: use RL from scratch (e.g. grpo), not {method}")
    console = Console(width=160)
    fixed = [m for m in methods if is_agent(m)]
    jobs = [(args.family, m, seed, str(args.out), args.split) for m in methods
            for seed in ([0] if m in fixed else args.seeds)]
    with console.status(f"{len(jobs)} runs on {args.workers} workers..."), ProcessPoolExecutor(args.workers) as pool:
        if documents := spec.kwargs.get("train_documents"):
            from turngym.envs.longdoc.dataset import TRAIN_DOCS

            list(pool.map(make_document, TRAIN_DOCS[:documents], chunksize=8))
        if spec.bc_episodes:  # every clone first: runs sharing one must not make it twice at once
            clones = sorted({clone_settings(parse(m)[2]) for m in methods if m not in fixed
                             and (parse(m)[0] or not parse(m)[1])}, key=str)
            pairs = [(seed, settings) for settings in clones for seed in args.seeds]
            list(pool.map(clone_of, [args.family] * len(pairs), [s for s, _ in pairs], [args.out] * len(pairs),
                          [c for _, c in pairs]))
        rows = list(pool.map(run_one, jobs))
    console.print(table(args.family, rows, args.split))
    folder = args.out / args.family
    name = "" if args.split == "test" else f"_{args.split}"
    results = {"family": args.family, "env": spec.env, "env_kwargs": spec.kwargs, "split": args.split,
               "rows": [{k: v for k, v in r.items() if k != "curve"} for r in rows]}
    write_json(folder / f"results{name}.json", results)
    plot(args.family, rows, folder / f"curves{name}.png", args.split)
    console.print(f"results in {folder / f'results{name}.json'}, curves in {folder / f'curves{name}.png'}")


if __name__ == "__main__":
    main()
