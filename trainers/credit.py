"""Credit models fitted beside the policy on every update's batch: SPA-RL's progress estimator and
OPRL's implicit process reward model (and the base that AgentPRM's PRM, trainers/prm.py, shares).

Each turns the batch's sparse outcomes into one learned number per turn, which an estimator of
`turngym.rewards.estimators` reads (`Rollouts.step_rewards` for spa and oprl). Each is a network of
the policy's own architecture (agents/symbolic.py's on Craft's vector backend, agents/neural.py's
text network elsewhere), read through the actor (trainers/collect.py) exactly as the policy is, so
the same code serves every env family. trainers/ppo.py fits the model of its `algo` after each
collection, checkpoints it with the policy and saves it next to policy.pt as OUT/<algo>.pt.

SPA (`SPATrainer`, Wang et al. 2025). The progress estimator reads a fresh network's output for the
action taken as that turn's contribution, c_t = C(s_t, a_t) (the reading AgentPRM's PRM uses for
M(s, a): a contribution belongs to the action, as SPA-RL's estimator reads each action's last
token), and is fitted so that an episode's contributions add up to its outcome:
    L_SPA = mean_i (R_i - sum_t c_t^i)^2,
in minibatches of whole episodes. Sum_{k<=t} c_k is the estimator's progress after turn t. Its
output layer starts at zero (c = 0 everywhere, no contribution claimed without evidence): over a
Craft episode of 200 turns, a random start's small per-turn outputs add up to sums far from any
outcome, and the fit spends its first updates undoing them.

OPRL (`OPRLTrainer`, iStar, Liu et al. 2025). The implicit PRM pi_phi is a policy over the same
candidates (the log-softmax of its outputs), starting from the policy's initial weights so that
pi_phi = pi_old at first (DPO's usual start), and fitted against pi_old, the policy that played the
batch (the log-probs recorded at collection), with a trajectory-level DPO objective:
    s_i = sum_t [log pi_phi(a_t|s_t) - log pi_old(a_t|s_t)],
    L_DPO = -mean_{(w, l)} log sigmoid(beta (s_w - s_l))
over every pair of episodes (w, l) of one group with R_w > R_l, in minibatches of whole groups.
Its step reward is r_t = beta (log pi_phi(a_t|s_t) - log pi_old(a_t|s_t)), so sum_t r_t = beta s_i.
beta is larger here (1, `oprl_beta`) than DPO's usual 0.1 for language models: the loss saturates
once beta (s_w - s_l) is a few nats, and over Craft's episodes of up to 200 turns a small beta lets
pi_phi become far sharper than the policy; the step rewards then pull the policy after it until
its entropy, and its success, collapse (seen on wood_pickaxe within 60k steps at beta 0.1).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from turngym.agents.symbolic import SymbolicPolicy
from turngym.rewards.estimators import group_members
from turngym.rewards.preferences import dpo_terms, mine_pairs

REFERENCE = "oprl_reference.pt"  # beside oprl.pt: the policy the implicit PRM was last fitted against


def fresh_copy(policy: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The policy's architecture with new weights (a model read as scores must not start as the
    policy's logits)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return type(policy)(policy.config)


def silent_copy(policy: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`fresh_copy` whose action outputs start at 0 everywhere: the layers that make them
    (SymbolicPolicy's policy head; NeuralPolicy's scorer and the overlap term added to it) zeroed."""
    net = fresh_copy(policy, seed)
    heads = [net.policy_head] if isinstance(net, SymbolicPolicy) else [net.scorer[-1], net.overlap_score]
    for head in filter(None, heads):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return net


def per_turn_outputs(col: Any, output: Callable[[np.ndarray], torch.Tensor], chunk: int = 8192) -> list[np.ndarray]:
    """`output(rows)` for every flat turn of `col` (in chunks, without gradients), per trajectory."""
    flat, n = np.zeros(len(col.index)), len(col.index)
    with torch.no_grad():
        for start in range(0, n, chunk):
            rows = np.arange(start, min(start + chunk, n))
            flat[rows] = output(rows).double().numpy()
    return [flat[idx] for idx in col.turns]


def cut(order: Sequence[int], sizes: Sequence[int], limit: int) -> list[list[int]]:
    """`order`'s units, in that order, cut into runs whose `sizes` add up to at most `limit` turns
    (a unit larger than `limit` alone): minibatches of whole episodes or groups."""
    runs: list[list[int]] = []
    total = limit + 1
    for unit in order:
        if total + sizes[unit] > limit:
            runs.append([])
            total = 0
        runs[-1].append(unit)
        total += sizes[unit]
    return runs


