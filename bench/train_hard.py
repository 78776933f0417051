"""Training on the hard sparse Craft tasks from scratch: the sparse baseline beside Auto MC-Reward's
dense code reward and eva's task curriculum, at equal env-step budgets.

    python bench/train_hard.py --task stone_pickaxe                        # every method, 3 seeds
    python bench/train_hard.py --task collect_diamond --methods sparse code --seeds 0 --steps 1000000

Methods (the settings the README recommends; all train the symbolic policy on CraftVectorEnv):
    sparse            GRPO on the success reward alone (the baseline)
    best              the best estimator of bench/train_compare.py (BEST_ALGO), success reward
    code              best + the task's reference reward program (assets/craft/rewards/<task>.py)
    curriculum        best + the eva curriculum (max_min on the progress signal)
    code+curriculum   both
For collect_diamond, `code-nolava` is the code reward without its lava term (the paper's ablation);
`code+landmarks` is `code` with a policy that remembers where it last saw a table, a furnace and water
(agents/landmarks.py: the memory a 9x9 view lacks on the long tasks);
`curriculum-METRIC` runs the curriculum with another informativeness metric (the metric ablation:
max_min, max_mean, variance, learnability, uniform).
`code+si` adds self-imitation (trainers/self_imitation.py: the run's own SI_EPISODES best episodes so
far by progress, cloned with weight SI_COEF beside the RL loss): still from scratch, nothing but the
policy's own play is imitated; `code+si+wide` runs it on the clone's network below (the landmarks of
the recipe path, hidden width CLONE_HIDDEN), `code+wide` that network without self-imitation.
Not from scratch, and named so: `bc` clones Craft's rule agent (`heuristic`, which plays from the
observation alone, never the map; not the oracle) from `--clone-episodes` training worlds into the
symbolic policy (hidden width CLONE_HIDDEN) with a landmark memory of the table, furnace, water and
every material on the task's recipe path (`bc-dart`: the expert's episodes played with a random action
at a rate of 0.2, labelled with the expert's choice), and `bc+code` / `bc+best` go on from that clone with RL
(10 updates fitting the value head alone, then lr 3e-4 and entropy 0.001: the defaults, made for a
fresh policy, unlearn the clone; `bc+code-nolava` without the lava term); they share the `bc` row's
clone of their seed (DIR/TASK/bc/seedN/clone.pt), made once. The expert's turns count in the budget: RL
plays `--steps` minus them.

Each run is evaluated on the task's 100 frozen test worlds (the original task, never an evolved
one): test success, mean progress (the fraction of the goal's chain done) and deaths by cause.
Writes DIR/results.json ({"task", "rows": [{"method", "seed", "test_success", ...}]}, keeping the rows of
earlier invocations into the same folder for the methods and seeds not run again), one
learning-curve plot (training success and progress against env steps, mean over seeds) and prints
one table. Finished runs are cached in their folders, so a rerun only trains what is missing, and a
larger `--steps` extends finished runs from their checkpoints (their training seconds add up).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from turngym.trajectory import atomic_write_json

ENV = "turngym/Craft-v0"
TASKS = ("stone_pickaxe", "iron_pickaxe", "collect_diamond")
# wood_pickaxe at full budget (bench/train_compare.py): gae 95.3% against GRPO's 87.2%; on stone_pickaxe
# every estimator stayed within noise of 0-3%, so the wood ranking picks it. A critic also turns a
# dense per-step reward into per-turn credit, which group baselines over whole returns cannot.
BEST_ALGO = "gae"
METHODS = ("sparse", "best", "code", "curriculum", "code+curriculum")
CURRICULUM_METRICS = ("max_min", "max_mean", "variance", "learnability", "uniform")
EXTRA_METHODS = ("code-nolava", "code+landmarks", "code+si", "code+si+wide", "code+wide",
                 *(f"curriculum-{metric}" for metric in CURRICULUM_METRICS),
                 "bc", "bc-dart", "bc+best", "bc+code", "bc+code-nolava")
LANDMARKS = "table,furnace,water"
CLONE_EPISODES, CLONE_EPOCHS = 2000, 20  # the rule agent's episodes on training worlds, and epochs over them
CLONE_HIDDEN = 256
CLONES = {"bc": 0.0, "bc-dart": 0.2}  # the clone-only methods and the rate of the expert's noisy steps (DART)
SI_COEF, SI_EPISODES = 0.1, 64
STEPS = 2_000_000
TEST_EPISODES = 100


def reward_source(task: str, lava: bool = True) -> str:
    """The reference reward program of `task`, as an LLM designer's reply would hand it over."""
    from turngym.rewards.code import with_constants

    source = resources.files("turngym.assets").joinpath(f"craft/rewards/{task}.py").read_text()
    # without lava: the same program with its lava block switched off (the file's own switch)
    return source if lava else with_constants(source, LAVA_TERM=False)


