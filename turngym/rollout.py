"""Play one episode of an env with an agent and record it as a Trajectory."""

from __future__ import annotations

import inspect
import traceback
from functools import cache
from typing import Any, Protocol

import gymnasium as gym

from turngym.trajectory import Trajectory, Turn, jsonable


class Actor(Protocol):
    """What `rollout` needs of an agent (turngym.agents.Agent provides it)."""

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str: ...


def rollout(env: gym.Env, agent: Actor, *, seed: int | None = None, options: dict[str, Any] | None = None,
            record_images: bool = True, agent_seed: int | None = None, catch: bool = False) -> Trajectory:
    """Run `agent` on `env` for one episode from `reset(seed=seed, options=options)`.

    The agent is reset with `agent_seed` (default: `seed`), so that G rollouts of one task can share
    the env seed and still sample differently (group-relative estimators need such groups).

    Each Turn holds the observation the agent acted on, its action, the reward and info that came
    back, and what the agent recorded about the turn (`Agent.last_record`: token ids, log-probs,
    extras); the trajectory keeps the observation after the last action too (`final_text`, and
    `final_image` with images). Set `record_images=False` to keep long runs light.

    With `catch=True` an exception raised by the env or the agent ends the episode instead of
    propagating: the turns so far are kept, the outcome is a failure with score 0, and
    `meta["error"]` holds the exception's type, message and traceback (the harness's crash
    isolation).
    """
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    traj = Trajectory(env_id=env_id, task_id="", seed=seed)
    try:
        _play(env, agent, traj, seed, options, record_images, agent_seed)
    except Exception as exc:
        if not catch:
            raise
        traj.success, traj.score, traj.terminated, traj.truncated = False, 0.0, False, False
        # "turn": how many turns were complete, i.e. the 0-based index of the turn that failed
        traj.meta["error"] = {"type": type(exc).__name__, "message": str(exc), "turn": len(traj.turns),
                              "traceback": traceback.format_exc()}
    return traj


def _play(env: gym.Env, agent: Actor, traj: Trajectory, seed: int | None, options: dict[str, Any] | None,
          record_images: bool, agent_seed: int | None) -> None:
    obs, info = env.reset(seed=seed, options=options)
    traj.task_id, traj.instruction, traj.reset_info = \
        str(info["task_id"]), str(info.get("instruction", "")), jsonable(info)
    if _takes_seed(type(agent)):
        agent.reset(obs, info, seed=seed if agent_seed is None else agent_seed)
    else:  # an agent written to the plain DESIGN.md signature reset(obs, info)
        agent.reset(obs, info)
    done = False
    while not done:
        action = agent.act(obs, info)
        record = getattr(agent, "last_record", None) or {}
        next_obs, reward, terminated, truncated, next_info = env.step(action)
        traj.turns.append(Turn(text=obs["text"], action=action, reward=float(reward), info=jsonable(next_info),
                               image=obs.get("image") if record_images else None,
                               prompt_ids=record.get("prompt_ids"), completion_ids=record.get("completion_ids"),
                               logprobs=record.get("logprobs"), extras=jsonable(dict(record.get("extras", {})))))
        obs, info = next_obs, next_info
        done = terminated or truncated
    traj.success = bool(info.get("success", False))
    traj.score = float(info.get("score", 0.0))
    traj.score_parts = jsonable(info.get("score_parts", {}))
    traj.terminated, traj.truncated = bool(terminated), bool(truncated)
    traj.final_text = obs["text"]
    traj.final_image = obs.get("image") if record_images else None


@cache
def _takes_seed(agent_type: type) -> bool:
    params = inspect.signature(agent_type.reset).parameters
    return "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
