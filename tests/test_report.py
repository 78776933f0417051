"""`turngym report`: files and tables from a real run folder, and the episode viewer driven in real
headless Chromium from file:// (pickers, turn stepping, images, errors, extras, escaping, compare)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import gymnasium as gym
import pytest
from PIL import Image
from playwright.sync_api import expect

from turngym import rollout
from turngym.agents import make_agent
from turngym.apps import report
from turngym.envs.webshop.browser import Chromium
from turngym.rewards.voc import episode_voc, voc
from turngym.trajectory import Trajectory, Turn, trajectory_to_json

ENTRIES = [("craft-wood_pickaxe", "turngym/Craft-v0", {"task": "wood_pickaxe", "max_turns": 12}),
           ("hopvqa", "turngym/HopVQA-v0", {})]
MARKUP = '<b>not bold</b> & "quoted"'  # observation and error text must show as text, never as HTML
ERROR = {"type": "RuntimeError", "message": f"the agent crashed on {MARKUP}", "turn": 2,
         "traceback": "Traceback (most recent call last):\n  File \"agent.py\", line 7, in act\nRuntimeError: boom"}


def _make_run(tmp: Path, agents: tuple[str, ...] = ("random", "oracle"), episodes: int = 2) -> Path:
    """A run folder as `turngym eval` writes it, from real episodes: run.json, one JSONL file per
    episode with its images, results.json of plain means; plus what the viewer must show: an
    episode with an error (random, hopvqa, 1), a turn with extras (oracle, craft, 0, turn 1),
    markup in an observation (random, craft, 0, turn 0), and a training run's metrics.jsonl."""
    spec = {"format": 1, "suite": {"name": "mini-v0", "version": 1, "description": "a test suite"},
            "agents": list(agents),
            "entries": [{"name": name, "env_id": env_id, "kwargs": kwargs, "split": "test",
                         "indices": list(range(episodes)), "seed": 0} for name, env_id, kwargs in ENTRIES]}
    rows, overall = [], []
    for agent in agents:
        for name, env_id, kwargs in ENTRIES:
            env = gym.make(env_id, **kwargs)
            actor = make_agent(agent, env)
            played = []
            for i in range(episodes):
                traj = rollout(env, actor, seed=i, options={"split": "test", "index": i}, record_images=True)
                error = ERROR if (agent, name, i) == ("random", "hopvqa", 1) else None
                if error:
                    traj.turns = traj.turns[:2]
                if (agent, name, i) == ("oracle", "craft-wood_pickaxe", 0):
                    traj.turns[1].extras = {"advantage": 0.5, "value": 0.25}
                if (agent, name, i) == ("random", "craft-wood_pickaxe", 0):
                    traj.turns[0].text = MARKUP + "\n" + traj.turns[0].text
                traj.meta = {"agent": agent, "entry": name, "index": i, "split": "test", "env_kwargs": kwargs,
                             "task_type": env.unwrapped.task_type, "seconds": 0.1, "error": error}
                path = tmp / "episodes" / agent / name / f"{i:04d}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(trajectory_to_json(traj, path.parent / "images")) + "\n")
                played.append(traj)
            env.close()
            for task_type in dict.fromkeys(["", *(t.meta["task_type"] for t in played)]):
                group = [t for t in played if task_type in ("", t.meta["task_type"])]
                scores = [t.score for t in group]
                se = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
                mean = statistics.fmean(scores)
                rows.append({"agent": agent, "entry": name, "env_id": env_id, "task_type": task_type,
                             "episodes": len(group), "errors": sum(t.meta["error"] is not None for t in group),
                             "success_rate": statistics.fmean(t.success for t in group), "mean_score": mean,
                             "score_se": se, "ci95": [mean - 1.96 * se, mean + 1.96 * se],
                             "mean_turns": statistics.fmean(len(t) for t in group),
                             "invalid_rate": statistics.fmean(not u.info["valid"] for t in group for u in t.turns),
                             "mean_tokens": 0.0})
        whole = [r for r in rows if r["agent"] == agent and r["task_type"] == ""]
        overall.append({"agent": agent, "entries": len(whole),
                        "mean_score": statistics.fmean(r["mean_score"] for r in whole),
                        "success_rate": statistics.fmean(r["success_rate"] for r in whole)})
    (tmp / "run.json").write_text(json.dumps(spec))
    (tmp / "results.json").write_text(json.dumps({"suite": "mini-v0", "version": 1, "rows": rows, "overall": overall}))
    (tmp / "train").mkdir()
    metrics = [{"update": u, "env_steps": 1000 * u, "success": u / 4, "return": u / 3} for u in range(1, 4)]
    (tmp / "train" / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    return tmp


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs: both agents on both entries, and a smaller one of the oracle alone."""
    return (_make_run(tmp_path_factory.mktemp("run-a")),
            _make_run(tmp_path_factory.mktemp("run-b"), agents=("oracle",), episodes=1))


@pytest.fixture(scope="module")
def single(runs) -> tuple[Path, Path]:
    return report.write_report([runs[0]])


@pytest.fixture(scope="module")
def browser():
    """A context of this thread's shared Chromium (a second Playwright in one thread would clash
    with the one the browser env tests may have started)."""
    chromium = Chromium.get()
    context = chromium.new_context((1280, 900))
    yield context
    chromium.release(context)


def _open(browser, index: Path):
    """A page on `index` and the list its console errors and uncaught exceptions go to."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(index.as_uri())
    return page, errors


