"""`turngym eval`: suites, per-episode files, resume, crash isolation, K workers and Ray."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

import turngym
from turngym.apps.cli import app
from turngym.apps.harness import evaluate, pending, run_eval, run_metrics
from turngym.results import aggregate, bootstrap_ci, stats
from turngym.suites import list_suites, load_suite, parse_suite

TINY = {"name": "tiny", "version": 1, "seed": 3, "entries": [
    {"name": "craft", "env_id": "turngym/Craft-v0", "kwargs": {"task": "wood_pickaxe", "max_turns": 25},
     "indices": [4, 0, 9]},
    {"name": "hop", "env_id": "turngym/HopVQA-v0", "kwargs": {"size": 256}, "indices": [1, 2, 3, 5]}]}
AGENTS = ["random", "oracle", "heuristic"]

# A plugin family whose tasks misbehave on purpose, installed through the `turngym.envs` entry
# points so that worker processes (spawned, or Ray's) load it as they load any plugin.
FLAKY = '''
import multiprocessing, os
from turngym.agents import Agent, register_agent
from turngym.envs.base import InvalidAction, Outcome, TurnEnv
from turngym.registry import register

class FlakyEnv(TurnEnv):
    """Say `go` three times. Task env-error raises on the second go; task die kills the process
    playing it (in a worker; in the main process it raises instead)."""
    splits = {"train": ["ok-0"], "dev": ["ok-0"],
              "test": ["ok-0", "env-error", "agent-error", "die", "ok-4", "ok-5"]}

    def _load_task(self, task_id):
        self.kind, self.count, self.instruction = task_id or "ok-0", 0, "Say go three times."
        return self.kind

    def _apply(self, action):
        if action != "go":
            raise InvalidAction("say go")
        self.count += 1
        if self.count == 2 and self.kind == "env-error":
            raise RuntimeError("the env broke")
        if self.count == 2 and self.kind == "die":
            if multiprocessing.parent_process() is not None:
                os._exit(3)
            raise RuntimeError("would have died")

    def _terminated(self):
        return self.count >= 3

    def _outcome(self):
        return Outcome(self.count >= 3, float(self.count >= 3))

    def _text(self):
        return f"{self.instruction} Said {self.count} times."

    def _actions(self):
        return ["go"]

    def _state(self):
        return {"count": self.count}

@register_agent("goer", FlakyEnv)
class Goer(Agent):
    def __init__(self, env=None, argument=""):
        pass

    def act(self, obs, info):
        if info["task_id"] == "agent-error" and info["turn"] == 1:
            raise ValueError("the agent broke")
        return "go"

register("testing/Flaky-v0", FlakyEnv, "misbehaves on purpose")
'''


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    """Install the Flaky plugin for this process and the workers it starts."""
    site = tmp_path / "site"
    (site / "flaky_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "flaky_plugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: flaky-plugin\n"
                                                                  "Version: 1.0\n")
    (site / "flaky_plugin-1.0.dist-info" / "entry_points.txt").write_text("[turngym.envs]\nflaky = flaky_plugin\n")
    (site / "flaky_plugin.py").write_text(textwrap.dedent(FLAKY))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    turngym.registry.load_plugins()
    suite = parse_suite({"name": "flaky", "entries": [{"name": "flaky", "env_id": "testing/Flaky-v0",
                                                       "indices": [0, 1, 2, 3, 4, 5]}]})
    return suite


def episode(run_dir: Path, agent: str, entry: str, index: int) -> dict:
    record = json.loads((run_dir / "episodes" / agent / entry / f"{index:04d}.jsonl").read_text())
    record["meta"].pop("seconds")  # the one thing that differs between runs
    return record


def same_episodes(a: Path, b: Path) -> int:
    files = sorted(p.relative_to(a) for p in (a / "episodes").rglob("*.jsonl"))
    assert files == sorted(p.relative_to(b) for p in (b / "episodes").rglob("*.jsonl"))
    for rel in files:
        x, y = (json.loads((root / rel).read_text()) for root in (a, b))
        x["meta"].pop("seconds"), y["meta"].pop("seconds")
        assert x == y, rel
    images = sorted(p.relative_to(a) for p in (a / "episodes").rglob("*.png"))
    assert images == sorted(p.relative_to(b) for p in (b / "episodes").rglob("*.png"))
    return len(files)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """The tiny suite played in this process: the reference for the other runs."""
    out = tmp_path_factory.mktemp("serial")
    run_eval(parse_suite(TINY), AGENTS, out)
    return out


def test_the_run_folder_has_every_episode_and_the_results(serial):
    run = json.loads((serial / "run.json").read_text())
    assert run["agents"] == AGENTS and [e["name"] for e in run["entries"]] == ["craft", "hop"]
    results = json.loads((serial / "results.json").read_text())
    assert results["skipped"] == []
    record = episode(serial, "oracle", "craft", 9)
    assert record["meta"] | {"env_kwargs": None} == {
        "agent": "oracle", "entry": "craft", "index": 9, "split": "test", "env_kwargs": None,
        "task_type": "wood_pickaxe", "error": None}
    assert record["seed"] == 3 + 9 and record["success"]
    # the task is test task 9 of the pinned configuration, from the suite's seed
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe", max_turns=25)
    _, info = env.reset(seed=12, options={"split": "test", "index": 9})
    assert record["task_id"] == info["task_id"]
    image = serial / "episodes" / "oracle" / "craft" / record["turns"][0]["image"]
    assert image.exists() and record["turns"][0]["image"].startswith("images/")
    hop = episode(serial, "heuristic", "hop", 5)
    assert hop["meta"]["task_type"].endswith("-hop")
    rows = {(r["agent"], r["entry"], r["task_type"]): r for r in results["rows"]}
    assert rows["oracle", "craft", ""]["success_rate"] == 1.0 and rows["oracle", "craft", ""]["episodes"] == 3
    assert rows["random", "hop", ""]["episodes"] == 4
    types = [t for (a, e, t) in rows if a == "random" and e == "hop" and t]
    assert sum(rows["random", "hop", t]["episodes"] for t in types) == 4
    overall = {o["agent"]: o for o in results["overall"]}
    assert overall["oracle"]["mean_score"] == pytest.approx(1.0) and overall["heuristic"]["entries"] == 2


def test_two_workers_give_the_same_episodes_and_results(serial, tmp_path):
    run_eval(parse_suite(TINY), AGENTS, tmp_path, workers=2)
    assert same_episodes(serial, tmp_path) == 3 * 3 + 4 * 3
    assert json.loads((serial / "results.json").read_text()) == json.loads((tmp_path / "results.json").read_text())


def test_an_interrupted_run_resumes_where_it_stopped(serial, tmp_path):
    played = []

    def stop_after_five(job, record):
        played.append(job)
        if len(played) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_eval(parse_suite(TINY), AGENTS, tmp_path, on_episode=stop_after_five)
    assert len(list((tmp_path / "episodes").rglob("*.jsonl"))) == 5
    assert not (tmp_path / "results.json").exists()
    assert pending(parse_suite(TINY), AGENTS, tmp_path) == 21 - 5
    again = []
    run_eval(parse_suite(TINY), AGENTS, tmp_path, on_episode=lambda job, record: again.append(job))
    key = lambda job: (job.agent, job.entry.name, job.index)  # noqa: E731
    assert len(again) == 16 and not {key(j) for j in again} & {key(j) for j in played}
    assert same_episodes(serial, tmp_path) == 21
    # once everything is there, a rerun plays nothing and writes the same results
    run_eval(parse_suite(TINY), AGENTS, tmp_path, on_episode=lambda job, record: pytest.fail("replayed"))
    assert json.loads((serial / "results.json").read_text()) == json.loads((tmp_path / "results.json").read_text())


def test_a_run_folder_of_another_suite_is_refused(serial):
    other = {**TINY, "entries": [{**TINY["entries"][0], "indices": [1]}]}
    with pytest.raises(ValueError, match="another suite or other entries"):
        run_eval(parse_suite(other), ["random"], serial)


def test_a_rerun_resumes_only_with_the_options_its_agents_played_with(tmp_path):
    suite = parse_suite({"name": "one", "entries": [{**TINY["entries"][1], "indices": [1]}]})
    run_eval(suite, ["random"], tmp_path, agent_options={"temperature": 1.0})
    run_eval(suite, ["random"], tmp_path, agent_options={"temperature": 1.0})  # the same: resumes
    with pytest.raises(ValueError, match=r"random's episodes played with agent options \{'temperature': 1.0\}"):
        run_eval(suite, ["random"], tmp_path, agent_options={"temperature": 0.5})
    run_eval(suite, ["oracle"], tmp_path, agent_options={"temperature": 0.5})  # another agent may add its own
    assert json.loads((tmp_path / "run.json").read_text())["agent_options"] == {
        "random": {"temperature": 1.0}, "oracle": {"temperature": 0.5}}
    with pytest.raises(ValueError, match="would share the folder episodes/neural_a_b"):  # two specs, one slug
        run_eval(suite, ["neural:a/b", "neural:a_b"], tmp_path / "two")
    with pytest.raises(ValueError, match="must be a plain folder name"):
        parse_suite({"name": "nested", "entries": [{**TINY["entries"][1], "name": "hop/a"}]})


def test_errors_end_only_their_episode(flaky, tmp_path):
    results = run_eval(flaky, ["goer"], tmp_path)
    errors = {i: episode(tmp_path, "goer", "flaky", i)["meta"]["error"] for i in range(6)}
    assert errors[0] is None and errors[4] is None and errors[5] is None
    assert errors[1]["type"] == "RuntimeError" and "the env broke" in errors[1]["message"]
    assert "Traceback" in errors[1]["traceback"] and errors[1]["turn"] == 1
    assert errors[2]["type"] == "ValueError" and errors[2]["turn"] == 1
    broken = episode(tmp_path, "goer", "flaky", 1)
    assert len(broken["turns"]) == 1 and not broken["success"] and broken["score"] == 0
    assert episode(tmp_path, "goer", "flaky", 4)["success"]  # the env was rebuilt after the errors
    row = results["rows"][0]
    assert row["errors"] == 3 and row["episodes"] == 6 and row["success_rate"] == pytest.approx(0.5)
    # errors are finished episodes; --retry-errors replays them (and they fail the same way)
    assert pending(flaky, ["goer"], tmp_path) == 0 and pending(flaky, ["goer"], tmp_path, retry_errors=True) == 3


def test_an_agent_that_a_family_lacks_is_skipped_there(flaky, tmp_path):
    suite = parse_suite({"name": "mixed", "entries": [
        {"name": "flaky", "env_id": "testing/Flaky-v0", "indices": [0]},
        {"name": "craft", "env_id": "turngym/Craft-v0", "kwargs": {"task": "collect_wood", "image": False},
         "indices": [0]}]})
    results = run_eval(suite, ["goer", "oracle"], tmp_path)
    assert results["skipped"] == [{"agent": "goer", "entry": "craft"}, {"agent": "oracle", "entry": "flaky"}]
    assert not (tmp_path / "episodes" / "goer" / "craft").exists()
    assert episode(tmp_path, "goer", "flaky", 0)["success"] and episode(tmp_path, "oracle", "craft", 0)["success"]


def test_a_worker_that_dies_takes_only_its_own_episode(flaky, tmp_path):
    results = run_eval(flaky, ["goer"], tmp_path, workers=2)
    died = episode(tmp_path, "goer", "flaky", 3)["meta"]["error"]
    assert died["type"] == "WorkerCrashed" and "died" in died["message"]
    assert all(episode(tmp_path, "goer", "flaky", i)["success"] for i in (0, 4, 5))
    assert results["rows"][0]["errors"] == 3


def test_ray_on_a_local_instance_gives_the_same_results(serial, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run_eval(parse_suite(TINY), AGENTS, tmp_path, ray_address="auto")
    finally:
        ray.shutdown()
    assert same_episodes(serial, tmp_path) == 21
    assert json.loads((serial / "results.json").read_text()) == json.loads((tmp_path / "results.json").read_text())


@pytest.mark.parametrize("name", ["core-v0", "core-v1"])
def test_the_core_suite_is_frozen_and_playable(name):
    assert name in list_suites()
    suite = load_suite(name)
    assert suite.version == 1 and len({e.env_id for e in suite.entries}) == 5
    for entry in suite.entries:
        assert entry.split == "test" and len(set(entry.indices)) == len(entry.indices)
        spec = gym.spec(entry.env_id)
        assert entry.env_id in turngym.list_envs() and spec is not None
        if entry.env_id == "turngym/WebShopBrowser-v0":
            continue  # same tasks as WebShop-v0; making it launches Chromium (the browser tests do)
        with gym.make(entry.env_id, **entry.kwargs) as env:
            assert max(entry.indices) < len(env.unwrapped.splits["test"])


def test_core_v1_is_core_v0_with_hopvqa_v1():
    """Only the HopVQA entry moves to v1, so every other family's core-v0 numbers carry over."""
    old, new = load_suite("core-v0").entries, load_suite("core-v1").entries
    assert [e.name for e in old] == [e.name for e in new]
    for before, after in zip(old, new, strict=True):
        if before.env_id == "turngym/HopVQA-v0":
            assert after.env_id == "turngym/HopVQA-v1"
            assert (after.kwargs, after.indices) == (before.kwargs, before.indices)
        else:
            assert after == before


