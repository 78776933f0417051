"""CodeReward and its checker on real Craft play: clipping, the sandbox, time limits, checks, the wrapper.

Every expected reward below is computed by hand from the rules in rewards/code.py's docstring:
sparse' = sign(sparse), dense' = clip(dense, -0.1, 0.1), r' = r_env + sparse' + dense'.
"""

from __future__ import annotations

import gc
import itertools
import math
import signal
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import turngym  # noqa: F401  (registers the envs)
from turngym.agents import make_agent
from turngym.envs.craft.vector import CraftVectorEnv
from turngym.rewards.code import (
    CodeReward,
    Report,
    RewardProgram,
    Transition,
    VectorCodeReward,
    check_reward_source,
    clip_reward,
    record_transitions,
    split_terms,
    static_problems,
)

WOOD = '''
def reward(prev_state, action, state, info):
    gained = state["inventory"].get("wood", 0) - prev_state["inventory"].get("wood", 0)
    return 0.05 if gained > 0 else 0.0
'''
# sparse: +1 per new achievement (sign of the count), dense: 0.05 per wood gained or lost
PAIR = '''
import math

def reward(prev_state, action, state, info):
    new = len(state["achievements"]) - len(prev_state["achievements"])
    wood = state["inventory"].get("wood", 0) - prev_state["inventory"].get("wood", 0)
    return 3 * new, 0.05 * wood + 0.0 * math.pi
'''
LOOP = '''
def reward(prev_state, action, state, info):
    n = 0
    while True:
        n += 1
'''
STUBBORN_LOOP = '''
def reward(prev_state, action, state, info):
    while True:
        try:
            while True:
                pass
        except Exception:
            pass
'''
MISSING_KEY = '''
def reward(prev_state, action, state, info):
    before = prev_state["inventory"].get("wood", 0)
    after = state["inventory"]["wood"]
    return 0.01 * (after - before)
'''


def craft(**kwargs) -> gym.Env:
    return gym.make("turngym/Craft-v0", task=kwargs.pop("task", "wood_pickaxe"), image=False, **kwargs)


@pytest.fixture(scope="module")
def transitions() -> list[Transition]:
    """Random and oracle play on stone_pickaxe worlds: empty inventories and real progress."""
    env = craft(task="stone_pickaxe", max_turns=60)
    return record_transitions(env, "random", 2, seed=0) + record_transitions(env, "oracle", 2, seed=0)


def oracle_episode(seed: int, task: str = "wood_pickaxe") -> tuple[list[str], list[dict], list[float]]:
    """The oracle's actions on a plain env, the state before every step and after the last, and the rewards."""
    env = craft(task=task)
    agent = make_agent("oracle", env)
    obs, info = env.reset(seed=seed)
    agent.reset(obs, info, seed=seed)
    actions, states, rewards, done = [], [env.unwrapped.state_dict()], [], False
    while not done:
        actions.append(agent.act(obs, info))
        obs, reward, terminated, truncated, info = env.step(actions[-1])
        states.append(env.unwrapped.state_dict())
        rewards.append(reward)
        done = terminated or truncated
    return actions, states, rewards


def sign(x: float) -> float:
    return float((x > 0) - (x < 0))


# --- clipping ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (0.05, (0.0, 0.05)),            # a float is the dense part
    (0.5, (0.0, 0.1)),              # dense clipped at +0.1
    (-3, (0.0, -0.1)),              # ... and at -0.1
    (0, (0.0, 0.0)),
    (True, (0.0, 0.1)),             # a bool is the number 1
    ((2.5, -0.03), (1.0, -0.03)),   # sparse: its sign
    ((-0.2, 7), (-1.0, 0.1)),
    ([0, 0.1], (0.0, 0.1)),         # a list pair works like a tuple
    ((1e-9, -1e9), (1.0, -0.1)),
    ((0.0, -0.1), (0.0, -0.1)),
])
def test_clip_reward_by_hand(value, expected) -> None:
    assert clip_reward(value) == expected


