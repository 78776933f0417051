"""Hand-computed checks of the advantage estimators (rewards/estimators.py) and SPO's embedders.

Every expectation below is written out as arithmetic from the formula in the estimator's
docstring; none is obtained by calling the function under test another way. The `hashing`
embedder maps each word and word bigram to one of 1024 crc32 buckets, so actions made of single
words whose buckets differ have orthogonal one-hot vectors: cosines between sums of them follow
from counting shared words (the tests assert that the buckets they rely on are distinct).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from turngym.rewards import embed
from turngym.rewards.embed import cosine, hashing
from turngym.rewards.estimators import (
    ESTIMATORS,
    Rollouts,
    discounted_returns,
    drgrpo,
    estimate,
    evpo,
    explained_variance,
    gae,
    gigpo,
    grpo,
    lambda_sum,
    mc_targets,
    prefix_embeddings,
    prm,
    prm_targets,
    rloo,
    rtg,
    similarity_baseline,
    spo,
)
from turngym.trajectory import Trajectory, Turn

S = 1 / math.sqrt(2)  # cos(e_a + e_b, e_a) for orthogonal unit e_a, e_b


def traj(rewards, actions=None, texts=None, states=None, task="task-0") -> Trajectory:
    n = len(rewards)
    actions = actions if actions is not None else [f"act{k}" for k in range(n)]
    texts = texts if texts is not None else ["obs"] * n
    turns = [Turn(text=texts[k], action=actions[k], reward=float(rewards[k]),
                  extras={"state": states[k]} if states is not None else {}) for k in range(n)]
    return Trajectory(env_id="test/Hand-v0", task_id=task, seed=0, turns=turns)


def check(actual, expected, tol=1e-5) -> None:
    """Per-turn advantages (list of arrays) against hand-written lists."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert len(a) == len(e)
        assert np.asarray(a, np.float64).tolist() == pytest.approx(e, rel=tol, abs=tol)


def pvar(xs) -> float:
    """Population variance, written out (ddof=0)."""
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / len(xs)


def bucket(word: str) -> int:
    return zlib.crc32(word.encode()) % 1024


def distinct(*grams: str) -> bool:
    return len({bucket(g) for g in grams}) == len(grams)


# ---- GRPO / Dr. GRPO / RLOO -----------------------------------------------------------------
def group_batch() -> Rollouts:
    """Group 0: returns 1 (two turns 0.25 + 0.75), 0, 0. Group 1: returns 0.5 and 0.5."""
    trajs = [traj([0.25, 0.75]), traj([0.0, 0.0, 0.0]), traj([0.0]),
             traj([0.5], task="task-1"), traj([0.25, 0.25], task="task-1")]
    return Rollouts(trajs, groups=[0, 0, 0, 1, 1])


def test_grpo_hand_computed():
    out = grpo(group_batch())
    mean0 = (1 + 0 + 0) / 3
    std0 = math.sqrt(((1 - mean0) ** 2 + (0 - mean0) ** 2 + (0 - mean0) ** 2) / 3)  # ddof=0
    a_win, a_lose = (1 - mean0) / std0, (0 - mean0) / std0
    assert a_win == pytest.approx(math.sqrt(2)) and a_lose == pytest.approx(-1 / math.sqrt(2))
    # broadcast on every turn; the group with identical returns gets 0 (no division by 0)
    check(out.advantages, [[a_win, a_win], [a_lose] * 3, [a_lose], [0.0], [0.0, 0.0]])


def test_grpo_eps_option():
    out = grpo(Rollouts([traj([1.0]), traj([0.0])], groups=[0, 0]), eps=0.5)
    check(out.advantages, [[(1 - 0.5) / (0.5 + 0.5)], [(0 - 0.5) / (0.5 + 0.5)]])


def test_drgrpo_hand_computed():
    out = drgrpo(group_batch())
    mean0 = 1 / 3
    check(out.advantages, [[1 - mean0] * 2, [0 - mean0] * 3, [0 - mean0], [0.5 - 0.5], [0.5 - 0.5] * 2])


def test_rloo_hand_computed_and_group_of_one():
    trajs = [traj([1.0]), traj([0.25, 0.25]), traj([0.0, 0.0]), traj([0.7], task="task-1")]
    out = rloo(Rollouts(trajs, groups=[0, 0, 0, 1]))
    check(out.advantages, [
        [1.0 - (0.5 + 0.0) / 2],
        [0.5 - (1.0 + 0.0) / 2] * 2,
        [0.0 - (1.0 + 0.5) / 2] * 2,
        [0.7],  # a group of one has no baseline: A = R
    ])


