"""The reward-design loop against a real chat-completions server on 127.0.0.1 with scripted replies.

The server is a Starlette app served by uvicorn on a free port (as in test_agents_lm.py); the
designer is the ordinary `openai:MODEL@URL` agent; the checks, the Craft play and the evaluation
are all real. One test runs the loop with a tiny local `hf:` model whose replies are gibberish.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serving as serve
from conftest import tiny_checkpoint
from rich.console import Console

from turngym.apps.reward_design import design_command
from turngym.rewards.code import check_reward_source
from turngym.rewards.design import load_versions, run_design
from turngym.rewards.design_prompts import analyze, extract_code

ENV = "turngym/Craft-v0"
KWARGS = {"image": False, "max_turns": 30}
FAST = {"env_kwargs": KWARGS, "episodes": 2, "record_episodes": 1}

BROKEN = "Here is my reward:\n```python\ndef reward(s, a):\n    return 0.1\n```\n"
FIXED_CODE = '''def reward(prev_state, action, state, info):
    gained = state["inventory"].get("wood", 0) - prev_state["inventory"].get("wood", 0)
    return 0.05 if gained > 0 else 0.0
'''
FIXED = f"Sorry, the signature was wrong.\n```python\n{FIXED_CODE}```"
REVISED_CODE = '''import math

def reward(prev_state, action, state, info):
    new = len(state["achievements"]) - len(prev_state["achievements"])
    near_tree = 0.01 if action == "do" else 0.0
    return (1 if new > 0 else 0), near_tree
'''
REVISED = f"Revised: milestones are sparse now.\n```python\n{REVISED_CODE}```\nGood luck!"
THIRD_CODE = "def reward(prev_state, action, state, info):\n    return -0.001\n"


def scripted_app(replies: list[str], seen: list[dict[str, Any]]) -> Any:
    """A chat-completions server answering with `replies` in order, recording each request body."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        seen.append(await request.json())
        text = replies[min(len(seen), len(replies)) - 1]
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 700, "completion_tokens": 30, "total_tokens": 730}})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@contextlib.contextmanager
def serving(replies: list[str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve scripted replies on a free port of 127.0.0.1; yields the agent spec and the requests."""
    seen: list[dict[str, Any]] = []
    with serve(scripted_app(replies, seen)) as url:
        yield f"openai:designer@{url}/v1", seen


def user_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_loop_fixes_revises_keeps_versions_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "design"
    with serving([BROKEN, FIXED, REVISED]) as (spec, seen):
        versions = run_design(ENV, "wood_pickaxe", spec, iterations=2, out=out, **FAST)
    assert len(seen) == 3
    v1, v2 = versions
    # v1: the broken reply went back with the checker's problem, the fix passed and was evaluated
    assert (v1.k, v1.attempts, v1.ok, v1.source) == (1, 2, True, FIXED_CODE)
    problem = "reward() must take (prev_state, action, state, info); yours takes (s, a)"
    assert problem in user_messages(seen[1])[-1]
    assert "did not pass the checks" in user_messages(seen[1])[-1]
    assert seen[1]["messages"][-2] == {"role": "assistant", "content": BROKEN}
    system = seen[0]["messages"][0]["content"]
    assert "def reward(prev_state, action, state, info)" in system and '"inventory"' in system
    assert "clipped to [-0.1, 0.1]" in system and "Make a wood pickaxe" in system
    # the env's class docstring, in its fixed sections (tests/test_docstrings.py), is the designer's documentation
    assert "## Action Space" in system and "## Rewards" in system and "## Episode End" in system
    assert v1.result["episodes_played"] == 2 and v1.result["agent"] == "random"
    assert v1.result["mean_return"] == pytest.approx(
        v1.result["mean_env_return"] + v1.result["mean_sparse_per_episode"] + v1.result["mean_dense_per_episode"])
    # v2: the revision prompt holds v1's code, its check figures and the analysis of its evaluation
    revision = user_messages(seen[2])[-1]
    assert FIXED_CODE.strip() in revision and "The checks passed on" in revision
    assert analyze(v1.result) in revision and "Success rate: 0.0% over 2 episodes" in revision
    assert "Example failure: episode seed 10000" in revision
    assert (v2.attempts, v2.ok, v2.source) == (1, True, REVISED_CODE)
    # on disk: every version's files, and the summary
    for v in versions:
        folder = out / f"v{v.k}"
        assert (folder / "reward.py").read_text() == v.source
        assert json.loads((folder / "check.json").read_text())["ok"] is True
        assert json.loads((folder / "result.json").read_text())["success_rate"] == v.result["success_rate"]
    chat = json.loads((out / "v1" / "chat.json").read_text())
    assert chat["attempts"] == 2 and [s["reply"] for s in chat["sent"]] == [BROKEN, FIXED]
    assert chat["messages"][-1] == {"role": "assistant", "content": FIXED}
    summary = json.loads((out / "summary.json").read_text())
    assert [v["version"] for v in summary["versions"]] == [1, 2] and summary["best"] in (1, 2)
    assert summary["env_kwargs"] == {**KWARGS, "task": "wood_pickaxe"}
    assert summary["versions"][0]["result"]["episodes_played"] == 2

    # resume: one more version asks once more, with v2's analysis, and leaves v1 and v2 as they were
    before = snapshot(out / "v1") | {f"v2/{k}": b for k, b in snapshot(out / "v2").items()}
    text = io.StringIO()
    with serving([f"```python\n{THIRD_CODE}```"]) as (spec, seen):
        path = design_command(ENV, "wood_pickaxe", spec, iterations=3, out=out, episodes=2, env_kwargs=KWARGS,
                              console=Console(file=text, width=120))
    assert len(seen) == 1 and "Version 2 of your reward function" in user_messages(seen[0])[-1]
    assert "All versions so far:" in user_messages(seen[0])[-1]
    assert snapshot(out / "v1") | {f"v2/{k}": b for k, b in snapshot(out / "v2").items()} == before
    assert (out / "v3" / "reward.py").read_text() == THIRD_CODE
    assert path == out / "summary.json" and len(json.loads(path.read_text())["versions"]) == 3
    assert "v3" in text.getvalue() and "reward design" in text.getvalue()
    # a finished run asks nobody: the agent spec may point at a closed port
    again = run_design(ENV, "wood_pickaxe", "openai:designer@http://127.0.0.1:9/v1", iterations=3, out=out, **FAST)
    assert [v.source for v in again] == [FIXED_CODE, REVISED_CODE, THIRD_CODE]
    assert [v.source for v in load_versions(out)] == [FIXED_CODE, REVISED_CODE, THIRD_CODE]


def test_a_version_that_never_passes_is_kept_and_reported(tmp_path: Path) -> None:
    garbage = "I would reward the agent for chopping trees."
    with serving([garbage, BROKEN, FIXED]) as (spec, seen):
        versions = run_design(ENV, "wood_pickaxe", spec, iterations=2, out=tmp_path, max_fixes=1, **FAST)
    v1, v2 = versions
    assert (v1.ok, v1.attempts, v1.source, v1.result) == (False, 2, "def reward(s, a):\n    return 0.1\n", None)
    assert "no Python code" in user_messages(seen[1])[-1]
    assert v1.check["problems"] == ["reward() must take (prev_state, action, state, info); yours takes (s, a)"]
    assert json.loads((tmp_path / "v1" / "result.json").read_text()) is None
    assert json.loads((tmp_path / "v1" / "chat.json").read_text())["messages"][-1]["role"] == "assistant"
    assert "did not pass the checks after 2 attempts" in user_messages(seen[2])[-1]
    assert "yours takes (s, a)" in user_messages(seen[2])[-1]
    assert v2.ok and v2.result is not None
    assert json.loads((tmp_path / "summary.json").read_text())["best"] == 2


def test_bad_specs_and_mismatched_out_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a language-model agent, not 'random'"):
        run_design(ENV, "wood_pickaxe", "random", iterations=1, out=tmp_path / "a", **FAST)
    with pytest.raises(ValueError, match="unknown env"):
        run_design("turngym/Nope-v0", None, "random", out=tmp_path / "b")
    with serving([FIXED]) as (spec, _):
        run_design(ENV, "wood_pickaxe", spec, iterations=1, out=tmp_path / "c", **FAST)
    with pytest.raises(ValueError, match="holds a reward-design run for turngym/Craft-v0 task wood_pickaxe"):
        run_design(ENV, "collect_wood", "random", iterations=2, out=tmp_path / "c", **FAST)


def test_custom_train_gets_the_source_and_its_folder(tmp_path: Path) -> None:
    calls: list[tuple[str, Path]] = []

    def train(source: str, folder: Path) -> dict[str, Any]:
        calls.append((source, folder))
        (folder / "policy.txt").write_text("trained")
        return {"success_rate": 0.25, "ppo_updates": 7}

    with serving([FIXED, REVISED]) as (spec, seen):
        run_design(ENV, "wood_pickaxe", spec, iterations=2, out=tmp_path, train=train, **FAST)
    assert calls == [(FIXED_CODE, tmp_path / "v1"), (REVISED_CODE, tmp_path / "v2")]
    assert (tmp_path / "v1" / "policy.txt").exists()
    revision = user_messages(seen[1])[-1]
    assert "Success rate: 25.0%." in revision and "Other results: ppo_updates 7." in revision


def test_extract_code() -> None:
    assert extract_code(FIXED) == FIXED_CODE
    assert extract_code("```py\nx = 1\n```\n```python\n" + FIXED_CODE + "```") == FIXED_CODE
    assert extract_code("```python\n" + FIXED_CODE) == FIXED_CODE  # cut off before the closing fence
    assert extract_code("Sure.\n" + FIXED_CODE) == FIXED_CODE  # no fences
    assert extract_code("no code here") is None


def test_tiny_hf_model_garbage_does_not_break_the_loop(tmp_path: Path,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_checkpoint(tmp_path_factory, "tiny", train_steps=0)
        versions = run_design(ENV, "wood_pickaxe", f"hf:{model}", iterations=1, out=tmp_path / "run", max_fixes=1,
                              agent_options={"max_new_tokens": 24}, **FAST)
    finally:
        torch.set_num_threads(threads)
    [v1] = versions
    assert v1.attempts == 2 and not v1.ok and v1.result is None
    chat = json.loads((tmp_path / "run" / "v1" / "chat.json").read_text())
    assert len(chat["sent"]) == 2 and all(isinstance(s["reply"], str) for s in chat["sent"])
    assert check_reward_source(v1.source, []).ok is False
