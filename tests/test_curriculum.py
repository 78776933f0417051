"""eva's curriculum (trainers/curriculum.py): metrics, sampling weights, evolution and the mix on
hand-made returns; then in the trainer: per-group task ids, exact resume, the CLI and the report."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from turngym.apps.cli import app
from turngym.apps.report.plots import _mix_figure
from turngym.trainers.collect import collect_groups
from turngym.trainers.config import NeuralTrainConfig
from turngym.trainers.curriculum import (
    Curriculum,
    all_equal_share,
    group_signals,
    informativeness,
    modifiers,
    normalized,
)
from turngym.trainers.ppo import build, train
from turngym.trainers.runlog import read_metrics
from turngym.trajectory import Trajectory, Turn

CRAFT, HOPVQA = "turngym/Craft-v0", "turngym/HopVQA-v0"
TIMING = ("collect_s", "update_s", "steps_per_s")


def counter_fresh():
    """Fresh draws `fresh-0`, `fresh-1`, ... (a stand-in for a family's training split)."""
    count = iter(range(10**6))
    return lambda rng: f"fresh-{next(count)}"


def harder(task_id: str, rng: np.random.Generator) -> str | None:
    """A fake family's evolution: add a `+hard=<k>` modifier, at most two per task (then None)."""
    if len(modifiers(task_id)) >= 2:
        return None
    return f"{task_id}+hard={int(rng.integers(10**6))}"


def filled(curriculum: Curriculum, returns: dict[str, list[float]]) -> Curriculum:
    curriculum.update(list(returns), list(returns.values()))
    return curriculum


@pytest.mark.parametrize(("metric", "expected"), [
    ("max_min", [1.0, 0.0, 0.0]), ("max_mean", [0.5, 0.0, 0.0]), ("variance", [0.125, 0.0, 0.0]),
    ("learnability", [0.25, 0.16, 0.0]), ("uniform", [1.0, 1.0, 1.0])])
def test_informativeness_of_hand_made_groups(metric, expected):
    # a mixed group; an all-equal group (graded: learnability still sees p = 0.2); returns above 1 (p clipped)
    groups = [[0.0, 0.5, 1.0, 0.5], [0.2, 0.2, 0.2], [1.5, 1.5]]
    assert [informativeness(metric, g) for g in groups] == pytest.approx(expected)


def test_equal_returns_weigh_nothing_and_a_zero_sample_fraction_plays_fresh_tasks():
    # max - mean of [0.1] * 3 rounds to -1.4e-17: a negative weight would make sampling raise
    assert informativeness("max_mean", [0.1] * 3) == 0.0
    curriculum = filled(Curriculum(counter_fresh(), harder, metric="max_mean"), {"a": [0.1] * 3, "b": [0.0, 1.0]})
    assert curriculum.weights() == pytest.approx([0.0, 1.0]) and len(curriculum.propose(4)) == 4
    curriculum = filled(Curriculum(counter_fresh(), harder, sample_frac=0.0), {"a": [0.0, 1.0]})
    for _ in range(2):
        assert len(curriculum.propose(4)) == 4 and {p.source for p in curriculum.proposed} == {"fresh"}


def test_sampling_weights_follow_normalized_informativeness():
    curriculum = filled(Curriculum(counter_fresh(), None, sample_frac=0.25, new_frac=0.25),
                        {"a": [0.0, 0.1], "b": [0.0, 0.3], "c": [1.0, 1.0], "d": [0.2, 0.8]})
    assert curriculum.weights() == pytest.approx([0.1, 0.3, 0.0, 0.6])
    assert normalized(np.zeros(4)) == pytest.approx([0.25] * 4)  # no signal anywhere: uniform
    # 4 groups: one parent (ceil(0.25 * 4)), replayed (no evolution), beside 3 fresh draws
    picks = Counter()
    for _ in range(4000):
        tasks = curriculum.propose(4)
        assert [p.source for p in curriculum.proposed] == ["replayed", "fresh", "fresh", "fresh"]
        picks[tasks[0]] += 1
    assert picks["c"] == 0  # an all-equal group never comes back
    assert [picks[t] / 4000 for t in "abd"] == pytest.approx([0.1, 0.3, 0.6], abs=0.03)


def test_evolution_makes_valid_children_and_the_mix_is_eva_s():
    curriculum = filled(Curriculum(counter_fresh(), harder, children=4, seed=3),
                        {"a": [0.0, 1.0], "b+hard=1+hard=2": [0.0, 1.0], "c": [0.0, 0.0]})
    tasks = curriculum.propose(8)
    # 2 parents (ceil(0.25 * 8)) of the two informative tasks; b cannot evolve further and is replayed;
    # round(0.8 * 8) = 6 curriculum groups: a's 4 children, then b, then 3 fresh draws fill the 8
    sources = [p.source for p in curriculum.proposed]
    assert Counter(sources) == {"evolved": 4, "replayed": 1, "fresh": 3}
    evolved = [p for p in curriculum.proposed if p.source == "evolved"]
    assert all(p.task_id.startswith("a+hard=") and modifiers(p.task_id) == ["hard"] and p.depth == 1
               for p in evolved)
    assert len(set(tasks)) == 8  # no task twice in one update
    stats = curriculum.update(tasks, [[0.0, 1.0]] * 8)
    assert (stats["mix/evolved"], stats["mix/replayed"], stats["mix/fresh"]) == (0.5, 0.125, 0.375)
    assert stats["mod/hard"] == 0.625 and stats["curriculum_depth"] == pytest.approx(4 / 8)
    assert stats["info/max_min"] == 1.0 and stats["curriculum_buffer"] == 3 + 8 - 1  # b measured again


def test_children_come_round_robin_when_the_slots_are_few():
    curriculum = filled(Curriculum(counter_fresh(), harder, children=4, new_frac=0.5),
                        {"a": [0.0, 1.0], "b": [0.0, 1.0]})
    curriculum.propose(4)  # 1 parent (ceil(0.25 * 4)): 2 of its 4 children, 2 fresh draws
    assert [p.source for p in curriculum.proposed] == ["evolved", "evolved", "fresh", "fresh"]
    curriculum.sample_frac = 0.5  # 2 parents, 2 slots: one child of each
    curriculum.propose(4)
    assert sorted(p.task_id.partition("+")[0] for p in curriculum.proposed[:2]) == ["a", "b"]


def test_the_buffer_keeps_the_newest_measurements():
    curriculum = filled(Curriculum(counter_fresh(), buffer_size=3), {"a": [0, 1], "b": [0, 0], "c": [0, 0.5]})
    curriculum.update(["a", "d"], [[1, 1], [0, 0.2]])  # a measured again (now 0), d new: b, the oldest, goes
    assert list(curriculum.buffer) == ["c", "a", "d"]
    assert [info for info, _ in curriculum.buffer.values()] == pytest.approx([0.5, 0.0, 0.2])


def test_state_dict_resumes_the_same_proposals():
    returns = {"a": [0.0, 1.0], "b": [0.2, 0.4]}
    first = filled(Curriculum(counter_fresh(), harder, seed=5), returns)
    copy = Curriculum(counter_fresh(), harder, seed=99)
    copy.load_state_dict(json.loads(json.dumps(first.state_dict())))  # plain data, JSON-safe
    assert copy.propose(8) == first.propose(8)


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="unknown curriculum metric 'max': use one of max_min"):
        Curriculum(counter_fresh(), metric="max")
    with pytest.raises(ValueError, match=r"new_frac must be in \[0, 1\]"):
        Curriculum(counter_fresh(), new_frac=1.5)
    with pytest.raises(ValueError, match="unknown curriculum_signal 'reward': use return, score, progress"):
        NeuralTrainConfig(env_id=CRAFT, curriculum="eva", curriculum_signal="reward").check()
    with pytest.raises(ValueError, match="unknown curriculum 'plr': use none or eva"):
        NeuralTrainConfig(env_id=CRAFT, curriculum="plr").check()