def test_rtg_hand_computed_with_a_dense_reward():
    """Group 0: rewards (0.2, 0, 1) and (0, 0.4); gamma 0.5: G = (0.2 + 0.25, 0.5, 1) and
    (0.2, 0.4); the baseline is the mean over the group's five turns, the scale their std.
    Group 1 (one turn) has G equal to its mean: 0, not a division by 0."""
    rollouts = Rollouts([traj([0.2, 0.0, 1.0]), traj([0.0, 0.4]), traj([0.3], task="task-1")], groups=[0, 0, 1])
    out = rtg(rollouts, gamma=0.5)
    g0, g1 = [0.2 + 0.5 * 0.0 + 0.25 * 1.0, 0.0 + 0.5 * 1.0, 1.0], [0.0 + 0.5 * 0.4, 0.4]
    pooled = g0 + g1
    mean, std = sum(pooled) / 5, math.sqrt(pvar(pooled))
    check(out.advantages, [[(g - mean) / std for g in g0], [(g - mean) / std for g in g1], [0.0]])
    assert out.returns is None  # no critic to fit


def test_rtg_on_outcome_rewards_with_gamma_one_ranks_episodes_as_grpo_does():
    """Outcome only, gamma 1: every turn carries its episode's return, so the signs follow GRPO's
    (the mean and std are over turns: the 3-turn loser weighs three times)."""
    rollouts = Rollouts([traj([0.0, 1.0]), traj([0.0, 0.0, 0.0])], groups=[0, 0])
    out = rtg(rollouts)
    pooled = [1.0, 1.0, 0.0, 0.0, 0.0]
    mean, std = 0.4, math.sqrt(pvar(pooled))
    check(out.advantages, [[(1 - mean) / std] * 2, [(0 - mean) / std] * 3])
    assert np.sign(grpo(rollouts).advantages[0][0]) == np.sign(out.advantages[0][0]) == 1


# ---- GAE ------------------------------------------------------------------------------------
def test_gae_terminated_and_truncated_episode():
    gamma, lam = 0.9, 0.8
    # terminated: rewards 0, 0, 1; V(s_0..s_2) = 0.5, 0.6, 0.8; V after the end = 0
    # truncated: rewards 0.5, 0; V(s_0), V(s_1) = 0.2, 0.4; bootstrap V(s_2) = 0.3
    rollouts = Rollouts([traj([0, 0, 1]), traj([0.5, 0])], groups=[0, 0],
                        values=[np.array([0.5, 0.6, 0.8, 0.0]), np.array([0.2, 0.4, 0.3])])
    out = gae(rollouts, gamma=gamma, lam=lam)
    d0, d1, d2 = 0 + 0.9 * 0.6 - 0.5, 0 + 0.9 * 0.8 - 0.6, 1 + 0.9 * 0.0 - 0.8  # 0.04, 0.12, 0.2
    a2 = d2
    a1 = d1 + 0.72 * a2  # gamma * lam = 0.72
    a0 = d0 + 0.72 * a1
    e0, e1 = 0.5 + 0.9 * 0.4 - 0.2, 0 + 0.9 * 0.3 - 0.4  # 0.66, -0.13 (the bootstrap counts)
    b1 = e1
    b0 = e0 + 0.72 * b1
    check(out.advantages, [[a0, a1, a2], [b0, b1]])
    assert [a0, a1, a2] == pytest.approx([0.23008, 0.264, 0.2])
    # critic targets: the lambda-returns A_t + V(s_t)
    check(out.returns, [[a0 + 0.5, a1 + 0.6, a2 + 0.8], [b0 + 0.2, b1 + 0.4]])


def test_gae_with_gamma_and_lambda_one_is_return_minus_value():
    out = gae(Rollouts([traj([0, 0.5, 1])], groups=[0], values=[np.array([0.1, 0.2, 0.3, 0.0])]), gamma=1, lam=1)
    check(out.advantages, [[1.5 - 0.1, 1.5 - 0.2, 1.0 - 0.3]])


# ---- EVPO -----------------------------------------------------------------------------------
def test_evpo_positive_ev_takes_gae_branch():
    gamma, lam = 0.9, 0.5
    rollouts = Rollouts([traj([0, 1]), traj([0]), traj([1], task="task-1")], groups=[0, 0, 1],
                        values=[np.array([0.8, 0.9, 0.0]), np.array([0.1, 0.0]), np.array([0.9, 0.0])])
    out = evpo(rollouts, gamma=gamma, lam=lam)
    G = [0.9 * 1.0, 1.0, 0.0, 1.0]  # returns-to-go of every turn of the batch
    V = [0.8, 0.9, 0.1, 0.9]
    ev = 1 - pvar([g - v for g, v in zip(G, V, strict=True)]) / pvar(G)
    assert ev == pytest.approx(1 - 0.0075 / 0.176875) and ev > 0
    assert out.stats["ev"] == pytest.approx(ev)
    assert out.stats["branch_gae"] == 1.0
    d0, d1 = 0 + 0.9 * 0.9 - 0.8, 1 + 0.9 * 0.0 - 0.9  # 0.01, 0.1
    gae0 = [d0 + 0.45 * d1, d1]  # gamma * lam = 0.45
    check(out.advantages, [gae0, [0 - 0.1], [1 - 0.9]])  # GAE, not G - V = [0.1, 0.1] nor G - mean G
    check(out.returns, [[gae0[0] + 0.8, gae0[1] + 0.9], [-0.1 + 0.1], [0.1 + 0.9]])


