"""`make demo` / `turngym demo`: every family's agents on its built-in test split, as a report.

One process pool runs every (env, agent) job, and a browser-mode WebShop episode that saves a
screenshot of each store page; each family then writes its section of the report: tables in the
terminal and in report.md, plots, screenshots and a sample episode beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

from turngym.apps.evaluate import run_episodes, summarize
from turngym.console import progress_bar
from turngym.trajectory import Trajectory, atomic_write_bytes, write_jsonl

CRAFT, WEBSHOP, LONGDOC, HOPVQA = "turngym/Craft-v0", "turngym/WebShop-v0", "turngym/LongDocVQA-v0", \
    "turngym/HopVQA-v0"
WEBSHOP_BROWSER = "turngym/WebShopBrowser-v0"
CRAFT_AGENTS = ("random", "oracle")
WEBSHOP_AGENTS = ("random", "heuristic:no-options", "heuristic", "oracle")
WEBSHOP_BROWSER_AGENTS = ("heuristic", "oracle")
WEBSHOP_BROWSER_TASKS = 5  # each episode drives headless Chromium: a few tasks keep the demo quick
WEBSHOP_PAGES = ("search", "results", "item", "detail", "done")  # the store's page types, as state_dict() names them
LONGDOC_AGENTS = ("random", "heuristic", "oracle")
HOPVQA_AGENTS = ("random", "heuristic", "oracle")


def run_demo(out: Path, console: Console, episodes: int | None = None) -> tuple[Path, Path]:
    """Run the demo into `out`; returns the paths of its Markdown report and of the HTML report of
    the core-v0 evaluation (with its episode viewer)."""
    from turngym.envs.craft import load_rules
    from turngym.envs.webshop.catalog import open_catalog

    out.mkdir(parents=True, exist_ok=True)
    open_catalog("small")  # build it once here, not in every worker
    counts = {}
    for env_id in (CRAFT, WEBSHOP, LONGDOC, HOPVQA):
        with gym.make(env_id) as env:
            counts[env_id] = episodes or len(env.unwrapped.splits["test"])
    n, n_shop, n_doc, n_hop = counts[CRAFT], counts[WEBSHOP], counts[LONGDOC], counts[HOPVQA]
    n_browser = min(WEBSHOP_BROWSER_TASKS, n_shop)
    _generate_documents(n_doc, console)
    # The browser jobs go first: each is slow, and the pool should not end on one of them.
    jobs = [(WEBSHOP_BROWSER, {"screenshot": False}, agent, n_browser) for agent in WEBSHOP_BROWSER_AGENTS]
    jobs += [(CRAFT, {"task": task, "image": False}, agent, n) for task in load_rules().tasks for agent in CRAFT_AGENTS]
    jobs += [(WEBSHOP, {}, agent, n_shop) for agent in WEBSHOP_AGENTS]
    jobs += [(LONGDOC, {"obs_mode": "text"}, agent, n_doc) for agent in LONGDOC_AGENTS]
    jobs += [(HOPVQA, {}, agent, n_hop) for agent in HOPVQA_AGENTS]
    results, (pages,) = _run_jobs(jobs, console, [(_browser_pages, out / "webshop_browser")])
    craft = [{"task": kw["task"], **results[i]} for i, (env_id, kw, _, _) in enumerate(jobs) if env_id == CRAFT]
    shop = [results[i] for i, (env_id, *_) in enumerate(jobs) if env_id == WEBSHOP]
    browser = [results[i] for i, (env_id, *_) in enumerate(jobs) if env_id == WEBSHOP_BROWSER]
    docs = [results[i] for i, (env_id, *_) in enumerate(jobs) if env_id == LONGDOC]
    hop = [results[i] for i, (env_id, *_) in enumerate(jobs) if env_id == HOPVQA]
    sample = run_episodes(CRAFT, "oracle", 1, env_kwargs={"task": "collect_diamond"}, record_images=True)[0]
    training = _training(out / "training", console)
    evaluation, html = _evaluation(out / "eval", console, episodes)

    console.print(_craft_table(craft, n))
    console.print(_agent_table(f"WebShop-v0 (small catalog) test split, {n_shop} tasks; score = 100 x reward",
                               WEBSHOP_COLUMNS, shop))
    console.print(_agent_table(f"WebShopBrowser-v0, browser mode (headless Chromium): {n_browser} test tasks",
                               WEBSHOP_COLUMNS, browser))
    console.print(_agent_table(f"LongDocVQA-v0 (generated) test split, {n_doc} questions, text mode",
                               LONGDOC_COLUMNS, docs))
    console.print(_agent_table(f"HopVQA-v0 test split, {n_hop} queries (3-5 hops)", HOPVQA_COLUMNS, hop))
    atomic_write_bytes(out / "results.json", json.dumps({"craft": craft, "webshop": shop, "webshop_browser": browser,
                                                         "longdoc": docs, "hopvqa": hop}, indent=2).encode())
    write_jsonl(out / "craft_oracle_diamond.jsonl", [sample])
    _plot_success(craft, out / "craft_success.png")
    _filmstrip(sample, out / "craft_oracle_diamond.png")
    report = out / "report.md"
    lines = ["# turngym demo report", "", *_craft_markdown(craft, n, sample),
             *_agent_markdown(f"WebShop-v0: the small catalog's test split ({n_shop} tasks)", WEBSHOP_INTRO,
                              WEBSHOP_COLUMNS, shop),
             *_agent_markdown(f"WebShopBrowser-v0: browser mode, the first {n_browser} test tasks",
                              WEBSHOP_BROWSER_INTRO, WEBSHOP_COLUMNS, browser),
             *_browser_pages_markdown(pages),
             *_agent_markdown(f"LongDocVQA-v0: the generated test split ({n_doc} questions, text mode)",
                              LONGDOC_INTRO, LONGDOC_COLUMNS, docs),
             *_agent_markdown(f"HopVQA-v0: the test split ({n_hop} queries of 3-5 hops)", HOPVQA_INTRO,
                              HOPVQA_COLUMNS, hop),
             *training, *evaluation]
    atomic_write_bytes(report, "\n".join(lines).encode())
    return report, html


TRAIN_TASK, TRAIN_STEPS, TRAIN_ALGOS = "wood_pickaxe", 40_000, ("grpo", "prm")


def _training(out: Path, console: Console) -> list[str]:
    """A short from-scratch run per estimator on sparse Craft (symbolic policy, CraftVectorEnv),
    with its learning curve; returns the report's section."""
    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.ppo import train
    from turngym.trainers.runlog import plot_curves

    curves, rows_md = {}, []
    for algo in TRAIN_ALGOS:
        rows = train(NeuralTrainConfig(env_id=CRAFT, task=TRAIN_TASK, algo=algo, steps=TRAIN_STEPS,
                                       out=str(out / algo), tensorboard=False), progress=False)
        curves[algo] = ([r["env_steps"] for r in rows], [r["success"] for r in rows])
        rows_md.append(f"| {algo} | {rows[0]['success']:.0%} | {rows[-1]['success']:.0%} | {rows[-1]['env_steps']:,} |")
        console.print(f"training {algo} on Craft {TRAIN_TASK}: success {rows[0]['success']:.0%} -> "
                      f"{rows[-1]['success']:.0%} in {rows[-1]['env_steps']:,} env steps")
    plot_curves(curves, out / "curve.png", title=f"Craft {TRAIN_TASK}: training success (sparse reward)")
    return ["", f"## Training: PPO from scratch on Craft {TRAIN_TASK}", "",
            "The symbolic neural policy on CraftVectorEnv, reward 1 on success only, same env-step budget "
            "per estimator (`turngym train`; the full comparison is `bench/train_compare.py`).", "",
            "| estimator | success, first update | success, last update | env steps |", "|---|---|---|---|",
            *rows_md, "", "![learning curves](training/curve.png)", ""]


