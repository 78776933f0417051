"""The reward-design loop of Auto MC-Reward (Li et al. 2023) with any language-model agent.

    designer -> checker -> training -> trajectory analysis -> revision -> ...

- Designer: a language model (`hf:PATH` or `openai:MODEL@URL`, any `LMAgent`) reads the env's
  documentation (its class docstring: Description, Action Space, Observation Space, Rewards,
  Starting State, Episode End, Arguments, Version History), its `state_dict()` format with one real
  example state, the required signature `reward(prev_state, action, state, info)` and the clipping
  rules, and replies with a ```python block. The prompts are in `turngym.rewards.design_prompts`.
- Checker: `check_reward_source` runs the code on transitions recorded once per run (random play
  plus the family's `heuristic` and `oracle` where it has them, so the code also meets the states
  that progress reaches). A failing version goes back to the model with the problems, up to
  `max_fixes` times; these fixes are attempts of the same version.
- Training: `train(source, version_dir) -> dict` (default: `evaluate_code_reward` plays
  `episodes` episodes of the wrapped env with the random agent; a PPO run plugs in the same way).
- Analysis: `analyze(result)` turns the result into text for the model (success rate, how often
  the code reward fired, mean sparse and dense per episode, the score parts reached, one failed
  episode), and the next version is the model's revision.

Every version is kept on disk, written atomically:

    OUT/summary.json           the run (env, task, agent) and one line per version, plus the best
    OUT/v{k}/reward.py         the source of version k ("" when the reply held no code)
    OUT/v{k}/check.json        the checker's Report
    OUT/v{k}/chat.json         the messages sent and the replies, attempt by attempt
    OUT/v{k}/result.json       train()'s result, or null when the checks failed; written last

A rerun with the same OUT resumes after the last version whose result.json exists.

`run_design` reports its progress to a `DesignStatus`; `turngym reward-design` (in
`turngym.apps.reward_design`) passes one that draws a progress bar, then prints a table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

import turngym
from turngym.agents import available_agents, make_agent
from turngym.agents.lm import LMAgent, Message, turn_seed
from turngym.envs.base import resolve_task
from turngym.rewards.code import (
    DEFAULT_TIME_LIMIT,
    CodeReward,
    Report,
    Transition,
    check_reward_source,
    record_transitions,
)
from turngym.rewards.design_prompts import (
    example_state,
    extract_code,
    first_request,
    fit,
    fix_request,
    headline,
    headline_line,
    revision_request,
    system_prompt,
)
from turngym.rollout import rollout
from turngym.trajectory import Trajectory, atomic_write_bytes, atomic_write_json

Train = Callable[[str, Path], dict[str, Any]]  # (reward source, version folder) -> JSON-ready results
RECORDERS = ("random", "heuristic", "oracle")  # who plays the checker's transitions, where the family has them
EVAL_SEED = 10_000  # evaluation episodes use seeds EVAL_SEED + seed + i, apart from the recorded ones
REPLY_TOKENS = 1024  # max_new_tokens unless agent_options say otherwise: a function needs more room than an action
LAST_TURNS = 5  # turns of an episode's end shown in the analysis


@dataclass
class Version:
    """One reward function of the run: its source, the checker's report (as a dict), train()'s
    result (None when the checks failed), how many replies it took, and its folder."""

    k: int
    source: str
    check: dict[str, Any]
    result: dict[str, Any] | None
    attempts: int
    path: Path

    @property
    def ok(self) -> bool:
        return bool(self.check.get("ok"))


class DesignStatus:
    """Where `run_design` reports what it is doing. This one shows nothing; the CLI's draws a
    progress bar (`turngym.apps.reward_design`), so the loop itself needs no terminal."""

    def start(self, total: int, completed: int) -> None:
        """The run begins with `completed` of its `total` versions already on disk."""

    def update(self, description: str) -> None:
        """The step the run is on now, in a few words."""

    def done(self, line: str) -> None:
        """A version is complete; `line` holds its key figures (`headline_line`)."""

    def stop(self) -> None:
        """The run is over, finished or failed (also when it failed before `start`)."""


# --- training and analysis --------------------------------------------------------------------

def episode_stats(traj: Trajectory) -> dict[str, Any]:
    """One episode of a CodeReward-wrapped env in numbers: outcome, env and shaped return, the
    code reward's sums and how often each part fired, its errors, and the last turns."""
    parts = [t.info.get("code_reward") or {} for t in traj.turns]
    sparse = [float(p.get("sparse", 0.0)) for p in parts]
    dense = [float(p.get("dense", 0.0)) for p in parts]
    errors = [t.info["code_reward_error"] for t in traj.turns if t.info.get("code_reward_error")]
    return {
        "seed": traj.seed, "task_id": traj.task_id, "turns": len(traj), "success": traj.success,
        "score": traj.score, "ended": "terminated" if traj.terminated else "truncated",
        "score_parts": {k: v for k, v in traj.score_parts.items() if isinstance(v, (int, float))},
        "return": traj.total_reward,  # the shaped return; the env's own is what is left without the code reward
        "env_return": round(traj.total_reward - sum(sparse) - sum(dense), 9),
        "sparse": sum(sparse), "dense": sum(dense),
        "sparse_fired": sum(s != 0 for s in sparse), "dense_fired": sum(d != 0 for d in dense),
        "errors": len(errors), "first_error": errors[0] if errors else None,
        "last_turns": [{"action": t.action, "valid": bool(t.info.get("valid", True)), "sparse": s, "dense": d}
                       for t, s, d in list(zip(traj.turns, sparse, dense, strict=True))[-LAST_TURNS:]],
    }