def test_evpo_negative_ev_takes_mean_baseline_and_critic_keeps_training():
    gamma, lam = 0.9, 0.5
    rollouts = Rollouts([traj([0, 1]), traj([0]), traj([0.5], task="task-1")], groups=[0, 0, 1],
                        values=[np.array([0.0, 0.1, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 0.0])])
    out = evpo(rollouts, gamma=gamma, lam=lam)
    G = [0.9 * 1.0, 1.0, 0.0, 0.5]
    V = [0.0, 0.1, 1.0, 0.0]
    ev = 1 - pvar([g - v for g, v in zip(G, V, strict=True)]) / pvar(G)
    assert ev == pytest.approx(1 - 0.611875 / 0.155) and ev < 0
    assert out.stats["ev"] == pytest.approx(ev)
    assert out.stats["branch_gae"] == 0.0
    mean_g = (0.9 + 1.0 + 0.0 + 0.5) / 4  # 0.6, over every turn of the batch
    check(out.advantages, [[0.9 - mean_g, 1.0 - mean_g], [0.0 - mean_g], [0.5 - mean_g]])
    # the critic's targets are still GAE's lambda-returns
    d0, d1 = 0 + 0.9 * 0.1 - 0.0, 1 + 0.9 * 0.0 - 0.1  # 0.09, 0.9
    check(out.returns, [[d0 + 0.45 * d1 + 0.0, d1 + 0.1], [(0 - 1.0) + 1.0], [0.5 + 0.0]])


def test_evpo_zero_ev_is_not_trusted():
    # V = 0 everywhere: Var(G - V) = Var(G), EV = 0 exactly, and "EV > 0" fails
    rollouts = Rollouts([traj([1]), traj([0])], groups=[0, 0], values=[np.zeros(2), np.zeros(2)])
    out = evpo(rollouts)
    assert out.stats["ev"] == 0.0 and out.stats["branch_gae"] == 0.0
    check(out.advantages, [[1 - 0.5], [0 - 0.5]])  # GAE would have given [1], [0]


def test_evpo_judges_the_critic_against_bootstrapped_returns_on_truncated_episodes():
    # [0, 0] was cut off with V(s_T) = 1: the critic that says 1 is right about the return it
    # estimates. Against the unbootstrapped G = [0, 0, 0] it would look worse than no critic
    # (EV = 1 - 0.25 / 0.1875 < 0) and be ignored.
    rollouts = Rollouts([traj([0, 0]), traj([1]), traj([0])], groups=[0, 0, 0],
                        values=[np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.0]), np.array([0.0, 0.0])])
    out = evpo(rollouts, gamma=1.0, lam=0.5)
    assert out.stats["ev"] == pytest.approx(1.0) and out.stats["branch_gae"] == 1.0
    check(out.advantages, gae(rollouts, gamma=1.0, lam=0.5).advantages)
    # terminated episodes (V(s_T) = 0) are judged as before, against their plain returns
    plain = evpo(Rollouts([traj([1]), traj([0])], groups=[0, 0], values=[np.array([0.9, 0.0]), np.array([0.1, 0.0])]))
    assert plain.stats["ev"] == pytest.approx(1 - pvar([0.1, -0.1]) / pvar([1, 0]))


def per_group_batch() -> Rollouts:
    """Group 0 (two 1-turn trajectories) has a good critic, group 1 a bad one."""
    return Rollouts([traj([1]), traj([0]), traj([0, 1], task="task-1"), traj([0], task="task-1")],
                    groups=[0, 0, 1, 1],
                    values=[np.array([0.9, 0.0]), np.array([0.1, 0.0]), np.array([0.0, 0.0, 0.0]),
                            np.array([1.0, 0.0])])


def test_evpo_per_group_chooses_a_branch_per_group():
    out = evpo(per_group_batch(), gamma=1.0, lam=0.5, per_group=True)
    ev0 = 1 - pvar([1 - 0.9, 0 - 0.1]) / pvar([1, 0])  # 1 - 0.01 / 0.25 = 0.96
    G1 = [1.0, 1.0, 0.0]  # gamma = 1: return-to-go of [0, 1] is [1, 1]
    ev1 = 1 - pvar([1 - 0.0, 1 - 0.0, 0 - 1.0]) / pvar(G1)  # 1 - (8/9) / (2/9) = -3
    assert ev0 == pytest.approx(0.96) and ev1 == pytest.approx(-3.0)
    mean1 = (1 + 1 + 0) / 3
    check(out.advantages, [[1 - 0.9], [0 - 0.1], [1 - mean1, 1 - mean1], [0 - mean1]])
    assert out.stats["ev"] == pytest.approx((ev0 + ev1) / 2)
    assert out.stats["branch_gae"] == pytest.approx(2 / 5)  # 2 of the batch's 5 turns took GAE


