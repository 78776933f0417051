"""The `turngym` CLI: list, play, run, demo; and the custom-family guide end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT
from PIL import Image
from typer.testing import CliRunner

from turngym.apps.cli import app, parse_kwargs
from turngym.trainers.runlog import read_metrics

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def test_list_shows_ids_and_descriptions():
    code, out = invoke("list")
    assert code == 0 and "turngym/Craft-v0" in out and "Minecraft-style" in out


def test_run_prints_a_table_and_saves_results(tmp_path):
    code, out = invoke("run", "turngym/Craft-v0", "-a", "random", "-a", "oracle", "-n", "3",
                       "-k", "task=collect_wood", "--out", str(tmp_path))
    assert code == 0, out
    assert "oracle" in out and "100%" in out and "turns" in out
    results = json.loads((tmp_path / "results.json").read_text())  # the eval harness's run folder and schema
    rows = [r for r in results["rows"] if not r["task_type"]]
    assert [r["agent"] for r in rows] == ["random", "oracle"] and rows[1]["success_rate"] == 1.0
    assert rows[1]["parts"]["collect_wood"] == 1.0  # the family's own columns, from score_parts
    assert len(list((tmp_path / "episodes" / "oracle").rglob("*.jsonl"))) == 3
    assert any((tmp_path / "episodes" / "oracle").rglob("images/*.png"))
    code, out = invoke("report", str(tmp_path))  # a `run --out` folder is a run folder the report opens
    assert code == 0, out
    assert (tmp_path / "report" / "index.html").is_file()


def test_run_without_out_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = invoke("run", "turngym/Craft-v0", "-a", "oracle", "-n", "2", "-k", "task=collect_wood")
    assert code == 0 and "oracle" in out, out
    assert not any(tmp_path.iterdir())


def test_run_fails_with_clear_messages():
    code, out = invoke("run", "turngym/Nope-v0", "-a", "random")
    assert code != 0 and "turngym list" in out
    code, out = invoke("run", "turngym/Craft-v0", "-a", "genius", "-n", "1")
    assert code != 0 and "no agent 'genius'" in out
    code, out = invoke("run", "turngym/Craft-v0", "-a", "random", "-k", "task=fly")
    assert code != 0 and "unknown Craft task" in out
    code, out = invoke("run", "turngym/Craft-v0", "-a", "random", "-n", "101")
    assert code != 0 and "has 100 tasks" in out


def test_play_in_the_terminal(tmp_path):
    code, out = invoke("play", "turngym/Craft-v0", "--seed", "1", "--task", "wood_pickaxe",
                       "--images", str(tmp_path), input="jump\n0\nquit\n")
    assert code == 0, out
    assert "Task: Make a wood pickaxe." in out and "invalid: unknown action 'jump'" in out
    assert "[0] move north" in out and "bye" in out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["turn_0000.png", "turn_0001.png", "turn_0002.png"]
    code, out = invoke("play", "guessing/GuessNumber-v0", "--task", "42", input="guess 50\nguess 42\n")
    assert code == 0 and "Last hint: lower" in out and "success=True" in out


def test_an_earlier_demo_is_set_aside_not_mixed_in(tmp_path):
    from turngym.apps.demo import SUITE, set_aside

    out = tmp_path / "demo"
    assert set_aside(out) is None  # nothing there yet
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"suite": {"name": SUITE}}))
    assert set_aside(out) is None and out.exists()  # this demo's own run: resumed in place
    for expected in ("demo-demo-v3", "demo-demo-v3-2"):
        out.mkdir(exist_ok=True)
        (out / "run.json").write_text(json.dumps({"suite": {"name": "demo-v3"}}))
        assert set_aside(out) == tmp_path / expected and not out.exists()
        assert json.loads((tmp_path / expected / "run.json").read_text())["suite"]["name"] == "demo-v3"


def test_demo_writes_a_report(tmp_path):
    code, out = invoke("demo", "--episodes", "1", "--train-steps", "4000", "--out", str(tmp_path))
    assert code == 0, out
    report_dir = tmp_path / "report"
    assert f"Report: {(report_dir / 'index.html').resolve()}" in out.replace("\n", "")
    # the demo is the demo-v4 suite, played as `turngym eval` plays a suite: one results schema
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["suite"] == "demo-v4"
    rows = {(r["agent"], r["entry"]): r for r in results["rows"] if not r["task_type"]}
    craft = [r for (agent, entry), r in rows.items() if entry.startswith("craft-") and entry != "craft-diamond-images"]
    assert len(craft) == 22 and {r["agent"] for r in craft} == {"random", "oracle"}
    assert all(r["success_rate"] == 1.0 for r in craft if r["agent"] == "oracle")
    assert [a for a, e in rows if e == "webshop"] == ["random", "heuristic:no-options", "heuristic", "oracle"]
    assert rows["oracle", "webshop"]["success_rate"] == 1.0
    assert rows["heuristic:no-options", "webshop"]["parts"]["r_option"] == 0.0  # WebShop's own columns
    assert [a for a, e in rows if e == "webshop-browser"] == ["heuristic", "oracle"]
    assert rows["oracle", "webshop-browser"]["success_rate"] == 1.0
    assert rows["oracle", "longdoc"]["metrics"]["accuracy"] == 1.0 and "f1" in rows["oracle", "longdoc"]["metrics"]
    assert rows["oracle", "hopvqa"]["success_rate"] == 1.0
    assert ("heuristic", "craft-wood_pickaxe") not in rows  # entries name their agents
    # SmolLM2 in both modes on every family's text mode; scoring the proposed actions is always valid
    lm = {(agent, entry): r for (agent, entry), r in rows.items() if entry.startswith("lm-")}
    assert sorted(lm) == sorted((agent, f"lm-{family}") for agent in ("hf:smollm2", "hf:smollm2?mode=score")
                                for family in ("craft-wood_pickaxe", "webshop", "longdoc", "hopvqa"))
    assert all(r["episodes"] == 1 and r["errors"] == 0 for r in lm.values())
    assert all(r["invalid_rate"] == 0 for (agent, _), r in lm.items() if agent.endswith("mode=score"))
    # screenshots of the store and the diamond run's frames are in the episodes, for the viewer
    shots = list((tmp_path / "episodes" / "oracle" / "webshop-browser" / "images").glob("*.png"))
    with Image.open(shots[0]) as shot:
        assert shot.size == (1024, 768)
    assert any((tmp_path / "episodes" / "oracle" / "craft-diamond-images" / "images").glob("*.png"))
    # one report: tables, the family columns from score_parts, the training runs and their curves
    markdown = (report_dir / "report.md").read_text()
    assert "## Score parts by entry" in markdown and "### webshop" in markdown and "| r_option |" in markdown
    assert "## Training runs" in markdown and "training/grpo" in markdown and "training/prm" in markdown
    assert (report_dir / "plots" / "curves.png").stat().st_size > 0
    assert (report_dir / "plots" / "success.png").stat().st_size > 0
    assert 'id="training"' in (report_dir / "index.html").read_text()
    # a rerun resumes: nothing is played or trained again
    metrics = tmp_path / "training" / "grpo" / "metrics.jsonl"
    stamp = metrics.stat().st_mtime_ns
    code, _ = invoke("demo", "--episodes", "1", "--train-steps", "4000", "--out", str(tmp_path))
    assert code == 0 and json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    assert metrics.stat().st_mtime_ns == stamp
    # more training steps extend the runs from their checkpoints (an update plays ~12k steps here);
    # the episodes stay as they were
    done = max(read_metrics(tmp_path / "training" / algo)[-1]["env_steps"] for algo in ("grpo", "prm"))
    code, out = invoke("demo", "--episodes", "1", "--train-steps", str(done + 1), "--out", str(tmp_path))
    assert code == 0 and json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    for algo in ("grpo", "prm"):
        rows = read_metrics(tmp_path / "training" / algo)
        assert rows[-1]["env_steps"] > done and [r["update"] for r in rows] == list(range(1, len(rows) + 1))
        assert f"{rows[-1]['env_steps']:,} env steps" in out.replace("\n", " ")


def test_the_guide_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "guess_number.py")],
                         capture_output=True, text=True, check=True).stdout
    assert "heuristic solved 10/10" in out and "oracle    solved 10/10" in out


def test_an_installed_plugin_family_appears_in_the_cli(tmp_path):
    """A package that lists a module under the `turngym.envs` entry points is loaded on import."""
    dist = tmp_path / "guess_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: guess-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[turngym.envs]\nguess = guess_number\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "docs" / "examples")])}
    out = subprocess.run([sys.executable, "-m", "turngym", "list"], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert "guessing/GuessNumber-v0" in out


def test_kwargs_are_yaml_values_with_exponents_read_as_numbers():
    parsed = parse_kwargs(["lr=1e-4", "scale=2.5E3", "task=iron_pickaxe", "size=48", "flag=true", "id=task1e5", "x="])
    assert parsed == {"lr": 1e-4, "scale": 2500.0, "task": "iron_pickaxe", "size": 48, "flag": True,
                      "id": "task1e5", "x": ""}
