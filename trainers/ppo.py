"""PPO-clip (and REINFORCE) over turns for the small policies, with any advantage estimator.

One update, top to bottom:
  1. collect `groups` x `group_size` episodes (G rollouts per task from one seed; collect.py), the
     tasks drawn from the run's distribution or, with `curriculum="eva"`, proposed by the
     curriculum (trainers/curriculum.py), which then reads each group's returns;
  2. with `algo="prm"`, fit the process reward model on them first (AgentPRM's TD targets,
     re-estimated with the current PRM each epoch; trainers/prm.py); likewise SPA-RL's progress
     estimator (`algo="spa"`) and OPRL's implicit PRM (`algo="oprl"`, trainers/credit.py), whose
     per-turn outputs the estimator then reads;
  3. advantages per turn from the estimator (`turngym.rewards.estimators`), scaled by their std
     over the batch (not centred: an all-zero batch stays zero) so every estimator takes steps of
     one size;
  4. minibatch epochs of the PPO-clip loss
        L = -mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A)) - c_ent H + c_v 1/2 (V - V_target)^2,
     rho = pi(a|s) / pi_old(a|s) (`loss="reinforce"`: -mean(log pi(a|s) A), one pass), with the
     value loss only when the estimator uses the critic (gae, evpo, spa), and gradient clipping;
     with `self_imitation` c_SI > 0, plus c_SI times the cloning loss on the run's best episodes
     so far, which this update's rollouts may join first (trainers/self_imitation.py);
  5. log a metrics row (JSONL + TensorBoard) and write the checkpoint atomically.

The run resumes from its checkpoint (`resume=True`): policy, optimizer, credit model, curriculum, random
streams and the metrics file are restored to the last finished update, so a resumed run continues
exactly as an uninterrupted one would. The config is `NeuralTrainConfig` (trainers/config.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turngym.agents.landmarks import Remember
from turngym.agents.neural import NeuralPolicy, PolicyConfig, load_saved, new_policy
from turngym.agents.symbolic import KIND, SymbolicConfig, SymbolicPolicy, new_symbolic_policy
from turngym.console import progress_bar
from turngym.rewards.analysis import EpisodeAnalysis, recipe_path, summarize
from turngym.rewards.code import VectorCodeReward
from turngym.rewards.estimators import NEEDS, Rollouts, estimate
from turngym.trainers.collect import (
    Collected,
    SymbolicActor,
    TextActor,
    deterministic,
    group_seeds,
    group_streams,
)
from turngym.trainers.config import NeuralTrainConfig, defaults
from turngym.trainers.credit import CreditModel, OPRLTrainer, SPATrainer
from turngym.trainers.curriculum import all_equal_share, from_config, group_signals
from turngym.trainers.distributed import collector
from turngym.trainers.prm import PRMTrainer
from turngym.trainers.runlog import Metrics, load_checkpoint, read_metrics, save_checkpoint, write_config
from turngym.trainers.self_imitation import SelfImitation
from turngym.trajectory import atomic_write_json

# the model fitted on each batch before the estimator of the same name reads its per-turn outputs
CREDIT_MODELS: dict[str, type[CreditModel]] = {m.name: m for m in (PRMTrainer, SPATrainer, OPRLTrainer)}


def build(config: NeuralTrainConfig) -> tuple[torch.nn.Module, SymbolicActor | TextActor, str]:
    """The policy network, the actor that plays it on a vector env, and the backend's name: the
    env's fast vector backend with the symbolic policy, or single envs with the text policy. The
    reward code (`reward_code`) wraps the vector backend (VectorCodeReward) or each single env
    (CodeReward); the actor's env counts deaths, reward terms and stalls (EpisodeAnalysis)."""
    backend = config.vector_backend()
    kwargs, options = config.env_setup()
    n = config.groups * config.group_size
    path = config.policy.partition(":")[2]
    saved = load_saved(path) if path else None
    if backend is not None:
        if saved is not None and saved.get("kind") != KIND:
            raise ValueError(f"{path} is a text policy; the symbolic backend needs one trained on it: "
                             "use backend text")
        env = backend.make(n, kwargs)
        view = env.single_observation_space["view"].shape[0]
        policy = SymbolicPolicy.from_saved(saved) if saved else new_symbolic_policy(
            SymbolicConfig.for_craft(view, **config.net), config.seed)
        path = recipe_path(env)
        if config.reward_code:
            env = VectorCodeReward(env, config.reward_code, action_names=env.rules.actions)
        if policy.config.landmarks:  # the agent's own memory, from its observations and actions
            env = Remember(env, policy.config.landmarks)
        return policy, SymbolicActor(policy, EpisodeAnalysis(env, env.state_dict, path)), "symbolic"
    if saved is not None and saved.get("kind") == KIND:
        raise ValueError(f"{path} is a symbolic policy; use backend symbolic (or auto)")
    policy = NeuralPolicy.from_saved(saved) if saved else new_policy(PolicyConfig(**config.net), config.seed)

    actor = TextActor(policy, lambda: config.make_env(kwargs), n, options)
    singles = actor.env.envs
    actor.env = EpisodeAnalysis(actor.env, lambda i: singles[i].unwrapped.state_dict(),
                                recipe_path(singles[0].unwrapped))
    return policy, actor, "text"