def test_evpo_batch_scope_on_the_same_batch():
    out = evpo(per_group_batch(), gamma=1.0, lam=0.5)
    G = [1.0, 0.0, 1.0, 1.0, 0.0]
    V = [0.9, 0.1, 0.0, 0.0, 1.0]
    ev = 1 - pvar([g - v for g, v in zip(G, V, strict=True)]) / pvar(G)  # 1 - 0.564 / 0.24 = -1.35
    assert ev == pytest.approx(-1.35)
    assert out.stats == pytest.approx({"ev": ev, "branch_gae": 0.0})
    m = 3 / 5
    check(out.advantages, [[1 - m], [0 - m], [1 - m, 1 - m], [0 - m]])


def test_explained_variance_edge_cases():
    assert explained_variance(np.array([0.5, 0.5, 0.5]), np.array([0.0, 1.0, 2.0])) == 0.0
    assert explained_variance(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 1.0
    assert explained_variance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1 - 1.0 / 0.25)


# ---- SPO ------------------------------------------------------------------------------------
def spo_batch() -> Rollouts:
    """Group 0: actions [a, b] R=1, [a, c] R=0, [d] R=0.2, [a] R=0.6. Group 1: [a, b] R=0, [x] R=1.
    Group 2: one trajectory, R=0.3."""
    trajs = [traj([0, 1], ["a", "b"]), traj([0, 0], ["a", "c"]), traj([0.2], ["d"]), traj([0.6], ["a"]),
             traj([0, 0], ["a", "b"], task="task-1"), traj([1], ["x"], task="task-1"),
             traj([0.3], ["y"], task="task-2")]
    return Rollouts(trajs, groups=[0, 0, 0, 0, 1, 1, 2])


def test_hashing_buckets_used_below_are_distinct():
    assert distinct("a", "b", "c", "d", "x", "y")
    assert hashing(["a"])[0].tolist() == np.eye(1024)[bucket("a")].tolist()


def test_spo_weights_hand_computed():
    out = spo(spo_batch())
    # e0 = e_a + e_b, e1 = e_a + e_c, e2 = e_d, e3 = e_a:
    # cos(0,1) = 1/2, cos(0,3) = cos(1,3) = 1/sqrt(2), every cosine with e2 is 0
    base0 = (0.5 * 0.0 + 0 * 0.2 + S * 0.6) / (0.5 + 0 + S)
    base1 = (0.5 * 1.0 + 0 * 0.2 + S * 0.6) / (0.5 + 0 + S)
    base2 = (1.0 + 0.0 + 0.6) / 3  # every weight is 0: leave-one-out mean
    base3 = (S * 1.0 + S * 0.0 + 0 * 0.2) / (S + S + 0)
    # group 1: cos(e_a + e_b, e_x) = 0 -> leave-one-out mean (the other's return); group 2: A = R
    check(out.advantages, [[1 - base0] * 2, [0 - base1] * 2, [0.2 - base2], [0.6 - base3],
                           [0.0 - 1.0] * 2, [1.0 - 0.0], [0.3]])
    assert 0.6 - base3 == pytest.approx(0.1)


def test_spo_include_self():
    out = spo(spo_batch(), include_self=True)
    base0 = (1 * 1.0 + 0.5 * 0.0 + 0 * 0.2 + S * 0.6) / (1 + 0.5 + 0 + S)
    base1 = (0.5 * 1.0 + 1 * 0.0 + 0 * 0.2 + S * 0.6) / (0.5 + 1 + 0 + S)
    base2 = (0 * 1.0 + 0 * 0.0 + 1 * 0.2 + 0 * 0.6) / 1  # only itself has weight: A = 0
    base3 = (S * 1.0 + S * 0.0 + 0 * 0.2 + 1 * 0.6) / (S + S + 0 + 1)
    base4 = (1 * 0.0 + 0 * 1.0) / 1
    base5 = (0 * 0.0 + 1 * 1.0) / 1
    base6 = 0.3  # a group of one with include_self: w_ii = 1, A = R - R
    check(out.advantages, [[1 - base0] * 2, [0 - base1] * 2, [0.2 - base2], [0.6 - base3],
                           [0.0 - base4] * 2, [1.0 - base5], [0.3 - base6]])


@pytest.fixture
def table_embedder(monkeypatch):
    """An embedder with chosen vectors, so that cosines can be negative (hashing's never are)."""
    table = {"p": [1.0, 0.0], "q": [0.6, 0.8], "r": [-1.0, 0.0], "s": [0.8, 0.6]}
    monkeypatch.setitem(embed.EMBEDDERS, "table", lambda texts: np.array([table[t] for t in texts]))
    return table