def _episode(run: Path, agent: str, entry: str, index: int) -> dict:
    return json.loads((run / "episodes" / agent / entry / f"{index:04d}.jsonl").read_text())


def test_files_tables_and_plots(runs, single):
    index, markdown = single
    out = runs[0] / "report"
    assert index == out / "index.html" and markdown == out / "report.md"
    for name in ("success", "scores", "turns", "curves"):
        with Image.open(out / "plots" / f"{name}.png") as im:
            assert im.format == "PNG" and im.size[0] > 100
            im.verify()
    assert {"report.css", "report.js"} <= {p.name for p in out.iterdir()}
    record = _episode(runs[0], "oracle", "hopvqa", 0)
    assert (out / "images" / Path(record["turns"][0]["image"]).name).is_file()
    assert len(list((out / "data" / "episodes").glob("*.js"))) == 8

    text = markdown.read_text()
    results = json.loads((runs[0] / "results.json").read_text())
    for r in results["rows"]:
        cells = (r["agent"], r["entry"], r["task_type"] or "all", str(r["episodes"]), f"{r['success_rate']:.1%}",
                 f"{r['mean_score']:.3f} ± {r['score_se']:.3f}")
        assert "| " + " | ".join(cells) + " |" in text
    assert "![Learning curves" in text and "plots/success.png" in text
    assert "| run-a0 | random | hopvqa | 1 | RuntimeError: the agent crashed on &lt;b&gt;not bold&lt;/b&gt;" in text


def test_errors_name_the_fix(runs, tmp_path):
    with pytest.raises(ValueError, match="--out"):
        report.write_report(list(runs))
    with pytest.raises(FileNotFoundError, match="turngym eval"):
        report.write_report([tmp_path])


def _valued(values: dict[str, list[float | None]]) -> Trajectory:
    """An episode whose turn t carries `values[key][t]` in extras[key] (None: no value that turn)."""
    turns = max((len(v) for v in values.values()), default=1)
    return Trajectory("turngym/Craft-v0", "t", 0, turns=[
        Turn(text="", action="noop", info={"valid": True},
             extras={key: v[t] for key, v in values.items() if t < len(v) and v[t] is not None})
        for t in range(turns)])


def test_voc_column_from_per_turn_values(tmp_path):
    """Episodes whose turns carry values in extras["prm"] / ["value"] / ["gvl"] (rewards/voc.py's
    VALUE_KEYS) give the results table a VOC column per key: the mean over the episodes with a
    defined VOC, how many carry values, how many are NaN; a dash where none do."""
    episodes = {("scorer", 0): _valued({"prm": [0.1, 0.5, 0.9], "value": [3.0, 2.0, 1.0]}),
                ("scorer", 1): _valued({"prm": [0.2, 0.1, 0.3, 0.4], "gvl": [0.0, None, 0.4, 0.2]}),
                ("scorer", 2): _valued({"prm": [0.5, 0.5]}),  # constant: NaN, counted, not averaged
                ("plain", 0): _valued({})}
    for (agent, i), traj in episodes.items():
        traj.meta = {"agent": agent, "entry": "craft", "index": i, "task_type": "wood_pickaxe"}
        path = tmp_path / "episodes" / agent / "craft" / f"{i:04d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(trajectory_to_json(traj, path.parent / "images")) + "\n")
    rows = [{"agent": agent, "entry": "craft", "task_type": "", "episodes": n} for agent, n in (("scorer", 3),
                                                                                             ("plain", 1))]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))

    second, gvl = 0.8, 0.5  # Spearman of ranks (1, 0, 2, 3) and, the turn without a value left out, (0, 2, 1)
    assert episode_voc(episodes["scorer", 1], "prm") == pytest.approx(second) == voc([0.2, 0.1, 0.3, 0.4])
    assert episode_voc(episodes["scorer", 1], "gvl") == pytest.approx(gvl)
    assert episode_voc(episodes["scorer", 0], "gvl") is None
    record = json.loads((tmp_path / "episodes" / "scorer" / "craft" / "0001.jsonl").read_text())
    assert episode_voc(record, "prm") == pytest.approx(second)  # a trajectory file's record reads the same

    index, markdown = report.write_report([tmp_path])
    text = markdown.read_text()
    assert "| agent | entry | task type | episodes | success | score ± s.e. | 95% CI | turns | invalid | tokens | " \
           "errors | VOC · value | VOC · prm | VOC · gvl |" in text
    assert f"| scorer | craft | all | 3 | — | — ± — | — | — | — | — | — | -1.000 (n=1) | " \
           f"{(1.0 + second) / 2:.3f} (n=3, 1 NaN) | {gvl:.3f} (n=1) |" in text
    assert "| plain | craft | all | 1 | — | — ± — | — | — | — | — | — | — | — | — |" in text
    assert "value-order correlation" in text
    assert 'data-col="voc-prm"' in index.read_text()