@pytest.mark.parametrize("value", ["0.1", None, (1, 2, 3), (1,), math.nan, math.inf, (1, math.nan),
                                   (-math.inf, 0), 10 ** 400, {"dense": 0.1}])
def test_clip_reward_rejects_what_is_not_a_finite_number_or_pair(value) -> None:
    with pytest.raises(ValueError, match="reward\\(\\) returned"):
        clip_reward(value)


@pytest.mark.parametrize(("value", "expected"), [
    ((1, 0.5, {"a": 0.5, "b": 0}), (1.0, 0.5, {"a": 0.5, "b": 0.0})),  # raw: clipping comes later
    ((0, 0.02), (0.0, 0.02, {})),
    (0.02, (0.0, 0.02, {})),
])
def test_a_third_value_names_the_terms(value, expected) -> None:
    assert split_terms(value) == expected
    assert clip_reward(value) == clip_reward(value[:2] if isinstance(value, tuple) else value)


@pytest.mark.parametrize(("value", "match"), [((0, 0.1, [0.1]), "of 3 items"), ((0, 0.1, {1: 0.1}), "key 1"),
                                               ((0, 0.1, {"a": math.nan}), "term 'a'"), ((0, 0, {}, 1), "of 4")])
def test_bad_terms_name_the_fix(value, match) -> None:
    with pytest.raises(ValueError, match=match):
        split_terms(value)


def test_code_reward_and_the_checker_report_terms() -> None:
    source = ("def reward(prev_state, action, state, info):\n"
              "    moved = prev_state['player']['pos'] != state['player']['pos']\n"
              "    return 0, 0.01 * moved, {'moved': 0.01 * moved, 'never': 0}\n")
    env = gym.make("turngym/Craft-v0", task="collect_wood", image=False, max_turns=20)
    report = check_reward_source(source, record_transitions(env, "random", episodes=1))
    assert report.ok and 0 < report.stats["term_fired_rate"]["moved"] < 1
    assert report.stats["term_fired_rate"]["never"] == 0
    wrapped = CodeReward(env, source)
    wrapped.reset(seed=0)
    assert wrapped.step("noop")[-1]["code_reward"] == {"sparse": 0.0, "dense": 0.0,
                                                        "terms": {"moved": 0.0, "never": 0}}


# --- the sandbox ------------------------------------------------------------------------------

SIG = "def reward(prev_state, action, state, info):\n"


@pytest.mark.parametrize(("body", "complaint"), [
    ("import os\n" + SIG + "    return 0\n", "`import os` is not allowed"),
    ("from os import path\n" + SIG + "    return 0\n", "`from os import ...` is not allowed"),
    ("import math, subprocess\n" + SIG + "    return 0\n", "`import subprocess` is not allowed"),
    (SIG + "    import json\n    return 0\n", "`import json` is not allowed"),
    (SIG + "    return len(open('/etc/passwd').read())\n", "`open` is not available"),
    (SIG + "    return __import__('os').getpid()\n", "the name `__import__` is not allowed"),
    (SIG + "    return len(__builtins__)\n", "the name `__builtins__` is not allowed"),
    (SIG + "    return len(().__class__.__bases__[0].__subclasses__())\n", "`.__class__` is not allowed"),
    (SIG + "    return len(reward.__globals__)\n", "`.__globals__` is not allowed"),
    (SIG + "    return getattr(state, '__class__')\n", "`getattr` is not available"),
    (SIG + "    return len('{0.__class__}'.format(state))\n", "`.format` is not allowed"),
    (SIG + "    return eval('1')\n", "`eval` is not available"),
    (SIG + "    g = (x for x in [1])\n    return g.gi_frame.f_back\n", "`.gi_frame` is not allowed"),
    (SIG + "    return type(state).mro()\n", "`type` is not available"),
    (SIG + "    match state:\n        case dict(__class__=c):\n            return 0\n",
     "pattern attribute `__class__=` is not allowed"),
    ("class A:\n    pass\n" + SIG + "    return 0\n", "class `A` is not allowed"),
    (SIG + "    try:\n        return 0\n    finally:\n        pass\n", "try/finally is not allowed"),
    (SIG + "    try:\n        return 0\n    except:\n        return 1\n", "catch-all `except` is not allowed"),
    (SIG + "    try:\n        return 0\n    except (KeyError, BaseException):\n        return 1\n",
     "catch-all `except` is not allowed"),
])
def test_sandbox_refuses_at_check_time(body: str, complaint: str, transitions: list[Transition]) -> None:
    report = check_reward_source(body, transitions)
    assert not report.ok
    assert any(complaint in p for p in report.problems), report.problems
    with pytest.raises(ValueError, match="fails its checks"):
        CodeReward(craft(), body)


