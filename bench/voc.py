"""Value-Order Correlation (VOC) of per-turn value estimates on oracle episodes, per value source.

VOC (turngym.rewards.voc) is the Spearman correlation of an episode's per-turn values with time:
on an expert's successful episodes a value estimate that tracks progress scores near 1. The
oracle plays test tasks of Craft (wood_pickaxe, stone_pickaxe) and of WebShop in the browser
(turngym/WebShopBrowser-v0, headless Chromium), and each source scores every turn it acted on:

    progress            Craft's own: the share of the goal's prerequisite achievements done in s_t
                        (state_dict's achievements; the end-of-episode score part `progress`)
    prm                 M(s_t, a_t) of a PRM trained by `turngym train --algo prm` (trainers/ppo.py)
    critic              V(s_t) of the value head of a policy trained by `--algo gae`: the prm run's
                        own head is never fitted (its value loss is only on for gae and evpo)
    spa                 SPA-RL's progress: sum_{k<=t} c(s_k, a_k), the contributions of the progress
                        estimator trained by `--algo spa` (its spa.pt; trainers/credit.py)
    oprl                OPRL's cumulative step rewards: sum_{k<=t} beta log(pi_phi(a_k|s_k) / pi(a_k|s_k)),
                        pi_phi the implicit PRM trained by `--algo oprl` (oprl.pt), pi the policy it was
                        last fitted against (oprl_reference.pt; the run's policy.pt is an update newer)
    gvl                 GVL's progress estimate from the frames (turngym.rewards.gvl.GVLScorer) with
                        the VLM of --gvl SPEC or TURNGYM_GVL_AGENT; skipped when none is given
    shuffled progress   control: each episode's progress values in a random order
    spa / oprl shuffled control: the same per-turn contributions or step rewards, summed in a random
                        order; a running sum of mostly positive numbers rises with time whatever it
                        ranks, so spa and oprl rank progress only as far as they beat their control
    noise               control: i.i.d. uniform values, the floor for episodes of that length

The trained runs are small (a minute or two of CPU) and cached under OUT/train; a rerun only plays
and scores. Writes OUT/results.json (every episode's VOC) and prints the table.

    .venv/bin/python bench/voc.py                      # about 6 min on 2 cores (cached runs: 30 s)
    .venv/bin/python bench/voc.py --quick              # 5 episodes, smaller training budgets
    .venv/bin/python bench/voc.py --gvl hf:PATH        # with GVL (or TURNGYM_GVL_AGENT=hf:PATH)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import turngym  # noqa: F401  (registers the envs)
from turngym.agents import make_agent
from turngym.agents.neural import load_saved
from turngym.agents.symbolic import OBS_KEYS, SymbolicPolicy
from turngym.envs.craft.rules import load_rules
from turngym.rewards.prm import ImplicitPRM, ProcessRewardModel
from turngym.rewards.voc import episode_voc
from turngym.rollout import rollout
from turngym.trajectory import Trajectory, atomic_write_json

CRAFT, WEBSHOP = "turngym/Craft-v0", "turngym/WebShopBrowser-v0"
# task: (training reward, env-step budget, quick budget). stone_pickaxe trains on progress: from
# scratch its success alone is too rare to learn from on a CPU budget (bench/train_compare.py).
TASKS = {"wood_pickaxe": ("success", 60_000, 20_000), "stone_pickaxe": ("progress", 150_000, 50_000)}
GVL_ENV = "TURNGYM_GVL_AGENT"
Probe = Callable[[dict[str, Any], dict[str, Any], str], float]  # (obs, info, action) -> the turn's value


class Recorder:
    """Wraps an agent so that `rollout` records each probe's value of the turn in its extras."""

    def __init__(self, agent: Any, probes: dict[str, Probe]) -> None:
        self.agent, self.probes = agent, probes
        self.last_record: dict[str, Any] = {}

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.agent.reset(obs, info, seed=seed)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        action = self.agent.act(obs, info)
        record = dict(getattr(self.agent, "last_record", None) or {})
        values = {key: float(probe(obs, info, action)) for key, probe in self.probes.items()}
        self.last_record = {**record, "extras": {**record.get("extras", {}), **values}}
        return action


# ---- training the PRM, the critic and the credit models -------------------------------------------
def trained(task: str, algo: str, steps: int, out: Path, console: Console) -> Path:
    """The folder of a finished `algo` run on Craft `task` (trained now unless cached), with its
    done.json: seconds, env steps, training success (and the PRM's explained variance)."""
    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.ppo import train

    reward = TASKS[task][0]
    folder = out / "train" / task / f"{algo}-{steps}"
    if (folder / "done.json").is_file():
        return folder
    start = time.perf_counter()
    with console.status(f"training {algo} on Craft {task} ({steps:,} env steps, reward {reward})..."):
        config = NeuralTrainConfig(env_id=CRAFT, task=task, algo=algo, steps=steps, seed=0, out=str(folder),
                                   env_kwargs={"reward": reward}, resume=True, tensorboard=False)
        rows = train(config, progress=False)
    seconds = time.perf_counter() - start
    summary = {"seconds": round(seconds, 1), "success": rows[-1]["success"], "env_steps": rows[-1]["env_steps"],
               **{k: rows[-1][k] for k in ("prm_ev", "spa_mse", "oprl_acc") if k in rows[-1]}}
    atomic_write_json(folder / "done.json", summary)
    console.print(f"  trained {algo} on {task}: training success {summary['success']:.0%} ({seconds:.0f} s)")
    return folder


