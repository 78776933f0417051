"""The reward-design loop of Auto MC-Reward (Li et al. 2023) with any language-model agent.

    designer -> checker -> training -> trajectory analysis -> revision -> ...

- Designer: a language model (`hf:PATH` or `openai:MODEL@URL`, any `LMAgent`) reads the env's
  documentation, its `state_dict()` format with one real example state, the required signature
  `reward(prev_state, action, state, info)` and the clipping rules, and replies with a ```python
  block.
- Checker: `check_reward_source` runs the code on transitions recorded once per run (random play
  plus the family's `heuristic` and `oracle` where it has them, so the code also meets the states
  that progress reaches). A failing version goes back to the model with the problems, up to
  `max_fixes` times; these fixes are attempts of the same version.
- Training: `train(source, version_dir) -> dict` (default: `evaluate_code_reward` plays
  `episodes` episodes of the wrapped env with the random agent; a PPO run plugs in the same way).
- Analysis: `analyse(result)` turns the result into text for the model (success rate, how often
  the code reward fired, mean sparse and dense per episode, the score parts reached, one failed
  episode), and the next version is the model's revision.

Every version is kept on disk, written atomically:

    OUT/summary.json           the run (env, task, agent) and one line per version, plus the best
    OUT/v{k}/reward.py         the source of version k ("" when the reply held no code)
    OUT/v{k}/check.json        the checker's Report
    OUT/v{k}/chat.json         the messages sent and the replies, attempt by attempt
    OUT/v{k}/result.json       train()'s result, or null when the checks failed; written last

A rerun with the same OUT resumes after the last version whose result.json exists.

From the command line (`turngym reward-design ENV --task T --agent SPEC --iterations N --out DIR`)
call `design_command(env_id, task, agent, iterations=N, out=DIR, episodes=..., seed=...,
env_kwargs=..., agent_options=...)`: it runs the loop with a progress bar and prints a table.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

import turngym
from turngym.agents import available_agents, make_agent
from turngym.agents.lm import LMAgent, Message, shorten, turn_seed
from turngym.console import progress_bar
from turngym.rewards.code import (
    DEFAULT_TIME_LIMIT,
    PARAMS,
    CodeReward,
    Report,
    Transition,
    check_reward_source,
    record_transitions,
)
from turngym.rollout import rollout
from turngym.trajectory import Trajectory, atomic_write_bytes

Train = Callable[[str, Path], dict[str, Any]]  # (reward source, version folder) -> JSON-ready results
RECORDERS = ("random", "heuristic", "oracle")  # who plays the checker's transitions, where the family has them
EVAL_SEED = 10_000  # evaluation episodes use seeds EVAL_SEED + seed + i, apart from the recorded ones
REPLY_TOKENS = 1024  # max_new_tokens unless agent_options say otherwise: a function needs more room than an action
LAST_TURNS = 5  # turns of an episode's end shown in the analysis
KEY_FIGURES = ("success_rate", "mean_env_return", "mean_return", "sparse_fired_rate", "dense_fired_rate")


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


# --- the model's reply ------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str) -> str | None:
    """The reward source in a reply: the last ```python block that defines `reward` (else the last
    python or untagged block; an unclosed block runs to the end), else the text from the first
    line that starts the code when the reply has no fences; None when there is none."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    python = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
    for candidates in ([b for b in python if "def reward" in b], python):
        if candidates:
            return candidates[-1].strip("\n") + "\n"
    if "def reward" in reply:
        lines = reply.splitlines()
        start = next((i for i, line in enumerate(lines) if re.match(r"(import |from |def )", line)), None)
        code = "\n".join(lines[start:]) if start is not None else reply[reply.index("def reward"):]
        return code.strip("\n") + "\n"
    return None


# --- prompts ----------------------------------------------------------------------------------

def shorten_value(value: Any, max_items: int = 6, max_chars: int = 80) -> Any:
    """JSON-like data cut for a prompt: lists keep `max_items` items and a `... N more` marker,
    strings `max_chars` characters, dicts `3 * max_items` keys."""
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): shorten_value(v, max_items, max_chars) for k, v in items[:3 * max_items]}
        if len(items) > 3 * max_items:
            out["..."] = f"{len(items) - 3 * max_items} more keys"
        return out
    if isinstance(value, (list, tuple)):
        out_list = [shorten_value(v, max_items, max_chars) for v in value[:max_items]]
        if len(value) > max_items:
            out_list.append(f"... {len(value) - max_items} more")
        return out_list
    if isinstance(value, str) and len(value) > max_chars:
        return value[:max_chars] + "..."
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def example_state(transitions: Sequence[Transition]) -> dict[str, Any]:
    """The recorded state with the most to show once shortened (a late state of a long episode
    holds an inventory and achievements, a first state often holds neither)."""
    candidates = [t.state for t in transitions[::max(len(transitions) // 50, 1)]] or [{}]
    return max(candidates, key=lambda s: len(json.dumps(shorten_value(s), default=str)))


def system_prompt(env: gym.Env, env_id: str, instruction: str, state: dict[str, Any], info: dict[str, Any],
                  time_limit: float = DEFAULT_TIME_LIMIT) -> str:
    """The designer's instructions: the env, its state format with an example, the rules."""
    doc = inspect.getdoc(type(env.unwrapped)) or ""
    try:
        description = turngym.describe(env_id)
    except KeyError:
        description = ""
    info_keys = ", ".join(k for k in info if not k.startswith("code_reward"))
    params = ", ".join(PARAMS)
    return "\n".join([
        "You design reward functions for reinforcement learning, as in Auto MC-Reward: Python code that gives a "
        "learning agent dense, turn-by-turn signals towards a sparse goal.",
        "",
        f"Environment {env_id}: {description}",
        doc,
        "",
        f"Task: {instruction}",
        "",
        "Your function reads the environment's true state, `env.unwrapped.state_dict()`: a JSON-like dict "
        "(besides the fields above it holds task_id and turn). An example from this task (long lists and strings "
        "are cut here; `...` marks a cut):",
        "```json",
        json.dumps(shorten_value(state), default=str),
        "```",
        f"`info` is the step's info dict with keys {info_keys}; when the episode ends it also holds success, score "
        "and score_parts.",
        "",
        "Write exactly this function:",
        "```python",
        f"def reward({params}):",
        "    ...",
        "    return dense             # or: return sparse, dense",
        "```",
        "- prev_state is the state before the action, action the action string the agent sent, state the state "
        "after it, info the step's info.",
        "- Return a float (the dense part) or a pair (sparse, dense). The sparse part becomes sign(sparse), one of "
        "-1, 0, 1: use +1 for a milestone on the way to the task and -1 for a disaster such as dying. The dense "
        "part is clipped to [-0.1, 0.1]: use it for small steps of progress. The agent learns from the "
        "environment's own reward (1 when the task is done) + sparse + dense.",
        "- Rules: plain Python; `import math` is the only import; no files, classes, try/finally or catch-all "
        "except; no names starting with __ and no attributes starting with _. Dicts may leave out keys (for "
        "example items the agent has none of): read them with .get(key, default). Each call must finish within "
        f"{time_limit * 1000:g} ms and return finite numbers on every step.",
        "Reply with the whole function in one ```python code block.",
    ])