def test_signature_and_parse_errors_name_the_fix() -> None:
    assert static_problems("def reward(s, a):\n    return 0\n") == [
        "reward() must take (prev_state, action, state, info); yours takes (s, a)"]
    assert static_problems("def reward(prev_state, action, state, info, *rest):\n    return 0\n") == [
        "reward() must take (prev_state, action, state, info); yours takes (prev_state, action, state, info, *rest)"]
    assert static_problems("def score(prev_state, action, state, info):\n    return 0\n") == [
        "the source defines no top-level function `reward`: write `def reward(prev_state, action, state, info):`"]
    [problem] = static_problems("def reward(prev_state, action, state, info)\n    return 0\n")
    assert problem.startswith("line 1: the source does not parse") and problem.endswith("fix the Python syntax")
    assert static_problems(PAIR) == []  # `import math` is allowed


def test_builtins_are_a_whitelist_at_run_time(transitions: list[Transition]) -> None:
    # `dir` is not forbidden by name, only missing: the checker reports the NameError with its line
    report = check_reward_source(SIG + "    x = 1\n    return len(dir())\n", transitions)
    assert not report.ok
    assert "NameError" in report.problems[0] and "at line 3 (`return len(dir())`)" in report.problems[0]
    ok = SIG + "    return min(0.1, abs(sum(sorted([1, -2])))) * round(math.sqrt(4))\n"
    assert check_reward_source(ok, transitions[:5]).ok


def test_a_raising_function_is_reported_with_its_line(transitions: list[Transition]) -> None:
    report = check_reward_source(MISSING_KEY, transitions)
    assert not report.ok
    [problem] = report.problems
    assert problem.startswith("reward() raised KeyError: 'wood' at line 4 (`after = state[\"inventory\"][\"wood\"]`)")
    assert "use .get(key, default)" in problem
    empty = sum("wood" not in t.state["inventory"] for t in transitions)
    assert f"on {empty} of {len(transitions)} transitions" in problem
    assert report.stats["errors"] == empty and report.stats["calls"] == len(transitions) - empty


@pytest.mark.parametrize("source", [SIG + "    while True: pass\n", LOOP, STUBBORN_LOOP])
def test_endless_loops_time_out_on_the_main_thread(source: str, transitions: list[Transition]) -> None:
    report = check_reward_source(source, transitions, time_limit=0.02)
    assert not report.ok
    assert "ran past its 20 ms time limit at line" in report.problems[0]
    assert "the checker stopped after 3 timeouts" in report.problems[0]
    assert report.stats["timeouts"] == 3


def test_endless_loops_time_out_on_other_threads(transitions: list[Transition]) -> None:
    """Off the main thread SIGALRM cannot be used: the settrace budget stops the loop instead."""
    reports: list[Report] = []
    thread = threading.Thread(target=lambda: reports.extend(check_reward_source(s, transitions, time_limit=0.02)
                                                            for s in (LOOP, STUBBORN_LOOP, WOOD)))
    thread.start()
    thread.join(timeout=30)
    loop, stubborn, wood = reports
    assert not loop.ok and "ran past its 20 ms time limit" in loop.problems[0]
    assert not stubborn.ok and stubborn.stats["timeouts"] == 3
    assert wood.ok