def test_hostile_names_and_texts_make_a_report_that_shows_them_as_text(tmp_path):
    """Names from run.json (suite, agent, entry) in Markdown headings and lists; a U+2028 line
    separator in an observation (a line break to str.splitlines, not to JSONL); NaN and infinite
    numbers in extras (JSON has neither); a newline in an error message inside a table cell."""
    agent, entry = "rand<img src=x onerror=alert(1)>|x\ny", "E<b>bold</b>|p"
    traj = _valued({"value": [float("nan"), float("inf")]})
    traj.turns[0].text = "before\u2028after\u0085end"
    traj.meta = {"agent": agent, "entry": entry, "index": 0, "task_type": "wood_pickaxe",
                 "error": {"type": "RuntimeError", "message": "two\nlines | <script>x</script>", "turn": 0}}
    path = tmp_path / "episodes" / "rand" / "E" / "0000.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(trajectory_to_json(traj, path.parent / "images"), ensure_ascii=False) + "\n",
                    encoding="utf-8")
    suite = "S<img src=x onerror=alert(1)>\nline"
    entries = [{"name": entry, "env_id": "turngym/Craft-v0", "kwargs": {}, "split": "test", "indices": [0], "seed": 0}]
    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "suite": {"name": suite, "version": 1},
                                                   "agents": [agent], "entries": entries}))
    (tmp_path / "results.json").write_text(json.dumps({"suite": suite, "rows": [
        {"agent": agent, "entry": entry, "task_type": "", "episodes": 1}]}))
    index, markdown = report.write_report([tmp_path])
    text = markdown.read_text()
    assert "<img" not in text and "<b>" not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "line\n" not in text.split("## ")[0].splitlines()[0]
    assert "| rand&lt;img src=x onerror=alert(1)&gt;\\|x y | E&lt;b&gt;bold&lt;/b&gt;\\|p | 0 | RuntimeError: two |" \
        in text
    assert all(line.endswith("|") for line in text.splitlines() if line.startswith("|"))  # no row cut in two
    view = (index.parent / "data" / "episodes" / "0.js").read_text()
    assert "before\\u2028after\\u0085end" in view and "NaN" not in view and "Infinity" not in view


def test_long_texts_are_cut():
    capped = report.cap({"text": "x" * (report.TEXT_CAP + 5), "actions": list(range(report.LIST_CAP + 3))})
    assert capped["text"].endswith("[5 more characters cut by the report]")
    assert len(capped["actions"]) == report.LIST_CAP + 1 and capped["actions"][-1] == "… [3 more items]"