def first_request(instruction: str) -> str:
    return (f"Write a reward function that helps an agent learn this task: {instruction}\n"
            "Reply with the whole function in one ```python code block.")


def fix_request(report: Report | dict[str, Any], transitions: int) -> str:
    problems = report.problems if isinstance(report, Report) else report.get("problems", [])
    lines = "\n".join(f"- {p}" for p in problems)
    return (f"Your reward function did not pass the checks on {transitions} recorded transitions:\n{lines}\n"
            "Fix these problems and reply with the whole corrected function in one ```python code block.")


def check_summary(check: dict[str, Any]) -> str:
    """One paragraph on a check that passed: how often the parts fired on the recorded play."""
    stats = check.get("stats") or {}
    text = (f"The checks passed on {stats.get('transitions', 0)} recorded transitions (random play and, where "
            f"available, scripted play): the sparse part fired on {stats.get('sparse_fired_rate', 0):.1%} of them "
            f"({stats.get('sparse_positive', 0)} times +1, {stats.get('sparse_negative', 0)} times -1), the dense "
            f"part on {stats.get('dense_fired_rate', 0):.1%}.")
    notes = check.get("notes") or []
    return text + ("\n" + "\n".join(f"Note: {n}" for n in notes) if notes else "")


def revision_request(previous: Version, history: Sequence[Version]) -> str:
    """The message that asks for version k + 1: version k's code, its checks, the analysis of its
    training, and one line for each earlier version."""
    parts = [f"Version {previous.k} of your reward function:", "```python", previous.source.rstrip(), "```"]
    if previous.ok and previous.result is not None:
        parts += [check_summary(previous.check), "", f"Trajectory analysis after training with version {previous.k}:",
                  analyse(previous.result)]
        ask = ("Revise the reward function so that the agent succeeds more often: reward the progress the analysis "
               "shows is missing, and take away reward that comes without progress.")
    else:
        problems = "\n".join(f"- {p}" for p in previous.check.get("problems", []))
        parts += [f"It did not pass the checks after {previous.attempts} attempts; the last problems were:", problems]
        ask = "Write a reward function that passes the checks."
    if len(history) > 1:
        parts += ["", "All versions so far:", *(headline_line(v) for v in history)]
    parts += ["", ask + " Reply with the whole revised function in one ```python code block."]
    return "\n".join(parts)


