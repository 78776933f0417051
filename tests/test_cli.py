"""The `turngym` CLI: list, play, run, demo; and the custom-family guide end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT
from PIL import Image
from typer.testing import CliRunner

from turngym.apps.cli import app

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
    assert "oracle" in out and "100.0%" in out and "mean turns" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["agent"] for r in results] == ["random", "oracle"] and results[1]["success_rate"] == 1.0
    assert (tmp_path / "oracle.jsonl").exists() and (tmp_path / "oracle_images").is_dir()


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


def test_demo_writes_a_report(tmp_path):
    code, out = invoke("demo", "--episodes", "2", "--out", str(tmp_path))
    assert code == 0, out
    assert "Report:" in out and "collect_diamond" in out
    results = json.loads((tmp_path / "results.json").read_text())
    craft, shop = results["craft"], results["webshop"]
    assert len(craft) == 22 and {r["agent"] for r in craft} == {"random", "oracle"}
    assert all(r["success_rate"] == 1.0 for r in craft if r["agent"] == "oracle")
    assert [r["agent"] for r in shop] == ["random", "heuristic:no-options", "heuristic", "oracle"]
    assert shop[-1]["success_rate"] == 1.0 and shop[1]["parts"]["r_option"] == 0.0
    browser = results["webshop_browser"]
    assert [r["agent"] for r in browser] == ["heuristic", "oracle"] and browser[-1]["success_rate"] == 1.0
    assert all(r["env_id"] == "turngym/WebShopBrowser-v0" and r["episodes"] == 2 for r in browser)
    docs, hop = results["longdoc"], results["hopvqa"]
    assert [r["agent"] for r in docs] == ["random", "heuristic", "oracle"] and docs[-1]["accuracy"] == 1.0
    assert [r["agent"] for r in hop] == ["random", "heuristic", "oracle"] and hop[-1]["success_rate"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "| collect_diamond | oracle | 100.0% |" in report and "## WebShop-v0" in report
    assert "## LongDocVQA-v0" in report and "## HopVQA-v0" in report
    browser_section = report.split("## WebShopBrowser-v0: browser mode")[1].split("\n## ")[0]
    assert "| heuristic |" in browser_section and "| oracle | 100.0% |" in browser_section
    pages = ("search", "results", "item", "detail", "done")
    for name in ("craft_success.png", "craft_oracle_diamond.png", "craft_oracle_diamond.jsonl",
                 *(f"webshop_browser/{page}.png" for page in pages)):
        assert (tmp_path / name).stat().st_size > 0
    assert all(f"(webshop_browser/{page}.png)" in report for page in pages)
    with Image.open(tmp_path / "webshop_browser" / "done.png") as shot:
        assert shot.size == (1024, 768)
    # the core-v0 evaluation: 2 episodes per entry, its results and its HTML report
    assert "## Evaluation: the core-v0 suite" in report and "(eval/report/index.html)" in report
    assert f"HTML report of the core-v0 evaluation: {(tmp_path / 'eval' / 'report' / 'index.html').resolve()}" \
        in out.replace("\n", "")
    evaluation = json.loads((tmp_path / "eval" / "results.json").read_text())
    overall = {o["agent"]: o for o in evaluation["overall"]}
    assert overall["oracle"]["entries"] == 7 and overall["oracle"]["success_rate"] == 1.0
    assert overall["heuristic"]["entries"] == 4 and overall["random"]["episodes"] == 14
    assert (tmp_path / "eval" / "report" / "plots" / "success.png").stat().st_size > 0


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