def episode_sums(values: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Per episode, the sum of its turns' `values` (the episodes' turns one after another, `sizes`
    turns each)."""
    owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.as_tensor(list(sizes), dtype=torch.long))
    return torch.zeros(len(sizes), dtype=values.dtype).index_add(0, owner, values)


def spa_loss(contributions: torch.Tensor, sizes: Sequence[int], returns: torch.Tensor) -> torch.Tensor:
    """L_SPA = mean_i (R_i - sum_t c_t^i)^2."""
    return ((returns - episode_sums(contributions, sizes)) ** 2).mean()


def preference_pairs(returns: Sequence[float], groups: Sequence[int]) -> list[tuple[int, int]]:
    """Every (preferred, dispreferred) pair (w, l) of one group's episodes with R_w > R_l; equal
    returns make no pair (`turngym.rewards.preferences.mine_pairs`)."""
    return [(p.chosen, p.rejected) for p in mine_pairs(returns, groups)]


def dpo_loss(log_ratios: torch.Tensor, pairs: Sequence[tuple[int, int]], beta: float) -> torch.Tensor:
    """L_DPO = -mean_{(w, l)} log sigmoid(beta (s_w - s_l)), s the episodes' sequence log-ratios
    (log pi_phi - log pi_old: the reference's part is already in them)."""
    w, lo = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2).T
    return dpo_terms(log_ratios[w], log_ratios[lo], 0.0, 0.0, beta)["loss"]


def preference_accuracy(scores: np.ndarray, pairs: Sequence[tuple[int, int]], tie: float = 1e-4) -> float:
    """The share of pairs whose preferred episode scores higher, a tie counting half (so an
    untrained implicit PRM, whose log-ratios are all 0, scores 0.5, as does a batch without pairs).
    Differences below `tie` are ties: the same weights give log-probs that differ in their low bits
    from one batch shape to another (collection's and the fit's)."""
    if not pairs:
        return 0.5
    w, lo = np.asarray(pairs).T
    margin = scores[w] - scores[lo]
    return float(np.mean((margin > tie) + 0.5 * (np.abs(margin) <= tie)))


class CreditModel(ABC):
    """A network fitted on each update's batch beside the policy, whose per-turn outputs fill the
    `Rollouts` field `field` for the estimator `name`; checkpointed and saved as OUT/<name>.pt."""

    name: ClassVar[str] = ""  # the algo it serves, its checkpoint key and file name
    field: ClassVar[str] = ""  # the Rollouts field of its per-turn outputs

    def __init__(self, net: torch.nn.Module, lr: float, max_grad_norm: float) -> None:
        self.net = net.eval()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, fused=True)
        self.max_grad_norm = max_grad_norm

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save(self, path: Any, **meta: Any) -> None:
        self.net.save(path, **{self.name: True}, **meta)

    def step(self, loss: torch.Tensor) -> None:
        """One clipped gradient step on `loss`."""
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
        self.optimizer.step()

    @abstractmethod
    def fit(self, actor: Any, col: Any, generator: torch.Generator) -> dict[str, float]:
        """Fit on the batch; figures for the metrics row."""

    @abstractmethod
    def per_turn(self, actor: Any, col: Any) -> list[np.ndarray]:
        """The model's number for every turn, per trajectory (what its estimator reads)."""

    def figures(self, col: Any, values: list[np.ndarray]) -> dict[str, float]:
        """How well `values` (its per-turn outputs on the batch) fit the batch, for the metrics row."""
        return {}

    def before(self, actor: Any, col: Any) -> dict[str, float]:
        """`figures` before fitting, suffixed `_before`: how the model fitted on earlier batches
        does on this new one."""
        return {f"{k}_before": v for k, v in self.figures(col, self.per_turn(actor, col)).items()}


def returns_of(trajectories: Sequence[Any]) -> np.ndarray:
    return np.array([t.total_reward for t in trajectories], dtype=np.float64)


def preference_figures(returns: np.ndarray, groups: Sequence[int], values: list[np.ndarray]) -> dict[str, float]:
    """OPRL's fit on a batch: its pairs, and the DPO loss and preference accuracy of the episodes'
    summed step rewards (`values` per episode, so each sums to beta s_i)."""
    pairs = preference_pairs(returns, groups)
    rewards = np.array([v.sum() for v in values])
    loss = float(dpo_loss(torch.as_tensor(rewards), pairs, 1.0)) if pairs else 0.0
    return {"oprl_pairs": len(pairs), "oprl_acc": preference_accuracy(rewards, pairs), "oprl_loss": loss}


