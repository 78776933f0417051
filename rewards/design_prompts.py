"""What the reward-design loop (`turngym.rewards.design`) says to the language model and how it
reads the replies.

- The designer's system prompt (`system_prompt`): the env's id, one-line description and class
  docstring (its sections Description, Action Space, ... Version History), the task, the
  `state_dict()` format with one real example state, the signature
  `reward(prev_state, action, state, info)`, the clipping rules and the sandbox rules.
- The requests: the first one, one per failed check (`fix_request`), one per revision
  (`revision_request`, with the previous code, its check figures, `analyze` of its training
  result and one line per earlier version).
- The reply: `extract_code` finds the reward function in it.
- `fit` cuts a chat to the model's prompt budget.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

import turngym
from turngym.agents.lm import LMAgent, Message, shorten
from turngym.rewards.code import DEFAULT_TIME_LIMIT, PARAMS, Report, Transition

if TYPE_CHECKING:  # the loop's record of a version; design.py imports this module, not the other way round
    from turngym.rewards.design import Version

KEY_FIGURES = ("success_rate", "mean_env_return", "mean_return", "sparse_fired_rate", "dense_fired_rate")


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
                  analyze(previous.result)]
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


# --- the analysis -----------------------------------------------------------------------------

def analyze(result: dict[str, Any]) -> str:
    """What happened in training, in plain lines for the model. Reads the keys of
    `summarize_episodes` where present and lists any other top-level numbers a trainer reported."""
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