def settings(method: str, task: str) -> dict:
    """The trainer config fields of a method (beyond env, task, budget, seed and folder)."""
    fields: dict = {"algo": "grpo" if method == "sparse" else BEST_ALGO}
    if method.removeprefix("bc+").startswith("code"):
        fields["reward_code"] = reward_source(task, lava=not method.endswith("-nolava"))
    if "curriculum" in method:
        metric = method.partition("-")[2] or "max_min"
        fields.update(curriculum="eva", curriculum_metric=metric, curriculum_signal="progress")
    if "landmarks" in method:
        fields["net"] = {"landmarks": LANDMARKS}
    if "+wide" in method:
        fields["net"] = {"landmarks": ",".join(clone_landmarks(task)), "hidden": CLONE_HIDDEN}
    if "+si" in method:
        fields.update(self_imitation=SI_COEF, self_imitation_episodes=SI_EPISODES, self_imitation_signal="progress")
    if method.startswith("bc+"):  # RL on a clone: its value head fitted first, then small steps that keep its skill
        fields.update(critic_warmup=10, lr=3e-4, entropy_coef=0.001)
    return fields


def clone_landmarks(task: str) -> tuple[str, ...]:
    """The clone's landmark memory: the table, furnace and water, and every material on the recipe path."""
    from turngym.envs.craft import load_rules

    rules = load_rules()
    return ("table", "furnace", "water", *rules.materials_needed(rules.tasks[task]))


def clone_rule_agent(task: str, seed: int, path: Path, episodes: int, noise: float = 0.0) -> int:
    """Clone the rule agent into a symbolic policy with the landmark memory at `path` (as `turngym bc
    ... -k symbolic=true --expert heuristic --net landmarks=... --net hidden=... --noise N` does);
    returns the expert's turns. With `noise`, a random action is played instead of the expert's at
    that rate, and the expert's own choice stays the label (DART), so the clone sees how the expert
    recovers from the slips it will make itself."""
    from turngym.agents.symbolic import SymbolicConfig, new_symbolic_policy
    from turngym.trainers.bc import clone_symbolic, collect_symbolic

    kwargs = {"task": task, "symbolic": True, "image": False}
    policy = new_symbolic_policy(SymbolicConfig.for_craft(landmarks=clone_landmarks(task), hidden=CLONE_HIDDEN), seed)
    data = collect_symbolic(ENV, episodes, env_kwargs=kwargs, expert="heuristic", seed=10_000 + seed, noise=noise,
                            landmarks=policy.config.landmarks)
    history = clone_symbolic(policy, data, epochs=CLONE_EPOCHS, seed=seed)
    policy.save(path, env_id=ENV, env_kwargs=kwargs, episodes=episodes, expert="heuristic", history=history)
    return len(data["label"])


def run_one(job: tuple[str, str, int, int, str, int]) -> dict:
    task, method, seed, steps, out, clone_episodes = job
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from turngym.apps.harness import evaluate
    from turngym.results import entry_row
    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.ppo import train
    from turngym.trainers.runlog import read_metrics

    torch.set_num_threads(1)
    folder = Path(out) / task / method / f"seed{seed}"
    done = folder / "done.json"
    previous = json.loads(done.read_text()) if done.exists() else None
    if previous is not None and (previous["env_steps"] >= steps or method in CLONES):  # (a clone takes no steps)
        return previous
    start = time.perf_counter()
    expert = 0
    fields = settings(method, task)
    if method.startswith("bc"):
        # RL goes on from the `bc` row's clone of the same seed, made once (two jobs that make it at
        # the same time write the same files: the clone is a function of the seed, and writes are atomic);
        # a run made before kept its clone in its own folder, and resumes from it
        own = method in CLONES or (folder / "clone.json").exists()
        source = folder if own else Path(out) / task / "bc" / f"seed{seed}"
        clone = source / "clone.pt"
        expert_file = source / "clone.json"
        if not expert_file.exists():
            source.mkdir(parents=True, exist_ok=True)
            turns = clone_rule_agent(task, seed, clone, clone_episodes, CLONES.get(method, 0.0))
            atomic_write_json(expert_file, {"expert_turns": turns})
        expert = json.loads(expert_file.read_text())["expert_turns"]
        fields["policy"] = f"neural:{clone}"
    if method not in CLONES:
        config = NeuralTrainConfig(env_id=ENV, task=task, steps=steps - expert, seed=seed, out=str(folder),
                                   resume=True, tensorboard=False, **fields)
        train(config, progress=False)
        spec, kwargs = config.trained()
    else:
        spec, kwargs = fields["policy"], {"task": task, "symbolic": True, "image": False}
    seconds = time.perf_counter() - start + (previous["seconds"] if previous else 0.0)  # an extended run's too
    results = evaluate(ENV, [spec], TEST_EPISODES, env_kwargs=kwargs, out=folder / "test")
    row = entry_row(results, spec)
    parts = row["parts"]
    deaths = {key.removeprefix("died_"): value for key, value in parts.items() if key.startswith("died")}
    metrics = read_metrics(folder) if method not in CLONES else []
    record = {"method": method, "seed": seed, "test_success": row["success_rate"],
              "test_progress": parts.get("progress", 0.0), "deaths": deaths,
              "env_steps": expert + (metrics[-1]["env_steps"] if metrics else 0), "expert_steps": expert,
              "seconds": round(seconds, 1),
              "curve": [(expert + m["env_steps"], m["success"], m.get("progress", m.get("return", 0.0)))
                        for m in metrics]}
    atomic_write_json(done, record)  # a run killed mid-write is retrained, not misread
    return record


