"""Advantage estimators: from a batch of trajectories, grouped by task, to one advantage per turn.

Every estimator is a function `(rollouts: Rollouts, **options) -> Advantages`, registered by name
(`ESTIMATORS`, `estimate(name, rollouts)`), so trainers and the CLI pick one with `--algo NAME`.

A batch holds G rollouts of each task (same task id and seed: a *group*). R_i is trajectory i's
return (the sum of its turn rewards; for turngym's sparse envs the outcome). Estimators that need
a learned critic read `rollouts.values` (V(s_t) for every turn, plus V after the last turn, 0 when
the episode terminated); the PRM estimator reads `rollouts.prm` (M(s_t, a_t) for every turn); SPA
and OPRL read `rollouts.step_rewards` (a model's reward for every turn, fitted on the same batch:
trainers/credit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from turngym.trajectory import Trajectory

EPS = 1e-6


@dataclass
class Rollouts:
    """A batch of trajectories and what the estimators may need besides them.

    `groups[i]` is trajectory i's group id (same task and seed). `values[i]` has len(traj_i) + 1
    entries: V(s_0..s_{T-1}) and the bootstrap V(s_T) (0 if the episode terminated). `prm[i]` has
    len(traj_i) entries: M(s_t, a_t). `step_rewards[i]` has len(traj_i) entries: a learned reward
    of each turn (SPA's contributions c_t, OPRL's implicit step rewards)."""

    trajectories: Sequence[Trajectory]
    groups: Sequence[int]
    values: Sequence[np.ndarray] | None = None
    prm: Sequence[np.ndarray] | None = None
    step_rewards: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if len(self.groups) != len(self.trajectories):
            raise ValueError(f"got {len(self.groups)} group ids for {len(self.trajectories)} trajectories")

    @property
    def returns(self) -> np.ndarray:
        """R_i: each trajectory's summed reward."""
        return np.array([t.total_reward for t in self.trajectories], dtype=np.float64)

    def rewards(self, i: int) -> np.ndarray:
        return np.array([turn.reward for turn in self.trajectories[i].turns], dtype=np.float64)


@dataclass
class Advantages:
    """One advantage per turn of each trajectory; critic targets where the estimator has a critic;
    figures worth logging (explained variance, the branch EVPO took, ...)."""

    advantages: list[np.ndarray]
    returns: list[np.ndarray] | None = None
    stats: dict[str, float] = field(default_factory=dict)


Estimator = Callable[..., Advantages]
ESTIMATORS: dict[str, Estimator] = {}
NEEDS: dict[str, frozenset[str]] = {}  # what each estimator reads besides the trajectories


