"""Potential shaping, PRM shaping and PRM search (best-of-n, beam search) on real Craft episodes.

The PRMs here are networks with hand-set weights: a SymbolicPolicy whose policy head has zero
weights and bias b scores M(s, a) = b[id(a)] in every state, so every value is known by hand.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import turngym  # noqa: F401  (registers the envs)
from turngym.agents.base import make_agent
from turngym.agents.neural import PolicyConfig, new_policy
from turngym.agents.symbolic import OBS_KEYS, SymbolicConfig, new_symbolic_policy
from turngym.envs.craft.rules import load_rules
from turngym.rewards.prm import ProcessRewardModel, beam_search, best_of_n, reduce_scores
from turngym.rewards.shaping import PotentialShaping, PRMShaping

ACTIONS = load_rules().actions
ID = {a: i for i, a in enumerate(ACTIONS)}


def craft(task: str = "wood_pickaxe", **kwargs):
    return gym.make("turngym/Craft-v0", task=task, symbolic=True, image=False, size=32, **kwargs)


def bias_prm(env, bias: dict[str, float], small: bool = True) -> ProcessRewardModel:
    """M(s, a) = bias.get(a, 0) for every state s."""
    net = new_symbolic_policy(SymbolicConfig.for_craft(hidden=16) if small else None, seed=0)
    with torch.no_grad():
        net.policy_head.weight.zero_()
        net.policy_head.bias.copy_(torch.tensor([bias.get(a, 0.0) for a in ACTIONS]))
    return ProcessRewardModel(net, env)


def play(env, actions_or_agent, seed: int = 0):
    """Steps of one episode: (reward, terminated, truncated, info) per turn, plus the reset info."""
    obs, info = env.reset(seed=seed)
    agent = actions_or_agent
    if hasattr(agent, "act"):
        agent.reset(obs, info, seed=seed)
    steps, start, done, t = [], info, False, 0
    while not done:
        action = agent.act(obs, info) if hasattr(agent, "act") else agent[t]
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((reward, terminated, truncated, info, env.unwrapped.state_dict()))
        done, t = terminated or truncated, t + 1
    return start, steps


# ---- potential shaping ----------------------------------------------------------------------

def phi_state(state) -> float:
    """A designed potential: 2 + turn + 5 * wood held."""
    return 2.0 + state["turn"] + 5.0 * state["inventory"].get("wood", 0)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_potential_shaping_telescopes_on_terminated_episode(gamma):
    env = PotentialShaping(craft(), phi_state, gamma=gamma, state=True)
    start, steps = play(env, make_agent("oracle", env))
    assert start["potential"] == 2.0  # Phi(s_0): turn 0, no wood
    assert steps[-1][1] and not steps[-1][2]  # the oracle finishes wood_pickaxe: terminated
    phis = [2.0] + [phi_state(s) for *_, s in steps]
    phis[-1] = 0.0  # Phi(terminal) = 0
    woods = [s["inventory"].get("wood", 0) for *_, s in steps]
    assert max(woods) >= 2 and woods[-1] < max(woods)  # wood comes and goes: a real test of Phi
    env_rewards, shaped = [], []
    for t, (reward, _, _, info, _) in enumerate(steps):
        assert info["shaping"] == pytest.approx(gamma * phis[t + 1] - phis[t])
        assert reward == pytest.approx(info["env_reward"] + info["shaping"])
        env_rewards.append(info["env_reward"])
        shaped.append(reward)
    assert env_rewards[-1] == 1.0 and sum(env_rewards) == 1.0
    discount = gamma ** np.arange(len(steps))
    # sum_t gamma^t r'_t = sum_t gamma^t r_t - Phi(s_0)
    assert float(discount @ shaped) == pytest.approx(float(discount @ env_rewards) - 2.0)
    if gamma == 1.0:  # by hand: T - 1 turns of +1 (turn count) and wood changes, then -Phi(s_{T-1}) + 1
        assert sum(shaped) == pytest.approx(1.0 - 2.0)


def test_potential_shaping_keeps_potential_on_truncation():
    wood = load_rules().items.index("wood")
    potential = lambda obs, info: 3.0 + 0.5 * info["turn"] + float(obs["inventory"][wood])  # noqa: E731
    env = PotentialShaping(craft(max_turns=3), potential, gamma=0.9)
    start, steps = play(env, ["noop"] * 3)
    assert start["potential"] == 3.0
    assert [s[2] for s in steps] == [False, False, True] and not any(s[1] for s in steps)
    phis = [3.0, 3.5, 4.0, 4.5]  # Phi(s_T) = 4.5 is kept: truncation is not termination
    for t, (reward, *_rest) in enumerate(steps):
        assert reward == pytest.approx(0.9 * phis[t + 1] - phis[t])
    shaped = [s[0] for s in steps]
    assert float(0.9 ** np.arange(3) @ shaped) == pytest.approx(0.9 ** 3 * 4.5 - 3.0)


def test_state_potential_needs_state_dict():
    class Bare(gym.Env):
        observation_space = gym.spaces.Discrete(1)
        action_space = gym.spaces.Discrete(1)

    with pytest.raises(ValueError, match="state_dict"):
        PotentialShaping(Bare(), lambda s: 0.0, state=True)


# ---- PRM shaping ------------------------------------------------------------------------------

def test_prm_shaping_uses_max_over_candidates():
    bias = {"do": 2.0, "noop": 1.0, "place table": 5.0, "make wood_pickaxe": 7.0, "move north": -1.0}
    inner = craft()
    prm = bias_prm(inner, bias)
    env = PRMShaping(inner, prm, gamma=1.0)
    obs, info = env.reset(seed=0)
    assert info["potential"] == 2.0  # moves (-1 or 0), do 2, noop 1: max is 2
    assert prm.value(obs, info) == 2.0
    assert list(prm.scores(obs, info, ["noop", "do", "move north", "move south"])) == [1.0, 2.0, -1.0, 0.0]
    _, steps = play(env, make_agent("oracle", env))
    prev, seen = 2.0, set()
    for reward, terminated, _, info, _ in steps:
        expected = 0.0 if terminated else max(bias.get(a, 0.0) for a in info["actions"])
        seen.add(expected)
        assert info["potential"] == expected
        assert reward == pytest.approx(info["env_reward"] + expected - prev)
        prev = expected
    assert {2.0, 5.0, 7.0} <= seen  # table placeable, then the pickaxe makeable, along the way
    assert sum(s[0] for s in steps) == pytest.approx(1.0 - 2.0)  # sum r - Phi(s_0)


def test_prm_needs_symbolic_env_and_primitive_actions():
    net = new_symbolic_policy(SymbolicConfig.for_craft(hidden=16))
    with pytest.raises(ValueError, match="symbolic=True"):
        ProcessRewardModel(net, gym.make("turngym/Craft-v0", image=False, size=32))
    env = craft()
    prm = ProcessRewardModel(net, env)
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match="cannot score"):
        prm.scores(obs, info, ["goto tree"])
    with pytest.raises(TypeError):
        ProcessRewardModel(torch.nn.Linear(2, 2), craft())


# ---- loading ---------------------------------------------------------------------------------

def test_load_round_trip_symbolic_and_text(tmp_path):
    env = craft()
    obs, info = env.reset(seed=1)
    net = new_symbolic_policy(SymbolicConfig.for_craft(hidden=16), seed=3)
    net.save(tmp_path / "sym.pt", prm=True)
    loaded = ProcessRewardModel.load(tmp_path / "sym.pt", env)
    assert loaded.symbolic and loaded.meta == {"prm": True}
    with torch.no_grad():
        expected = net({k: torch.as_tensor(np.asarray(obs[k]))[None] for k in OBS_KEYS})[0]  # no mask
    ids = [ID[a] for a in info["actions"]]
    np.testing.assert_allclose(loaded.scores(obs, info, info["actions"]), expected[0, ids].numpy(),
                               rtol=1e-6)
    assert loaded.value(obs, info) == pytest.approx(float(expected[0, ids].max()))

    text_env = gym.make("turngym/Craft-v0", task="wood_pickaxe", image=False, size=32)
    obs, info = text_env.reset(seed=1)
    text = new_policy(PolicyConfig(buckets=1 << 10, dim=16, layers=1, heads=2), seed=4)
    text.save(tmp_path / "text.pt")
    loaded = ProcessRewardModel.load(tmp_path / "text.pt", text_env)
    assert not loaded.symbolic
    logits, _ = text(text.encode([obs], [info["actions"]]))
    np.testing.assert_allclose(loaded.scores(obs, info, info["actions"]), logits[0].detach().numpy(), rtol=1e-5)
    assert loaded.value(obs, info) == pytest.approx(float(logits[0].max().detach()), rel=1e-5)
    with pytest.raises(ValueError, match="symbolic=True"):  # a saved symbolic PRM on a text env
        ProcessRewardModel.load(tmp_path / "sym.pt", text_env)


# ---- best of n ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reduce", ["last", "min", "mean"])
def test_best_of_n_picks_by_prm_score(reduce):
    env = craft("collect_wood", max_turns=8)
    bias = {"noop": 1.0, "do": 0.5, "move east": -1.0}
    prm = bias_prm(env, bias)
    chosen, runs = best_of_n(env, make_agent("random", env), prm, 5, seed=7, reduce=reduce)
    assert len(runs) == 5
    assert len({t.task_id for t in runs}) == 1 and {t.seed for t in runs} == {7}
    assert len({tuple(t.action for t in r.turns) for r in runs}) > 1  # the samples differ
    by_hand = []
    for run in runs:
        per_turn = [bias.get(t.action, 0.0) for t in run.turns]
        assert [t.extras["prm"] for t in run.turns] == per_turn
        by_hand.append({"last": per_turn[-1], "min": min(per_turn), "mean": float(np.mean(per_turn))}[reduce])
        assert run.meta["prm_score"] == pytest.approx(by_hand[-1])
    assert chosen is runs[int(np.argmax(by_hand))]  # the first best, whatever the outcomes


def test_best_of_n_ignores_outcome():
    """A PRM that dislikes "do" picks an episode that never collects wood over ones that do."""
    env = craft("collect_wood", max_turns=6)
    prm = bias_prm(env, {"do": -5.0})
    chosen, _ = best_of_n(env, make_agent("oracle", env), prm, 1, seed=0, reduce="min")
    assert chosen.success and chosen.meta["prm_score"] == -5.0  # the oracle's episode ends with "do"
    class Idle:
        def act(self, obs, info):
            return "noop"

    chosen, _ = best_of_n(env, _Either(make_agent("oracle", env), Idle()), prm, 2, seed=0, reduce="min")
    assert not chosen.success and chosen.meta["sample"] == 1


class _Either:
    """Plays `first` in sample 0 (agent seed 0) and `second` otherwise."""

    def __init__(self, first, second):
        self.first, self.second, self.current = first, second, first

    def reset(self, obs, info, *, seed=None):
        self.current = self.first if seed == 0 else self.second
        if hasattr(self.current, "reset"):
            self.current.reset(obs, info, seed=seed)

    def act(self, obs, info):
        return self.current.act(obs, info)


def test_reduce_scores():
    assert reduce_scores([1.0, -2.0, 4.0], "last") == 4.0
    assert reduce_scores([1.0, -2.0, 4.0], "min") == -2.0
    assert reduce_scores([1.0, -2.0, 4.0], "mean") == 1.0
    assert reduce_scores([], "mean") == float("-inf")
    with pytest.raises(ValueError, match="reduce"):
        reduce_scores([1.0], "max")


# ---- beam search -------------------------------------------------------------------------------

def test_beam_search_greedy_case_and_env_untouched():
    env = craft("collect_wood", max_turns=12)
    env.reset(seed=3)
    env.step("move west")
    before = copy.deepcopy(env.unwrapped.state_dict())
    prm = bias_prm(env, {"do": 1.0, "move south": 0.5})
    traj = beam_search(env, prm, beam=1, expand=1, seed=0, max_turns=5)
    assert env.unwrapped.state_dict() == before  # searched on copies
    assert [t.action for t in traj.turns] == ["do"] * 5  # beam 1, expand 1: greedy in M, "do" always possible
    assert [t.extras["prm"] for t in traj.turns] == [1.0] * 5
    assert traj.meta["nodes"] == 5 and traj.meta["prm_score"] == 1.0
    assert traj.seed == 0 and traj.task_id == env.reset(seed=0)[1]["task_id"]


def test_beam_search_respects_beam_and_expand_and_is_deterministic():
    env = craft("collect_wood", max_turns=40)
    prm = bias_prm(env, {"do": 1.0, "move east": 0.6, "move south": 0.5, "noop": -1.0})
    calls = []
    scores = prm.scores

    def spy(obs, info, actions):
        calls.append(len(actions))
        return scores(obs, info, actions)

    prm.scores = spy
    traj = beam_search(env, prm, beam=2, expand=3, seed=0, max_turns=6)
    assert len(traj) <= 6
    # depth 0: one node; later at most `beam` running nodes, each executing at most `expand` children
    assert len(calls) <= 1 + 2 * 5 and traj.meta["nodes"] <= 3 + 2 * 3 * 5
    assert traj.meta["beam"] == 2 and traj.meta["expand"] == 3
    # a valid trajectory: each action was a candidate of the state it was taken in
    replay = craft("collect_wood", max_turns=40)
    obs, info = replay.reset(seed=0)
    for turn in traj.turns:
        assert turn.action in info["actions"] and turn.text == obs["text"]
        assert turn.extras["prm"] == {"do": 1.0, "move east": 0.6, "move south": 0.5, "noop": -1.0}.get(
            turn.action, 0.0)
        obs, reward, terminated, _, info = replay.step(turn.action)
        assert reward == turn.reward
    assert traj.final_text == obs["text"] and traj.terminated == terminated
    again = beam_search(env, prm, beam=2, expand=3, seed=0, max_turns=6)
    assert [t.action for t in again.turns] == [t.action for t in traj.turns]


class TreeSeeker:
    """A designed PRM on the symbolic view: "do" facing a tree scores 2 (else -1), a move scores
    minus a tenth of the distance from where it leads to the nearest tree, noop -5."""

    def __init__(self):
        rules = load_rules()
        self.tree, self.directions = rules.mat("tree"), ("north", "south", "east", "west")

    def candidates(self, obs, info):
        return list(info["actions"])

    def scores(self, obs, info, actions):
        view = np.asarray(obs["view"])
        c = view.shape[0] // 2
        step = {"north": (-1, 0), "south": (1, 0), "east": (0, 1), "west": (0, -1)}
        trees = np.argwhere(view == self.tree)
        out = []
        for action in actions:
            if action == "do":
                dy, dx = step[self.directions[int(obs["facing"])]]
                out.append(2.0 if view[c + dy, c + dx] == self.tree else -1.0)
            elif action.startswith("move ") and len(trees):
                dy, dx = step[action.split()[1]]
                out.append(-0.1 * float(np.abs(trees - [c + dy, c + dx]).sum(1).min()))
            else:
                out.append(-5.0)
        return np.array(out)


def test_beam_search_finds_wood_with_a_designed_prm():
    env = craft("collect_wood", max_turns=20)
    traj = beam_search(env, TreeSeeker(), beam=2, expand=2, seed=0, max_turns=10)
    assert traj.terminated and traj.success and traj.score == 1.0 and traj.total_reward == 1.0
    assert traj.turns[-1].action == "do" and traj.meta["prm_score"] == 2.0
    assert len(traj) <= 10 and all(t.reward == 0.0 for t in traj.turns[:-1])


def test_beam_search_with_a_text_prm_on_hopvqa():
    env = gym.make("turngym/HopVQA-v0")
    prm = ProcessRewardModel(new_policy(PolicyConfig(buckets=1 << 10, dim=16, layers=1, heads=2), seed=1), env)
    assert not prm.symbolic
    traj = beam_search(env, prm, beam=2, expand=2, seed=0, max_turns=3, record_images=False)
    assert 1 <= len(traj) <= 3 and traj.meta["nodes"] <= 2 + 4 * 2
    obs, info = env.reset(seed=0)
    first = traj.turns[0]
    assert first.action in prm.candidates(obs, info) and first.text == obs["text"]
    top = np.sort(prm.scores(obs, info, prm.candidates(obs, info)))[::-1][:2]  # expand=2: one of the best two
    assert min(abs(first.extras["prm"] - top)) < 1e-9 and top[0] == pytest.approx(prm.value(obs, info))