def summarize_episodes(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The result dict the analysis reads, from `episode_stats` of each episode: success_rate,
    mean_score, mean_env_return, mean_return, mean_turns, mean_code_reward_per_turn,
    sparse_fired_rate and dense_fired_rate (per turn), mean_sparse_per_episode,
    mean_dense_per_episode, error_turns, score_parts_mean, and the episodes themselves."""
    n, turns = max(len(episodes), 1), max(sum(e["turns"] for e in episodes), 1)
    keys = sorted({k for e in episodes for k in e["score_parts"]})
    return {
        "episodes_played": len(episodes),
        "success_rate": sum(e["success"] for e in episodes) / n,
        "mean_score": sum(e["score"] for e in episodes) / n,
        "mean_env_return": sum(e["env_return"] for e in episodes) / n,
        "mean_return": sum(e["return"] for e in episodes) / n,
        "mean_turns": sum(e["turns"] for e in episodes) / n,
        "mean_code_reward_per_turn": sum(e["sparse"] + e["dense"] for e in episodes) / turns,
        "sparse_fired_rate": sum(e["sparse_fired"] for e in episodes) / turns,
        "dense_fired_rate": sum(e["dense_fired"] for e in episodes) / turns,
        "mean_sparse_per_episode": sum(e["sparse"] for e in episodes) / n,
        "mean_dense_per_episode": sum(e["dense"] for e in episodes) / n,
        "error_turns": sum(e["errors"] for e in episodes),
        "score_parts_mean": {k: sum(e["score_parts"].get(k, 0.0) for e in episodes) / n for k in keys},
        "episodes": list(episodes),
    }


def evaluate_code_reward(source: str, env_id: str, *, agent: str = "random", episodes: int = 20, seed: int = 0,
                         env_kwargs: dict[str, Any] | None = None, reset_options: dict[str, Any] | None = None,
                         time_limit: float = DEFAULT_TIME_LIMIT) -> dict[str, Any]:
    """Play `episodes` episodes (seeds EVAL_SEED + seed + i) of `CodeReward(gym.make(env_id), source)`
    with `agent` and summarize them (`summarize_episodes`). With the random agent this is the
    default training step; after a PPO run, pass the trained policy's spec to evaluate it."""
    env = CodeReward(gym.make(env_id, **(env_kwargs or {})), source, time_limit=time_limit)
    try:
        player = make_agent(agent, env)
        stats = [episode_stats(rollout(env, player, seed=EVAL_SEED + seed + i, options=reset_options,
                                       record_images=False)) for i in range(episodes)]
    finally:
        env.close()
    return {"agent": agent, **summarize_episodes(stats)}


def default_train(env_id: str, *, episodes: int = 20, seed: int = 0, env_kwargs: dict[str, Any] | None = None,
                  reset_options: dict[str, Any] | None = None, agent: str = "random") -> Train:
    """The `train` callable used when none is given: evaluate the reward with `agent` (random play)."""

    def train(source: str, version_dir: Path) -> dict[str, Any]:
        return evaluate_code_reward(source, env_id, agent=agent, episodes=episodes, seed=seed, env_kwargs=env_kwargs,
                                    reset_options=reset_options)

    return train


# --- the run ----------------------------------------------------------------------------------

def make_design_env(env_id: str, task: str | None, env_kwargs: dict[str, Any] | None = None
                    ) -> tuple[gym.Env, dict[str, Any], dict[str, Any] | None]:
    """The env, the gym.make kwargs that made it and the reset options, `task` going where the env
    class says (`turngym.envs.base.resolve_task`: Craft's task kwarg, else a task id or split)."""
    if env_id not in turngym.list_envs():
        raise ValueError(f"unknown env {env_id!r}: run `turngym list` to see the ids")
    kwargs, options = resolve_task(env_id, task, env_kwargs)
    return gym.make(env_id, **kwargs), kwargs, options


def _write_json(path: Path, value: Any) -> None:
    atomic_write_json(path, value, indent=2, default=str)


def load_versions(out: Path) -> list[Version]:
    """The complete versions in `out` (v1, v2, ... up to the first without result.json)."""
    versions, k = [], 1
    while (out / f"v{k}" / "result.json").exists():
        folder = out / f"v{k}"
        chat = json.loads((folder / "chat.json").read_text(encoding="utf-8"))
        versions.append(Version(k, (folder / "reward.py").read_text(encoding="utf-8"),
                                json.loads((folder / "check.json").read_text(encoding="utf-8")),
                                json.loads((folder / "result.json").read_text(encoding="utf-8")),
                                int(chat.get("attempts", 1)), folder))
        k += 1
    return versions


def _summary(run: dict[str, Any], versions: Sequence[Version]) -> dict[str, Any]:
    trained = [v for v in versions if v.ok and v.result is not None]
    best = max(trained, key=lambda v: (v.result.get("success_rate", 0.0), v.result.get("mean_env_return", 0.0)),
               default=None)
    return {**run, "versions": [{"version": v.k, "dir": v.path.name, "check_ok": v.ok, "attempts": v.attempts,
                                 "problems": v.check.get("problems", []), "result": headline(v.result)}
                                for v in versions],
            "best": best.k if best is not None else None}


def run_design(env_id: str, task: str | None, agent_spec: str, *, iterations: int = 3, out: str | Path,
               train: Train | None = None, env_kwargs: dict[str, Any] | None = None, seed: int = 0,
               episodes: int = 20, record_episodes: int = 2, max_fixes: int = 2,
               agent_options: dict[str, Any] | None = None, time_limit: float = DEFAULT_TIME_LIMIT,
               status: DesignStatus | None = None) -> list[Version]:
    """Run `iterations` versions of designer -> checker -> train -> analysis (module docstring).

    `agent_spec` names a language-model agent (`hf:PATH`, `openai:MODEL@URL`) with `agent_options`
    (max_new_tokens defaults to REPLY_TOKENS). `train(source, version_dir)` returns a JSON-ready dict
    (default: `evaluate_code_reward` with random play over `episodes` episodes); `analyze` reads
    the keys of `summarize_episodes` where present. The checker's transitions come from
    `record_episodes` episodes of each of RECORDERS the family has. Versions already complete in
    `out` are kept and the run goes on after them; all versions are returned. `status` hears
    what the run is doing and the key figures of each version.
    """
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be a whole number >= 1, got {iterations!r}")
    for name, value, least in (("max_fixes", max_fixes, 0), ("episodes", episodes, 1),
                               ("record_episodes", record_episodes, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    out = Path(out)
    env, kwargs, reset_options = make_design_env(env_id, task, env_kwargs)
    run = {"env_id": env_id, "task": task, "agent": agent_spec, "seed": seed,
           "env_kwargs": json.loads(json.dumps(kwargs, default=str))}  # as summary.json will hold them
    summary_path = out / "summary.json"
    if summary_path.exists():
        old = json.loads(summary_path.read_text(encoding="utf-8"))
        if (old.get("env_id"), old.get("task"), old.get("env_kwargs")) != (env_id, task, run["env_kwargs"]):
            raise ValueError(f"{out} holds a reward-design run for {old.get('env_id')} task {old.get('task')} "
                             f"{old.get('env_kwargs')}: pass another out folder, or the same env, task and kwargs")
    versions = load_versions(out)
    _write_json(summary_path, _summary(run, versions))
    if len(versions) >= iterations:
        env.close()
        return versions
    status = status or DesignStatus()
    try:
        options = dict(agent_options or {})
        lm = make_agent(agent_spec, env, **options)
        if not isinstance(lm, LMAgent):
            raise ValueError(f"reward design needs a language-model agent, not {agent_spec!r}: use hf:PATH or "
                             "openai:MODEL@BASE_URL")
        if "max_new_tokens" not in options:
            lm.max_new_tokens = REPLY_TOKENS
        train = train or default_train(env_id, episodes=episodes, seed=seed, env_kwargs=kwargs,
                                       reset_options=reset_options)
        status.start(iterations, len(versions))
        status.update(f"recording play for the checker ({', '.join(_recorders(env))})")
        transitions = [t for name in _recorders(env)
                       for t in record_transitions(env, name, record_episodes, seed, options=reset_options)]
        _, info = env.reset(seed=seed, options=reset_options)
        system = system_prompt(env, env_id, str(info.get("instruction", "")), example_state(transitions),
                               info, time_limit)
        for k in range(len(versions) + 1, iterations + 1):
            request = revision_request(versions[-1], versions) if versions else first_request(
                str(info.get("instruction", "")))
            version = _design_version(k, lm, system, request, transitions, train, out / f"v{k}", seed,
                                      max_fixes, time_limit, status)
            versions.append(version)
            _write_json(summary_path, _summary(run, versions))
            status.done(headline_line(version))
    finally:
        status.stop()
        env.close()
    return versions


def _recorders(env: gym.Env) -> list[str]:
    names = available_agents(env)
    return [name for name in RECORDERS if name in names]


def _design_version(k: int, lm: LMAgent, system: str, request: str, transitions: list[Transition], train: Train,
                    folder: Path, seed: int, max_fixes: int, time_limit: float, status: DesignStatus) -> Version:
    """Ask, check, and ask for fixes until the code passes or `max_fixes` fixes are spent; then train."""
    messages: list[Message] = [{"role": "system", "content": system}, {"role": "user", "content": request}]
    sent: list[dict[str, Any]] = []
    source, report, attempts = "", Report(False, []), 0
    for attempt in range(1, max_fixes + 2):
        attempts = attempt
        status.update(f"v{k}: asking the model" + (f" (fix {attempt - 1})" if attempt > 1 else ""))
        prompt = fit(lm, messages)
        completion = lm.complete(prompt, None, turn_seed(seed, 100 * k + attempt))
        sent.append({"attempt": attempt, "messages": prompt, "reply": completion.text, "usage": completion.usage,
                     "finish_reason": completion.finish_reason})
        messages.append({"role": "assistant", "content": completion.text})
        code = extract_code(completion.text)
        status.update(f"v{k}: checking the reward function")
        if code is None:
            source, report = "", Report(False, ["the reply holds no Python code: reply with the whole function "
                                                "in one ```python code block"])
        else:
            source, report = code, check_reward_source(code, transitions, time_limit=time_limit)
        if report.ok or attempt > max_fixes:
            break
        messages.append({"role": "user", "content": fix_request(report, len(transitions))})
    atomic_write_bytes(folder / "reward.py", source.encode("utf-8"))
    _write_json(folder / "check.json", report.as_dict())
    _write_json(folder / "chat.json", {"attempts": attempts, "messages": messages, "sent": sent})
    result = None
    if report.ok:
        status.update(f"v{k}: training with the reward function")
        result = train(source, folder)
        if not isinstance(result, dict):
            raise TypeError(f"train() returned {type(result).__name__}: return a dict of results such as "
                            "{'success_rate': 0.5}")
    _write_json(folder / "result.json", result)
    return Version(k, source, report.as_dict(), result, attempts, folder)