def register_estimator(name: str, needs: Sequence[str] = ()) -> Callable[[Estimator], Estimator]:
    def decorate(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        NEEDS[name] = frozenset(needs)
        return fn
    return decorate


def estimate(name: str, rollouts: Rollouts, **options: Any) -> Advantages:
    """Advantages from the estimator called `name`."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}: use one of {', '.join(sorted(ESTIMATORS))}")
    for need in NEEDS[name]:
        if getattr(rollouts, need) is None:
            raise ValueError(f"estimator {name!r} needs rollouts.{need}")
    return ESTIMATORS[name](rollouts, **options)


# ---- helpers --------------------------------------------------------------------------------
def group_members(groups: Sequence[int]) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return members


def broadcast(rollouts: Rollouts, per_trajectory: np.ndarray) -> list[np.ndarray]:
    """One value per trajectory, repeated on each of its turns."""
    return [np.full(len(t.turns), float(a)) for t, a in zip(rollouts.trajectories, per_trajectory, strict=True)]


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k}."""
    return lambda_sum(rewards, gamma)


def lambda_sum(deltas: np.ndarray, decay: float) -> np.ndarray:
    """A_t = sum_l decay^l delta_{t+l}."""
    out, running = np.zeros(len(deltas)), 0.0
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + decay * running
        out[t] = running
    return out


def state_key(turn: Any) -> str:
    """What identifies the state a turn acted in (GiGPO's anchor): `extras["state"]` when the
    collector recorded a compact key (symbolic envs), else the observation text."""
    return str(turn.extras.get("state", turn.text))


# ---- group baselines ------------------------------------------------------------------------
@register_estimator("grpo")
def grpo(rollouts: Rollouts, *, eps: float = EPS) -> Advantages:
    """GRPO (Shao et al. 2024): A_i = (R_i - mean_g R) / (std_g R + eps) on every turn of
    trajectory i, over its group g (std with ddof=0)."""
    R, A = rollouts.returns, np.zeros(len(rollouts.trajectories))
    for members in group_members(rollouts.groups).values():
        r = R[members]
        A[members] = (r - r.mean()) / (r.std() + eps)
    return Advantages(broadcast(rollouts, A))


@register_estimator("drgrpo")
def drgrpo(rollouts: Rollouts) -> Advantages:
    """Dr. GRPO (Liu et al. 2025): A_i = R_i - mean_g R; no division by the group's std, which
    over-weights groups whose returns barely differ."""
    R, A = rollouts.returns, np.zeros(len(rollouts.trajectories))
    for members in group_members(rollouts.groups).values():
        A[members] = R[members] - R[members].mean()
    return Advantages(broadcast(rollouts, A))


@register_estimator("rloo")
def rloo(rollouts: Rollouts) -> Advantages:
    """RLOO (Ahmadian et al. 2024): A_i = R_i - mean_{j != i} R_j over the group; a group of one
    has no baseline (A = R)."""
    R, A = rollouts.returns, np.zeros(len(rollouts.trajectories))
    for members in group_members(rollouts.groups).values():
        r, n = R[members], len(members)
        A[members] = r - (r.sum() - r) / (n - 1) if n > 1 else r
    return Advantages(broadcast(rollouts, A))


@register_estimator("rtg")
def rtg(rollouts: Rollouts, *, gamma: float = 1.0, eps: float = EPS) -> Advantages:
    """REINFORCE with reward-to-go (Williams 1992) and a group baseline:
    A_t = (G_t - mean G) / (std G + eps), G_t = sum_k gamma^k r_{t+k} the discounted return from
    turn t, the mean and std over every turn of the group's rollouts. With a dense reward (a code
    reward, a shaped one) a turn is judged by what followed it rather than by its whole episode,
    and no critic adds its errors; with the outcome alone and gamma 1 every G_t is the episode's
    return, and this is GRPO with turns, not episodes, weighted equally."""
    trajs = rollouts.trajectories
    G = [discounted_returns(rollouts.rewards(i), gamma) for i in range(len(trajs))]
    A = [np.zeros(len(t.turns)) for t in trajs]
    for members in group_members(rollouts.groups).values():
        pooled = np.concatenate([G[i] for i in members])
        if pooled.size == 0:
            continue
        mean, std = pooled.mean(), pooled.std()
        for i in members:
            A[i] = (G[i] - mean) / (std + eps)
    return Advantages(A)


# ---- critic-based ---------------------------------------------------------------------------
@register_estimator("gae", needs=("values",))
def gae(rollouts: Rollouts, *, gamma: float = 0.99, lam: float = 0.95) -> Advantages:
    """GAE (Schulman et al. 2016) over turns: delta_t = r_t + gamma V(s_{t+1}) - V(s_t),
    A_t = sum_l (gamma lambda)^l delta_{t+l}; critic targets A_t + V(s_t) (the lambda-returns).
    `values[i][T]` bootstraps a truncated episode (0 after termination)."""
    return gae_over([rollouts.rewards(i) for i in range(len(rollouts.trajectories))], rollouts.values,
                    gamma=gamma, lam=lam)


def gae_over(rewards: Sequence[np.ndarray], values: Sequence[np.ndarray], *, gamma: float,
             lam: float) -> Advantages:
    """GAE's advantages and lambda-returns of per-turn `rewards` (the env's or a model's) under
    the critic's `values` (len(rewards[i]) + 1 entries each)."""
    advantages, returns = [], []
    for r_i, v_i in zip(rewards, values, strict=True):
        v, r = np.asarray(v_i, np.float64), np.asarray(r_i, np.float64)
        delta = r + gamma * v[1:] - v[:-1]
        a = lambda_sum(delta, gamma * lam)
        advantages.append(a)
        returns.append(a + v[:-1])
    return Advantages(advantages, returns)


def explained_variance(targets: np.ndarray, predictions: np.ndarray) -> float:
    """EV = 1 - Var(G - V) / Var(G); -inf-free: a batch whose targets do not vary gives 0."""
    var = float(np.var(targets))
    return 0.0 if var < EPS else 1.0 - float(np.var(targets - predictions)) / var


@register_estimator("evpo", needs=("values",))
def evpo(rollouts: Rollouts, *, gamma: float = 0.99, lam: float = 0.95, per_group: bool = False) -> Advantages:
    """EVPO: trust the critic only when it explains the returns.

    EV = 1 - Var(B - V) / Var(B) over every turn of the batch (or of each group with
    `per_group`), V the critic and B_t = G_t + gamma^(T-t) V(s_T) the discounted return-to-go
    G_t bootstrapped where the episode was truncated (`values[i][T]`, 0 after termination): the
    quantity V estimates, so a critic that is right about what follows a truncation is not judged
    wrong for it. EV > 0: GAE advantages; otherwise the critic-free batch-mean baseline
    A_t = G_t - mean(G) over the same turns. The critic's targets are GAE's lambda-returns in both
    branches, so it keeps learning while it is ignored. Logged: `ev` and `branch_gae` (the
    fraction of turns that took the GAE branch)."""
    with_critic = gae(rollouts, gamma=gamma, lam=lam)
    G = [discounted_returns(rollouts.rewards(i), gamma) for i in range(len(rollouts.trajectories))]
    V = [np.asarray(v, np.float64)[:-1] for v in rollouts.values]
    B = [g + gamma ** np.arange(len(g), 0, -1) * float(v[-1]) for g, v in zip(G, rollouts.values, strict=True)]
    scopes = list(group_members(rollouts.groups).values()) if per_group else [list(range(len(G)))]
    advantages: list[np.ndarray] = [np.zeros(0)] * len(G)
    evs, gae_turns, turns = [], 0, 0
    for members in scopes:
        g = np.concatenate([G[i] for i in members]) if members else np.zeros(0)
        b = np.concatenate([B[i] for i in members]) if members else np.zeros(0)
        ev = explained_variance(b, np.concatenate([V[i] for i in members])) if g.size else 0.0
        evs.append(ev)
        for i in members:
            advantages[i] = with_critic.advantages[i] if ev > 0 else G[i] - (g.mean() if g.size else 0.0)
        turns += g.size
        gae_turns += g.size if ev > 0 else 0
    stats = {"ev": float(np.mean(evs)) if evs else 0.0, "branch_gae": gae_turns / turns if turns else 0.0}
    return Advantages(advantages, with_critic.returns, stats)


# ---- similarity baselines -------------------------------------------------------------------
def turn_texts(trajectory: Trajectory, text: str) -> list[str]:
    """What SPO embeds per turn: the agent's action (`text="actions"`, default: rollouts of one
    group share their task, so the actions are what tells them apart) or observation + action."""
    if text == "actions":
        return [turn.action for turn in trajectory.turns]
    if text == "full":
        return [f"{turn.text}\n{turn.action}" for turn in trajectory.turns]
    raise ValueError(f"unknown SPO text {text!r}: use 'actions' or 'full'")


def prefix_embeddings(trajectory: Trajectory, embedder: str, text: str, prefixes: bool) -> np.ndarray:
    """(T, d) embeddings of each turn's prefix (turns 0..t), or (1, d) for the whole trajectory."""
    from turngym.rewards.embed import get_embedder, hashing

    parts = turn_texts(trajectory, text) or [""]
    if embedder == "hashing":  # additive: prefix embeddings are running sums of the turns'
        vectors = np.cumsum(hashing(parts), axis=0)
        return vectors if prefixes else vectors[-1:]
    joined = [" ".join(parts[:t + 1]) for t in range(len(parts))] if prefixes else [" ".join(parts)]
    return get_embedder(embedder)(joined)


def similarity_baseline(R: np.ndarray, sims: np.ndarray, others: np.ndarray) -> float:
    """sum_j w_j R_j with w_j = max(0, cos_j) / sum_k max(0, cos_k) over `others`; the plain mean
    of the others' returns when every weight is 0."""
    w = np.maximum(sims[others], 0.0)
    if w.sum() <= 0:
        return float(R[others].mean())
    return float((w * R[others]).sum() / w.sum())


@register_estimator("spo")
def spo(rollouts: Rollouts, *, embedder: str = "hashing", include_self: bool = False, per_turn: bool = False,
        text: str = "actions") -> Advantages:
    """SPO, Similarity-based Policy Optimization (MM-Doc-R1, 2025): each trajectory's baseline
    weighs the other rollouts of its group by how similar they are.

    A_i = R_i - sum_{j != i} w_ij R_j,  w_ij = max(0, cos(e_i, e_j)) / sum_{k != i} max(0, cos(e_i, e_k)),
    e the embedding of the trajectory's text; all weights 0 falls back to the leave-one-out mean.
    `include_self`: j and k also range over i (cos = 1). `per_turn`: the baseline of turn t uses
    e_i^t and e_j^t, the embeddings of the prefixes up to turn t (a shorter trajectory's whole
    text), so turns after two trajectories diverge get their own baseline. A group of one has
    no baseline (A = R; with `include_self` its baseline is itself, A = 0)."""
    from turngym.rewards.embed import cosine

    trajs, R = rollouts.trajectories, rollouts.returns
    advantages = [np.zeros(len(t.turns)) for t in trajs]
    for members in group_members(rollouts.groups).values():
        emb = {i: prefix_embeddings(trajs[i], embedder, text, per_turn) for i in members}
        for i in members:
            others = np.array([j for j in members if include_self or j != i])
            if others.size == 0:
                advantages[i][:] = R[i]
                continue
            steps = len(trajs[i].turns) if per_turn else 1
            for t in range(steps):
                anchors = np.stack([emb[j][min(t, len(emb[j]) - 1)] for j in members])
                sims = np.zeros(len(R))  # filled for the group's members only
                sims[members] = cosine(emb[i][min(t, len(emb[i]) - 1)][None], anchors)[0]
                base = similarity_baseline(R, sims, others)
                if per_turn:
                    advantages[i][t] = R[i] - base
                else:
                    advantages[i][:] = R[i] - base
    return Advantages(advantages)


# ---- step-level groups ----------------------------------------------------------------------
@register_estimator("gigpo")
def gigpo(rollouts: Rollouts, *, weight: float = 1.0, gamma: float = 0.95, eps: float = EPS,
          normalize: bool = True) -> Advantages:
    """GiGPO (Feng et al. 2025): A_t = A^E(i) + w A^S(t).

    Episode level: A^E(i) = (R_i - mean_g R) / (std_g R + eps), as GRPO. Step level: within a
    group, turns that acted in the same state (the *anchor*: `state_key`) form a step group; each
    turn's discounted return-to-go G_t = sum_k gamma^k r_{t+k} is compared with its step group's:
    A^S(t) = (G_t - mean G) / (std G + eps) (without the std when `normalize=False`); a state
    seen once gives A^S = 0."""
    episode = grpo(rollouts, eps=eps).advantages
    trajs = rollouts.trajectories
    G = [discounted_returns(rollouts.rewards(i), gamma) for i in range(len(trajs))]
    step = [np.zeros(len(t.turns)) for t in trajs]
    for members in group_members(rollouts.groups).values():
        anchors: dict[str, list[tuple[int, int]]] = {}
        for i in members:
            for t, turn in enumerate(trajs[i].turns):
                anchors.setdefault(state_key(turn), []).append((i, t))
        for places in anchors.values():
            if len(places) < 2:
                continue
            g = np.array([G[i][t] for i, t in places])
            scaled = (g - g.mean()) / (g.std() + eps) if normalize else g - g.mean()
            for (i, t), a in zip(places, scaled, strict=True):
                step[i][t] = a
    return Advantages([e + weight * s for e, s in zip(episode, step, strict=True)])


# ---- process reward model -------------------------------------------------------------------
def prm_targets(rewards: np.ndarray, scores: np.ndarray, start: float, *, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """AgentPRM's TD(lambda) turn advantages and PRM targets for one trajectory.

    Turns t = 1..T, M_t = M(s_t, a_t) the PRM's score of turn t's action, r_t its reward, and
    M_0 = `start`, the value before the first action (trainers pass gamma times the group's mean
    M_1: a group's rollouts share their start state). M_t estimates Q(s_t, a_t) = r_t + gamma V(s_{t+1}),
    so M_{t-1} - r_{t-1} = gamma V(s_t), and the advantage of turn t's action, gamma (Q - V) at s_t, is
    the progress it made by the PRM's account (r_0 = 0; the last action's Q is its outcome r_T):
        delta_t = r_{t-1} + gamma M_t - M_{t-1}  (t < T),   delta_T = r_{T-1} + gamma r_T - M_{T-1},
        A_t = sum_k (gamma lambda)^k delta_{t+k}.
    (r_t itself is already inside M_t: adding it again would pay a dense reward twice and charge the
    next turn for it.)
    The target of M_t is the lambda-return of the scores that follow it,
        Qhat_t = r_t + gamma ((1 - lambda) M_{t+1} + lambda Qhat_{t+1}),   Qhat_T = r_T (the outcome),
    which is the issue's Qhat_t = A_t + M_{t-1} with the TD errors taken one action later
    (Qhat_t = M_t + sum_k (gamma lambda)^k (r_{t+k} + gamma M_{t+k+1} - M_{t+k}), M_{T+1} = 0):
    M_t must be compared with what came *after* it, not bootstrap from itself. Returns (A, Qhat)."""
    r, m = np.asarray(rewards, np.float64), np.asarray(scores, np.float64)
    prev = np.concatenate([[start], m[:-1]])
    earlier = np.concatenate([[0.0], r[:-1]])  # r_{t-1}
    after = np.concatenate([m[1:], [0.0]])  # M_{t+1}; nothing follows the last action
    q = np.concatenate([m[:-1], r[-1:]])  # M_t, the outcome for the last action
    advantages = lambda_sum(earlier + gamma * q - prev, gamma * lam)
    targets = lambda_sum(r + gamma * after - m, gamma * lam) + m
    return advantages, targets


def mc_targets(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """The Monte-Carlo variant's PRM targets: Qhat_t = G_t, the discounted return from turn t."""
    return discounted_returns(np.asarray(rewards, np.float64), gamma)


@register_estimator("prm", needs=("prm",))
def prm(rollouts: Rollouts, *, gamma: float = 1.0, lam: float = 0.95) -> Advantages:
    """Turn advantages from a trained process reward model (AgentPRM, Choudhury 2025): the
    TD(lambda) advantages of `prm_targets`, with `rollouts.prm[i]` the PRM's scores M_t. The
    targets Qhat come back as `returns` (what the PRM is fit to next)."""
    starts = {g: gamma * float(np.mean([rollouts.prm[i][0] for i in members if len(rollouts.prm[i])] or [0.0]))
              for g, members in group_members(rollouts.groups).items()}
    advantages, targets = [], []
    for i, g in enumerate(rollouts.groups):
        a, q = prm_targets(rollouts.rewards(i), rollouts.prm[i], starts[g], gamma=gamma, lam=lam)
        advantages.append(a)
        targets.append(q)
    return Advantages(advantages, targets)


# ---- learned step rewards (trainers/credit.py fits the models) ------------------------------
def grounded(trajectory: Trajectory) -> np.ndarray:
    """SPA's grounding indicator per turn (1.0 or 0.0): the action was valid (`turn.info["valid"]`,
    from the step's info; assumed where not recorded) and had an effect, i.e. the next turn acted in
    another state (`state_key`); the last action ended the episode, which counts as an effect."""
    turns = trajectory.turns
    keys = [state_key(turn) for turn in turns]
    return np.array([bool(turn.info.get("valid", True)) and (t == len(turns) - 1 or keys[t + 1] != keys[t])
                     for t, turn in enumerate(turns)], dtype=np.float64)


@register_estimator("spa", needs=("step_rewards", "values"))
def spa(rollouts: Rollouts, *, gamma: float = 0.99, lam: float = 0.95, grounding: float = 0.0) -> Advantages:
    """SPA-RL, stepwise progress attribution (Wang et al. 2025): the outcome redistributed over the
    turns by a progress estimator, then PPO's GAE on the redistributed rewards, as SPA-RL trains.

    `rollouts.step_rewards[i]` holds the estimator's contributions c_t, fitted so that an episode's
    add up to its outcome, L = (R - sum_t c_t)^2 (trainers/credit.py). Each turn's reward is
        r_t = c_t + g_t,   g_t = `grounding` if the action was valid and had an effect (`grounded`), else 0,
    and A_t = sum_l (gamma lambda)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t), the
    critic's targets being the lambda-returns of r (`gae_over`). The paper's bonus is 0.5, for LLMs
    that often name actions the env cannot execute; turngym's small policies choose among the env's
    own candidates, so the bonus would be nearly the same on every turn: a reward for long episodes,
    which teaches a task that ends at success not to end. It is 0 unless asked for."""
    rewards = [np.asarray(c, np.float64) + grounding * grounded(t)
               for c, t in zip(rollouts.step_rewards, rollouts.trajectories, strict=True)]
    return gae_over(rewards, rollouts.values, gamma=gamma, lam=lam)


@register_estimator("oprl", needs=("step_rewards",))
def oprl(rollouts: Rollouts, *, weight: float = 1.0, eps: float = EPS) -> Advantages:
    """OPRL, online process reward learning (iStar, Liu et al. 2025): A_t = A^E(i) + w A^S(t).

    `rollouts.step_rewards[i]` holds the implicit PRM's step rewards
    r_t = beta log(pi_phi(a_t|s_t) / pi_old(a_t|s_t)), pi_phi fitted on the same batch with a
    trajectory-level DPO objective (trainers/credit.py). Episode level: A^E(i) = (R_i - mean_g R) /
    (std_g R + eps), as GRPO. Step level: A^S(t) = (r_t - mean_g r) / (std_g r + eps) over every
    turn of every rollout of trajectory i's group g (std with ddof=0), so both terms have one
    scale. Since sum_t r_t = beta log(pi_phi(tau) / pi_old(tau)), the episode's DPO reward, the
    step rewards act as potential-based shaping of it (the paper's argument)."""
    episode = grpo(rollouts, eps=eps).advantages
    step = [np.zeros(len(t.turns)) for t in rollouts.trajectories]
    for members in group_members(rollouts.groups).values():
        r = np.concatenate([np.asarray(rollouts.step_rewards[i], np.float64) for i in members])
        for i in members:
            step[i] = (np.asarray(rollouts.step_rewards[i], np.float64) - r.mean()) / (r.std() + eps)
    return Advantages([e + weight * s for e, s in zip(episode, step, strict=True)])
