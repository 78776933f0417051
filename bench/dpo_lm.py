"""Online DPO of SmolLM2-135M-Instruct (LoRA, either mode) on pairs mined by env score or by FLR.

    python bench/dpo_lm.py --task webshop --pairs score --seed 0 --out runs/bench/dpo/webshop-score
    python bench/dpo_lm.py --task webshop --pairs flr --seed 0 --out runs/bench/dpo/webshop-flr \
        --before runs/bench/dpo/webshop-score/before.json
    python bench/dpo_lm.py --task webshop --mode score --pairs score --seed 0 --out runs/bench/dpo/webshop-score-mode
    python bench/dpo_lm.py --task webshop --mode score --pairs flr --nll-coef 1.0 --updates 16 --groups 2 \
        --group-size 4 --pairs-per-group 0 --lr 5e-4 --minibatch-size 4 --test-episodes 50 --out runs/dpo-flr-rpo

One run: evaluate `hf:smollm2` on the first `--test-episodes` frozen test tasks ("before"), train
it with `trainers/dpo.py` (each update: `--groups` training tasks x `--group-size` rollouts, every
two episodes of a task whose key differs a (chosen, rejected) pair; the key is the env's score with
`--pairs score`, the follow-up likelihood of `turngym.rewards.flr` under SmolLM2 itself with
`--pairs flr`, which reads no score, a key that knows nothing with `--pairs random` (the control);
`--nll-coef` adds RPO's term on the chosen episodes; `--mode score`: the policy is the model's
distribution over the env's proposed actions, as in bench/train_lm.py, and an episode's log pi
sums its chosen candidates' log-softmax), evaluate the trained model on the same tasks ("after"), and
write `OUT/results.json`:

    {"task", "mode", "pairs", "seed", "before": {"test_success", "test_score", "valid_rate", ...},
     "after": {...}, "updates", "env_steps", "pairs_mined", "train": [per-update rows], "seconds", ...}

The evaluations are bench/train_lm.py's (imported): sampled at the policy's temperature with
per-episode seeds, so they replay exactly, and the "before" of two runs on one task is the same
figure (`--before FILE` shares it). Each phase is cached in OUT (before.json, the run folder's
checkpoint, after.json), so a rerun resumes where it stopped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from train_lm import MODEL, TASKS, add_dtype_argument, before_after, cached, chosen_dtype, dtype_suffix, evaluate_model

from turngym.trajectory import atomic_write_json

FOLLOWUPS = {"webshop": "webshop", "craft-wood-skills": "craft"}  # assets/flr/<name>.yaml per task
LOGGED = ("update", "env_steps", "score", "success", "turns", "truncated", "pairs", "key_gap", "score_agrees", "loss",
          "nll", "pref_acc", "margin", "rollout_s", "key_s", "learn_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--pairs", choices=("score", "flr", "random"), required=True,
                        help="what ranks a group's episodes (random: a control that knows nothing)")
    parser.add_argument("--mode", choices=("generate", "score"), default="generate",
                        help="generate: DPO on the replies' tokens; score: on the choices among proposed actions")
    parser.add_argument("--reduce", choices=("sum", "mean"), default="sum",
                        help="score mode: a candidate's score is the sum or the per-token mean of its log-likelihoods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--before", type=Path, help="the before-training evaluation's cache (default OUT/before.json)")
    parser.add_argument("--updates", type=int, default=1, help="collect, mine, DPO steps: this many times")
    parser.add_argument("--groups", type=int, default=2, help="tasks per update")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per task")
    parser.add_argument("--pairs-per-group", type=int, default=1,
                        help="pairs kept per group, the widest key gaps (0: every pair); a DPO step's cost grows "
                             "with the episodes in pairs")
    parser.add_argument("--flr-unanswered", choices=("skip", "judge"), default="skip",
                        help="--pairs flr: an episode that ran out of turns without buying joins no pair (skip) or "
                             "is judged by its last turn (judge: what earlier versions did)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over each update's pairs")
    parser.add_argument("--minibatch-size", type=int, default=64, help="pairs per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    parser.add_argument("--nll-coef", type=float, default=0.0,
                        help="RPO's alpha: the chosen episodes' negative log-likelihood per token (or choice) added "
                             "to the DPO loss (0: plain DPO)")
    parser.add_argument("--micro-batch-size", type=int, default=1,
                        help="turns per forward pass (1: no padding; 4 WebShop turns at once peaked at 21 GB)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--test-episodes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="evaluation processes")
    parser.add_argument("--prompt-grad", action="store_true",
                        help="the exact gradient, through the prompt's keys and values too (default: truncated there)")
    add_dtype_argument(parser)
    args = parser.parse_args()
    args.dtype = chosen_dtype(args.dtype)
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    from turngym.trainers.config import LMTrainConfig
    from turngym.trainers.lm import train_lm

    start = time.perf_counter()
    mode = "" if args.mode == "generate" else f"-score-{args.reduce}"  # generate mode's files keep their names
    before = cached(args.before or args.out / f"before{mode}{dtype_suffix(args.dtype)}.json",
                    lambda: evaluate_model(f"hf:{MODEL}", args.task, args.mode, args.test_episodes, args.workers,
                                           args.reduce, args.dtype))
    console.print(f"before: {before}")
    env_id, name, kwargs = TASKS[args.task]
    run = args.out / "run"
    config = LMTrainConfig(env_id=env_id, task=name, env_kwargs=kwargs, policy=f"hf:{MODEL}", mode=args.mode,
                           score_reduce=args.reduce, loss="dpo", dpo_beta=args.beta, dpo_nll_coef=args.nll_coef,
                           dpo_pairs=args.pairs,
                           flr_followups=FOLLOWUPS[args.task], flr_unanswered=args.flr_unanswered,
                           dpo_pairs_per_group=args.pairs_per_group or None,
                           seed=args.seed, updates=args.updates, groups=args.groups, group_size=args.group_size,
                           epochs=args.epochs, minibatch_size=args.minibatch_size, lr=args.lr, lora=True,
                           micro_batch_size=args.micro_batch_size, prompt_grad=args.prompt_grad, dtype=args.dtype,
                           max_new_tokens=args.max_new_tokens, out=str(run),
                           resume=(run / "checkpoint.pt").exists(), tensorboard=False)
    train_start = time.perf_counter()
    rows = train_lm(config)  # loss dpo: train_lm runs trainers/dpo.py's loop
    train_seconds = time.perf_counter() - train_start
    after = cached(args.out / "after.json",
                   lambda: evaluate_model(f"hf:{run / 'model'}", args.task, args.mode, args.test_episodes,
                                          args.workers, args.reduce, args.dtype))
    results: dict[str, Any] = {
        "task": args.task, "mode": args.mode, "reduce": args.reduce, "pairs": args.pairs, "seed": args.seed,
        "model": MODEL, "before": before, "after": after,
        "dtype": args.dtype, "updates": len(rows), "env_steps": rows[-1]["env_steps"],
        "pairs_mined": sum(r["pairs"] for r in rows),
        "settings": {k: getattr(config, k) for k in ("groups", "group_size", "epochs", "minibatch_size", "lr",
                                                     "dpo_beta", "dpo_nll_coef", "dpo_pairs_per_group", "flr_followups",
                                                     "flr_unanswered")},
        "train": [{k: r[k] for k in LOGGED if k in r} for r in rows],
        "seconds": round(time.perf_counter() - start, 1), "train_seconds": round(train_seconds, 1)}
    atomic_write_json(args.out / "results.json", results, indent=1)
    console.print(before_after(f"SmolLM2-135M-Instruct + LoRA, online DPO on {args.pairs} pairs, {args.task}: "
                               f"{args.test_episodes} frozen test tasks", before, after))
    console.print(f"{results['pairs_mined']} pairs from {results['env_steps']:,} env steps in {len(rows)} updates, "
                  f"{results['seconds'] / 60:.1f} minutes ({train_seconds / 60:.1f} training); "
                  f"results in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
