"""A process reward model M(s, a) at inference time: scoring, best-of-n selection and beam search.

The PRM trained by `turngym.trainers.prm.PRMTrainer` (`turngym train --algo prm` writes it to
`OUT/prm.pt`) is a copy of the policy network whose action outputs are read as scores:

    symbolic Craft network (SymbolicPolicy):  M(s, a) = logits(s)[id(a)], id over load_rules().actions,
                                              with no admissibility mask;
    text network (NeuralPolicy):              M(s, a) = logits(s, candidates)[k] for a = candidates[k].

M estimates the return to come after taking a in s, so V(s) = max_a M(s, a) over the env's
candidate actions A(s) is the PRM's value of a state (0 where A(s) is empty).

The same reading serves the credit models that `turngym train` fits beside a policy
(trainers/credit.py): SPA's progress estimator (`--algo spa`, OUT/spa.pt) loads as a
ProcessRewardModel whose M(s, a) is the contribution c(s, a); OPRL's implicit PRM (`--algo oprl`,
OUT/oprl.pt) is a policy, read by `ImplicitPRM` against OUT/oprl_reference.pt, the policy it was last fitted against.

Search with a PRM never looks at outcomes: `best_of_n` samples n episodes and keeps the one
whose PRM scores are best; `beam_search` expands the actions M ranks highest, step by step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from turngym.agents.neural import NeuralPolicy, load_saved, proposer
from turngym.agents.symbolic import KIND, OBS_KEYS, SymbolicPolicy
from turngym.envs.craft.rules import load_rules
from turngym.rollout import _takes_seed, rollout
from turngym.trajectory import Trajectory, Turn, jsonable

REDUCE = ("last", "min", "mean")


class ProcessRewardModel:
    """M(s, a) for one env, from a SymbolicPolicy (Craft, `symbolic=True`) or a NeuralPolicy."""

    def __init__(self, network: torch.nn.Module, env: gym.Env, meta: dict[str, Any] | None = None) -> None:
        self.network = network.eval()
        self.symbolic = isinstance(network, SymbolicPolicy)
        self.meta = dict(meta or {})
        self.propose = proposer(env)
        if self.symbolic:
            spaces = getattr(env.observation_space, "spaces", {})
            if not all(k in spaces for k in OBS_KEYS):
                raise ValueError("this PRM reads Craft's symbolic observation: make the env with symbolic=True "
                                 "(gym.make('turngym/Craft-v0', symbolic=True, ...))")
            if getattr(env.unwrapped, "action_mode", "primitive") != "primitive":
                raise ValueError("this PRM scores Craft's primitive actions: make the env with "
                                 "action_mode='primitive'")
            if network.config.landmarks:
                raise ValueError("this PRM remembers landmarks, which a score of one turn cannot know: use one "
                                 "trained without --net landmarks=... for shaping single envs")
            self.index = {a: i for i, a in enumerate(load_rules().actions)}
        elif not isinstance(network, NeuralPolicy):
            raise TypeError(f"a PRM network is a SymbolicPolicy or a NeuralPolicy, not {type(network).__name__}")

    @classmethod
    def load(cls, path: str | Path, env: gym.Env) -> ProcessRewardModel:
        """The PRM saved at `path` (by `PRMTrainer.save` or either policy's `save`) for `env`."""
        saved = load_saved(path)
        if saved.get("kind") == KIND:
            network: torch.nn.Module = SymbolicPolicy.from_saved(saved)
        else:
            network = NeuralPolicy.from_saved(saved)
        return cls(network, env, saved.get("meta", {}))

    @torch.no_grad()
    def scores(self, obs: dict[str, Any], info: dict[str, Any], actions: list[str]) -> np.ndarray:
        """M(s, a) for each action string (float64, one per action; empty for no actions)."""
        actions = list(actions)
        if not actions:
            return np.zeros(0)
        if self.symbolic:
            ids = []
            for action in actions:
                name = " ".join(str(action).lower().split())
                if name not in self.index:
                    raise ValueError(f"the symbolic PRM cannot score {action!r}: it knows Craft's primitive "
                                     f"actions {', '.join(self.index)}")
                ids.append(self.index[name])
            batch = {k: torch.as_tensor(np.asarray(obs[k]))[None] for k in OBS_KEYS}
            logits, _ = self.network(batch)
            return logits[0, ids].double().numpy()
        logits, _ = self.network(self.network.encode([obs], [actions]))
        return logits[0, :len(actions)].double().numpy()

    def log_prob(self, obs: dict[str, Any], info: dict[str, Any], action: str) -> float:
        """log pi(a|s) of the network read as a policy: the log-softmax of M over the candidates A(s)."""
        candidates = self.candidates(obs, info)
        if action not in candidates:
            raise ValueError(f"{action!r} is not among this state's candidate actions, so it has no log-prob")
        scores = self.scores(obs, info, candidates)
        top = scores.max()
        return float(scores[candidates.index(action)] - top - np.log(np.exp(scores - top).sum()))

    def candidates(self, obs: dict[str, Any], info: dict[str, Any]) -> list[str]:
        """A(s): the env's candidate actions (`proposer(env)`; Craft: info["actions"])."""
        return list(self.propose(obs, info))

    def value(self, obs: dict[str, Any], info: dict[str, Any]) -> float:
        """V(s) = max_{a in A(s)} M(s, a), and 0 where A(s) is empty."""
        scores = self.scores(obs, info, self.candidates(obs, info))
        return float(scores.max()) if len(scores) else 0.0


class ImplicitPRM:
    """OPRL's implicit PRM at inference: the step reward r(s, a) = beta (log pi_phi(a|s) -
    log pi_ref(a|s)) of the policy `phi` fitted by trajectory-level DPO against `ref`, the policy
    it was fitted against (trainers/credit.py)."""

    def __init__(self, phi: ProcessRewardModel, ref: ProcessRewardModel, beta: float) -> None:
        self.phi, self.ref, self.beta = phi, ref, float(beta)

    @classmethod
    def load(cls, path: str | Path, reference: str | Path, env: gym.Env) -> ImplicitPRM:
        """The implicit PRM saved at `path` (OUT/oprl.pt, its beta in the meta) against the policy
        saved at `reference` (OUT/oprl_reference.pt of the same run: the policy it was last fitted
        against; the run's policy.pt is one update newer, and its ratios are not the rewards)."""
        phi = ProcessRewardModel.load(path, env)
        if "oprl_beta" not in phi.meta:
            raise ValueError(f"{path} is not an implicit PRM: train one with `turngym train --algo oprl`")
        return cls(phi, ProcessRewardModel.load(reference, env), phi.meta["oprl_beta"])

    def reward(self, obs: dict[str, Any], info: dict[str, Any], action: str) -> float:
        return self.beta * (self.phi.log_prob(obs, info, action) - self.ref.log_prob(obs, info, action))


def reduce_scores(scores: list[float] | np.ndarray, reduce: str = "last") -> float:
    """One number for a trajectory's per-turn scores: the last one, the minimum or the mean
    (-inf for no turns)."""
    if reduce not in REDUCE:
        raise ValueError(f"unknown reduce {reduce!r}: use one of {', '.join(REDUCE)}")
    scores = np.asarray(scores, dtype=float)
    if not len(scores):
        return float("-inf")
    return float({"last": scores[-1], "min": scores.min(), "mean": scores.mean()}[reduce])


class _Scored:
    """Wraps an agent so that `rollout` records M(s_t, a_t) in each turn's extras["prm"]."""

    def __init__(self, agent: Any, prm: ProcessRewardModel) -> None:
        self.agent, self.prm = agent, prm
        self.last_record: dict[str, Any] = {}

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        if _takes_seed(type(self.agent)):
            self.agent.reset(obs, info, seed=seed)
        else:
            self.agent.reset(obs, info)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        action = self.agent.act(obs, info)
        record = dict(getattr(self.agent, "last_record", None) or {})
        score = float(self.prm.scores(obs, info, [action])[0])
        self.last_record = {**record, "extras": {**record.get("extras", {}), "prm": score}}
        return action


def best_of_n(env: gym.Env, agent: Any, prm: ProcessRewardModel, n: int, *, seed: int,
              reduce: str = "last") -> tuple[Trajectory, list[Trajectory]]:
    """Play n episodes of one task and keep the one the PRM rates best (never the outcome).

    Episode k plays `env.reset(seed=seed)` (the same task) with the agent reset with seed
    `seed * 1000 + k`, so a sampling agent plays differently each time. Each turn records
    M(s_t, a_t) in `turn.extras["prm"]`; an episode's rating is `reduce` of those scores:
    "last" = M(s_{T-1}, a_{T-1}), "min" = min_t M(s_t, a_t), "mean" = mean_t M(s_t, a_t).
    Ties go to the earliest episode. Returns (chosen, all n); each has meta["prm_score"].
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    reduce_scores([], reduce)  # check `reduce` before playing
    scored = _Scored(agent, prm)
    trajectories = []
    for k in range(n):
        traj = rollout(env, scored, seed=seed, agent_seed=seed * 1000 + k)
        traj.meta.update(prm_score=reduce_scores([t.extras["prm"] for t in traj.turns], reduce),
                         prm_reduce=reduce, sample=k)
        trajectories.append(traj)
    chosen = max(range(n), key=lambda k: (trajectories[k].meta["prm_score"], -k))
    return trajectories[chosen], trajectories


@dataclass
class _Node:
    env: gym.Env
    obs: dict[str, Any]
    info: dict[str, Any]
    turns: list[Turn] = field(default_factory=list)
    score: float = float("-inf")  # M of the last action taken
    terminated: bool = False
    truncated: bool = False


def beam_search(env: gym.Env, prm: ProcessRewardModel, *, beam: int = 4, expand: int = 4, seed: int,
                max_turns: int | None = None, record_images: bool = True) -> Trajectory:
    """Step-level beam search guided by M(s, a).

    From `reset(seed=seed)` (played on a copy: `env` itself is left as it was), at each depth
    every running beam scores its candidate actions A(s) with M and executes its `expand` best,
    each on its own `copy.deepcopy` of the env. Children whose episode ended are kept aside; of
    the others the `beam` with the highest M(s, a) go on. The search stops when no beam is
    running or after `max_turns` turns, and returns the finished trajectory with the best last
    score M(s_{T-1}, a_{T-1}) (a running one if none finished); ties go to the one ranked first.
    Each turn's M(s_t, a_t) is in `turn.extras["prm"]`; meta holds beam, expand, prm_score and
    `nodes` (the number of env steps taken).

    The env must survive `copy.deepcopy` (Craft, HopVQA and the text WebShop do, the latter
    sharing its read-only catalog with its copies; the browser WebShop does not). Each copy carries its
    parent's random stream, so the search is deterministic: the same seed, the same trajectory.
    `prm` may be any object with `candidates(obs, info)` and `scores(obs, info, actions)`.
    """
    if beam < 1 or expand < 1:
        raise ValueError(f"beam and expand must be at least 1; got beam={beam}, expand={expand}")
    try:
        root_env = copy.deepcopy(env)
    except Exception as exc:
        raise TypeError(f"beam_search copies the env at every step, and this env cannot be copied: {exc}") from exc
    obs, reset_info = root_env.reset(seed=seed)
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    running, finished, nodes, depth = [_Node(root_env, obs, reset_info)], [], 0, 0
    while running and (max_turns is None or depth < max_turns):
        children: list[_Node] = []
        for node in running:
            candidates = prm.candidates(node.obs, node.info)
            if not candidates:  # nothing to do: the episode cannot go on
                finished.append(node)
                continue
            scores = prm.scores(node.obs, node.info, candidates)
            for k in np.argsort(-scores, kind="stable")[:expand]:
                child_env = copy.deepcopy(node.env)
                action = candidates[int(k)]
                obs, reward, terminated, truncated, info = child_env.step(action)
                nodes += 1
                turn = Turn(text=node.obs["text"], action=action, reward=float(reward), info=jsonable(info),
                            image=node.obs.get("image") if record_images else None,
                            extras={"prm": float(scores[k])})
                children.append(_Node(child_env, obs, info, [*node.turns, turn], float(scores[k]),
                                      bool(terminated), bool(truncated)))
        order = sorted(range(len(children)), key=lambda i: -children[i].score)  # stable: ties keep order
        finished += [children[i] for i in order if children[i].terminated or children[i].truncated]
        running = [children[i] for i in order if not (children[i].terminated or children[i].truncated)][:beam]
        depth += 1
    pool = finished or running
    best = max(range(len(pool)), key=lambda i: (pool[i].score, -i))
    node = pool[best]
    traj = Trajectory(env_id=env_id, task_id=str(reset_info["task_id"]), seed=seed,
                      instruction=str(reset_info.get("instruction", "")), turns=node.turns,
                      reset_info=jsonable(reset_info))
    traj.success = bool(node.info.get("success", False))
    traj.score = float(node.info.get("score", 0.0))
    traj.score_parts = jsonable(node.info.get("score_parts", {}))
    traj.terminated, traj.truncated = node.terminated, node.truncated
    traj.final_text = node.obs["text"]
    traj.final_image = node.obs.get("image") if record_images else None
    traj.meta.update(search="beam", beam=beam, expand=expand, nodes=nodes, prm_score=node.score)
    return traj