def test_bootstrap_interval_and_standard_error():
    scores = np.array([0.0, 1.0, 1.0, 0.5])
    lo, hi = bootstrap_ci(scores, "x")
    assert 0.0 <= lo < scores.mean() < hi <= 1.0 and bootstrap_ci(scores, "x") == [lo, hi]
    records = [{"score": s, "success": s == 1.0, "turns": [{"info": {"valid": k > 0}}] * 2, "meta": {"error": None}}
               for k, s in enumerate(scores)]
    row = stats(records, "x")
    assert row["score_se"] == pytest.approx(np.std(scores, ddof=1) / 2)
    assert row["success_rate"] == 0.5 and row["invalid_rate"] == pytest.approx(2 / 8) and row["mean_turns"] == 2


def test_aggregate_reads_only_the_folder(serial):
    saved = json.loads((serial / "results.json").read_text())
    assert aggregate(serial, run_metrics) | {"skipped": []} == saved | {"skipped": []}


def test_eval_from_the_command_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "turngym/Craft-v0", "-a", "random", "-a", "oracle", "-n", "2", "-k",
                                 "max_turns=20", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "oracle" in result.output and "turngym report" in result.output
    assert len(list((tmp_path / "episodes").rglob("*.jsonl"))) == 4
    rerun = runner.invoke(app, ["eval", "turngym/Craft-v0", "-a", "random", "-a", "oracle", "-n", "2", "-k",
                                "max_turns=20", "--out", str(tmp_path)])
    assert rerun.exit_code == 0 and "0 episodes to play" not in rerun.output  # the bar is transient
    for args, message in [(["eval", "-a", "random"], "ENV_ID or --suite"),
                          (["eval", "turngym/Craft-v0"], "at least one --agent"),
                          (["eval", "--suite", "nope-v9", "-a", "random"], "unknown suite"),
                          (["eval", "turngym/Nope-v0", "-a", "random"], "unknown env"),
                          (["eval", "turngym/Craft-v0", "-a", "random", "--split", "bogus"], "no split")]:
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)