EVAL_SUITE, EVAL_AGENTS = "core-v0", ("random", "heuristic", "oracle")


def _evaluation(out: Path, console: Console, episodes: int | None) -> tuple[list[str], Path]:
    """`turngym eval --suite core-v0` with the built-in agents (resumable like any eval run) and its
    HTML report; returns the report's section and the path of the HTML report."""
    from turngym.apps.harness import pending, run_eval
    from turngym.apps.report import write_report
    from turngym.results import results_table
    from turngym.suites import Entry, Suite, load_suite

    suite = load_suite(EVAL_SUITE)
    if episodes is not None:
        suite = Suite(suite.name, suite.version, suite.description,
                      tuple(Entry(e.name, e.env_id, e.kwargs, e.split, e.indices[:episodes], e.seed)
                            for e in suite.entries))
    todo = pending(suite, list(EVAL_AGENTS), out)
    with progress_bar(console=console, transient=True) as progress:
        bar = progress.add_task(f"eval {EVAL_SUITE}: {todo} episodes", total=todo)
        results = run_eval(suite, list(EVAL_AGENTS), out, workers=min(os.cpu_count() or 1, 4),
                           on_episode=lambda job, record: progress.advance(bar))
    console.print(results_table(results))
    html, _ = write_report([out])
    lines = [f"## Evaluation: the {EVAL_SUITE} suite", "",
             f"`turngym eval --suite {EVAL_SUITE}` with the built-in agents (a fixed sample of every family's "
             "test split, env kwargs pinned; `heuristic` has no Craft version). The HTML report, with plots and an "
             f"episode viewer, is [eval/report/index.html](eval/report/index.html).", "",
             "| agent | entries | episodes | mean success | mean score | errors |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {o['agent']} | {o['entries']} | {o['episodes']} | {o['success_rate']:.1%} | {o['mean_score']:.3f} | "
              f"{o['errors']} |" for o in results["overall"]]
    return [*lines, ""], html


