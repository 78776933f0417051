"""Online DPO for `hf:` policies: preference pairs mined from each update's own rollouts.

Direct Preference Optimization (Rafailov et al., 2023) trains a policy on pairs of outcomes, a
chosen y_w and a rejected y_l, against a frozen reference pi_ref, with no reward model and no
advantage. Here an outcome is a whole episode: y = the policy's actions over all its turns, and

    log pi(y) = sum_t log pi(a_t | prompt_t)
        generate mode: a_t is turn t's reply; its tokens' log-probs, summed. The prompt (system
                       message, observations, earlier turns) is context: its tokens are masked.
        score mode:    a_t is the candidate chosen among the turn's proposals; its log-softmax.
    h = beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]
    loss = mean over pairs of -log sigmoid(h)

With `dpo_nll_coef` alpha > 0 the loss adds RPO's term (Pang et al., 2024, iterative reasoning
preference optimization): alpha times the mean over pairs of -log pi(y_w) / |y_w|, the chosen
episode's negative log-likelihood per scored unit (reply token, or choice in score mode). DPO alone
may lower the chosen episodes' likelihood along with the rejected ones', moving the mass to actions
neither played; the term holds the chosen ones up.

r(y) = beta (log pi(y) - log pi_ref(y)) is DPO's implicit reward; the logs show its mean for
chosen and rejected episodes, their margin (the mean of h) and the preference accuracy (the share
of pairs with h > 0). beta sets how far the policy may move from the reference: the loss is the
Bradley-Terry likelihood of a reward whose KL-regularised optimum (KL weight beta) is the policy.

Top to bottom, one update:

1. `collect` (trainers/lm.py): `groups` tasks x G = `group_size` rollouts of the current policy, a
   group sharing its task and env seed, so that its episodes differ only in what the policy did.
2. `mine_pairs`: within each group, every two episodes whose key differs give a pair, the higher
   key chosen; ties give none (`dpo_pairs_per_group` keeps the widest gaps only). The key is the
   env's score (`dpo_pairs=score`) or, where the env has no score to trust, the follow-up
   likelihood of `turngym.rewards.flr` (`dpo_pairs=flr`) of the episode's final response; an
   episode without one (truncated) joins no pair. `dpo_pairs=random` is a control: a key that
   knows nothing, to tell what a key adds from what DPO's steps do by themselves.
3. log pi_ref of every episode of a pair, once (the reference does not move): with LoRA the
   model with its adapters off, else a frozen copy of the starting model.
4. `optimize_dpo`: `epochs` passes over the pairs in shuffled minibatches of `minibatch_size`
   pairs, one clipped AdamW step each.
5. checkpoint (atomic), metrics row (JSONL and TensorBoard), progress bar.

Micro-batches. The loss reads the weights only through the episodes' log pi(y_e), so

    grad loss = sum_e w_e grad log pi(y_e),   w_e = d loss / d log pi(y_e)
    (for a pair: w = -beta sigma(-h) / P on y_w, +beta sigma(-h) / P on y_l, P pairs)

A forward without gradients gives every log pi(y_e), hence the loss and the w_e; then each
micro-batch of `micro_batch_size` turns adds the gradient of sum w_e log pi(a_t) over its turns.
The sum is the exact gradient, with one micro-batch's activations in memory at a time, whatever
the episodes' lengths.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.console import progress_bar
from turngym.rewards.preferences import Pair, dpo_terms
from turngym.rewards.preferences import mine_pairs as mine_key_pairs
from turngym.trainers.config import LMTrainConfig
from turngym.trainers.lm import (
    Choice,
    Policy,
    Sample,
    budget_done,
    budget_left,
    check_resumable,
    chunks,
    collect,
    episode_stats,
    load_trainable_state,
    make_env,
    make_policy,
    make_samples,
    reference_model,
    rng_state,
    save_model,
    scored_tokens,
    set_rng_state,
    trainable_state,
    turn_logpi,
)
from turngym.trainers.runlog import Metrics, load_checkpoint, read_metrics, save_checkpoint, write_config
from turngym.trajectory import Trajectory

Key = Callable[[Trajectory], float]


# --- mining pairs ---------------------------------------------------------------------------

def env_score(traj: Trajectory) -> float:
    """The default key: the env's final score."""
    return float(traj.score)


def mine_pairs(trajectories: Sequence[Trajectory], groups: Sequence[int], key: Key = env_score,
               per_group: int | None = None) -> list[Pair]:
    """(chosen, rejected) pairs within each group of same-task episodes by `key` (called once per
    trajectory; `turngym.rewards.preferences.mine_pairs`), since a step's cost grows with the
    episodes in pairs `per_group` may keep the widest gaps only."""
    return mine_key_pairs([float(key(t)) for t in trajectories], groups, per_group)


def score_agreement(trajectories: Sequence[Trajectory], pairs: Sequence[Pair]) -> float | None:
    """Of the pairs whose episodes' env scores differ, the share whose chosen episode scored higher
    (None when there is none): how far a key other than the score (FLR) follows it. For the logs
    only; nothing trains on it."""
    gaps = [trajectories[p.chosen].score - trajectories[p.rejected].score for p in pairs]
    gaps = [g for g in gaps if g != 0]
    return float(np.mean([g > 0 for g in gaps])) if gaps else None