def critic(path: Path) -> Probe:
    """V(s_t) from the value head of the symbolic policy saved at `path`."""
    policy = SymbolicPolicy.from_saved(load_saved(path))

    @torch.no_grad()
    def value(obs: dict[str, Any], info: dict[str, Any], action: str) -> float:
        return float(policy({k: torch.as_tensor(np.asarray(obs[k]))[None] for k in OBS_KEYS})[1][0])

    return value


def progress(env: gym.Env) -> Probe:
    """The share of the goal's prerequisite achievements done in the state the turn acted on."""
    rules = load_rules()

    def value(obs: dict[str, Any], info: dict[str, Any], action: str) -> float:
        state = env.unwrapped.state_dict()
        chain = rules.prerequisites(state["goal"])
        return sum(a in state["achievements"] for a in chain) / len(chain)

    return value


# ---- GVL ----------------------------------------------------------------------------------------
def gvl_scorer(spec: str | None, max_frames: int, console: Console) -> Callable[[Trajectory], float] | None:
    """A function from an episode to its GVL VOC, or None (with the line that says why) when no
    VLM is configured or turngym.rewards.gvl cannot be used."""
    if not spec:
        console.print(f"GVL skipped: no VLM configured (pass --gvl SPEC or set {GVL_ENV}; SPEC as in "
                      "`turngym run`, e.g. hf:PATH)")
        return None
    try:
        from turngym.rewards.gvl import GVLScorer
    except ImportError as exc:
        console.print(f"GVL skipped: turngym.rewards.gvl cannot be imported ({exc})", markup=False)
        return None
    scorer = GVLScorer(spec, max_frames=max_frames, seed=0)
    return lambda traj: float(scorer.score(traj).voc)  # over the answered frames, the final one included


# ---- playing and scoring ------------------------------------------------------------------------
def running_sums(traj: Trajectory, rng: np.random.Generator, step: str, name: str) -> None:
    """Each turn's `extras[name]`: the sum of the per-turn values `extras[step]` up to it; and
    `extras[name + " shuffled"]`: the same values summed in a random order (the control)."""
    values = np.array([t.extras.pop(step) for t in traj.turns])
    for key, order in ((name, values), (f"{name} shuffled", rng.permutation(values))):
        for turn, total in zip(traj.turns, np.cumsum(order), strict=True):
            turn.extras[key] = float(total)


def controls(traj: Trajectory, rng: np.random.Generator, shuffle: str | None) -> None:
    """Add the controls to each turn's extras: uniform noise and, where given, `shuffle`'s values
    permuted within the episode."""
    shuffled = rng.permutation([t.extras[shuffle] for t in traj.turns]) if shuffle else None
    for k, turn in enumerate(traj.turns):
        turn.extras["noise"] = float(rng.random())
        if shuffled is not None:
            turn.extras[f"shuffled {shuffle}"] = float(shuffled[k])


def play(env: gym.Env, probes: dict[str, Probe], episodes: int, images: bool) -> list[Trajectory]:
    """The oracle on test tasks 0..episodes-1, each turn scored by every probe."""
    agent = Recorder(make_agent("oracle", env), probes)
    return [rollout(env, agent, seed=i, options={"split": "test", "index": i}, record_images=images)
            for i in range(episodes)]


def craft(task: str, args: argparse.Namespace, gvl: Callable[[Trajectory], float] | None,
          console: Console) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Per source, the VOC of each oracle episode of Craft `task`; and the training runs' summaries."""
    budget = TASKS[task][2 if args.quick else 1]
    runs = {algo: trained(task, algo, budget, args.out, console) for algo in ("prm", "gae", "spa", "oprl")}
    env = gym.make(CRAFT, task=task, symbolic=True, image=gvl is not None)
    prm = ProcessRewardModel.load(runs["prm"] / "prm.pt", env)
    spa = ProcessRewardModel.load(runs["spa"] / "spa.pt", env)  # M(s, a) = the contribution c(s, a)
    oprl = ImplicitPRM.load(runs["oprl"] / "oprl.pt", runs["oprl"] / "oprl_reference.pt", env)
    probes = {"progress": progress(env), "prm": lambda obs, info, action: float(prm.scores(obs, info, [action])[0]),
              "critic": critic(runs["gae"] / "policy.pt"),
              "spa step": lambda obs, info, action: float(spa.scores(obs, info, [action])[0]),
              "oprl step": oprl.reward}
    with console.status(f"the oracle on {args.episodes} Craft {task} test tasks..."):
        trajs = play(env, probes, args.episodes, images=gvl is not None)
    env.close()
    rng = np.random.default_rng(1)
    for traj in trajs:
        running_sums(traj, rng, "spa step", "spa")
        running_sums(traj, rng, "oprl step", "oprl")
    keys = ["progress", "prm", "critic", "spa", "oprl", "shuffled progress", "spa shuffled", "oprl shuffled"]
    return score(trajs, keys, gvl, "progress", console), {algo: json.loads((run / "done.json").read_text())
                                                           for algo, run in runs.items()}