def advantages(config: NeuralTrainConfig, col: Collected, model: CreditModel | None,
               learned: list[np.ndarray] | None):
    """The estimator's advantages, given the critic's values where it reads them and the credit
    model's per-turn outputs (`learned`) in the Rollouts field the model fills."""
    needs = NEEDS[config.algo]
    rollouts = Rollouts(col.trajectories, col.groups, values=col.values() if "values" in needs else None,
                        **({model.field: learned} if model is not None else {}))
    return estimate(config.algo, rollouts, **config.algo_options)


def flatten(col: Collected, per_trajectory: list[np.ndarray]) -> torch.Tensor:
    out = np.zeros(len(col.index))
    for idx, values in zip(col.turns, per_trajectory, strict=True):
        out[idx] = values
    return torch.as_tensor(out, dtype=torch.float32)


def ppo_update(config: NeuralTrainConfig, policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
               actor: SymbolicActor | TextActor, col: Collected, adv: torch.Tensor, targets: torch.Tensor | None,
               generator: torch.Generator, critic_only: bool = False,
               imitation: SelfImitation | None = None) -> dict[str, float]:
    """Minibatch epochs of the clipped surrogate (or one REINFORCE pass) on one batch, plus the
    self-imitation loss on as many kept turns where `imitation` holds any; with `critic_only`, of
    the value loss alone, on the value head alone (the layers it shares with the policy stay as
    they are, and so does the policy)."""
    std = float(adv.std()) if adv.numel() > 1 else 0.0
    if std > 1e-8:
        adv = adv / std
    n = len(adv)
    epochs = 1 if config.loss == "reinforce" else config.epochs
    sums: dict[str, float] = {"pg_loss": 0.0, "v_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0, "approx_kl": 0.0}
    imitate = imitation is not None and bool(imitation.kept) and not critic_only
    if imitate:
        sums["si_loss"] = 0.0
    batches = 0
    held = [p for name, p in policy.named_parameters() if not name.startswith("value_head.")] if critic_only else []
    policy.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.minibatch_size):
            rows = order[start:start + config.minibatch_size].numpy()
            logp, entropy, value = actor.evaluate(col.inputs, rows, col.index[rows])
            a = adv[rows]
            if config.loss == "reinforce":
                pg = -(logp * a).mean()
                ratio = torch.ones_like(logp)
            else:
                ratio = torch.exp(logp - col.logprob[rows])
                pg = -torch.min(ratio * a, ratio.clamp(1 - config.clip_eps, 1 + config.clip_eps) * a).mean()
            loss = pg - config.entropy_coef * entropy.mean()
            if imitate:
                si = imitation.loss(len(rows), generator)
                loss = loss + config.self_imitation * si
                sums["si_loss"] += float(si.detach())
            v_loss = torch.zeros(())
            if targets is not None:
                v_loss = 0.5 * ((value - targets[rows]) ** 2).mean()
                loss = config.vf_coef * v_loss + (0.0 if critic_only else loss)
            optimizer.zero_grad()
            loss.backward()
            for p in held:
                p.grad = None  # Adam skips a parameter without a gradient
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                log_ratio = logp - col.logprob[rows]
                sums["approx_kl"] += float(((ratio - 1) - log_ratio).mean())
                sums["clip_frac"] += float(((ratio - 1).abs() > config.clip_eps).float().mean())
            sums["pg_loss"] += float(pg.detach())
            sums["v_loss"] += float(v_loss.detach())
            sums["entropy"] += float(entropy.mean().detach())
            batches += 1
    policy.eval()
    return {k: v / max(batches, 1) for k, v in sums.items()}