def test_signals_and_zero_advantage_groups():
    def traj(rewards, score, parts):
        return Trajectory(env_id=CRAFT, task_id="t", seed=0, turns=[Turn("", "do", r) for r in rewards],
                          score=score, score_parts=parts)

    trajs = [traj([0.0, 0.5], 1.0, {"progress": 0.5}), traj([1.0], 1.0, {"progress": 1.0}),
             traj([0.25], 0.0, {"progress": 0.25}), traj([0.25], 0.0, {"progress": 0.0})]
    groups = [0, 0, 1, 1]
    assert [g.tolist() for g in group_signals(trajs, groups, "return")] == [[0.5, 1.0], [0.25, 0.25]]
    assert [g.tolist() for g in group_signals(trajs, groups, "score")] == [[1.0, 1.0], [0.0, 0.0]]
    assert [g.tolist() for g in group_signals(trajs, groups, "progress")] == [[0.5, 1.0], [0.25, 0.0]]
    assert all_equal_share(group_signals(trajs, groups, "return")) == 0.5
    assert all_equal_share([[1, 1, 1], [0, 1, 0], [0.5, 0.5]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no progress score part: use signal return"):
        group_signals([traj([0.0], 0.0, {})], [0], "progress")


def test_each_group_plays_its_task_on_the_text_backend():
    config = NeuralTrainConfig(env_id=HOPVQA, task="train", groups=2, group_size=2, env_kwargs={"max_turns": 2})
    _, actor, backend = build(config)
    try:
        tasks = ["hop-1000007", "hop-1000042"]
        col = collect_groups(actor, [5, 6], 2, HOPVQA, torch.Generator().manual_seed(0), task_ids=tasks)
        assert backend == "text" and [t.task_id for t in col.trajectories] == [tasks[0]] * 2 + [tasks[1]] * 2
        col = collect_groups(actor, [5, 6], 2, HOPVQA, torch.Generator().manual_seed(0))  # the split again
        assert not {t.task_id for t in col.trajectories} & set(tasks)
    finally:
        actor.close()


def test_resume_with_the_curriculum_continues_exactly(tmp_path, monkeypatch):
    """Craft's evolved tasks (CraftEnv.evolve_task) on the symbolic backend; a run cut after its
    first update resumes to the uninterrupted run's rows, curriculum buffer included."""
    config = dict(env_id=CRAFT, task="wood_pickaxe", algo="grpo", groups=4, group_size=4, curriculum="eva",
                  env_kwargs={"max_turns": 40, "reward": "progress"}, tensorboard=False)
    whole = train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "a"), **config), progress=False)
    assert len(whole) >= 2 and whole[0]["mix/fresh"] == 1.0  # an empty buffer: fresh draws only
    assert all(r["mix/evolved"] > 0 for r in whole[1:])
    assert any(key.startswith("mod/") for r in whole for key in r)  # +start=, +spawn=, +turns= children
    import turngym.trainers.ppo as ppo

    class Stop(Exception):
        pass

    real = ppo.save_checkpoint

    def save_then_stop(path, state):
        real(path, state)
        raise Stop

    monkeypatch.setattr(ppo, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "b"), **config), progress=False)
    monkeypatch.setattr(ppo, "save_checkpoint", real)
    resumed = train(NeuralTrainConfig(steps=1200, out=str(tmp_path / "b"), resume=True, **config), progress=False)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert strip(resumed) == strip(whole)


def test_cli_trains_with_the_curriculum_and_the_report_plots_its_mix(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", CRAFT, "--task", "wood_pickaxe", "--steps", "600", "--groups", "4",
                                      "--group-size", "2", "-k", "max_turns=30", "--curriculum", "eva",
                                      "--curriculum-metric", "learnability", "--no-tensorboard", "--eval", "0",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["curriculum"], saved["curriculum_metric"], saved["curriculum_signal"]) == ("eva", "learnability",
                                                                                            "return")
    rows = read_metrics(out)
    assert all({"zero_adv_groups", "mix/fresh", "info/learnability"} <= set(r) for r in rows)
    fig = _mix_figure({"run": rows})
    assert [ax.get_title() for ax in fig.axes] == ["run: task sources", "run: task modifiers, zero-advantage groups"]