def test_eval_a_suite_with_the_first_episodes_of_each_entry(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--suite", "core-v0", "-a", "heuristic", "-n", "1", "--out",
                                      str(tmp_path), "-j", "2"])
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output
    played = sorted(p.parent.name for p in (tmp_path / "episodes").rglob("*.jsonl"))
    assert played == ["craft-iron_pickaxe", "craft-stone_pickaxe", "craft-wood_pickaxe", "hopvqa", "longdoc", "webshop",
                      "webshop-browser"]



def test_suite_entries_may_give_a_count_and_their_own_agents(tmp_path):
    suite = parse_suite({"name": "mini", "entries": [
        {"name": "wood", "env_id": "turngym/Craft-v0", "kwargs": {"task": "collect_wood", "image": False},
         "first": 2, "agents": ["oracle"]},
        {"name": "shop", "env_id": "turngym/WebShop-v0", "indices": [3]}]})
    assert suite.entries[0].indices == (0, 1) and suite.entries[0].agents == ("oracle",)
    results = run_eval(suite, ["random", "oracle", "heuristic"], tmp_path)
    played = {(r["agent"], r["entry"]) for r in results["rows"] if not r["task_type"]}
    assert played == {("oracle", "wood"), ("random", "shop"), ("oracle", "shop"), ("heuristic", "shop")}
    assert results["skipped"] == []  # an entry's own agent list is a choice, not a skip
    with pytest.raises(ValueError, match="indices"):
        parse_suite({"name": "bad", "entries": [{"name": "x", "env_id": "turngym/Craft-v0", "first": 2,
                                                 "indices": [0]}]})
    with pytest.raises(ValueError, match="no agent 'genius'"):
        run_eval(suite, ["genius"], tmp_path / "other")


