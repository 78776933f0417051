"""The reference Craft reward programs (assets/craft/rewards/), VectorCodeReward and the training
analysis (turngym.rewards.analysis)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import turngym  # noqa: F401  (registers the env ids)
from turngym.agents import make_agent
from turngym.envs.craft.env import CraftEnv
from turngym.envs.craft.rules import load_rules
from turngym.envs.craft.vector import CraftVectorEnv
from turngym.rewards.analysis import EpisodeAnalysis, death_cause, stall_point, summarize
from turngym.rewards.code import (
    CodeReward,
    RewardProgram,
    VectorCodeReward,
    check_reward_source,
    record_transitions,
    with_constants,
)
from turngym.trainers.config import NeuralTrainConfig
from turngym.trainers.ppo import train

REWARDS = Path(__file__).resolve().parents[1] / "assets" / "craft" / "rewards"
TASKS = ("stone_pickaxe", "iron_pickaxe", "collect_diamond")
RULES = load_rules()
ACTION = {name: i for i, name in enumerate(RULES.actions)}


def source(task: str = "collect_diamond") -> str:
    return (REWARDS / f"{task}.py").read_text()


@pytest.mark.parametrize("task", TASKS)
def test_each_reference_program_passes_the_checker_and_loads(task):
    env = gym.make("turngym/Craft-v0", task=task, image=False, max_turns=150)
    transitions = record_transitions(env, "oracle", episodes=1) + record_transitions(env, "random", episodes=1, seed=7)
    report = check_reward_source(source(task), transitions, time_limit=10.0)  # (timing is not under test)
    assert report.ok, report.problems
    assert report.stats["term_fired_rate"]["approach"] > 0 and report.stats["term_fired_rate"]["craft"] > 0
    wrapped = CodeReward(env, source(task))
    wrapped.reset(seed=0)
    assert set(wrapped.step("noop")[-1]["code_reward"]["terms"]) == {"approach", "explore", "collect", "craft",
                                                                       "vitals", "lava"}


def start(task: str = "collect_diamond") -> dict:
    """A real start state with the 9x9 view around the player cleared to grass."""
    env = CraftEnv(task=task, image=False)
    env.reset(seed=3)
    state = env.state_dict()
    y, x = state["player"]["pos"]
    rows = [list(row) for row in state["map"]]
    for yy in range(y - 4, y + 5):
        for xx in range(x - 4, x + 5):
            rows[yy][xx] = "."
    state["map"] = ["".join(row) for row in rows]
    return state


def moved(state: dict, dx: int, put: dict[tuple[int, int], str] | None = None) -> tuple[dict, dict]:
    """(prev, state) for a step dx tiles east, with tiles set (offsets from the start) in both."""
    prev = copy.deepcopy(state)
    y, x = prev["player"]["pos"]
    rows = [list(row) for row in prev["map"]]
    for (dy, ddx), char in (put or {}).items():
        rows[y + dy][x + ddx] = char
    prev["map"] = ["".join(row) for row in rows]
    after = copy.deepcopy(prev)
    after["player"]["pos"] = [y, x + dx]
    return prev, after


def terms(program: RewardProgram, prev: dict, state: dict, action: str = "move east"):
    return program.clipped(prev, action, state, {})


def test_the_lava_term_fires_next_to_and_in_lava_only():
    program, off = RewardProgram(source()), RewardProgram(with_constants(source(), LAVA_TERM=False))
    calm = terms(program, *moved(start(), 1))
    assert calm.terms["lava"] == 0 and calm.sparse == 0
    near = terms(program, *moved(start(), 1, {(0, 2): "L"}))  # lava east of the new tile
    assert near.terms["lava"] == pytest.approx(-0.05) and near.sparse == 0 and near.dense < 0
    behind = terms(program, *moved(start(), 1, {(0, -2): "L"}))  # lava two tiles behind: not next to it
    assert behind.terms["lava"] == 0
    into = terms(program, *moved(start(), 1, {(0, 1): "L"}))  # the step lands on lava
    assert into.sparse == -1 and into.terms["lava"] == -1
    assert terms(off, *moved(start(), 1, {(0, 1): "L"})) == (0.0, 0.0, {**into.terms, "lava": 0.0})


def test_approach_pays_for_moving_toward_the_next_missing_resource():
    program = RewardProgram(source("stone_pickaxe"))
    toward = terms(program, *moved(start("stone_pickaxe"), 1, {(0, 3): "T"}))  # a tree 3 east: wood comes first
    assert toward.terms["approach"] == pytest.approx(0.01) and toward.dense == pytest.approx(0.01)
    away = terms(program, *moved(start("stone_pickaxe"), -1, {(0, 3): "T"}))
    assert away.terms["approach"] == pytest.approx(-0.01)
    # stone is not the target before a wood pickaxe exists: walking to it pays nothing
    assert terms(program, *moved(start("stone_pickaxe"), 1, {(0, 3): "#"})).terms["approach"] == 0


def with_tables(state: dict, *offsets: tuple[int, int]) -> dict:
    """A copy of `state` with tables at these offsets from the player."""
    state = copy.deepcopy(state)
    y, x = state["player"]["pos"]
    rows = [list(row) for row in state["map"]]
    for dy, dx in offsets:
        rows[y + dy][x + dx] = "t"
    state["map"] = ["".join(row) for row in rows]
    return state


def test_collecting_crafting_and_a_spare_table_net_out():
    program = RewardProgram(source("stone_pickaxe"))
    prev = start("stone_pickaxe")
    prev["inventory"] = {"wood": 2}
    got = copy.deepcopy(prev)
    got["inventory"] = {"wood": 3}
    assert terms(program, prev, got, "do").terms["collect"] == pytest.approx(0.03)
    placed = with_tables(got, (0, 1))
    placed["inventory"], placed["achievements"] = {}, ["collect_wood", "place_table"]
    craft = terms(program, got, placed, "place table").terms["craft"]
    assert craft == pytest.approx(0.1)  # the step done; its 3 wood were needed for it, so nothing is lost
    spare = copy.deepcopy(placed)
    spare["inventory"] = {"wood": 3}  # the path still counts 3 wood for a spare table near the stone
    lost = copy.deepcopy(spare)
    lost["inventory"] = {}
    # 3 needed wood gone with no second table standing: what collecting them paid is taken back
    assert terms(program, spare, lost, "do").terms["collect"] == pytest.approx(-0.09)
    # the spare table gives back its wood, wherever it stands: only the stone pickaxe made at it pays
    assert terms(program, spare, with_tables(lost, (0, 1), (1, 0)), "place table").terms["collect"] == \
        pytest.approx(-0.09)
    # without a spare (SPARE = 0) the path needs 2 wood after the table, so a second table gives back 2 units
    plain = RewardProgram(with_constants(source("stone_pickaxe"), SPARE=0))
    assert terms(plain, spare, lost, "place table").terms["collect"] == pytest.approx(-0.06)


def test_explore_pays_for_leaving_the_table_while_the_target_is_out_of_sight():
    program = RewardProgram(source("stone_pickaxe"))
    state = with_tables(start("stone_pickaxe"), (0, -1))  # stone is next, and none in sight
    state["inventory"], state["achievements"] = {"wood": 5, "wood_pickaxe": 1}, ["place_table", "make_wood_pickaxe"]
    away = terms(program, *moved(state, 1))
    assert away.terms["explore"] == pytest.approx(0.01) and away.terms["approach"] == 0
    assert terms(program, *moved(state, -1)).terms["explore"] == pytest.approx(-0.01)
    # with stone in sight approach takes over
    sighted = terms(program, *moved(state, 1, {(0, 3): "#"}))
    assert sighted.terms["explore"] == 0 and sighted.terms["approach"] == pytest.approx(0.01)


def test_seek_stone_sends_the_player_to_the_mountain_for_an_ore_out_of_sight():
    state = with_tables(start("iron_pickaxe"), (0, -1))  # iron is next (4 wood held), and none in sight
    state["inventory"] = {"wood": 4, "coal": 1, "wood_pickaxe": 1, "stone_pickaxe": 1}
    state["achievements"] = ["place_table", "make_wood_pickaxe", "make_stone_pickaxe", "place_furnace"]
    plain = RewardProgram(source("iron_pickaxe"))
    seeking = RewardProgram(with_constants(source("iron_pickaxe"), SEEK_STONE=True))
    toward_stone = moved(state, 1, {(0, 3): "#"})
    assert terms(plain, *toward_stone).terms["approach"] == 0  # off by default: explore as before
    assert terms(plain, *toward_stone).terms["explore"] == pytest.approx(0.01)
    assert terms(seeking, *toward_stone).terms["approach"] == pytest.approx(0.01)
    assert terms(seeking, *moved(state, -1, {(0, 3): "#"})).terms["approach"] == pytest.approx(-0.01)
    # iron in sight is the target itself; no stone in sight falls back to exploring
    assert terms(seeking, *moved(state, 1, {(0, 3): "i", (0, -3): "#"})).terms["approach"] == pytest.approx(0.01)
    assert terms(seeking, *moved(state, 1)).terms["explore"] == pytest.approx(0.01)


def test_vitals_pay_for_drinking_when_low_only():
    program = RewardProgram(source("stone_pickaxe"))
    prev = start("stone_pickaxe")
    for before, after, paid in ((2, 3, 0.03), (5, 6, 0.0), (3, 2, -0.03)):
        prev["vitals"] = {**prev["vitals"], "drink": before}
        now = copy.deepcopy(prev)
        now["vitals"]["drink"] = after
        assert terms(program, prev, now, "do").terms["vitals"] == pytest.approx(paid)
    prev["vitals"]["drink"] = 2  # thirsty: water becomes the approach target
    assert terms(program, *moved(prev, 1, {(0, 3): "~"})).terms["approach"] == pytest.approx(0.01)


def test_with_constants_overrides_and_names_what_is_missing():
    assert "LAVA_TERM = False  #" in with_constants(source(), LAVA_TERM=False)
    assert with_constants("A = 1\nB = 'x'\n", A=2.5, B="y") == "A = 2.5\nB = 'y'\n"
    with pytest.raises(ValueError, match="does not assign NOPE exactly once"):
        with_constants(source(), NOPE=1)


def test_vector_code_reward_matches_code_reward_on_single_envs_in_lockstep():
    n, max_turns = 3, 40
    # a generous time limit: on a loaded machine a 50 ms limit can time out one side only (a 0 reward there)
    venv = VectorCodeReward(CraftVectorEnv(n, task="stone_pickaxe", max_turns=max_turns), source("stone_pickaxe"),
                            action_names=RULES.actions, time_limit=10.0)
    envs = [CodeReward(CraftEnv(task="stone_pickaxe", image=False, max_turns=max_turns), source("stone_pickaxe"),
                       time_limit=10.0) for _ in range(n)]
    venv.reset(seed=50)
    infos = [env.reset(seed=50 + i)[1] for i, env in enumerate(envs)]
    oracles = [make_agent("oracle", env) for env in envs]
    for oracle, info in zip(oracles, infos, strict=True):
        oracle.reset({}, info)
    rng, resets, fired = np.random.default_rng(0), 0, 0.0
    for _ in range(130):
        resetting = venv._resets.copy()
        names = [oracles[i].act({}, infos[i]) if rng.random() < 0.7 or not infos[i]["actions"]
                 else infos[i]["actions"][rng.integers(len(infos[i]["actions"]))] for i in range(n)]
        _, reward, terminated, truncated, info = venv.step(np.array([ACTION[a] for a in names]))
        for i, env in enumerate(envs):
            if resetting[i]:  # next-step autoreset: no transition, no code reward
                infos[i] = env.reset()[1]
                oracles[i].reset({}, infos[i])
                resets += 1
                assert reward[i] == 0 and info["code_reward"]["dense"][i] == 0
                continue
            _, r, te, tr, infos[i] = env.step(names[i])
            assert "code_reward_error" not in infos[i] and "code_reward_error" not in info
            assert r == reward[i] and (te, tr) == (terminated[i], truncated[i])
            assert infos[i]["code_reward"]["terms"] == {k: v[i] for k, v in info["code_reward"]["terms"].items()}
            fired += abs(info["code_reward"]["dense"][i])
    assert resets >= n and fired > 0


def test_vector_code_reward_needs_state_dicts_and_next_step_autoreset():
    with pytest.raises(ValueError, match="same_step hides the final state"):
        VectorCodeReward(CraftVectorEnv(2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP), source())
    sync = gym.vector.SyncVectorEnv([lambda: gym.make("turngym/Craft-v0", image=False)])
    with pytest.raises(ValueError, match="wrap each single env with CodeReward"):
        VectorCodeReward(sync, source())


# --- the training analysis -------------------------------------------------------------------

def final(achievements: list[str], dead: bool = False, tile: str = ".", food: int = 5, drink: int = 5) -> dict:
    return {"dead": dead, "player": {"pos": [0, 0]}, "map": [tile], "legend": {".": "grass", "L": "lava"},
            "vitals": {"health": 0 if dead else 9, "food": food, "drink": drink}, "achievements": achievements}


PATH = ["collect_wood", "place_table", "make_wood_pickaxe"]


def test_death_causes_and_stall_points_by_hand():
    assert death_cause(final([])) is None
    assert death_cause(final([], dead=True, tile="L")) == "lava"
    assert death_cause(final([], dead=True, food=0)) == "hunger"
    assert death_cause(final([], dead=True, drink=0)) == "thirst"
    assert death_cause(final([], dead=True, food=0, drink=0)) == "hunger_and_thirst"
    assert stall_point(final(["collect_sapling", "collect_wood", "place_table"]), PATH) == "place_table"
    assert stall_point(final(["collect_sapling"]), PATH) == "none"
    assert stall_point(final(["collect_sapling"]), None) == "collect_sapling"


class Scripted(gym.vector.VectorEnv):
    """Two envs playing scripted steps: (terminated, success, terms) per step, final states given."""

    def __init__(self, script, finals):
        self.num_envs, self.script, self.finals, self.t = 2, script, finals, 0
        self.single_action_space = self.action_space = spaces.Discrete(2)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2), {}

    def step(self, actions):
        done, success, terms = self.script[self.t]
        self.t += 1
        info = {"success": np.array(success), "_success": np.array(done),
                "code_reward": {"terms": {k: np.array(v, float) for k, v in terms.items()}}}
        return np.zeros(2), np.zeros(2), np.array(done), np.zeros(2, bool), info


def test_episode_analysis_counts_first_episodes_only_and_summarizes():
    lava, stalled = final(["collect_wood"], dead=True, tile="L"), final(["collect_wood", "place_table"])
    script = [([False, False], [False, False], {"approach": [0.01, 0.0], "lava": [0.0, -0.05]}),
              ([True, False], [False, False], {"approach": [0.0, 0.01], "lava": [-1.0, 0.0]}),
              # env 0 was reset and plays on: its second episode is not the update's, so it is not counted
              ([True, True], [False, True], {"approach": [0.01, 0.01], "lava": [-1.0, 0.0]})]
    env = EpisodeAnalysis(Scripted(script, [lava, stalled]), lambda i: [lava, stalled][i], PATH)
    env.reset()
    for _ in script:
        env.step(np.zeros(2))
    counts = env.pop()
    assert counts == {"analysis_steps": 5, "analysis_episodes": 2, "deaths": 1, "death_lava": 1, "failures": 1,
                      "stall_collect_wood": 1, "term_approach_fired": 3, "term_approach_sum": pytest.approx(0.03),
                      "term_lava_fired": 2, "term_lava_sum": pytest.approx(-1.05)}
    assert env.pop() == {}
    summary = summarize([counts, counts])
    assert summary["episodes"] == 4 and summary["deaths_per_episode"] == 0.5
    assert summary["death_causes"] == {"lava": {"count": 2, "per_episode": 0.5}}
    assert summary["terms"]["approach"]["fired_per_step"] == pytest.approx(0.6)
    assert summary["stalls"] == {"collect_wood": {"count": 2, "share": 1.0}}


def test_symbolic_training_with_reward_code_logs_the_analysis(tmp_path):
    rows = train(NeuralTrainConfig(env_id="turngym/Craft-v0", task="stone_pickaxe", backend="symbolic", groups=2,
                                   group_size=2, steps=160, env_kwargs={"max_turns": 40}, out=str(tmp_path),
                                   reward_code=source("stone_pickaxe"), tensorboard=False), progress=False)
    assert all(row["analysis_episodes"] == 4 for row in rows)
    assert sum(row.get("term_approach_fired", 0) for row in rows) > 0
    assert sum(v for row in rows for k, v in row.items() if k.startswith("stall_")) == sum(r["failures"] for r in rows)
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert analysis["updates"] == len(rows) and analysis["episodes"] == 4 * len(rows)
    assert set(analysis["terms"]) == {"approach", "explore", "collect", "craft", "vitals", "lava"}


def test_failing_reward_code_is_counted_not_trained_on_silently(tmp_path):
    broken = "def reward(prev_state, action, state, info):\n    if state['turn'] % 2:\n        return state['nope']\n" \
             "    return 0.0\n"
    rows = train(NeuralTrainConfig(env_id="turngym/Craft-v0", task="stone_pickaxe", backend="symbolic", groups=2,
                                   group_size=2, steps=80, env_kwargs={"max_turns": 20}, out=str(tmp_path),
                                   reward_code=broken, tensorboard=False), progress=False)
    # every other step of every episode fails (the step that ends one included)
    assert sum(r["analysis_code_errors"] for r in rows) == sum(r["analysis_steps"] for r in rows) // 2
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert analysis["code_errors"] > 0 and analysis["code_errors_per_step"] == pytest.approx(0.5)


def test_cli_reward_set_trains_a_variant_of_the_program(tmp_path):
    from typer.testing import CliRunner

    from turngym.apps.cli import app

    out = tmp_path / "run"
    args = ["train", "turngym/Craft-v0", "--task", "stone_pickaxe", "--backend", "symbolic", "--steps", "80",
            "--groups", "2", "--group-size", "2", "-k", "max_turns=20", "--eval", "0", "--no-tensorboard",
            "--reward-code", str(REWARDS / "collect_diamond.py"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--reward-set", "LAVA_TERM=false", "--reward-set", "SPARE=0"])
    assert result.exit_code == 0, result.output
    code = json.loads((out / "config.json").read_text())["reward_code"]
    assert "LAVA_TERM = False  #" in code and "SPARE = 0  #" in code  # the run records the variant it trained
    result = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "other"), "--reward-set", "NOPE=1"])
    assert result.exit_code != 0 and "does not assign NOPE" in result.output


def test_the_report_shows_a_training_analysis_table(tmp_path):
    from turngym.apps.report.runs import Run
    from turngym.apps.report.tables import analysis_table

    run = Run(tmp_path, "run", {}, {"rows": []}, [], {})
    assert analysis_table([run]) is None
    counts = {"analysis_episodes": 4, "analysis_steps": 40, "deaths": 1, "death_lava": 1, "failures": 3,
              "stall_place_table": 2, "stall_none": 1, "term_lava_fired": 4, "term_lava_sum": -1.2,
              "analysis_code_errors": 2}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "analysis.json").write_text(json.dumps(summarize([counts])))
    table = analysis_table([run])
    assert [row.keys for row in table.rows] == [["run/train"]]
    assert table.rows[0].cells == ["4", "5.00%", "0.250", "0.250", "10.0%", "place_table 67%, none 33%"]
    assert "lava deaths / episode" in table.markdown()[0] and "reward-code errors / step" in table.markdown()[0]