def test_spo_negative_cosines_are_clipped_to_zero(table_embedder):
    rollouts = Rollouts([traj([1.0], ["p"]), traj([0.0], ["q"]), traj([0.2], ["r"]), traj([0.5], ["s"])],
                        groups=[0, 0, 0, 0])
    out = spo(rollouts, embedder="table")
    # cos(p,q) = 0.6, cos(p,r) = -1, cos(p,s) = 0.8, cos(q,r) = -0.6, cos(q,s) = 0.96, cos(r,s) = -0.8
    base_p = (0.6 * 0.0 + 0 * 0.2 + 0.8 * 0.5) / (0.6 + 0 + 0.8)  # unclipped: (0 - 0.2 + 0.4) / 0.4
    base_q = (0.6 * 1.0 + 0 * 0.2 + 0.96 * 0.5) / (0.6 + 0 + 0.96)
    base_r = (1.0 + 0.0 + 0.5) / 3  # all three clipped to 0: leave-one-out mean
    base_s = (0.8 * 1.0 + 0.96 * 0.0 + 0 * 0.2) / (0.8 + 0.96 + 0)
    check(out.advantages, [[1.0 - base_p], [0.0 - base_q], [0.2 - base_r], [0.5 - base_s]])


def test_similarity_baseline_directly():
    R = np.array([1.0, 0.0, 0.5, 9.0])
    sims = np.array([0.3, -0.5, 0.1, 1.0])
    assert similarity_baseline(R, sims, np.array([0, 1, 2])) == pytest.approx((0.3 * 1.0 + 0.1 * 0.5) / (0.3 + 0.1))
    assert similarity_baseline(R, np.array([0.0, -0.5, 0.0, 1.0]), np.array([0, 1, 2])) == pytest.approx(1.5 / 3)


def test_spo_per_turn_shared_prefix_then_divergence():
    trajs = [traj([0, 1], ["a", "b"]), traj([0, 0], ["a", "c"]), traj([0.4], ["a"])]
    out = spo(Rollouts(trajs, groups=[0, 0, 0]), per_turn=True)
    # prefixes: traj0 e_a, e_a + e_b; traj1 e_a, e_a + e_c; traj2 e_a (its whole text afterwards)
    base00 = (1 * 0.0 + 1 * 0.4) / 2  # turn 0: all three share the prefix "a"
    base01 = (0.5 * 0.0 + S * 0.4) / (0.5 + S)  # turn 1: cos(a+b, a+c) = 1/2, cos(a+b, a) = 1/sqrt(2)
    base10 = (1 * 1.0 + 1 * 0.4) / 2
    base11 = (0.5 * 1.0 + S * 0.4) / (0.5 + S)
    base20 = (1 * 1.0 + 1 * 0.0) / 2
    check(out.advantages, [[1 - base00, 1 - base01], [0 - base10, 0 - base11], [0.4 - base20]])
    # the whole-trajectory baseline is turn 1's for both two-turn trajectories
    whole = spo(Rollouts(trajs, groups=[0, 0, 0]))
    check(whole.advantages, [[1 - base01] * 2, [0 - base11] * 2, [0.4 - (S * 1.0 + S * 0.0) / (2 * S)]])


def test_spo_full_text_embeds_observation_and_action():
    assert distinct("x", "y", "a", "b", "x a", "y a", "x b")
    trajs = [traj([1.0], ["a"], texts=["x"]), traj([0.0], ["a"], texts=["y"]), traj([0.5], ["b"], texts=["x"])]
    rollouts = Rollouts(trajs, groups=[0, 0, 0])
    # actions only: cos(a, a) = 1, cos(a, b) = 0
    check(spo(rollouts).advantages, [[1.0 - 0.0], [0.0 - 1.0], [0.5 - (1.0 + 0.0) / 2]])
    # "x\na" = {x, a, "x a"}, "y\na" = {y, a, "y a"}, "x\nb" = {x, b, "x b"}: each pair shares one of 3 grams
    third = 1 / 3
    check(spo(rollouts, text="full").advantages, [
        [1.0 - (third * 0.0 + third * 0.5) / (2 * third)],
        [0.0 - (third * 1.0 + 0 * 0.5) / third],
        [0.5 - (third * 1.0 + 0 * 0.0) / third],
    ])
    with pytest.raises(ValueError, match="unknown SPO text"):
        spo(rollouts, text="bogus")


# ---- GiGPO ----------------------------------------------------------------------------------
def gigpo_batch() -> Rollouts:
    trajs = [traj([0, 1], states=["s0", "s1"]),
             traj([0, 0], states=["s0", "s2"]),
             traj([0, 0, 1], states=["s0", "s1", "s3"]),
             traj([1], states=["s0"], task="task-1"),  # same key, other group: never pooled with group 0
             traj([0], states=["s0"], task="task-1")]
    return Rollouts(trajs, groups=[0, 0, 0, 1, 1])