class SPATrainer(CreditModel):
    """SPA-RL's progress estimator C(s, a), fitted by L_SPA (module docstring); logs the batch's
    mean squared decomposition error before (`spa_mse_before`) and after (`spa_mse`) each fit."""

    name, field = "spa", "step_rewards"

    def __init__(self, policy: torch.nn.Module, config: Any) -> None:
        super().__init__(silent_copy(policy, config.seed + 2), config.credit_lr, config.max_grad_norm)
        self.config = config

    def contributions(self, actor: Any, col: Any, rows: np.ndarray) -> torch.Tensor:
        """c_t of the turns `rows` (0 for a turn without candidates, which chose nothing)."""
        c = actor.scores(self.net, col.inputs, rows, col.index[rows])
        return torch.where(col.index[rows] >= 0, c, torch.zeros((), dtype=c.dtype))

    def per_turn(self, actor: Any, col: Any) -> list[np.ndarray]:
        return per_turn_outputs(col, lambda rows: self.contributions(actor, col, rows))

    def figures(self, col: Any, values: list[np.ndarray]) -> dict[str, float]:
        totals = np.array([v.sum() for v in values])
        return {"spa_mse": float(np.mean((returns_of(col.trajectories) - totals) ** 2)) if len(totals) else 0.0}

    def fit(self, actor: Any, col: Any, generator: torch.Generator) -> dict[str, float]:
        """`credit_epochs` passes over the batch's episodes, shuffled, in minibatches of whole
        episodes of at most `credit_minibatch_size` turns."""
        stats = self.before(actor, col)
        returns = torch.as_tensor(returns_of(col.trajectories), dtype=torch.float32)
        sizes = [len(idx) for idx in col.turns]
        self.net.train()
        for _ in range(self.config.credit_epochs):
            order = torch.randperm(len(sizes), generator=generator).tolist()
            for episodes in cut(order, sizes, self.config.credit_minibatch_size):
                rows = np.concatenate([col.turns[i] for i in episodes]).astype(np.int64)
                c = self.contributions(actor, col, rows)
                self.step(spa_loss(c, [sizes[i] for i in episodes], returns[episodes]))
        self.net.eval()
        return stats


class OPRLTrainer(CreditModel):
    """OPRL's implicit PRM pi_phi, fitted by L_DPO against the policy that played the batch
    (module docstring); logs the DPO loss and preference accuracy on the batch's pairs before
    (`oprl_loss_before`, `oprl_acc_before`) and after each fit, and the number of pairs."""

    name, field = "oprl", "step_rewards"

    def __init__(self, policy: torch.nn.Module, config: Any) -> None:
        super().__init__(copy.deepcopy(policy), config.credit_lr, config.max_grad_norm)
        self.config = config
        self.beta = config.oprl_beta
        self.reference = copy.deepcopy(policy)  # the policy of the batch last fitted on: pi_old of its rewards

    def save(self, path: Any, **meta: Any) -> None:
        """OUT/oprl.pt with its beta, and OUT/oprl_reference.pt, the policy it was last fitted against
        (the run's policy.pt is one update newer): `turngym.rewards.prm.ImplicitPRM` reads the pair."""
        super().save(path, oprl_beta=self.beta, **meta)
        self.reference.save(Path(path).with_name(REFERENCE))

    def log_ratios(self, actor: Any, col: Any, rows: np.ndarray) -> torch.Tensor:
        """log pi_phi(a_t|s_t) - log pi_old(a_t|s_t) of the turns `rows` (0 for a turn without
        candidates)."""
        logp = actor.evaluate(col.inputs, rows, col.index[rows], self.net)[0]
        return logp - col.logprob[rows]

    def per_turn(self, actor: Any, col: Any) -> list[np.ndarray]:
        """The step rewards r_t = beta (log pi_phi(a_t|s_t) - log pi_old(a_t|s_t))."""
        return per_turn_outputs(col, lambda rows: self.beta * self.log_ratios(actor, col, rows))

    def figures(self, col: Any, values: list[np.ndarray]) -> dict[str, float]:
        return preference_figures(returns_of(col.trajectories), col.groups, values)

    def fit(self, actor: Any, col: Any, generator: torch.Generator) -> dict[str, float]:
        """`credit_epochs` passes over the groups that have pairs, shuffled, in minibatches of
        whole groups of at most `credit_minibatch_size` turns."""
        self.reference.load_state_dict(actor.policy.state_dict())  # the batch's policy, before its update
        stats = self.before(actor, col)
        members = group_members(col.groups)
        pairs = preference_pairs(returns_of(col.trajectories), col.groups)
        units = sorted({col.groups[w] for w, _ in pairs})  # the groups that have a pair
        sizes = {g: sum(len(col.turns[i]) for i in members[g]) for g in units}
        self.net.train()
        for _ in range(self.config.credit_epochs):
            order = torch.randperm(len(units), generator=generator).tolist()
            for run in cut(order, [sizes[g] for g in units], self.config.credit_minibatch_size):
                chosen = {units[k] for k in run}
                episodes = [i for g in sorted(chosen) for i in members[g]]
                rows = np.concatenate([col.turns[i] for i in episodes]).astype(np.int64)
                s = episode_sums(self.log_ratios(actor, col, rows), [len(col.turns[i]) for i in episodes])
                at = {i: k for k, i in enumerate(episodes)}
                own = [(at[w], at[lo]) for w, lo in pairs if col.groups[w] in chosen]
                self.step(dpo_loss(s, own, self.beta))
        self.net.eval()
        return stats