def train(config: NeuralTrainConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Train a policy; returns the metrics rows. Writes into `config.out`: config.json,
    metrics.jsonl, analysis.json (the run's trajectory analysis), tb/, checkpoint.pt, policy.pt
    (`neural:OUT/policy.pt`) and the credit model of algo prm, spa or oprl (prm.pt, spa.pt, oprl.pt)."""
    config.check()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    policy, actor, backend = build(config)
    # fused: one pass over the parameters a step; the text policy's n-gram table alone has 2M,
    # and the unfused step took 27 ms of it against 6 on one core
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, fused=True)
    model = CREDIT_MODELS[config.algo](policy, config) if config.algo in CREDIT_MODELS else None
    curriculum = from_config(config)
    imitation = SelfImitation(actor, config.self_imitation_episodes, config.self_imitation_signal) \
        if config.self_imitation > 0 else None
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    update, env_steps = 0, 0
    metrics = Metrics(out, tensorboard=config.tensorboard)
    checkpoint = out / "checkpoint.pt"
    if config.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        # a larger step budget extends the run; anything else but logging, the folder (a run may be
        # moved or copied) and where rollouts are collected (same results) would mix two experiments.
        # A knob added since the run was made compares as its default.
        saved = {**defaults(type(config)), **state["config"]}
        changed = sorted(k for k, v in asdict(config).items() if saved.get(k) != v
                         and k not in ("steps", "resume", "tensorboard", "ray", "ray_workers", "out"))
        if changed:
            raise ValueError(f"cannot resume {out}: its config differs in {', '.join(changed)}; "
                             "use another out folder or the same options (only steps may grow)")
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        if model is not None:
            model.load_state_dict(state[model.name])
        rng.bit_generator.state = state["rng"]
        if curriculum is not None:
            curriculum.load_state_dict(state["curriculum"])
        if imitation is not None:
            imitation.load_state_dict(state["self_imitation"])
        generator.set_state(state["generator"])
        update, env_steps = state["update"], state["env_steps"]
        metrics.truncate(update)
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run: no rows from an older one
    write_config(out, config)
    rows = read_metrics(out)
    # Rollouts play the network in eval mode, as ppo_update leaves it; a fresh module is in train
    # mode, whose attention takes another kernel path, and a resumed run's first rollouts drifted
    # from the uninterrupted run's in the last bits of their log-probs.
    policy.eval()
    collect = collector(config, policy, actor)
    bar = progress_bar(disable=not progress)
    start = time.perf_counter()
    try:
        with bar, deterministic():
            job = bar.add_task(f"{config.algo} on {config.task or config.env_id}", total=config.steps,
                               completed=min(env_steps, config.steps))
            while env_steps < config.steps:
                t0 = time.perf_counter()
                per_group = {"task_ids": curriculum.propose(config.groups)} if curriculum is not None else {}
                col = collect(group_seeds(rng, config.groups), group_streams(generator, config.groups), **per_group)
                t_collect = time.perf_counter() - t0
                model_stats, learned = {}, None
                if model is not None:
                    model_stats = model.fit(actor, col, generator)
                    learned = model.per_turn(actor, col)
                    model_stats.update(model.figures(col, learned))
                est = advantages(config, col, model, learned)
                adv = flatten(col, est.advantages)
                targets = flatten(col, est.returns) if "values" in NEEDS[config.algo] else None
                if imitation is not None:
                    imitation.add(col)
                stats = ppo_update(config, policy, optimizer, actor, col, adv, targets, generator,
                                   critic_only=update < config.critic_warmup and targets is not None,
                                   imitation=imitation)
                if imitation is not None:
                    stats.update(imitation.stats())
                update += 1
                env_steps += col.env_steps
                trajs = col.trajectories
                row = {"update": update, "env_steps": env_steps, "episodes": len(trajs),
                       "success": float(np.mean([t.success for t in trajs])),
                       "return": float(np.mean([t.total_reward for t in trajs])),
                       **({"progress": float(np.mean([t.score_parts["progress"] for t in trajs]))}
                          if all("progress" in t.score_parts for t in trajs) else {}),
                       "turns": float(np.mean([len(t.turns) for t in trajs])),
                       # groups whose returns are all equal: zero group-relative advantage, wasted rollouts
                       "zero_adv_groups": all_equal_share(group_signals(trajs, col.groups, "return")),
                       **stats, **{f"adv_{k}": v for k, v in est.stats.items()}, **model_stats,
                       "collect_s": round(t_collect, 3), "update_s": round(time.perf_counter() - t0 - t_collect, 3),
                       "steps_per_s": round(col.env_steps / (time.perf_counter() - t0), 1)}
                if curriculum is not None:
                    row.update(curriculum.update(per_group["task_ids"],
                                                 group_signals(trajs, col.groups, config.curriculum_signal)))
                if isinstance(actor.env, EpisodeAnalysis):  # deaths, reward terms, stalls (rewards/analysis.py)
                    row.update(actor.env.pop())
                metrics.log(row)
                rows.append(row)
                atomic_write_json(out / "analysis.json", summarize(rows), indent=1)
                save_checkpoint(checkpoint, {
                    "config": asdict(config), "policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
                    **({model.name: model.state_dict()} if model is not None else {}), "rng": rng.bit_generator.state,
                    "curriculum": curriculum.state_dict() if curriculum is not None else None,
                    "self_imitation": imitation.state_dict() if imitation is not None else None,
                    "generator": generator.get_state(), "update": update, "env_steps": env_steps})
                bar.update(job, completed=min(env_steps, config.steps),
                           description=f"{config.algo} on {config.task or config.env_id}: "
                                       f"success {row['success']:.0%}")
    finally:
        collect.close()
        actor.close()
        metrics.close()
    meta = {"env_id": config.env_id, "task": config.task, "algo": config.algo, "backend": backend,
            "env_steps": env_steps, "updates": update, "seconds": round(time.perf_counter() - start, 1)}
    policy.save(out / "policy.pt", **meta)
    if model is not None:
        model.save(out / f"{model.name}.pt", **meta)
    return rows


def code_reward_trainer(env_id: str, task: str | None, env_kwargs: dict[str, Any], steps: int, *, seed: int = 0,
                        episodes: int = 20) -> Any:
    """A `train(source, folder)` for the reward-design loop (`turngym.rewards.design`): a short
    GRPO run of the text policy on the env with the code reward added, then the trained policy's
    evaluation on the same wrapped env."""
    from turngym.rewards.design import evaluate_code_reward

    def run(source: str, folder: Path) -> dict[str, Any]:
        config = NeuralTrainConfig(env_id=env_id, task=task, env_kwargs=env_kwargs, algo="grpo", steps=steps,
                                   groups=4, group_size=4, out=str(Path(folder) / "train"), seed=seed,
                                   reward_code=source, tensorboard=False)
        rows = train(config, progress=False)
        agent, kwargs = config.trained()
        result = evaluate_code_reward(source, env_id, agent=agent, episodes=episodes, seed=seed, env_kwargs=kwargs,
                                      reset_options=config.env_setup()[1])
        return {**result, "train_steps": rows[-1]["env_steps"], "train_success": rows[-1]["success"]}

    return run
