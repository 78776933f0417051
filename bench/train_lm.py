"""RL that improves a real pretrained language model on this CPU: SmolLM2-135M-Instruct with LoRA.

    python bench/train_lm.py --task craft-wood-skills --mode score --algo grpo --seed 0 --out runs/bench/lm/craft
    python bench/train_lm.py --task webshop --mode score --algo spo --seed 0 --out runs/bench/lm/webshop
    python bench/train_lm.py --task craft-wood-skills --reduce mean --reward code --train-turns 15 --algo rtg \
        --algo-option gamma=0.5 --lr 2e-3 --entropy-coef 0.05 --updates 14 --groups 4 --group-size 2 \
        --micro-batch-size 16 --out runs/bench/lm/craft-code

One run: evaluate `hf:smollm2` on the first `--test-episodes` frozen test tasks ("before"), train
it with `trainers/lm.py` (LoRA adapters, the chosen estimator, `--mode score`: the policy is the
model's distribution over the env's proposed actions, GLAM-style; `--mode generate`: token-level
PPO on its `Thought: ... Action: ...` replies), evaluate the trained model on the same tasks
("after"), and write `OUT/results.json`:

    {"task", "mode", "algo", "seed", "before": {"test_success", "test_score", "valid_rate"},
     "after": {...}, "env_steps", "seconds", "train_seconds", "updates", "dtype", ...}

(Craft's evaluations add "test_progress", the mean share of the recipe path reached) plus
`OUT/curve.png` (training success, score and Craft's progress against env steps). On Craft,
`--reward code` adds Auto MC-Reward's dense recipe-path program to the training env's reward, so
a turn that fetched wood or placed the table is paid on that turn; `--algo rtg` then credits each
turn with its own discounted reward-to-go, and `--train-turns` shortens the training episodes
(tests keep the task's budget). Both evaluations sample at
the policy's temperature with per-episode seeds, so they replay exactly; each phase is cached (the
run folder's checkpoint and OUT/after.json; "before" depends only on the task, the mode (with its
score reduction), the test episodes and the dtype, so runs in one parent folder share it:
PARENT/before-TASK-MODE-N[-DTYPE].json), so a rerun resumes where it stopped. `--dtype` picks the
base weights' type (default: bfloat16 where the hardware runs it natively, about 2x a turn). Both
modes train with the gradient truncated at the prompt by default (`--prompt-grad` for the exact
one; score mode on WebShop prompts: about 2x the time and 2.5x the memory).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from train_hard import reward_source

from turngym.trajectory import atomic_write_json

MODEL = "smollm2"
TASKS: dict[str, tuple[str, str | None, dict[str, Any]]] = {  # name: (env id, train task, env kwargs)
    "craft-wood-skills": ("turngym/Craft-v0", "wood_pickaxe",
                          {"action_mode": "skills", "image": False, "text_map": False}),
    "webshop": ("turngym/WebShop-v0", None, {"catalog": "small"}),
}


def evaluate_model(spec: str, task: str, mode: str, episodes: int, workers: int,
                   reduce: str = "sum", dtype: str = "auto") -> dict[str, Any]:
    """Test success, mean score and valid-action rate of `spec` on the first `episodes` test tasks,
    on Craft the mean progress (the share of the goal's recipe path reached), which shows
    learning long before success does, and each task's score in task order (`scores`: two runs'
    evaluations compare task by task, a paired test)."""
    from turngym.apps.harness import evaluate
    from turngym.results import entry_row

    env_id, name, kwargs = TASKS[task]
    env_kwargs = {**kwargs, **({"task": name} if env_id == "turngym/Craft-v0" else {})}
    start = time.perf_counter()
    options = {"mode": mode, "dtype": dtype, **({"reduce": reduce} if mode == "score" else {})}
    progress: list[float] = []
    scores: dict[int, float] = {}

    def record_episode(job: Any, record: dict[str, Any]) -> None:
        progress.append(record["score_parts"].get("progress", -1.0))
        scores[job.index] = record["score"]

    results = evaluate(env_id, [spec], episodes, env_kwargs=env_kwargs, agent_options=options, workers=workers,
                       on_episode=record_episode)
    row = entry_row(results, spec)
    return {"test_success": row["success_rate"], "test_score": row["mean_score"],
            "valid_rate": 1.0 - row["invalid_rate"], "mean_turns": row["mean_turns"], "episodes": episodes,
            **({"test_progress": sum(progress) / len(progress)} if progress and min(progress) >= 0 else {}),
            "scores": [scores[i] for i in sorted(scores)], "seconds": round(time.perf_counter() - start, 1)}


def cached(path: Path, compute: Any) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value, indent=1)
    return value


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="the base weights' type in training and both evaluations (the LoRA adapters stay "
                             "float32); default bfloat16 where the hardware runs it natively (AMX, AVX512-BF16, GPU)")


def chosen_dtype(dtype: str | None) -> str:
    """--dtype's value, or the hardware's native choice when it was left out."""
    from turngym.agents.hf import fast_dtype

    return dtype or fast_dtype()


def dtype_suffix(dtype: str) -> str:
    """What a cached evaluation's file name adds for a dtype (float32's files keep their old names)."""
    return "" if dtype == "float32" else f"-{dtype}"


def before_after(title: str, before: dict[str, Any], after: dict[str, Any]) -> Table:
    """The before/after table of a run's two evaluations."""
    table = Table(title=title)
    progress = "test_progress" in before and "test_progress" in after
    for column in ("", "test success", "test score", "valid actions") + ("test progress",) * progress:
        table.add_column(column, justify="right")
    for label, result in (("before", before), ("after", after)):
        table.add_row(label, f"{result['test_success']:.1%}", f"{result['test_score']:.3f}",
                      f"{result['valid_rate']:.1%}", *([f"{result['test_progress']:.3f}"] if progress else []))
    return table


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(steps, [r["success"] for r in rows], label="training success")
    ax.plot(steps, [r["score"] for r in rows], label="training score", alpha=0.7)
    if all("progress" in r for r in rows):
        ax.plot(steps, [r["progress"] for r in rows], label="training progress", alpha=0.7)
    ax.set_xlabel("env steps (turns)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--mode", choices=("score", "generate"), default="score")
    parser.add_argument("--algo", default="grpo", help="grpo, spo, rloo, prm (a PRM fitted on the turns), ...")
    parser.add_argument("--algo-option", action="append", metavar="KEY=VALUE",
                        help="an estimator option (repeatable), e.g. gamma=0.5 for rtg or gae")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--updates", type=int, default=12, help="training updates")
    parser.add_argument("--groups", type=int, default=4, help="tasks per update")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per task")
    parser.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate")
    parser.add_argument("--entropy-coef", type=float, default=0.0,
                        help="weight of the entropy bonus (keeps a policy that a dense reward sharpens exploring); "
                             "score mode: over the proposed actions; generate mode: each reply token's over the whole "
                             "vocabulary, which pays for invalid replies (0.05 at lr 2e-3 made 97%% of Craft replies "
                             "invalid by the second update)")
    parser.add_argument("--micro-batch-size", type=int, default=4,
                        help="turns per forward pass (16 WebShop prompts at once took more than 24 GB)")
    parser.add_argument("--test-episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 2), help="evaluation processes")
    parser.add_argument("--reduce", choices=("sum", "mean"), default="sum",
                        help="score mode: a candidate's score is the sum or the per-token mean of its log-likelihoods")
    parser.add_argument("--prompt-grad", action="store_true",
                        help="the exact gradient, through the prompt's keys and values too")
    parser.add_argument("--reward", choices=("success", "progress", "code"), default="success",
                        help="craft: the training env's reward, success (0/1 at the end), progress (the share of "
                             "the goal's recipe path reached, at the end: graded where success is rare) or code "
                             "(success plus Auto MC-Reward's dense recipe-path program, assets/craft/rewards/"
                             "recipe_path.py: a reward on the turn that earned it); tests report success")
    parser.add_argument("--train-turns", type=int, default=None,
                        help="craft: the training episodes' turn budget (default: the task's; tests keep the task's)")
    parser.add_argument("--ray", default=None, help="collect training rollouts on Ray workers: local, auto, ADDRESS")
    add_dtype_argument(parser)
    args = parser.parse_args()
    args.dtype = chosen_dtype(args.dtype)
    if (args.reward != "success" or args.train_turns) and not args.task.startswith("craft"):
        parser.error(f"--reward and --train-turns are Craft's: {args.task} trains on its own score and budget")
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    from turngym.apps.cli import parse_kwargs
    from turngym.trainers.config import LMTrainConfig
    from turngym.trainers.lm import train_lm

    start = time.perf_counter()
    mode = args.mode if args.mode == "generate" else f"score-{args.reduce}"
    before = cached(args.out.parent / f"before-{args.task}-{mode}-{args.test_episodes}{dtype_suffix(args.dtype)}.json",
                    lambda: evaluate_model(f"hf:{MODEL}", args.task, args.mode, args.test_episodes, args.workers,
                                           args.reduce, args.dtype))
    console.print(f"before: {before}")
    env_id, name, kwargs = TASKS[args.task]
    run = args.out / "run"
    train_kwargs = {**kwargs, **({"reward": args.reward} if args.reward == "progress" else {}),
                    **({"max_turns": args.train_turns} if args.train_turns else {})}
    # the reference program's own file: it reads the goal from the state, so it serves wood_pickaxe too
    code = reward_source("recipe_path") if args.reward == "code" else None
    algo_options = parse_kwargs(args.algo_option, "--algo-option")
    config = LMTrainConfig(env_id=env_id, task=name, env_kwargs=train_kwargs, policy=f"hf:{MODEL}", mode=args.mode,
                           algo=args.algo, algo_options=algo_options, seed=args.seed, updates=args.updates,
                           groups=args.groups, group_size=args.group_size, lr=args.lr, lora=True, minibatch_size=16,
                           entropy_coef=args.entropy_coef,
                           micro_batch_size=args.micro_batch_size, prompt_grad=args.prompt_grad, ray=args.ray,
                           score_reduce=args.reduce, dtype=args.dtype, reward_code=code,
                           max_new_tokens=48, out=str(run), resume=(run / "checkpoint.pt").exists(),
                           tensorboard=False)
    rows = train_lm(config)
    train_seconds = sum(row["time_s"] for row in rows)  # every update's, those of a resumed run's first part too
    after = cached(args.out / "after.json",
                   lambda: evaluate_model(f"hf:{run / 'model'}", args.task, args.mode, args.test_episodes,
                                          args.workers, args.reduce, args.dtype))
    results = {"task": args.task, "mode": args.mode, "algo": args.algo, "seed": args.seed, "model": MODEL,
               "algo_options": algo_options, "reward": args.reward, "train_turns": args.train_turns, "lr": args.lr,
               "entropy_coef": args.entropy_coef, "dtype": args.dtype,
               "before": before, "after": after, "env_steps": rows[-1]["env_steps"], "updates": len(rows),
               "seconds": round(time.perf_counter() - start, 1), "train_seconds": round(train_seconds, 1)}
    atomic_write_json(args.out / "results.json", results, indent=1)
    plot(rows, args.out / "curve.png", f"SmolLM2-135M {args.task}, {args.mode} mode, {args.algo}, seed {args.seed}")
    console.print(before_after(f"SmolLM2-135M-Instruct + LoRA, {args.task}, {args.mode} mode, {args.algo}: "
                               f"{args.test_episodes} frozen test tasks", before, after))
    console.print(f"{results['env_steps']:,} env steps, {results['seconds'] / 60:.1f} minutes "
                  f"({train_seconds / 60:.1f} training); results in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