def headline_line(version: Version) -> str:
    """`v2: success_rate 0.1, mean_env_return 0.1, ...`: the key figures of a version (all its
    top-level numbers when the result has none of KEY_FIGURES)."""
    if not version.ok:
        return f"v{version.k}: did not pass the checks"
    numbers = headline(version.result)
    figures = {k: numbers[k] for k in KEY_FIGURES if k in numbers} or numbers
    return f"v{version.k}: " + (", ".join(f"{k} {v:.3g}" for k, v in figures.items()) or "trained")


def headline(result: dict[str, Any] | None) -> dict[str, int | float]:
    """The top-level numbers of a result (success rate, mean return, ...)."""
    return {k: v for k, v in (result or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fit(agent: LMAgent, messages: list[Message]) -> list[Message]:
    """`messages` cut to the agent's prompt budget: the longest message loses its middle, visibly,
    until the chat fits (a small local model's context is shorter than the env's documentation)."""
    messages = [dict(m) for m in messages]
    budget = agent.context_budget()
    for _ in range(12):
        total = agent.count_tokens(messages)
        if total <= budget:
            break
        longest = max(range(len(messages)), key=lambda i: len(messages[i]["content"]))
        text = messages[longest]["content"]
        messages[longest]["content"] = shorten(text, int(len(text) * max(budget / total, 0.1) * 0.9))
    return messages


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


def summarise_episodes(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
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
    with `agent` and summarise them (`summarise_episodes`). With the random agent this is the
    default training step; after a PPO run, pass the trained policy's spec to evaluate it."""
    env = CodeReward(gym.make(env_id, **(env_kwargs or {})), source, time_limit=time_limit)
    try:
        player = make_agent(agent, env)
        stats = [episode_stats(rollout(env, player, seed=EVAL_SEED + seed + i, options=reset_options,
                                       record_images=False)) for i in range(episodes)]
    finally:
        env.close()
    return {"agent": agent, **summarise_episodes(stats)}


def default_train(env_id: str, *, episodes: int = 20, seed: int = 0, env_kwargs: dict[str, Any] | None = None,
                  reset_options: dict[str, Any] | None = None, agent: str = "random") -> Train:
    """The `train` callable used when none is given: evaluate the reward with `agent` (random play)."""

    def train(source: str, version_dir: Path) -> dict[str, Any]:
        return evaluate_code_reward(source, env_id, agent=agent, episodes=episodes, seed=seed, env_kwargs=env_kwargs,
                                    reset_options=reset_options)

    return train


def analyse(result: dict[str, Any]) -> str:
    """What happened in training, in plain lines for the model. Reads the keys of
    `summarise_episodes` where present and lists any other top-level numbers a trainer reported."""
    lines, used = [], set()

    def get(key: str) -> Any:
        used.add(key)
        return result.get(key)

    n = get("episodes_played")
    if get("success_rate") is not None:
        extra = [f"mean env score {result['mean_score']:.2f}" if get("mean_score") is not None else "",
                 f"mean turns {result['mean_turns']:.1f}" if get("mean_turns") is not None else ""]
        extra_text = ", ".join(e for e in extra if e)
        lines.append(f"Success rate: {result['success_rate']:.1%}" + (f" over {n} episodes" if n else "")
                     + (f" ({extra_text})." if extra_text else "."))
    if get("mean_return") is not None:
        env_part = f" (env reward {result['mean_env_return']:.3f})" if get("mean_env_return") is not None else ""
        per_turn = get("mean_code_reward_per_turn")
        lines.append(f"Mean shaped return per episode: {result['mean_return']:.3f}{env_part}"
                     + (f"; code reward per turn {per_turn:.4f}." if per_turn is not None else "."))
    if get("sparse_fired_rate") is not None:
        lines.append(f"The sparse part fired on {result['sparse_fired_rate']:.1%} of turns "
                     f"(mean per episode {result.get('mean_sparse_per_episode', 0.0):+.2f}); the dense part was "
                     f"non-zero on {result.get('dense_fired_rate', 0.0):.1%} of turns (mean per episode "
                     f"{result.get('mean_dense_per_episode', 0.0):+.3f}).")
        used.update({"mean_sparse_per_episode", "dense_fired_rate", "mean_dense_per_episode"})
    episodes = get("episodes") or []
    if get("error_turns"):
        first = next((e["first_error"] for e in episodes if e.get("first_error")), None)
        lines.append(f"reward() failed on {result['error_turns']} turns (they got 0)" + (f", e.g. {first}" if first
                                                                                           else "") + ".")
    parts = get("score_parts_mean") or {}
    if parts:
        reached = sorted(((v, k) for k, v in parts.items() if v > 0), reverse=True)
        never = [k for k, v in parts.items() if v == 0 and k != "died"]
        if reached:
            lines.append("Score parts (mean over episodes; for 0/1 parts the share of episodes that reached them): "
                         + ", ".join(f"{k} {v:.2f}" for v, k in reached) + ".")
        if never:
            lines.append("Never reached: " + ", ".join(never[:15]) + (f" and {len(never) - 15} more" if len(never) > 15
                                                                      else "") + ".")
    failed = next((e for e in episodes if not e.get("success")), None)
    if failed is not None:
        lines.append("Example failure: " + describe_episode(failed))
    others = {k: v for k, v in headline(result).items() if k not in used}
    if others:
        lines.append("Other results: " + ", ".join(f"{k} {v:.4g}" for k, v in others.items()) + ".")
    return "\n".join(lines) or "No results were reported."


def describe_episode(e: dict[str, Any]) -> str:
    how = "ended" if e.get("ended") == "terminated" else "ran out of turns"
    parts = e.get("score_parts") or {}
    reached = [k for k, v in parts.items() if v and k not in ("progress", "died")]
    text = (f"episode seed {e.get('seed')}, task {e.get('task_id')}, {how} after {e.get('turns')} turns with score "
            f"{e.get('score', 0):.2f}")
    if "progress" in parts:
        text += f", progress {parts['progress']:.2f}"
    if parts.get("died"):
        text += ", the agent died"
    text += f"; reached: {', '.join(reached) or 'nothing'}; code reward sparse {e.get('sparse', 0):+.2f} over " \
            f"{e.get('sparse_fired', 0)} turns, dense {e.get('dense', 0):+.3f}."
    last = e.get("last_turns") or []
    if last:
        text += " Last turns: " + "; ".join(
            f"{t['action'] or '(empty)'}{'' if t['valid'] else ' (invalid)'} -> sparse {t['sparse']:+.0f}, "
            f"dense {t['dense']:+.3f}" for t in last) + "."
    return text


# --- the run ----------------------------------------------------------------------------------

def make_design_env(env_id: str, task: str | None, env_kwargs: dict[str, Any] | None = None
                    ) -> tuple[gym.Env, dict[str, Any], dict[str, Any] | None]:
    """The env, the gym.make kwargs that made it and the reset options: `task` is the `task` kwarg
    of families configured by one (Craft), else the task id every reset asks for."""
    if env_id not in turngym.list_envs():
        raise ValueError(f"unknown env {env_id!r}: run `turngym list` to see the ids")
    kwargs = dict(env_kwargs or {})
    env = gym.make(env_id, **kwargs)
    if task is None:
        return env, kwargs, None
    if "task" in inspect.signature(type(env.unwrapped).__init__).parameters:
        env.close()
        kwargs["task"] = task
        return gym.make(env_id, **kwargs), kwargs, None
    return env, kwargs, {"task_id": task}


def _write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=2, default=str).encode("utf-8"))


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
               console: Console | None = None) -> list[Version]:
    """Run `iterations` versions of designer -> checker -> train -> analysis (module docstring).

    `agent_spec` names a language-model agent (`hf:PATH`, `openai:MODEL@URL`) with `agent_options`
    (max_new_tokens defaults to REPLY_TOKENS). `train(source, version_dir)` returns a JSON-ready dict
    (default: `evaluate_code_reward` with random play over `episodes` episodes); `analyse` reads
    the keys of `summarise_episodes` where present. The checker's transitions come from
    `record_episodes` episodes of each of RECORDERS the family has. Versions already complete in
    `out` are kept and the run goes on after them; all versions are returned. `console` shows
    progress and one status line per version.
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
        with _Status(console, iterations, len(versions)) as status:
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
        env.close()
    return versions


def _recorders(env: gym.Env) -> list[str]:
    names = available_agents(env)
    return [name for name in RECORDERS if name in names]


def _design_version(k: int, lm: LMAgent, system: str, request: str, transitions: list[Transition], train: Train,
                    folder: Path, seed: int, max_fixes: int, time_limit: float, status: _Status) -> Version:
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


class _Status:
    """A rich progress bar over the versions plus one printed line per version; silent without a console."""

    def __init__(self, console: Console | None, total: int, completed: int) -> None:
        self.console, self.total, self.completed = console, total, completed
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> _Status:
        if self.console is not None:
            self.progress = progress_bar(console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("reward design", total=self.total, completed=self.completed)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, description: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=description)

    def done(self, line: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)
            self.progress.console.print(line, markup=False, highlight=False)


def design_command(env_id: str, task: str | None, agent: str, *, iterations: int = 3,
                   out: str | Path = "runs/reward-design", episodes: int = 20, seed: int = 0,
                   env_kwargs: dict[str, Any] | None = None, agent_options: dict[str, Any] | None = None,
                   console: Console | None = None, train: Train | None = None) -> Path:
    """What `turngym reward-design` runs: `run_design` with a progress bar, then a table of the
    versions; returns the path of summary.json."""
    console = console or Console()
    versions = run_design(env_id, task, agent, iterations=iterations, out=out, env_kwargs=env_kwargs, seed=seed,
                          episodes=episodes, agent_options=agent_options, console=console, train=train)
    table = Table(title=f"reward design: {env_id} {task or ''}")
    for column in ("version", "checks", "attempts", "success", "mean return", "code reward / turn"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for v in versions:
        r = v.result or {}
        table.add_row(f"v{v.k}", "ok" if v.ok else "failed", str(v.attempts),
                      *(f"{r[key]:.3g}" if isinstance(r.get(key), (int, float)) else "-"
                        for key in ("success_rate", "mean_return", "mean_code_reward_per_turn")))
    console.print(table)
    path = Path(out) / "summary.json"
    console.print(f"every version, its checks, chat and result are in {Path(out)}; the summary is {path}")
    return path