def gigpo_parts():
    """Episode advantages and step advantages of gigpo_batch with gamma = 0.5, by hand."""
    # returns-to-go: traj0 [0.5, 1], traj1 [0, 0], traj2 [0.25, 0.5, 1]
    mean_r = 2 / 3
    std_r = math.sqrt(((1 - mean_r) ** 2 * 2 + (0 - mean_r) ** 2) / 3)
    e = [(1 - mean_r) / std_r, (0 - mean_r) / std_r, (1 - mean_r) / std_r, 1.0, -1.0]
    std_s0 = math.sqrt(((0.5 - 0.25) ** 2 + (0.0 - 0.25) ** 2 + (0.25 - 0.25) ** 2) / 3)  # s0: G = 0.5, 0, 0.25
    norm = {"s0": [0.25 / std_s0, -0.25 / std_s0, 0.0], "s1": [(1 - 0.75) / 0.25, (0.5 - 0.75) / 0.25],
            "g1": [(1 - 0.5) / 0.5, (0 - 0.5) / 0.5]}
    raw = {"s0": [0.25, -0.25, 0.0], "s1": [0.25, -0.25], "g1": [0.5, -0.5]}
    return e, norm, raw


def gigpo_expected(e, step, w):
    s0, s1, g1 = step["s0"], step["s1"], step["g1"]
    return [[e[0] + w * s0[0], e[0] + w * s1[0]],
            [e[1] + w * s0[1], e[1] + w * 0.0],  # s2 seen once: A^S = 0
            [e[2] + w * s0[2], e[2] + w * s1[1], e[2] + w * 0.0],  # s3 seen once
            [e[3] + w * g1[0]], [e[4] + w * g1[1]]]


def test_gigpo_anchor_groups_from_extras_state():
    e, norm, raw = gigpo_parts()
    check(gigpo(gigpo_batch(), gamma=0.5).advantages, gigpo_expected(e, norm, 1.0))
    check(gigpo(gigpo_batch(), gamma=0.5, weight=0.5).advantages, gigpo_expected(e, norm, 0.5))
    check(gigpo(gigpo_batch(), gamma=0.5, normalize=False).advantages, gigpo_expected(e, raw, 1.0))
    episode_only = [[x] * n for x, n in zip(e, [2, 2, 3, 1, 1], strict=True)]
    check(gigpo(gigpo_batch(), gamma=0.5, weight=0.0).advantages, episode_only)


def test_gigpo_anchor_groups_from_observation_text():
    trajs = [traj([0, 1], texts=["start", "hall"]), traj([0, 0], texts=["start", "cave"])]
    out = gigpo(Rollouts(trajs, groups=[0, 0]))  # gamma = 0.95: G = [0.95, 1] and [0, 0]
    step_start = (0.95 - 0.475) / 0.475  # "start": mean 0.475, std 0.475
    check(out.advantages, [[1 + step_start, 1 + 0.0], [-1 - step_start, -1 + 0.0]])


def test_gigpo_state_key_takes_precedence_over_text():
    # same text, different state keys: no step group; different text, same key: one step group
    split = [traj([0, 1], texts=["start", "hall"], states=["k1", "k2"]),
             traj([0, 0], texts=["start", "cave"], states=["k3", "k4"])]
    check(gigpo(Rollouts(split, groups=[0, 0])).advantages, [[1.0, 1.0], [-1.0, -1.0]])
    joined = [traj([0, 1], texts=["here", "hall"], states=["k", "k2"]),
              traj([0, 0], texts=["there", "cave"], states=["k", "k4"])]
    check(gigpo(Rollouts(joined, groups=[0, 0])).advantages, [[2.0, 1.0], [-2.0, -1.0]])