def test_an_outer_timer_survives_a_call() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGVTALRM, lambda *_: fired.append(1))
    signal.setitimer(signal.ITIMER_VIRTUAL, 100.0)
    try:
        env = CodeReward(craft(), WOOD)
        env.reset(seed=0)
        env.step("noop")
        left, _ = signal.getitimer(signal.ITIMER_VIRTUAL)
        assert 90 < left <= 100.1  # (a CPU-time timer counts in ticks)
        assert signal.getsignal(signal.SIGVTALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


@pytest.mark.parametrize("thread", [False, True])
def test_time_spent_waiting_or_collecting_garbage_is_not_the_codes(thread: bool) -> None:
    """A call that waits (its process off the CPU, or a garbage collection of a large heap, 40-80 ms
    in a trainer) did time out against a wall-clock limit now and then: that step got no reward and
    two runs of one seed differed. The limit counts the call's CPU time, with the collector paused."""
    source = SIG + "    info['pause']()\n    return 1.0\n"
    seen: list[bool] = []

    def pause() -> None:
        seen.append(gc.isenabled())
        time.sleep(0.1)  # five times the limit, off the CPU

    def call() -> None:
        program = RewardProgram(source, time_limit=0.02)
        seen.append(program.raw({}, "noop", {}, {"pause": pause}) == (0.0, 1.0))

    if thread:
        worker = threading.Thread(target=call)
        worker.start()
        worker.join(timeout=30)
    else:
        call()
    assert seen == [False, True] and gc.isenabled()


# --- the checker ------------------------------------------------------------------------------

def test_record_transitions_chain_states(transitions: list[Transition]) -> None:
    for before, after in itertools.pairwise(transitions):
        if after.state["turn"] == before.state["turn"] + 1:  # the same episode
            assert after.prev_state == before.state
    assert transitions[0].prev_state["turn"] == 0 and transitions[0].state["turn"] == 1
    assert any("wood" in t.state["inventory"] for t in transitions)  # the oracle makes progress


def test_checker_passes_good_code_with_stats(transitions: list[Transition]) -> None:
    report = check_reward_source(WOOD, transitions)
    assert report.ok and report.problems == []
    gains = sum(t.state["inventory"].get("wood", 0) > t.prev_state["inventory"].get("wood", 0) for t in transitions)
    assert gains > 0
    assert report.stats["calls"] == len(transitions)
    assert report.stats["dense_fired_rate"] == pytest.approx(gains / len(transitions))
    assert report.stats["sparse_fired_rate"] == 0
    assert report.stats["mean_dense"] == pytest.approx(0.05 * gains / len(transitions))
    # episodes of transitions work as well as a flat list
    assert check_reward_source(WOOD, [transitions[:10], transitions[10:20]]).stats["calls"] == 20


def test_checker_notes_clipping_and_silence(transitions: list[Transition]) -> None:
    loud = check_reward_source(SIG + "    return 0.5, 3.0\n", transitions)
    assert loud.ok and loud.stats["dense_clipped_rate"] == 1 and loud.stats["sparse_rounded_rate"] == 1
    assert any("clipped to [-0.1, 0.1] on 100%" in n for n in loud.notes)
    silent = check_reward_source(SIG + "    return 0\n", transitions)
    assert silent.ok and any("returned 0 on every recorded transition" in n for n in silent.notes)


def test_checker_reports_non_finite_and_junk_returns(transitions: list[Transition]) -> None:
    for body, complaint in [("    return float('inf')\n", "returned a value of inf"),
                            ("    return 1, 2, 3\n", "tuple of 3 items"),
                            ("    return 'high'\n", "returned str as its value"),
                            ("    return 0, state['turn'] / 0\n", "ZeroDivisionError")]:
        report = check_reward_source(SIG + body, transitions[:4])
        assert not report.ok and complaint in report.problems[0], report.problems
    assert check_reward_source(WOOD, []).problems == [
        "there are no transitions to run reward() on: pass some from record_transitions(env, agent)"]


def test_module_body_runs_under_the_sandbox_too(transitions: list[Transition]) -> None:
    report = check_reward_source("TABLE = {'wood': 1}\nX = TABLE['stone']\n" + SIG + "    return 0\n", transitions)
    assert report.problems == ["the module body raised KeyError: 'stone' at line 2 (`X = TABLE['stone']`): fix the "
                               "code outside reward()"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.one_of(st.text(max_size=300),
                 st.builds(lambda body: SIG + "    " + body, st.text(max_size=200)),
                 st.builds(lambda lines: SIG + "".join(f"    {line}\n" for line in lines),
                           st.lists(st.sampled_from([
                               "return 0.1", "return state['turn']", "x = prev_state['inventory']", "return x",
                               "return 1, -1", "for k in state: pass", "if action == 'do': return 1, 0",
                               "return state[", "import os", "y = 1 / 0", "return info.get('valid')",
                               "return (", "del state['map']", "return len(state['map']) * 0.001"]), max_size=5))))
def test_fuzzed_source_always_gives_a_report(source: str, transitions: list[Transition]) -> None:
    report = check_reward_source(source, transitions[:6], time_limit=0.01)
    assert isinstance(report, Report)
    assert report.ok == (not report.problems)
    assert all(isinstance(p, str) and "\n" not in p for p in report.problems)


# --- the wrapper on real episodes -------------------------------------------------------------

def test_wrapper_adds_the_code_reward_turn_by_turn() -> None:
    actions, states, env_rewards = oracle_episode(seed=3)
    env = CodeReward(craft(), WOOD)
    env.reset(seed=3)
    gains = 0
    for t, action in enumerate(actions):
        _, reward, _, _, info = env.step(action)
        gained = states[t + 1]["inventory"].get("wood", 0) > states[t]["inventory"].get("wood", 0)
        gains += gained
        dense = 0.05 if gained else 0.0
        assert info["code_reward"] == {"sparse": 0.0, "dense": dense}
        assert reward == env_rewards[t] + dense
        assert "code_reward_error" not in info
    assert gains >= 2 and env_rewards[-1] == 1.0  # wood was collected and the task was solved


def test_wrapper_clips_pairs_turn_by_turn() -> None:
    actions, states, env_rewards = oracle_episode(seed=5)
    env = CodeReward(craft(), PAIR)
    env.reset(seed=5)
    fired = 0
    for t, action in enumerate(actions):
        _, reward, _, _, info = env.step(action)
        before, after = states[t], states[t + 1]
        sparse = sign(3 * (len(after["achievements"]) - len(before["achievements"])))
        wood = after["inventory"].get("wood", 0) - before["inventory"].get("wood", 0)
        dense = min(max(0.05 * wood, -0.1), 0.1)
        assert info["code_reward"] == pytest.approx({"sparse": sparse, "dense": dense})
        assert reward == pytest.approx(env_rewards[t] + sparse + dense)
        fired += sparse != 0
    assert fired >= 3  # collect_wood, place_table, make_wood_pickaxe


def test_wrapper_survives_errors_and_timeouts() -> None:
    for source, reason in [(MISSING_KEY, "KeyError"), (LOOP, "time limit")]:
        env = CodeReward(craft(), source, time_limit=0.01)
        env.reset(seed=0)
        _, reward, terminated, truncated, info = env.step("noop")
        assert reward == 0.0 and not terminated and not truncated
        assert info["code_reward"] == {"sparse": 0.0, "dense": 0.0}
        assert reason in info["code_reward_error"] and "\n" not in info["code_reward_error"]


def test_reward_code_cannot_touch_the_env() -> None:
    vandal = SIG + ("    state['inventory']['diamond'] = 99\n    prev_state.clear()\n    info['valid'] = 'no'\n"
                    "    info['actions'].append('win')\n    return 0.0\n")
    plain, wrapped = craft(), CodeReward(craft(), vandal)
    plain.reset(seed=1)
    wrapped.reset(seed=1)
    for action in ["move north", "do", "move west", "do", "noop"]:
        _, r1, _, _, info1 = plain.step(action)
        _, r2, _, _, info2 = wrapped.step(action)
        assert r1 == r2 and info2["valid"] == info1["valid"] and info2["actions"] == info1["actions"]
        assert wrapped.unwrapped.state_dict() == plain.unwrapped.state_dict()
        assert "code_reward_error" not in info2


def test_same_seed_same_shaped_rewards() -> None:
    def play() -> list[tuple[float, dict]]:
        env = CodeReward(craft(max_turns=80), PAIR)
        agent = make_agent("random", env)
        obs, info = env.reset(seed=11)
        agent.reset(obs, info, seed=11)
        out, done = [], False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            out.append((reward, info["code_reward"]))
            done = terminated or truncated
        return out

    first = play()
    assert first == play() and len(first) == 80


# reads much of both states, then vandalises them: no later call may see the changes
MEDDLER = '''
def reward(prev_state, action, state, info):
    seen = (len(prev_state["map"]), prev_state["map"][3], len(state["cows"]), state["player"]["pos"][0],
            sorted(prev_state["inventory"].items()), len(prev_state["legend"]), state["tick"], state["turn"])
    prev_state["map"].append("x")
    prev_state["legend"].clear()
    state["cows"].append({"pos": [0, 0], "health": 1})
    state["player"]["pos"][0] += 100
    state["inventory"]["wood"] = 99
    state["achievements"].append("none")
    moved = 0.01 if prev_state["player"]["pos"] != state["player"]["pos"] else 0.0
    return len(state["achievements"]) - 1, moved, {"seen": len(repr(seen)), "cows": len(state["cows"])}
'''


# keeps a counter at module level: its first call of an episode pays a bonus
FIRST_STEP = '''
calls = [0]

def reward(prev_state, action, state, info):
    calls[0] += 1
    return 0.0, 0.05 if calls[0] == 1 else 0.0
'''


def test_module_level_objects_start_anew_every_episode_and_env() -> None:
    env = CodeReward(craft(max_turns=3), FIRST_STEP)
    for seed in (0, 1):
        env.reset(seed=seed)
        assert [env.step("noop")[4]["code_reward"]["dense"] for _ in range(3)] == [0.05, 0.0, 0.0]
    venv = VectorCodeReward(CraftVectorEnv(3, max_turns=2), FIRST_STEP)
    venv.reset(seed=0)
    north = np.zeros(3, dtype=np.int64)  # (the reset steps of next-step autoreset score nothing)
    dense = [venv.step(north)[4]["code_reward"]["dense"].tolist() for _ in range(5)]
    assert dense == [[0.05] * 3, [0.0] * 3, [0.0] * 3, [0.05] * 3, [0.0] * 3]


def test_vector_code_reward_batched_reads_match_per_env_reads() -> None:
    class PerEnv(CraftVectorEnv):  # no batched state_dicts(): the wrapper reads state_dict(i) and copies
        def state_dict(self, i: int) -> dict:
            return super().state_dicts([i])[0]

        state_dicts = None

    def play(env_class: type) -> list:
        venv = VectorCodeReward(env_class(5, task="collect_coal", max_turns=20), MEDDLER)
        _, info = venv.reset(seed=4)
        rng, out = np.random.default_rng(4), []
        for _ in range(70):
            _, reward, _, _, info = venv.step(np.array([rng.choice(np.flatnonzero(m)) for m in info["action_mask"]]))
            terms = info["code_reward"]["terms"]
            out.append((reward.tolist(), {k: v.tolist() for k, v in terms.items()}, "code_reward_error" in info))
        return out

    batched = play(CraftVectorEnv)
    assert batched == play(PerEnv)
    assert not any(error for _, _, error in batched) and any(any(r) for r, _, _ in batched)