def random_key(traj: Trajectory, seed: int) -> float:
    """A key that knows nothing of the outcome, for a control run: uniform in [0, 1), a function of
    the run's seed, the task and the episode's actions, so that a resumed run draws the same keys
    and two episodes that played the same actions tie."""
    text = json.dumps([seed, traj.task_id, traj.seed, [t.action for t in traj.turns]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def pair_key(config: LMTrainConfig) -> Key:
    """The key `config.dpo_pairs` ranks episodes by: the env score, or FLR of the final turn under
    `config.flr_model` (the policy's starting checkpoint when none is given). FLR judges a response,
    so an episode that never gave one (not terminated: it ran out of turns) has no key, NaN, and
    joins no pair, unless `config.flr_unanswered` is "judge": then its last turn, a search or a
    click, is judged as if it were the response."""
    if config.dpo_pairs == "score":
        return env_score
    if config.dpo_pairs == "random":
        return lambda traj: random_key(traj, config.seed)
    from turngym.rewards.flr import FollowUpLikelihood  # loads a language model: only when asked

    flr = FollowUpLikelihood(config.flr_model or config.model, config.flr_followups).score_trajectory
    if config.flr_unanswered == "judge":
        return flr
    return lambda traj: flr(traj) if traj.terminated else float("nan")


# --- log pi(y) of episodes ------------------------------------------------------------------

@dataclass
class Episodes:
    """The update's episodes as the loss sees them: every turn (Sample or Choice), the episode each
    belongs to, and log pi_ref(y) per episode (filled by `add_episode_reference`)."""

    turns: list[Sample] | list[Choice]
    owner: list[int]  # episode index of each turn
    count: int
    ref_logpi: torch.Tensor | None = None  # (count,)

    def turns_of(self, episodes: set[int]) -> list[int]:
        return [k for k, e in enumerate(self.owner) if e in episodes]

    def units(self) -> torch.Tensor:
        """What log pi(y) sums per episode, shape (count,): reply tokens, or choices in score mode
        (at least 1, so that an episode with none divides safely)."""
        total = [0] * self.count
        for turn, e in zip(self.turns, self.owner, strict=True):
            total[e] += turn.units
        return torch.tensor(total, dtype=torch.float32).clamp(min=1)


def episode_turns(policy: Policy, trajectories: Sequence[Trajectory]) -> Episodes:
    """Each trajectory's turns in the policy's mode (`make_samples`, which leaves out score-mode
    turns with one candidate: log pi = 0 there; the advantages are unused)."""
    turns, owner = [], []
    for e, traj in enumerate(trajectories):
        own = make_samples(policy, [traj], [np.zeros(len(traj))])
        turns += own
        owner += [e] * len(own)
    return Episodes(turns, owner, len(trajectories))


def episode_logpi(model: torch.nn.Module, episodes: Episodes, indices: Sequence[int], policy: Policy,
                  micro: int) -> torch.Tensor:
    """log pi(y_e) of every episode (0 for those with no turn among `indices`), shape (count,),
    summed over the turns `indices` in micro-batches of `micro` turns."""
    total = torch.zeros(episodes.count, device=policy.device)
    for part in chunks(list(indices), micro):
        values = turn_logpi(model, [episodes.turns[k] for k in part], policy)
        owners = torch.tensor([episodes.owner[k] for k in part], device=policy.device)
        total = total.index_add(0, owners, values.float())
    return total


@torch.no_grad()
def add_episode_reference(policy: Policy, episodes: Episodes, pairs: Sequence[Pair], micro: int) -> None:
    """Fill `episodes.ref_logpi`: log pi_ref(y) of every episode that is in a pair."""
    used = {p.chosen for p in pairs} | {p.rejected for p in pairs}
    with reference_model(policy) as model:
        episodes.ref_logpi = episode_logpi(model, episodes, episodes.turns_of(used), policy, micro)


# --- the loss -------------------------------------------------------------------------------

def minibatch_step(policy: Policy, episodes: Episodes, pairs: Sequence[Pair],
                   config: LMTrainConfig) -> dict[str, float]:
    """One minibatch of pairs: the loss from a forward without gradients, then the exact gradient
    accumulated over micro-batches of turns as sum_e w_e grad log pi(y_e) (module docstring). The
    caller zeroes, clips and steps."""
    micro = config.micro_batch_size or config.minibatch_size
    indices = episodes.turns_of({p.chosen for p in pairs} | {p.rejected for p in pairs})
    with torch.no_grad():
        logpi = episode_logpi(policy.model, episodes, indices, policy, micro)
    win, lose = [p.chosen for p in pairs], [p.rejected for p in pairs]
    leaf = logpi.detach().requires_grad_(True)  # autograd gives w_e = d loss / d log pi(y_e)
    terms = dpo_terms(leaf[win], leaf[lose], episodes.ref_logpi[win], episodes.ref_logpi[lose], config.dpo_beta)
    terms["nll"] = -(leaf[win] / episodes.units().to(leaf.device)[win]).mean()
    (terms["loss"] + config.dpo_nll_coef * terms["nll"]).backward()
    weights = leaf.grad
    for part in chunks(indices, micro):
        values = turn_logpi(policy.model, [episodes.turns[k] for k in part], policy)
        (values * weights[[episodes.owner[k] for k in part]]).sum().backward()
    return {key: float(value.detach()) for key, value in terms.items()}


def optimize_dpo(policy: Policy, optimizer: torch.optim.Optimizer, episodes: Episodes, pairs: Sequence[Pair],
                 config: LMTrainConfig, update: int) -> dict[str, float]:
    """`config.epochs` passes over the pairs in shuffled minibatches of `config.minibatch_size`
    pairs, one clipped gradient step each; returns the loss terms and gradient norm averaged over
    the steps (each step's terms measured before it)."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, update]).generate_state(1)[0]))
    rows = []
    params = policy.parameters()
    for _ in range(config.epochs):
        order = torch.randperm(len(pairs), generator=generator).tolist()
        for minibatch in chunks([pairs[k] for k in order], config.minibatch_size):
            optimizer.zero_grad(set_to_none=True)
            row = minibatch_step(policy, episodes, minibatch, config)
            row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            optimizer.step()
            rows.append(row)
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


# --- the loop -------------------------------------------------------------------------------

def make_reference(policy: Policy) -> None:
    """Without LoRA, a frozen copy of the starting model (make_policy makes one only for a KL)."""
    if not policy.lora and policy.reference is None:
        policy.reference = copy.deepcopy(policy.model).requires_grad_(False).eval()


def train_dpo(config: LMTrainConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Online DPO of `config.model` on `config.env_id` (`train_lm` with `loss="dpo"` comes here);
    returns every metric row of the run. Writes what `train_lm` writes: OUT/config.json,
    OUT/metrics.jsonl, OUT/tb/, OUT/checkpoint.pt and OUT/model/."""
    config.check()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    env, options = make_env(config)
    policy = make_policy(config, env)
    make_reference(policy)
    key = pair_key(config)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    metrics = Metrics(out, tensorboard=config.tensorboard)
    update, env_steps = 0, 0
    checkpoint = out / "checkpoint.pt"
    if config.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        check_resumable(config, state["config"], out)
        load_trainable_state(policy, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        update, env_steps = int(state["update"]), int(state["env_steps"])
    metrics.truncate(update)
    write_config(out, config)
    micro = config.micro_batch_size or config.minibatch_size
    episodes_per_update = config.groups * config.group_size

    try:
        with progress_bar(disable=not progress) as bar:
            completed, total = budget_done(config, update, env_steps)
            job = bar.add_task("training (dpo)", total=total, completed=completed)
            episodes_job = bar.add_task("episodes", total=episodes_per_update)
            while budget_left(config, update, env_steps):
                update += 1
                started = time.perf_counter()
                bar.reset(episodes_job, total=episodes_per_update)
                trajectories, groups = collect(env, policy.agent, config, update, options, bar, episodes_job)
                collected = time.perf_counter()
                pairs = mine_pairs(trajectories, groups, key, config.dpo_pairs_per_group)
                mined = time.perf_counter()
                stats: dict[str, float] = {}
                tokens = 0
                if pairs:  # a batch whose groups all tie teaches nothing: no step
                    episodes = episode_turns(policy, trajectories)
                    add_episode_reference(policy, episodes, pairs, micro)
                    stats = optimize_dpo(policy, optimizer, episodes, pairs, config, update)
                    used = {p.chosen for p in pairs} | {p.rejected for p in pairs}
                    tokens = scored_tokens([episodes.turns[k] for k in episodes.turns_of(used)])
                turns = sum(len(t) for t in trajectories)
                env_steps += turns
                row = {"update": update, "env_steps": env_steps, **episode_stats(trajectories),
                       "pairs": len(pairs), "groups_with_pairs": len({groups[p.chosen] for p in pairs}),
                       "key_gap": float(np.mean([p.chosen_key - p.rejected_key for p in pairs])) if pairs else 0.0,
                       "score_agrees": score_agreement(trajectories, pairs),
                       "tokens": tokens, **stats,
                       "rollout_s": collected - started, "key_s": mined - collected,
                       "learn_s": time.perf_counter() - mined, "time_s": time.perf_counter() - started}
                metrics.log(row)  # the row first: a crash before the checkpoint leaves a row a resume cuts
                if update % config.save_every == 0 or not budget_left(config, update, env_steps):
                    save_checkpoint(checkpoint, {"update": update, "env_steps": env_steps,
                                                 "model": trainable_state(policy), "optimizer": optimizer.state_dict(),
                                                 "rng": rng_state(), "config": asdict(config)})
                bar.update(job, completed=budget_done(config, update, env_steps)[0],
                           description=f"training (dpo, {len(pairs)} pairs, score {row['score']:.2f})")
        save_model(policy, out / "model")
    finally:
        metrics.close()
        env.close()
    return read_metrics(out)