def table(task: str, rows: list[dict], steps: int) -> Table:
    cloned = " (bc*: from a clone of the rule agent, its turns counted)" if any(
        r.get("expert_steps") for r in rows) else ""
    out = Table(title=f"Craft {task} from scratch{cloned}, {steps:,} env steps per run; test split ({TEST_EPISODES} "
                      "frozen worlds): mean over seeds (min-max)")
    for column in ("method", "seeds", "test success", "progress", "deaths / episode", "env steps", "minutes"):
        out.add_column(column, justify="left" if column == "method" else "right")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        success = [r["test_success"] for r in mine]
        causes = sorted({c for r in mine for c in r["deaths"]})
        deaths = ", ".join(f"{c or 'any'} {np.mean([r['deaths'].get(c, 0.0) for r in mine]):.2f}" for c in causes)
        out.add_row(method, str(len(mine)), f"{np.mean(success):.1%} ({min(success):.0%}-{max(success):.0%})",
                    f"{np.mean([r['test_progress'] for r in mine]):.3f}", deaths or "-",
                    f"{np.mean([r['env_steps'] for r in mine]):,.0f}",
                    f"{np.mean([r['seconds'] for r in mine]) / 60:.1f}")
    return out


def plot(task: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        curves = [np.array(r["curve"], float) for r in rows if r["method"] == method]
        length = min(len(c) for c in curves)
        if not length:  # a clone alone has no training curve
            continue
        mean = np.mean([c[:length] for c in curves], axis=0)
        for ax, column in zip(axes, (1, 2), strict=True):
            ax.plot(mean[:, 0], mean[:, column], label=method, linewidth=1.6)
    for ax, label in zip(axes, ("training success (sampled policy)", "training progress / return"), strict=True):
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if axes[0].lines:  # (a clone alone has no curve to plot)
        axes[0].legend(fontsize=8)
    fig.suptitle(f"Craft {task}: mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--methods", nargs="+", choices=(*METHODS, *EXTRA_METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS, help="env-step budget of every run")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/train_hard"))
    parser.add_argument("--clone-episodes", type=int, default=CLONE_EPISODES, help="the rule agent's episodes (bc*)")
    args = parser.parse_args()
    console = Console(width=150)
    jobs = [(args.task, method, seed, args.steps, str(args.out), args.clone_episodes)
            for method in args.methods for seed in args.seeds]
    with console.status(f"{len(jobs)} runs of {args.steps:,} env steps on {args.workers} workers..."), \
            ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    console.print(table(args.task, rows, args.steps))
    folder = args.out / args.task
    folder.mkdir(parents=True, exist_ok=True)
    # rows of other methods or seeds run into this folder before are kept, so the file holds every
    # finished run there, not only this invocation's
    path = folder / "results.json"
    ran = {(r["method"], r["seed"]) for r in rows}
    earlier = [r for r in json.loads(path.read_text())["rows"] if (r["method"], r["seed"]) not in ran] \
        if path.exists() else []
    results = {"task": args.task, "steps": args.steps,
               "rows": earlier + [{k: v for k, v in r.items() if k != "curve"} for r in rows]}
    atomic_write_json(path, results, indent=1)
    plot(args.task, rows, folder / "curves.png")
    console.print(f"results in {folder / 'results.json'}, curves in {folder / 'curves.png'}")


if __name__ == "__main__":
    main()