def test_the_demo_suite_names_agents_its_envs_have():
    from turngym.agents.base import available_agents
    from turngym.registry import env_class

    suite = load_suite("demo-v4")
    assert "demo-v4" in list_suites() and len({e.name for e in suite.entries}) == len(suite.entries)
    for entry in suite.entries:
        offered = available_agents(env_class(entry.env_id))
        assert entry.agents and all(agent.partition(":")[0] in offered for agent in entry.agents), entry.name


def test_a_family_adds_its_run_level_metrics(tmp_path):
    """LongDocVQA's generalized F1 is a measure of the set, not a mean of episodes: the results carry
    it beside the score parts, as the env class computes it."""
    from turngym.envs.longdoc.scoring import generalized_f1

    results = evaluate("turngym/LongDocVQA-v0", ["heuristic"], 6, out=tmp_path, env_kwargs={"obs_mode": "text"})
    row = next(r for r in results["rows"] if not r["task_type"])
    parts = [json.loads(p.read_text())["score_parts"] for p in sorted(tmp_path.glob("episodes/*/*/*.jsonl"))]
    answers = [{"score": p["answer"], "answer_format": p["answer_format"], "pred": p["prediction"] or ""}
               for p in parts]
    assert row["metrics"] == {"accuracy": pytest.approx(row["parts"]["answer"]), "f1": generalized_f1(answers)}


def test_pool_workers_share_the_cores_unless_the_user_chose(monkeypatch):
    """A worker's torch/BLAS threads are its share of the cores (one thread per core per worker
    oversubscribes them); a thread count the user set is kept."""
    from turngym.apps.harness import share_cores

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    share_cores(3)
    assert (os.environ["OMP_NUM_THREADS"], os.environ["OPENBLAS_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]) == \
        ("3", "3", "4")