def webshop(args: argparse.Namespace, gvl: Callable[[Trajectory], float] | None,
            console: Console) -> dict[str, list[float]] | None:
    """Per source, the VOC of each oracle episode of WebShop in the browser; None without Chromium."""
    from turngym.envs.webshop.browser import BrowserNotFound

    try:
        env = gym.make(WEBSHOP, screenshot=gvl is not None)
    except BrowserNotFound as exc:
        console.print(f"WebShop skipped: {exc}", markup=False)
        return None
    try:
        with console.status(f"the oracle on {args.webshop_episodes} WebShop test tasks in Chromium..."):
            trajs = play(env, {}, args.webshop_episodes, images=gvl is not None)
    finally:
        env.close()
    return score(trajs, [], gvl, None, console)


def score(trajs: list[Trajectory], keys: list[str], gvl: Callable[[Trajectory], float] | None,
          shuffle: str | None, console: Console) -> dict[str, list[float]]:
    """Per source (the recorded `keys`, GVL, the controls), each episode's VOC."""
    rng = np.random.default_rng(0)
    for traj in trajs:
        controls(traj, rng, shuffle)
    if not all(t.success for t in trajs):
        console.print(f"  note: the oracle failed {sum(not t.success for t in trajs)} of {len(trajs)} episodes")
    out = {key: [episode_voc(t, key) for t in trajs] for key in keys}
    if gvl is not None:
        with console.status(f"GVL on {len(trajs)} episodes..."):
            out["gvl"] = [gvl(t) for t in trajs]
    out["noise"] = [episode_voc(t, "noise") for t in trajs]
    return out


def summary(vocs: list[float | None]) -> dict[str, Any]:
    """Episodes, mean and std of the defined VOCs, and the share that are NaN (values that cannot
    be ordered: constant, or fewer than two)."""
    x = np.asarray(vocs, dtype=float)
    ok = x[np.isfinite(x)]
    return {"episodes": len(x), "mean_voc": float(ok.mean()) if len(ok) else None,
            "std_voc": float(ok.std()) if len(ok) else None,
            "nan_share": float(1 - len(ok) / len(x)) if len(x) else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="oracle episodes per Craft task")
    parser.add_argument("--webshop-episodes", type=int, default=10, help="oracle episodes of WebShop (browser)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--quick", action="store_true", help="5 episodes each and the small training budgets")
    parser.add_argument("--gvl", default=os.environ.get(GVL_ENV),
                        help=f"the VLM agent spec for GVL (default: ${GVL_ENV})")
    parser.add_argument("--gvl-frames", type=int, default=16, help="GVL: frames shown per episode (max_frames)")
    parser.add_argument("--no-webshop", action="store_true", help="leave out WebShop (it needs Chromium)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/voc"))
    parser.add_argument("--fresh", action="store_true", help="retrain the PRM and critic runs")
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.webshop_episodes = min(args.episodes, 5), min(args.webshop_episodes, 5)
    if args.fresh and (args.out / "train").exists():
        shutil.rmtree(args.out / "train")
    torch.set_num_threads(1)
    console = Console(width=max(Console().width, 110))
    start = time.perf_counter()
    gvl = gvl_scorer(args.gvl, args.gvl_frames, console)

    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    training = {}
    for task in args.tasks:
        results["Craft", task], training[task] = craft(task, args, gvl, console)
    if not args.no_webshop:
        found = webshop(args, gvl, console)
        if found is not None:
            results["WebShop (browser)", "test"] = found

    table = Table(title=f"VOC on oracle episodes: Spearman of per-turn values with time{'' if gvl else ' (no GVL)'}")
    for column in ("source", "family / task", "episodes", "mean VOC", "std", "share NaN"):
        table.add_column(column, justify="left" if column in ("source", "family / task") else "right")
    rows = []
    for (family, task), sources in results.items():
        for source, vocs in sources.items():
            s = summary(vocs)
            rows.append({"source": source, "family": family, "task": task, **s,
                         "vocs": [None if v is None or np.isnan(v) else v for v in vocs]})
            table.add_row(source, f"{family} / {task}", str(s["episodes"]),
                          "—" if s["mean_voc"] is None else f"{s['mean_voc']:.3f}",
                          "—" if s["std_voc"] is None else f"{s['std_voc']:.3f}", f"{s['nan_share']:.0%}")
        table.add_section()
    console.print(table)
    seconds = time.perf_counter() - start
    report = {"rows": rows, "gvl": args.gvl if gvl else None, "episodes": args.episodes,
              "webshop_episodes": args.webshop_episodes, "quick": args.quick, "seconds": round(seconds, 1),
              "training": training}
    atomic_write_json(args.out / "results.json", report, indent=1)
    console.print(f"{seconds:.0f} s; every episode's VOC in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