def _generate_documents(questions: int, console: Console) -> None:
    """Make the LongDocVQA test documents once, in parallel, before the agents need them."""
    from turngym.envs.longdoc.dataset import GeneratedSet

    data = GeneratedSet()
    seeds = sorted({data.parse(task)[0] for task in data.splits["test"][:questions]})
    with progress_bar(console=console, transient=True) as progress, \
            ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 4)) as pool:
        bar = progress.add_task(f"LongDocVQA: {len(seeds)} test documents", total=len(seeds))
        for _ in pool.map(data.questions_of, seeds):
            progress.advance(bar)


def _run_jobs(jobs: list[tuple[str, dict, str, int]], console: Console,
              calls: Sequence[tuple[Any, ...]] = ()) -> tuple[list[dict[str, Any]], list[Any]]:
    """Each job's summary row, and the results of `calls` ((function, *arguments), run first in the same pool)."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    with progress_bar(console=console, transient=True) as progress, \
            ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 4)) as pool:
        extra = [pool.submit(*call) for call in calls]
        bar = progress.add_task(f"{len(jobs)} env/agent pairs", total=sum(job[3] for job in jobs))
        futures = {pool.submit(_job, *job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            progress.advance(bar, jobs[futures[future]][3])
        return results, [future.result() for future in extra]


def _job(env_id: str, env_kwargs: dict[str, Any], agent: str, n: int) -> dict[str, Any]:
    """One row: the summary, plus MMLongBench-Doc's accuracy and F1 for episodes that end in an answer."""
    trajectories = run_episodes(env_id, agent, n, env_kwargs=env_kwargs)
    row = summarize(env_id, agent, trajectories).as_dict()
    if all("prediction" in t.score_parts for t in trajectories):
        from turngym.envs.longdoc.scoring import accuracy, generalized_f1

        answers = [{"score": t.score_parts["answer"], "answer_format": t.score_parts["answer_format"],
                    "pred": t.score_parts["prediction"] or ""} for t in trajectories]
        row.update(accuracy=accuracy(answers), f1=generalized_f1(answers))
    return row