# ---- PRM ------------------------------------------------------------------------------------
def test_prm_targets_three_turns_gamma_one():
    rewards, M, start = [0.0, 0.0, 1.0], [0.4, 0.6, 0.7], 0.5
    A, Q = prm_targets(np.array(rewards), np.array(M), start, gamma=1.0, lam=0.95)
    d1 = 0.0 + 1.0 * 0.4 - 0.5  # r_1 + gamma M_1 - M_0 = -0.1
    d2 = 0.0 + 1.0 * 0.6 - 0.4  # r_2 + gamma M_2 - M_1 = 0.2
    d3 = 1.0 - 0.6  # delta_T = r_T - M_{T-1} = 0.4
    a3 = d3
    a2 = d2 + 0.95 * d3
    a1 = d1 + 0.95 * d2 + 0.95**2 * d3
    assert [a1, a2, a3] == pytest.approx([0.451, 0.58, 0.4])
    assert A.tolist() == pytest.approx([a1, a2, a3])
    # M_t's target is the lambda-return of what follows it (the Qhat = A + M_{t-1}, one
    # action later): Qhat_t = r_t + gamma((1 - lambda) M_{t+1} + lambda Qhat_{t+1}), Qhat_T = r_T
    q3 = 1.0
    q2 = 0.0 + 1.0 * (0.05 * 0.7 + 0.95 * q3)
    q1 = 0.0 + 1.0 * (0.05 * 0.6 + 0.95 * q2)
    assert [q1, q2, q3] == pytest.approx([0.96575, 0.985, 1.0])
    assert Q.tolist() == pytest.approx([q1, q2, q3])
    assert Q[-1] == pytest.approx(1.0)  # Qhat_T = the outcome
    # and as the issue writes it: Qhat_t = A'_{t+1} + M_t with TD errors of the following action
    dd = [0.0 + 0.6 - 0.4, 0.0 + 0.7 - 0.6, 1.0 - 0.7]  # r_t + gamma M_{t+1} - M_t, M_4 = 0
    assert q1 == pytest.approx(0.4 + dd[0] + 0.95 * dd[1] + 0.95**2 * dd[2])
    assert q2 == pytest.approx(0.6 + dd[1] + 0.95 * dd[2])


def test_prm_targets_three_turns_gamma_point_nine():
    rewards, M, start = [0.0, 0.0, 1.0], [0.4, 0.6, 0.7], 0.5
    A, Q = prm_targets(np.array(rewards), np.array(M), start, gamma=0.9, lam=0.95)
    d1 = 0.0 + 0.9 * 0.4 - 0.5  # -0.14
    d2 = 0.0 + 0.9 * 0.6 - 0.4  # 0.14
    d3 = 0.9 * 1.0 - 0.6  # 0.3: the last action's Q is its outcome, nothing bootstrapped after it
    gl = 0.9 * 0.95  # 0.855
    a3 = d3
    a2 = d2 + gl * d3
    a1 = d1 + gl * d2 + gl**2 * d3
    assert [a1, a2, a3] == pytest.approx([0.1990075, 0.3965, 0.3])
    assert A.tolist() == pytest.approx([a1, a2, a3])
    q3 = 1.0
    q2 = 0.0 + 0.9 * (0.05 * 0.7 + 0.95 * q3)
    q1 = 0.0 + 0.9 * (0.05 * 0.6 + 0.95 * q2)
    assert Q.tolist() == pytest.approx([q1, q2, q3])
    assert Q[-1] == pytest.approx(1.0)


def test_prm_targets_dense_rewards_and_single_turn():
    # M_t holds r_t already (it estimates Q(s_t, a_t)): turn t's delta adds back r_{t-1}, not r_t
    A, Q = prm_targets(np.array([0.1, 0.0, 1.0]), np.array([0.4, 0.6, 0.7]), 0.5, gamma=1.0, lam=0.95)
    d1, d2, d3 = 0.0 + 0.4 - 0.5, 0.1 + 0.6 - 0.4, 0.0 + 1.0 - 0.6
    assert A.tolist() == pytest.approx([d1 + 0.95 * d2 + 0.95**2 * d3, d2 + 0.95 * d3, d3])
    A, Q = prm_targets(np.array([1.0]), np.array([0.3]), 0.25)
    assert A.tolist() == pytest.approx([1.0 - 0.25]) and Q.tolist() == pytest.approx([1.0])


@pytest.mark.parametrize("rewards", [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0, 1.0], [0.0, 0.0, 1.0], [0.3]])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_prm_advantages_vanish_when_the_prm_is_exact(rewards, gamma, lam):
    # A deterministic episode's true Q is the discounted return; a PRM that scores exactly that
    # leaves no progress to credit, dense rewards and gamma < 1 included
    r = np.array(rewards)
    M = discounted_returns(r, gamma)
    A, Q = prm_targets(r, M, gamma * M[0], gamma=gamma, lam=lam)
    assert A.tolist() == pytest.approx([0.0] * len(r), abs=1e-12)
    assert Q.tolist() == pytest.approx(M.tolist())


def test_prm_targets_with_lambda_one_are_monte_carlo_returns():
    # lambda = 1 telescopes the deltas: Qhat_t = sum_k gamma^k r_{t+k}, whatever the scores
    _, Q = prm_targets(np.array([0.0, 0.5, 1.0]), np.array([0.4, 0.6, 0.7]), 0.5, gamma=0.9, lam=1.0)
    assert Q.tolist() == pytest.approx([0.5 * 0.9 + 1.0 * 0.81, 0.5 + 0.9 * 1.0, 1.0])