def test_viewer_in_chromium(runs, single, browser, tmp_path):
    moved = shutil.copytree(single[0].parent, tmp_path / "moved")  # the folder stands alone
    page, errors = _open(browser, moved / "index.html")

    # The results table shows results.json's numbers.
    shown = page.evaluate("""() => [...document.querySelectorAll('#results-run-a0 tbody tr')].map(tr => ({
        key: [tr.dataset.agent, tr.dataset.entry, tr.dataset.taskType],
        cells: Object.fromEntries([...tr.querySelectorAll('td[data-col]')].map(td => [td.dataset.col, td.textContent]))
    }))""")
    results = json.loads((runs[0] / "results.json").read_text())["rows"]
    assert len(shown) == len(results)
    for r in results:
        cells = next(s["cells"] for s in shown if s["key"] == [r["agent"], r["entry"], r["task_type"]])
        assert cells["success"] == f"{r['success_rate']:.1%}"
        assert cells["score"] == f"{r['mean_score']:.3f} ± {r['score_se']:.3f}"
        assert cells["ci95"] == f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        assert cells["turns"] == f"{r['mean_turns']:.1f}" and cells["errors"] == str(r["errors"])

    # The first episode: its observation's markup shows as text.
    first_turns = _episode(runs[0], "random", "craft-wood_pickaxe", 0)["turns"]
    expect(page.locator("#turn-index")).to_have_text(f"turn 1 / {len(first_turns)}")
    expect(page.locator("#obs-text")).to_contain_text(MARKUP)
    assert page.locator("#obs-text b").count() == 0

    # Another episode from the picker.
    page.select_option("#episode-select", index=1)
    expect(page.locator("#episode-title")).to_contain_text("random · craft-wood_pickaxe · episode 1")

    # The oracle's episode 0: step with the buttons and the arrow keys; extras on turn 2.
    page.select_option("#agent-select", "oracle")
    record = _episode(runs[0], "oracle", "craft-wood_pickaxe", 0)
    turns = record["turns"]
    expect(page.locator("#episode-title")).to_contain_text("oracle · craft-wood_pickaxe · episode 0")
    expect(page.locator("#action")).to_have_text(turns[0]["action"])
    expect(page.locator("#extras-box")).to_be_hidden()
    expect(page.locator("#actions-seen")).to_have_text("\n".join(record["reset_info"]["actions"]))
    page.click("#next-turn")
    expect(page.locator("#turn-index")).to_have_text(f"turn 2 / {len(turns)}")
    expect(page.locator("#action")).to_have_text(turns[1]["action"])
    expect(page.locator("#obs-text")).to_have_text(turns[1]["text"])
    expect(page.locator("#extras")).to_contain_text("advantage0.5")
    page.click("#prev-turn")
    expect(page.locator("#turn-index")).to_have_text(f"turn 1 / {len(turns)}")
    expect(page.locator("#obs-text")).to_have_text(turns[0]["text"])
    page.locator("body").press("ArrowRight")
    expect(page.locator("#turn-index")).to_have_text(f"turn 2 / {len(turns)}")

    # Two turns whose images differ: the image changes, and loads.
    k = next(k for k in range(len(turns) - 1) if turns[k]["image"] != turns[k + 1]["image"])
    page.locator("#turn-slider").fill(str(k))
    expect(page.locator("#turn-index")).to_have_text(f"turn {k + 1} / {len(turns)}")
    loaded = "() => { const im = document.getElementById('obs-image'); return im.complete && im.naturalWidth > 0; }"
    page.wait_for_function(loaded)
    first = page.get_attribute("#obs-image", "src")
    page.click("#next-turn")
    expect(page.locator("#obs-image")).not_to_have_attribute("src", first)
    page.wait_for_function(loaded)
    assert Path(page.get_attribute("#obs-image", "src")).name == Path(turns[k + 1]["image"]).name

    # The episode that raised: marked in the picker, its error and traceback shown as text.
    page.select_option("#agent-select", "random")
    page.select_option("#entry-select", "hopvqa")
    page.select_option("#outcome-select", "error")
    assert page.locator("#episode-select option").all_text_contents()[0].startswith("⚠ ERROR")
    expect(page.locator("#episode-error")).to_be_visible()
    expect(page.locator("#episode-error-message")).to_have_text(f"RuntimeError: {ERROR['message']} (at turn 2)")
    expect(page.locator("#traceback")).to_have_text(ERROR["traceback"])
    expect(page.locator("#outcome")).to_have_text("error")
    assert errors == []


def test_compare_two_runs(runs, browser, tmp_path):
    index, markdown = report.write_report(list(runs), out=tmp_path / "compare")
    text = markdown.read_text()
    assert "## Results: run-a0" in text and "## Results: run-b0" in text and "run-b0 · oracle" in text
    page, errors = _open(browser, index)
    groups = page.locator("#summary thead th.group").all_text_contents()
    assert groups == ["run-a0", "run-b0"]
    expect(page.locator("#run-picker")).to_be_visible()
    page.select_option("#run-select", "run-b0")
    assert page.locator("#agent-select option").all_text_contents() == ["oracle"]
    expect(page.locator("#episode-title")).to_contain_text("run-b0 · oracle · craft-wood_pickaxe · episode 0")
    page.locator("#results-run-b0 tr[data-entry='hopvqa'] a.view-link").first.click()
    expect(page.locator("#episode-title")).to_contain_text("run-b0 · oracle · hopvqa · episode 0")
    assert errors == []