# ---- Craft --------------------------------------------------------------------------------------
def _craft_table(rows: list[dict], n: int) -> Table:
    """One row per task, success and mean turns per agent."""
    table = Table(title=f"Craft-v0 test split, {n} episodes per task")
    table.add_column("task", no_wrap=True)
    for agent in CRAFT_AGENTS:
        table.add_column(f"{agent}\nsuccess", justify="right")
        table.add_column(f"{agent}\nturns", justify="right")
    for task in dict.fromkeys(r["task"] for r in rows):
        cells = []
        for agent in CRAFT_AGENTS:
            r = next(r for r in rows if r["task"] == task and r["agent"] == agent)
            cells += [f"{r['success_rate']:.0%}", f"{r['mean_turns']:.0f}"]
        table.add_row(task, *cells)
    return table


def _plot_success(rows: list[dict], path: Path) -> None:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, agent in enumerate(CRAFT_AGENTS):
        rate = [next(r["success_rate"] for r in rows if r["task"] == t and r["agent"] == agent) for t in tasks]
        ax.bar(x + (k - 0.5) * 0.4, rate, width=0.4, label=agent)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.set_title("Craft-v0 test split: success by task")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _filmstrip(traj: Trajectory, path: Path, frames: int = 12) -> None:
    """Evenly spaced frames of an episode side by side."""
    images = [t.image for t in traj.turns if t.image is not None]
    picks = [images[int(i)] for i in np.linspace(0, len(images) - 1, min(frames, len(images)))]
    gap = np.full((picks[0].shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([x for image in picks for x in (image, gap)][:-1], axis=1)
    plt.imsave(path, strip)


def _craft_markdown(rows: list[dict], n: int, sample: Trajectory) -> list[str]:
    lines = [f"## Craft-v0: random and oracle agents on the frozen test split ({n} episodes per task)", "",
             "| task | agent | success | mean score ± s.e. | mean turns | invalid actions |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['task']} | {r['agent']} | {r['success_rate']:.1%} | {r['mean_score']:.3f} ± {r['score_se']:.3f} | "
              f"{r['mean_turns']:.1f} | {r['invalid_rate']:.1%} |" for r in rows]
    return [
        *lines, "", "![success by task](craft_success.png)", "",
        f"### A sample episode: the oracle mines a diamond ({len(sample)} turns, task {sample.task_id})", "",
        "![frames of the episode](craft_oracle_diamond.png)", "",
        "The full trajectory (text, actions, rewards, infos, images) is `craft_oracle_diamond.jsonl`; "
        "read it with `turngym.read_jsonl`.", ""]


# ---- WebShop in the browser: one screenshot of each page type ---------------------------------
def _browser_pages(folder: Path) -> dict[str, Path]:
    """Play test task 0 in browser mode with the oracle, detouring once through the item's
    Features page, and save a screenshot of each page type (the item page as last seen, with its
    options chosen) into `folder`; returns page type -> PNG path."""
    from PIL import Image

    from turngym.agents import make_agent

    folder.mkdir(parents=True, exist_ok=True)
    shots: dict[str, np.ndarray] = {}
    with gym.make(WEBSHOP_BROWSER) as env:
        oracle = make_agent("oracle", env)
        obs, info = env.reset(seed=0, options={"split": "test", "index": 0})
        oracle.reset(obs, info, seed=0)
        done, detoured = False, False
        while True:
            page = env.unwrapped.state_dict()["page"]
            if page == "item" or page not in shots:
                shots[page] = obs["image"]
            if done:
                break
            action = "click[Features]" if page == "item" and not detoured else oracle.act(obs, info)
            detoured = detoured or page == "item"
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    paths = {}
    for page in WEBSHOP_PAGES:
        if page in shots:
            paths[page] = folder / f"{page}.png"
            Image.fromarray(shots[page]).save(paths[page])
    return paths


def _browser_pages_markdown(pages: dict[str, Path]) -> list[str]:
    lines = ["### The store's pages in the browser (oracle on test task 0; 1024 x 768 screenshots)", ""]
    captions = {"search": "search", "results": "results", "item": "item, options chosen",
                "detail": "detail (Features)", "done": "done (thank you)"}
    for page, path in pages.items():
        lines += [f"**{captions[page]}**", "", f"![{captions[page]}]({path.parent.name}/{path.name})", ""]
    return lines


# ---- the agent tables of WebShop, LongDocVQA and HopVQA -----------------------------------------
# A column is a header and how a result row shows in it; one spec gives the terminal and the Markdown table.
Column = tuple[str, Callable[[dict], str]]


def _part(key: str) -> Callable[[dict], str]:
    """A score part as a percentage (WebShop's reward components)."""
    return lambda r: f"{100 * r['parts'].get(key, 0.0):.1f}"


COMMON_TAIL: list[Column] = [("turns", lambda r: f"{r['mean_turns']:.1f}"),
                             ("invalid", lambda r: f"{r['invalid_rate']:.1%}")]
WEBSHOP_COLUMNS: list[Column] = [
    ("success", lambda r: f"{r['success_rate']:.1%}"), ("score", lambda r: f"{100 * r['mean_score']:.1f}"),
    COMMON_TAIL[0], ("type", _part("r_type")), ("attr", _part("r_att")), ("option", _part("r_option")),
    ("price", _part("r_price"))]
LONGDOC_COLUMNS: list[Column] = [
    ("accuracy", lambda r: f"{r['accuracy']:.1%}"), ("F1", lambda r: f"{r['f1']:.1%}"),
    ("evidence seen", lambda r: f"{r['parts'].get('evidence_recall', 0.0):.1%}"), *COMMON_TAIL]
HOPVQA_COLUMNS: list[Column] = [
    ("correct", lambda r: f"{r['success_rate']:.1%}"),
    ("hop claims right", lambda r: f"{r['parts'].get('claims_correct', 0.0):.1%}"), *COMMON_TAIL]


def _agent_table(title: str, columns: list[Column], rows: list[dict]) -> Table:
    # No outer edge, so WebShop's eight columns fit an 80-column terminal without truncating a number.
    table = Table(title=title, show_edge=False, pad_edge=False)
    table.add_column("agent", no_wrap=True)
    for header, _ in columns:
        table.add_column(header, justify="right", min_width=len(header), no_wrap=True)
    for r in rows:
        table.add_row(r["agent"], *(show(r) for _, show in columns))
    return table


def _agent_markdown(heading: str, intro: str, columns: list[Column], rows: list[dict]) -> list[str]:
    lines = [f"## {heading}", "", intro, "", "| agent | " + " | ".join(h for h, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join([r["agent"], *(show(r) for _, show in columns)]) + " |" for r in rows]
    return [*lines, ""]


WEBSHOP_INTRO = ("Score is 100 x WebShop's reward; type, attr, option and price are its components (option over "
                 "the goals that name options). `heuristic:no-options` is the paper's rule baseline exactly "
                 "(45.6 score, 9.6% success on the original data); `heuristic` also picks the options the "
                 "instruction names.")
WEBSHOP_BROWSER_INTRO = ("The same tasks as WebShop-v0 on the store's real web site, driven through Playwright in "
                         "headless Chromium (accessibility-tree text; these rows without screenshots). The agents "
                         "play exactly as in text mode (same actions, rewards and success on each task: "
                         "`bench/webshop_browser.py` checks that on 50 tasks); the screenshots below show each page "
                         "type.")
LONGDOC_INTRO = ("Accuracy and generalized F1 are MMLongBench-Doc's; evidence seen is the share of evidence pages "
                 "the agent read or viewed.")
HOPVQA_INTRO = ("`heuristic` answers the most frequent training answer (the floor); `oracle` claims every hop from "
                "the scene graph. Hop claims right is the share of claimed hops whose claim matched the truth.")