def test_mc_targets_and_helpers():
    assert mc_targets(np.array([0.0, 0.5, 1.0]), gamma=0.9).tolist() == pytest.approx([0.45 + 0.81, 1.4, 1.0])
    assert mc_targets(np.array([0.0, 0.0, 1.0])).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert discounted_returns(np.array([1.0, 2.0]), 0.5).tolist() == pytest.approx([1 + 0.5 * 2, 2.0])
    assert lambda_sum(np.array([1.0, -1.0, 2.0]), 0.5).tolist() == pytest.approx([1 - 0.5 + 0.25 * 2, -1 + 1.0, 2.0])
    assert discounted_returns(np.zeros(0), 0.9).shape == (0,)


def test_prm_estimator_uses_the_group_mean_first_score_as_start():
    trajs = [traj([0, 0, 1]), traj([0, 0]), traj([1], task="task-1")]
    M = [np.array([0.4, 0.6, 0.7]), np.array([0.2, 0.1]), np.array([0.9])]
    out = prm(Rollouts(trajs, groups=[0, 0, 1], prm=M), gamma=1.0, lam=0.95)
    start0 = (0.4 + 0.2) / 2  # mean M_1 over group 0
    d = [0.0 + 0.4 - start0, 0.0 + 0.6 - 0.4, 1.0 - 0.6]
    a0 = [d[0] + 0.95 * d[1] + 0.95**2 * d[2], d[1] + 0.95 * d[2], d[2]]
    e = [0.0 + 0.2 - start0, 0.0 - 0.2]  # second trajectory: delta_T = r_T - M_{T-1}
    a1 = [e[0] + 0.95 * e[1], e[1]]
    a2 = [1.0 - 0.9]  # group 1's start is its only trajectory's M_1
    check(out.advantages, [a0, a1, a2])
    # targets: Qhat_t = r_t + gamma((1 - lambda) M_{t+1} + lambda Qhat_{t+1}), Qhat_T = r_T
    q0_3 = 1.0
    q0_2 = 0.0 + 0.05 * 0.7 + 0.95 * q0_3
    q0_1 = 0.0 + 0.05 * 0.6 + 0.95 * q0_2
    q1_1 = 0.0 + 0.05 * 0.1 + 0.95 * 0.0
    check(out.returns, [[q0_1, q0_2, q0_3], [q1_1, 0.0], [1.0]])


# ---- registry -------------------------------------------------------------------------------
def test_registry_and_estimate_errors():
    assert set(ESTIMATORS) >= {"grpo", "drgrpo", "rloo", "gae", "evpo", "spo", "gigpo", "prm"}
    rollouts = Rollouts([traj([1.0]), traj([0.0])], groups=[0, 0])
    check(estimate("drgrpo", rollouts).advantages, [[0.5], [-0.5]])
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        estimate("nope", rollouts)
    for name in ("gae", "evpo"):
        with pytest.raises(ValueError, match=r"needs rollouts\.values"):
            estimate(name, rollouts)
    with pytest.raises(ValueError, match=r"needs rollouts\.prm"):
        estimate("prm", rollouts)
    with pytest.raises(ValueError, match="group ids"):
        Rollouts([traj([1.0])], groups=[0, 0])


# ---- embedders ------------------------------------------------------------------------------
def test_hashing_is_deterministic_and_counts_grams():
    first = hashing(["Go left", "go right"])
    assert np.array_equal(first, hashing(["go LEFT", "go right"]))  # lower-cased, same every call
    assert first.shape == (2, 1024)
    assert distinct("go", "left", "go left")
    expected = np.zeros(1024)
    for gram in ("go", "left", "go left"):  # words and the bigram, one count each
        expected[bucket(gram)] += 1
    assert first[0].tolist() == expected.tolist()
    assert hashing([]).shape == (0, 1024)


def test_hashing_prefix_embeddings_are_running_sums():
    t = traj([0, 0, 1], ["go left", "pick up", "go left"])
    rows = prefix_embeddings(t, "hashing", "actions", prefixes=True)
    v = [hashing([a])[0] for a in ("go left", "pick up", "go left")]
    assert rows.shape == (3, 1024)
    assert rows[0].tolist() == v[0].tolist()
    assert rows[1].tolist() == (v[0] + v[1]).tolist()
    assert rows[2].tolist() == (v[0] + v[1] + v[2]).tolist()
    whole = prefix_embeddings(t, "hashing", "actions", prefixes=False)
    assert whole.shape == (1, 1024) and whole[0].tolist() == rows[2].tolist()


def test_cosine_zero_rows():
    c = cosine(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[3.0, 4.0]]))
    assert c[:, 0].tolist() == pytest.approx([0.6, 0.0])


def test_minilm_loads_offline_and_reads_meaning(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    vec = embed.get_embedder("minilm")(["buy red running shoes", "purchase crimson sneakers", "mine a piece of iron"])
    assert vec.shape == (3, 384)
    assert np.linalg.norm(vec, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    sims = cosine(vec[:1], vec[1:])[0]
    assert sims[0] > sims[1] + 0.2
