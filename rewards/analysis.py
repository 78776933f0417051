"""Training-time trajectory statistics, after Auto MC-Reward's trajectory analyzer (Li et al. 2023).

The paper's analyzer reads the failed episodes of a training run and says why they failed: how
the agent died, which reward terms fired, where on the recipe path it stalled. `EpisodeAnalysis`
wraps the vector env a trainer collects on and counts, for the first episode each env plays after
every reset (the trainers' `collect_groups` plays exactly one per env):

- `deaths`, `death_<cause>`: read from the final `state_dict()`; a death on a lava tile is `lava`,
  else `hunger`, `thirst` or `hunger_and_thirst` by the empty vitals, else `other`;
- `term_<name>_fired` and `term_<name>_sum`: steps where a code-reward term (the third value a
  reward function returns, `turngym.rewards.code`) was not 0, and its total;
- `failures`, `stall_<achievement>`: per failed episode, the furthest achievement of the goal's
  recipe path it reached (`stall_none` before the first);
- `analysis_episodes`, `analysis_steps`: the episodes and steps counted;
- `analysis_code_errors`: steps where the reward code failed (raised, ran past its time limit or
  returned junk: `info["code_reward_error"]`), which then gave no code reward.

`pop()` returns the counts since the last pop (a trainer logs them with every update, as flat
keys of its metrics row) and `summarize(rows)` sums them over a run into `analysis.json`, with the
rates per episode, per step and per failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

PREFIXES = ("death_", "term_", "stall_", "analysis_")  # the metric keys this module writes, with COUNTS
COUNTS = ("deaths", "failures")


def death_cause(state: Mapping[str, Any]) -> str | None:
    """Why the episode of this final Craft-format state ended in death, or None when it did not."""
    if not state.get("dead"):
        return None
    y, x = state["player"]["pos"]
    if state["legend"].get(state["map"][y][x]) == "lava":
        return "lava"
    vitals = state.get("vitals", {})
    hungry, thirsty = vitals.get("food", 1) == 0, vitals.get("drink", 1) == 0
    if hungry or thirsty:
        return "hunger_and_thirst" if hungry and thirsty else "hunger" if hungry else "thirst"
    return "other"


def stall_point(state: Mapping[str, Any], path: Sequence[str] | None) -> str:
    """The furthest achievement of `path` (the goal's recipe path, in order) that `state` holds;
    without a path, the last achievement it holds. "none" when there is none."""
    done = state.get("achievements", [])
    reached = [a for a in path if a in done] if path is not None else list(done)
    return reached[-1] if reached else "none"


class EpisodeAnalysis(gym.vector.VectorWrapper):
    """Counts deaths by cause, reward-term firings and stall points on a vector env (see the
    module docstring). `state_of(i)` reads env i's state_dict(); `path` is the goal's recipe path
    (None: stall at the last achievement). Needs next-step autoreset, so that the final state is
    still there after the step that ends an episode. Attribute reads go to the wrapped env."""

    def __init__(self, env: gym.vector.VectorEnv, state_of: Callable[[int], Mapping[str, Any]],
                 path: Sequence[str] | None = None) -> None:
        super().__init__(env)
        self.state_of, self.path = state_of, list(path) if path is not None else None
        self.counts: Counter[str] = Counter()
        self._open = np.zeros(self.num_envs, bool)  # envs still in their first episode since reset

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None):
        out = self.env.reset(seed=seed, options=options)
        self._open[:] = True
        return out

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        live = self._open.copy()
        self.counts["analysis_steps"] += int(live.sum())
        code = info.get("code_reward")
        for name, values in (code.get("terms", {}) if isinstance(code, dict) else {}).items():
            if name.startswith("_"):  # SyncVectorEnv's masks of nested infos
                continue
            values = np.where(live, np.asarray(values, np.float64), 0.0)
            self.counts[f"term_{name}_fired"] += int((values != 0).sum())
            self.counts[f"term_{name}_sum"] += float(values.sum())
        errors = info.get("code_reward_error")
        if errors is not None:  # "" where a call went well; SyncVectorEnv masks envs without the key
            failed = np.array([bool(e) for e in errors]) & np.asarray(info.get("_code_reward_error", True), bool)
            self.counts["analysis_code_errors"] += int((failed & live).sum())
        ended = np.flatnonzero(live & np.asarray(terminated | truncated, bool))
        success = np.asarray(info.get("success", np.zeros(self.num_envs, bool)), bool)
        for i in ended.tolist():
            state = self.state_of(i)
            self.counts["analysis_episodes"] += 1
            cause = death_cause(state)
            if cause is not None:
                self.counts["deaths"] += 1
                self.counts[f"death_{cause}"] += 1
            if not success[i]:
                self.counts["failures"] += 1
                self.counts[f"stall_{stall_point(state, self.path)}"] += 1
        self._open[ended] = False
        return obs, reward, terminated, truncated, info

    def pop(self) -> dict[str, float]:
        """The counts since the last pop, as flat metric keys."""
        out, self.counts = dict(self.counts), Counter()
        return out


def is_analysis_key(key: str) -> bool:
    return key.startswith(PREFIXES) or key in COUNTS


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A run's analysis from its metrics rows (or `pop()` results): the counts summed, deaths per
    episode by cause, each term's firing rate per step and total, and the stall histogram of failed
    episodes (counts and shares)."""
    total: Counter[str] = Counter()
    updates = 0
    for row in rows:
        updates += 1
        total.update({k: v for k, v in row.items() if is_analysis_key(k)})
    episodes, steps = max(total["analysis_episodes"], 1), max(total["analysis_steps"], 1)
    failures = max(total["failures"], 1)
    causes = {k.removeprefix("death_"): v for k, v in total.items() if k.startswith("death_")}
    terms = sorted({k.removeprefix("term_").rsplit("_", 1)[0] for k in total if k.startswith("term_")})
    stalls = {k.removeprefix("stall_"): v for k, v in total.items() if k.startswith("stall_")}
    return {
        "updates": updates, "episodes": total["analysis_episodes"], "steps": total["analysis_steps"],
        "code_errors": total["analysis_code_errors"], "code_errors_per_step": total["analysis_code_errors"] / steps,
        "deaths": total["deaths"], "deaths_per_episode": total["deaths"] / episodes,
        "death_causes": {c: {"count": n, "per_episode": n / episodes} for c, n in sorted(causes.items())},
        "terms": {t: {"fired": total[f"term_{t}_fired"], "fired_per_step": total[f"term_{t}_fired"] / steps,
                      "sum": total[f"term_{t}_sum"], "per_episode": total[f"term_{t}_sum"] / episodes}
                  for t in terms},
        "failures": total["failures"],
        "stalls": {s: {"count": n, "share": n / failures} for s, n in sorted(stalls.items(), key=lambda kv: -kv[1])},
    }


def recipe_path(env: Any) -> list[str] | None:
    """The goal's recipe path of an env with Craft-style rules (`rules.prerequisites(task.goal)`:
    CraftEnv, CraftVectorEnv), else None."""
    prerequisites = getattr(getattr(env, "rules", None), "prerequisites", None)
    goal = getattr(getattr(env, "task", None), "goal", None)
    return prerequisites(goal) if callable(prerequisites) and isinstance(goal, str) else None
