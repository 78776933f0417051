"""Language-model agents (`hf:`, `openai:`) on a tiny checkpoint built locally, and the chat server.

Everything is real: the tiny model is trained for a few seconds once per session, the chat server
is served by uvicorn on a free local port, and the retry and no-action tests talk to a small
scripted Starlette server over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import pytest
from conftest import serving as serve
from conftest import tiny_checkpoint
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from turngym.agents import make_agent
from turngym.agents.lm import (
    ACTION_REPLY_TOKENS,
    ACTION_SLACK_TOKENS,
    action_line_done,
    admissible_form,
    check_style,
    find_admissible,
    is_admissible,
    parse_action,
)
from turngym.rollout import rollout
from turngym.trajectory import read_jsonl, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests build their model: nothing may download
FAMILIES = ["turngym/Craft-v0", "turngym/WebShop-v0", "turngym/HopVQA-v0", "turngym/LongDocVQA-v0"]
SHORT = {"max_new_tokens": 32}  # short replies keep the tests fast; the tiny model's fit in 20 tokens


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory, "tiny")


@pytest.fixture(scope="module")
def lm(tiny_lm: Path, one_thread: None) -> str:
    return str(tiny_lm)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> str:
    """A tiny vision-language checkpoint with random weights (16 image tokens an image)."""
    return str(tiny_checkpoint(tmp_path_factory, "tiny-vlm", vlm=True))


@pytest.fixture(scope="module")
def gpt2_lm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> str:
    """The tiny LM as a GPT-2 (learned positions, full attention), briefly trained."""
    return str(tiny_checkpoint(tmp_path_factory, "tiny-gpt2", arch="gpt2", train_steps=50))


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on a free port; yields its OpenAI-style base URL."""
    with serve(app) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def chat_server(lm: str) -> Iterator[str]:
    from turngym.serve.lm_server import make_app

    with serving(make_app(lm, name="tiny")) as url:
        yield url


def scripted_app(replies: list[tuple[int, dict[str, str], str]], seen: list[dict[str, Any]]) -> Any:
    """A chat-completions server that answers with `replies` in order (status, headers, reply
    text; status 200 with the header `x-error` answers the text as an error body, as some servers
    do) and records each request (its JSON body and headers) in `seen`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        seen.append({"body": await request.json(), "headers": dict(request.headers)})
        status, headers, text = replies[min(len(seen), len(replies)) - 1]
        if status != 200 or "x-error" in headers:
            return JSONResponse({"error": {"message": text}}, status_code=status, headers=headers)
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def check_records(traj: Any) -> None:
    """Every turn carries a prompt, a completion and one finite, non-positive log-prob per token."""
    assert len(traj) > 0
    for turn in traj.turns:
        assert turn.prompt_ids and all(isinstance(i, int) for i in turn.prompt_ids)
        assert turn.completion_ids and len(turn.logprobs) == len(turn.completion_ids)
        assert all(math.isfinite(lp) and lp <= 0 for lp in turn.logprobs)
        assert turn.extras["usage"]["prompt_tokens"] == len(turn.prompt_ids)
        assert turn.extras["usage"]["completion_tokens"] == len(turn.completion_ids)
        assert isinstance(turn.extras["reply"], str)


# --- parse_action -----------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "action"), [
    ("Thought: the tree is south.\nAction: move south", "move south"),
    ("Action: move north\nThought: no, wait.\nAction: do", "do"),
    ("Thought: search.\nAction: search[red shoes", "search[red shoes]"),
    ("Action: click[Buy Now] because it matches", "click[Buy Now]"),
    ("Action: search[size [10] shoes] now", "search[size [10] shoes]"),
    ("Action: `search[red shoes]`", "search[red shoes]"),
    ('Action: "place table"', "place table"),
    ("**Action:** make wood_pickaxe", "make wood_pickaxe"),
    ("**Action: answer[42]**", "answer[42]"),
    ("Action: **claim[1, 4]**", "claim[1, 4]"),
    ("- action: noop", "noop"),
    ("Action: move north.", "move north"),
    ("Action: <read[3]>", "read[3]"),
    ("Thought: I know.\nAction:\n```\nanswer[Not answerable]\n```", "answer[Not answerable]"),
    ("I think so. Action: zoom[0, 0, 0.5, 0.5]", "zoom[0, 0, 0.5, 0.5]"),
])
def test_parse_action_extracts_the_action(reply: str, action: str) -> None:
    assert parse_action(reply) == (action, None)


@pytest.mark.parametrize("reply", ["", "Thought: I am not sure what to do.", "Action:   ", "Action: ``"])
def test_parse_action_without_an_action_says_why(reply: str) -> None:
    action, error = parse_action(reply)
    assert action is None and "`Action:`" in error


@given(st.text() | st.builds(lambda a, b: a + "Action:" + b, st.text(), st.text()))
def test_parse_action_never_raises(reply: str) -> None:
    action, error = parse_action(reply)
    assert (action is None) != (error is None)
    if action is not None:
        assert action == action.strip() and action and "\n" not in action
        assert "[" not in action or action.endswith("]")


WEBSHOP_RESULTS = ["click[Back to Search]", "click[Next >]", "click[B0PKBIGETV]", "click[Buy Now]"]
CRAFT_ACTIONS = ["move north", "move south", "do", "noop", "place table", "make wood_pickaxe"]


@pytest.mark.parametrize(("reply", "actions", "action"), [
    ("search[red usb cable]", ["search[<query>]"], "search[red usb cable]"),  # the reply is the action
    ("  `search[red usb cable`  ", ["search[<query>]"], "search[red usb cable]"),
    ("move north", CRAFT_ACTIONS, "move north"),
    ("MOVE  North.", CRAFT_ACTIONS, "move north"),  # the env's spelling comes back
    ("I will click[Buy Now] since it matches.", WEBSHOP_RESULTS, "click[Buy Now]"),  # exactly one mentioned
    ("The tree is near, so make wood_pickaxe", CRAFT_ACTIONS, "make wood_pickaxe"),
    ("Answer is answer[42]!", ["zoom[<x0>, <y0>, <x1>, <y1>]", "answer[<number>]"], "answer[42]"),
    ("zoom[0, 0, 0.5, 0.5]", ["zoom[<x0>, <y0>, <x1>, <y1>]", "answer[<number>]"], "zoom[0, 0, 0.5, 0.5]"),
    ("goto tree", ["goto <target>"], "goto tree"),  # a template without brackets
    ("I will move north east now", ["move north", "move north east"], "move north east"),  # not two actions
    ('type(1, "braided hdmi cable")', ["click(<id>)", 'type(<id>, "<text>")'], 'type(1, "braided hdmi cable")'),
    # Well-formed replies keep parse_action's behaviour, admissible or not.
    ("Thought: north.\nAction: move west", CRAFT_ACTIONS, "move west"),
    ("Action: click[B0PKBIGETV] or click[Buy Now]", WEBSHOP_RESULTS, "click[B0PKBIGETV]"),
])
def test_lenient_parsing_takes_a_reply_that_names_one_admissible_action(reply: str, actions: list[str],
                                                                        action: str) -> None:
    assert parse_action(reply, actions) == (action, None)


@pytest.mark.parametrize(("reply", "actions"), [
    ("Admissible actions now: search[<query>]", ["search[<query>]"]),  # a copied placeholder is no query
    ("search[...]", ["search[<query>]"]),
    ("click[Back to Search], click[Next >]", WEBSHOP_RESULTS),  # two different actions: no choice made
    ("search[red] or search[blue]", ["search[<query>]"]),
    ("The door is open, I'd not move.", CRAFT_ACTIONS),  # `do` and `move north` only as parts of words
    ("", CRAFT_ACTIONS),
    ("I am not sure.", []),
])
def test_lenient_parsing_leaves_ambiguous_replies_alone(reply: str, actions: list[str]) -> None:
    action, error = parse_action(reply, actions)
    assert action is None and "`Action:`" in error
    assert find_admissible(reply, actions) is None


TEMPLATES = st.sampled_from(["search[<query>]", "click[Buy Now]", "zoom[<x0>, <y0>, <x1>, <y1>]", "goto <target>",
                             "move north", "do", "answer[<answer>]", "a[<b>]]", "[<x>]", "<odd", "*", "(", "["])


@given(st.text() | st.builds(lambda a, b: a + "Action:" + b, st.text(), st.text())
       | st.builds(lambda a, b: f"{a} {b}", st.text(), TEMPLATES),
       st.lists(TEMPLATES | st.text(max_size=12), max_size=6))
def test_lenient_parse_action_never_raises(reply: str, actions: list[str]) -> None:
    action, error = parse_action(reply, actions)
    assert (action is None) != (error is None)
    if action is not None:
        assert action == action.strip() and action and "\n" not in action
    action_line_done(reply)
    is_admissible(reply, actions)


@pytest.mark.parametrize(("text", "done"), [
    ("Action: search[red shoes", False), ("Action: search[red shoes]", True), ("Action: a[b [c]", False),
    ("Action: move north", False), ("Action: move north\n", True), ("Action:\n", False), ("Action:\ndo\n", True),
    ("Thought: I see [a tree]\n", False), ("Thought: go.\nAction: do\nThought: more", True),
    ("Thought: the best action: go north is blocked\n", False),  # an action named inside a thought
])
def test_a_reply_is_done_once_its_action_line_is(text: str, done: bool) -> None:
    assert action_line_done(text) is done


def test_admissible_means_listed_or_filling_a_template() -> None:
    assert is_admissible("Move North", CRAFT_ACTIONS) and not is_admissible("move up", CRAFT_ACTIONS)
    assert is_admissible("search[red shoes]", ["search[<query>]"])
    assert not is_admissible("search[<query>]", ["search[<query>]"]) and not is_admissible("search[]", ["search[<q>]"])
    # the env's spelling, whatever the case and spacing of the words
    assert admissible_form("Move  North", CRAFT_ACTIONS) == "move north"
    assert admissible_form("Search[ red  shoes ]", ["search[<query>]"]) == "search[red  shoes]"
    assert admissible_form("move north east", CRAFT_ACTIONS) is None and admissible_form("do it", CRAFT_ACTIONS) is None


# --- options ----------------------------------------------------------------------------------

def test_bad_specs_and_options_fail_in_one_clear_sentence(lm: str) -> None:
    env = gym.make("turngym/Craft-v0")
    with pytest.raises(ValueError, match="no local checkpoint"):
        make_agent("hf:/nowhere/at/all", env)
    with pytest.raises(ValueError, match="MODEL@BASE_URL"):
        make_agent("openai:gpt-4o", env)
    with pytest.raises(ValueError, match="temperature must be"):
        make_agent(f"hf:{lm}", env, temperature=-1)
    with pytest.raises(ValueError, match="top_p must be"):
        make_agent(f"hf:{lm}", env, top_p=0)
    with pytest.raises(ValueError, match="beam_width"):  # not an option of mode=generate (nor of mode=score)
        make_agent(f"hf:{lm}", env, beam_width=4)
    with pytest.raises(ValueError, match="text-only model"):
        make_agent(f"hf:{lm}", env, images=True)
    with pytest.raises(ValueError, match="retries must be"):
        make_agent("openai:m@http://127.0.0.1:9/v1", env, retries=-1)


def test_prompt_style_options_are_checked(lm: str) -> None:
    env = gym.make("turngym/Craft-v0")
    for options, message in [({"prompt": "tiny"}, "prompt must be auto, compact or full"),
                             ({"prefill": "Go:"}, "prefill must be"), ({"prefill": 3}, "prefill must be"),
                             ({"example": "yes"}, "example must be true or false"),
                             ({"resample": -1}, "resample must be a whole number"),
                             ({"resample": 1.5}, "resample must be a whole number")]:
        with pytest.raises(ValueError, match=message):
            make_agent(f"hf:{lm}", env, **options)
        with pytest.raises(ValueError, match=message):
            make_agent("openai:m@http://127.0.0.1:9/v1", env, **options)
    html = gym.make("turngym/WebShop-v0", obs_mode="html")  # the example is written for obs_mode=text
    with pytest.raises(ValueError, match="has no one-shot example"):
        make_agent(f"hf:{lm}", html, example=True)
    assert not make_agent(f"hf:{lm}", html, prompt="compact").example  # by default: silently none
    # The CLI reads `-o prefill=Action:` as YAML, which makes it a mapping; the plain words work too.
    assert [check_style("auto", p) for p in ({"Action": None}, "action", "Thought:", "none", "", None)] == \
        ["Action:", "Action:", "Thought:", "", "", None]


def test_the_style_follows_the_model_size_unless_chosen(lm: str) -> None:
    """prompt=auto: the toy checkpoint (0.24M parameters) keeps the full prompt it was trained on;
    the compact style brings its example, the `Action:` prefill and resampling."""
    env = gym.make("turngym/WebShop-v0")
    toy = make_agent(f"hf:{lm}", env)
    assert (toy.compact, toy.prefill, toy.example, toy.resample) == (False, "", False, 0)
    compact = make_agent(f"hf:{lm}", env, prompt="compact")
    assert (compact.compact, compact.prefill, compact.example, compact.resample) == (True, "Action:", True, 2)
    chosen = make_agent(f"hf:{lm}", env, prompt="compact", prefill="", example=False, resample=0)
    assert (chosen.prefill, chosen.example, chosen.resample) == ("", False, 0)


# --- hf: --------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", FAMILIES)
def test_hf_agent_plays_every_family_and_records_tokens(lm: str, env_id: str, tmp_path: Path) -> None:
    env = gym.make(env_id, max_turns=3)
    images = env_id == "turngym/Craft-v0"  # one family with images through the JSONL round trip
    traj = rollout(env, make_agent(f"hf:{lm}", env, **SHORT), seed=0, record_images=images)
    check_records(traj)
    assert traj.truncated or traj.terminated
    back = read_jsonl(write_jsonl(tmp_path / "t.jsonl", [traj]))[0]
    for mine, theirs in zip(traj.turns, back.turns, strict=True):
        assert (theirs.prompt_ids, theirs.completion_ids, theirs.logprobs, theirs.extras) == \
            (mine.prompt_ids, mine.completion_ids, mine.logprobs, mine.extras)
        assert (theirs.image is None) == (not images)


def test_hf_agent_is_reproducible_from_the_episode_seed(lm: str) -> None:
    env = gym.make("turngym/WebShop-v0", max_turns=3)

    def play(seed: int) -> list[tuple[str, list[int] | None]]:
        traj = rollout(env, make_agent(f"hf:{lm}", env, **SHORT), seed=seed)
        return [(t.action, t.completion_ids) for t in traj.turns]

    assert play(3) == play(3)


@pytest.mark.parametrize("prefill", ["Action:", "Thought:"])
def test_a_prefill_ends_the_prompt_ids_and_the_completion_is_only_generated_tokens(lm: str, prefill: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm)
    prefill_ids = tokenizer(prefill, add_special_tokens=False)["input_ids"]
    env = gym.make("turngym/WebShop-v0", max_turns=3)
    agent = make_agent(f"hf:{lm}", env, prompt="compact", prefill=prefill, resample=0, **SHORT)
    traj = rollout(env, agent, seed=0)
    check_records(traj)
    for turn in traj.turns:
        assert turn.prompt_ids[-len(prefill_ids):] == prefill_ids
        generated = tokenizer.decode(turn.completion_ids, skip_special_tokens=True)
        assert turn.extras["prefill"] == prefill and turn.extras["reply"] == prefill + generated
    # The prompt ids are the chat template's, then the prefill's own tokens, nothing else.
    obs, info = env.reset(seed=0)
    agent.reset(obs, info, seed=0)
    messages, _ = agent.build_messages(0, obs["text"], info["actions"], None)
    completion = agent.model.generate(messages, prefill=prefill, max_new_tokens=4)
    template = tokenizer(agent.model.prompt_text(messages), add_special_tokens=False)["input_ids"]
    assert completion.prompt_ids == template + prefill_ids and completion.prefill == prefill
    assert agent.model.prompt_text(messages, prefill=prefill) == agent.model.prompt_text(messages) + prefill


def test_action_prefilled_replies_stop_after_the_action(lm: str) -> None:
    env = gym.make("turngym/WebShop-v0", max_turns=4)
    agent = make_agent(f"hf:{lm}", env, prompt="compact", max_new_tokens=256)
    for turn in rollout(env, agent, seed=1).turns:
        assert len(turn.completion_ids) <= ACTION_REPLY_TOKENS
        reply = turn.extras["reply"]
        assert reply.startswith("Action:") and (turn.extras["finish_reason"] == "length" or action_line_done(reply)
                                                or turn.completion_ids[-1] in agent.model.eos_ids)


def test_a_reply_runs_at_most_a_few_tokens_past_the_longest_fixed_action(tmp_path_factory, one_thread) -> None:
    """Craft's skills are fixed words (no `<placeholder>`): a reply is cut ACTION_SLACK_TOKENS past
    the longest of the turn's actions, where a runaway reply cost ACTION_REPLY_TOKENS before. (The
    untrained tiny model runs away.)"""
    untrained = tiny_checkpoint(tmp_path_factory, "untrained", train_steps=0)
    env = gym.make("turngym/Craft-v0", action_mode="skills", text_map=False)
    agent = make_agent(f"hf:{untrained}", env, prompt="compact", resample=0)
    obs, info = env.reset(seed=3)
    agent.reset(obs, info, seed=3)
    cut = []
    for _ in range(4):
        actions = info["actions"]
        assert not any("<" in a for a in actions)
        longest = max(len(agent.model.tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in actions)
        action = agent.act(obs, info)
        length = len(agent.last_record["completion_ids"])
        assert length <= longest + ACTION_SLACK_TOKENS < ACTION_REPLY_TOKENS
        cut.append(length == longest + ACTION_SLACK_TOKENS and agent.last_record["extras"]["finish_reason"] == "length")
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert any(cut)  # the bound is what stopped it


def test_the_one_shot_example_opens_the_chat_in_the_reply_format(lm: str) -> None:
    env = gym.make("turngym/Craft-v0", action_mode="skills")
    obs, info = env.reset(seed=0)
    for prefill, first_reply in [("Action:", "Action: goto tree"),
                                 ("", "Thought: I need wood, so I go to the tree.\nAction: goto tree")]:
        agent = make_agent(f"hf:{lm}", env, prompt="compact", example=True, prefill=prefill)
        agent.reset(obs, info, seed=0)
        messages, user = agent.build_messages(0, obs["text"], info["actions"], None)
        assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 4 + ["user"]
        assert messages[1]["content"].startswith("Example episode.\n\nTask: Make a wood pickaxe.")
        assert messages[2]["content"] == first_reply
        assert messages[-1]["content"] == "Your episode.\n\n" + user
        assert all(line in user for line in obs["text"].strip().splitlines() if not line.startswith("Possible now:"))
        assert "Action: <one admissible action>" in messages[0]["content"] or prefill != "Action:"
    agent = make_agent(f"hf:{lm}", env, prompt="compact", example=False)
    agent.reset(obs, info, seed=0)
    assert [m["role"] for m in agent.build_messages(0, obs["text"], info["actions"], None)[0]] == ["system", "user"]
    assert make_agent(f"hf:{lm}", env, example=True).example_messages()[0]["content"].startswith(
        "Example episode.\n\nTurn 0. Observation:\nTask:")  # the full style shows it in its own format


def test_the_compact_prompt_shows_templates_as_dots_and_no_earlier_turns(lm: str) -> None:
    env = gym.make("turngym/WebShop-v0", max_turns=3)
    agent = make_agent(f"hf:{lm}", env, prompt="compact", example=False, **SHORT)
    traj = rollout(env, agent, seed=0)
    assert len(traj) == 3
    messages, _ = agent.build_messages(3, "Instruction: [SEP] red shoes [SEP] Search", ["search[<query>]"], None)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].endswith("Admissible actions now: search[...]")
    assert "<placeholder>" not in messages[0]["content"] and "..." in messages[0]["content"]


def test_the_compact_prompt_lists_the_actions_once() -> None:
    """Craft's `Possible now:` line is the admissible list: the compact message leaves it out and
    keeps every other line (a line listing other actions stays)."""
    from turngym.agents.lm import compact_user_message

    env = gym.make("turngym/Craft-v0", task="wood_pickaxe", action_mode="skills", text_map=False)
    obs, info = env.reset(seed=0)
    message = compact_user_message(obs["text"], info["actions"], None)
    lines = obs["text"].strip().splitlines()
    assert any(line.startswith("Possible now: ") for line in lines)
    kept = [line for line in lines if not line.startswith("Possible now: ")]
    assert message == "\n".join(kept) + "\n\nAdmissible actions now: " + ", ".join(info["actions"])
    assert "Possible now: " in compact_user_message(obs["text"], info["actions"][:2], None)


def test_reusing_the_prompt_prefix_changes_no_reply(gpt2_lm: str) -> None:
    """The cached head of the prompt gives the same greedy tokens and log-probs (to float
    rounding) as computing the whole prompt; an episode's replies do not depend on the one before."""
    from turngym.agents.hf import HFModel

    model = HFModel(gpt2_lm)
    env = gym.make("turngym/Craft-v0", max_turns=2)
    obs, _ = env.reset(seed=0)
    messages = [{"role": "system", "content": "Reply with an action. " * 8},
                {"role": "user", "content": obs["text"][:400]}]
    plain = model.generate(messages, temperature=0, max_new_tokens=12)
    model.reset_prefix(model.encode(messages[:1])["input_ids"][0].tolist()[:40])
    for _ in range(2):  # from the base prefix, then from the previous call's cache
        cached = model.generate(messages, temperature=0, max_new_tokens=12, reuse_prefix=True)
        assert cached.completion_ids == plain.completion_ids and cached.prompt_ids == plain.prompt_ids
        assert max(abs(a - b) for a, b in zip(cached.logprobs, plain.logprobs, strict=True)) < 1e-4

    import torch

    with torch.no_grad():  # a trainer's update: the base prefix is computed again, not served stale
        model.model.get_input_embeddings().weight.mul_(1.5)
    changed = model.generate(messages, temperature=0, max_new_tokens=12)
    model.reset_prefix(model.encode(messages[:1])["input_ids"][0].tolist()[:40])
    again = model.generate(messages, temperature=0, max_new_tokens=12, reuse_prefix=True)
    assert max(abs(a - b) for a, b in zip(again.logprobs, changed.logprobs, strict=True)) < 1e-4

    agent = make_agent(f"hf:{gpt2_lm}", env, **SHORT)

    def play(seed: int) -> list[list[int] | None]:
        return [t.completion_ids for t in rollout(env, agent, seed=seed).turns]

    first = play(4)
    play(5)
    assert play(4) == first == [t.completion_ids for t in rollout(env, make_agent(f"hf:{gpt2_lm}", env, **SHORT),
                                                                    seed=4).turns]


def test_the_tiny_model_usually_answers_in_the_reply_format(lm: str) -> None:
    env = gym.make("turngym/Craft-v0", max_turns=6)
    traj = rollout(env, make_agent(f"hf:{lm}", env, temperature=0, **SHORT), seed=0)
    assert sum(parse_action(t.extras["reply"])[0] is not None for t in traj.turns) >= 4


def test_history_is_summarised_whole_turns_at_a_time_within_the_budget(lm: str) -> None:
    budget = 1500
    env = gym.make("turngym/Craft-v0", max_turns=6)
    agent = make_agent(f"hf:{lm}", env, max_context=budget, **SHORT)
    traj = rollout(env, agent, seed=0)
    assert all(len(t.prompt_ids) <= budget for t in traj.turns)
    messages, _ = agent.build_messages(6, "Turn 6 of 6.", ["noop"], None)
    assert agent.count_tokens(messages) <= budget
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * (len(messages) // 2 - 1) + ["user"]
    first = messages[1]["content"]
    assert first.startswith("Summary of earlier turns")
    summarised = [line for line in first.splitlines() if line.startswith("Turn ") and " -> " in line]
    assert summarised and summarised[0].startswith("Turn 0: ")
    assert all(line.endswith("-> valid") or "-> invalid: " in line for line in summarised)
    # The turns shown in full are the most recent ones, each exactly as it was first sent.
    kept = agent.history[len(agent.history) - (len(messages) - 2) // 2:]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert replies == [e.reply for e in kept]
    assert first.endswith(kept[0].user) if kept else first.endswith("Turn 6 of 6.\n\nAdmissible actions now: noop")
    assert [m["content"] for m in messages[3:-1:2]] == [e.user for e in kept[1:]]
    assert len(kept) + len(summarised) == len(agent.history)


@pytest.mark.parametrize("max_context", [500, 800])
def test_the_full_prompt_never_runs_past_max_context(gpt2_lm: str, max_context: int) -> None:
    # with no earlier turn kept whole, the summary of them used to stay at one line at least and
    # go unchecked: 2 to 39 tokens over on Craft
    env = gym.make("turngym/Craft-v0")
    agent = make_agent(f"hf:{gpt2_lm}", env, prompt="full", max_new_tokens=16, max_context=max_context)
    obs, info = env.reset(seed=0)
    agent.reset(obs, info, seed=1)
    for _ in range(25):
        action = agent.act(obs, info)
        assert agent.last_record["extras"]["usage"]["prompt_tokens"] <= max_context
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break


def test_an_observation_longer_than_the_budget_is_cut_visibly(lm: str) -> None:
    budget = 420
    env = gym.make("turngym/LongDocVQA-v0", max_turns=2)
    agent = make_agent(f"hf:{lm}", env, max_context=budget, **SHORT)
    obs, info = env.reset(seed=0, options={"split": "test", "index": 0})
    agent.reset(obs, info, seed=0)
    long_text = obs["text"] + "\n" + "A long page of text. " * 400
    messages, user = agent.build_messages(0, long_text, info["actions"], None)
    assert "characters cut to fit the context" in user
    assert user.rstrip().endswith(", ".join(info["actions"]))  # the tail survives the cut
    assert obs["text"][:60] in user  # and so does the head
    assert agent.count_tokens(messages) <= budget


def test_hf_agent_plays_a_gpt2_checkpoint(gpt2_lm: str) -> None:
    from turngym.agents.tiny import build_tiny_lm

    assert json.loads((Path(gpt2_lm) / "config.json").read_text())["model_type"] == "gpt2"
    env = gym.make("turngym/Craft-v0", max_turns=3)
    traj = rollout(env, make_agent(f"hf:{gpt2_lm}", env, **SHORT), seed=0)
    check_records(traj)
    assert len(traj) == 3 and traj.truncated
    with pytest.raises(ValueError, match="arch must be one of 'mistral', 'gpt2'"):
        build_tiny_lm(Path(gpt2_lm) / "never", arch="llama")


def test_hf_vision_language_agent_sends_the_current_image(vlm: str) -> None:
    env = gym.make("turngym/HopVQA-v0", max_turns=2)
    agent = make_agent(f"hf:{vlm}", env, **SHORT)
    traj = rollout(env, agent, seed=0, record_images=False)
    check_records(traj)
    image_token = agent.model.model.config.image_token_id
    assert [t.prompt_ids.count(image_token) for t in traj.turns] == [16, 16]  # this turn's image only


# --- the chat server and openai: --------------------------------------------------------------

def test_chat_server_answers_like_openai_and_rejects_malformed_requests(chat_server: str) -> None:
    with httpx.Client(timeout=30) as client:
        card = client.get(f"{chat_server}/models").json()["data"][0]
        assert card["id"] == "tiny" and card["max_model_len"] == 2048
        request = {"model": "tiny", "seed": 1, "max_tokens": 8, "logprobs": True, "messages": [
            {"role": "system", "content": "Reply with an action."},
            {"role": "user", "content": [{"type": "text", "text": "Turn 0. What now?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}
        reply = client.post(f"{chat_server}/chat/completions", json=request).json()
        choice = reply["choices"][0]
        assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
        assert reply["usage"]["completion_tokens"] == len(choice["logprobs"]["content"]) <= 8
        assert reply == {**client.post(f"{chat_server}/chat/completions", json=request).json(),
                         "id": reply["id"], "created": reply["created"]}  # same seed, same reply
        for bad in ({"messages": []}, {"messages": [{"role": "robot", "content": "hi"}]},
                    {"messages": [{"role": "user", "content": 5}]},
                    {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
                    {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
                    {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
                    {"messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": 1}):
            response = client.post(f"{chat_server}/chat/completions", json=bad)
            assert response.status_code == 400 and response.json()["error"]["message"]
        response = client.post(f"{chat_server}/chat/completions", content=b"{not json")
        assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]


def test_the_openai_client_streams_the_same_reply(chat_server: str) -> None:
    """The `openai` package's own client reads the server-sent events: the deltas join to the
    non-streamed reply, token by token (log-probs included), and usage comes last."""
    import openai  # the dev extra: a missing client fails here rather than skipping the check
    client = openai.OpenAI(base_url=chat_server, api_key="x", max_retries=0)
    request = {"model": "tiny", "temperature": 0, "max_tokens": 24, "logprobs": True, "messages": [
        {"role": "system", "content": "Reply with an action."}, {"role": "user", "content": "Turn 0. What now?"}]}
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    choices = [chunk.choices[0] for chunk in chunks[:-1]]
    assert choices[0].delta.role == "assistant" and len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == "tiny" for chunk in chunks)
    pieces = [c.delta.content for c in choices[1:-1]]
    assert len([p for p in pieces if p]) > 1  # cut at token boundaries, not one blob
    assert "".join(pieces) == whole.choices[0].message.content
    streamed = [entry for c in choices[1:-1] for entry in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole.choices[0].logprobs.content]
    assert [c.finish_reason for c in choices] == [None] * (len(choices) - 1) + [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # Without logprobs or include_usage: text only, and no usage anywhere.
    plain = list(client.chat.completions.create(**{**request, "logprobs": False}, stream=True))
    assert [c.choices[0].delta.content for c in plain[1:-1]] == [p for p in pieces if p]  # no empty deltas
    assert all(c.usage is None and c.choices[0].logprobs is None for c in plain)


def test_the_event_stream_is_what_openai_sends(chat_server: str) -> None:
    """On the wire: text/event-stream, one `data:` JSON event per chunk, and `data: [DONE]` last;
    a request the model cannot serve still gets a JSON 400 rather than a broken stream."""
    request = {"model": "tiny", "seed": 3, "max_tokens": 8, "stream": True,
               "messages": [{"role": "user", "content": "Turn 0. What now?"}]}
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{chat_server}/chat/completions", json=request)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = response.text.split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""]
        chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
        assert all(event.startswith("data: {") for event in events[:-2])
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "usage" not in chunks[-1]
        whole = client.post(f"{chat_server}/chat/completions", json={**request, "stream": False}).json()
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == whole["choices"][0]["message"]["content"]  # same seed, same reply
        too_long = client.post(f"{chat_server}/chat/completions",
                               json={**request, "messages": [{"role": "user", "content": "go " * 5000}]})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"


def test_stream_pieces_never_split_a_character(lm: str) -> None:
    """Byte-level tokens cut characters in half (é is two bytes, the emoji four): a piece waits for
    the whole character, and the pieces join to the reply with every token in exactly one piece."""
    from transformers import AutoTokenizer

    from turngym.agents.lm import Completion
    from turngym.serve.lm_server import text_pieces

    tokenizer = AutoTokenizer.from_pretrained(lm)
    text = "héllo 😀 wörld\nAction: move north"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(ids) > len(text.split())  # the odd characters really do span several tokens
    pieces = text_pieces(tokenizer, Completion(text, completion_ids=ids))
    assert "".join(piece for piece, _ in pieces) == text
    assert not any("\ufffd" in piece for piece, _ in pieces) and any("😀" in piece for piece, _ in pieces)
    assert [i for _, tokens in pieces for i in tokens] == list(range(len(ids)))
    assert pieces[-1] == ("", [len(ids) - 1])  # the end-of-sequence token adds no text


def test_openai_agent_plays_craft_through_the_chat_server(chat_server: str) -> None:
    env = gym.make("turngym/Craft-v0", max_turns=3)

    def play() -> Any:
        return rollout(env, make_agent(f"openai:tiny@{chat_server}", env, logprobs=True, **SHORT), seed=5)

    traj = play()
    assert len(traj) == 3 and traj.truncated
    for turn in traj.turns:
        usage = turn.extras["usage"]
        assert usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert len(turn.logprobs) == usage["completion_tokens"]
        assert all(math.isfinite(lp) and lp <= 0 for lp in turn.logprobs)
    assert [t.extras["reply"] for t in play().turns] == [t.extras["reply"] for t in traj.turns]  # per-turn seeds


def test_openai_agent_sends_images_as_data_urls(vlm: str) -> None:
    from turngym.serve.lm_server import make_app

    env = gym.make("turngym/HopVQA-v0")
    obs, info = env.reset(seed=0)
    prompt_tokens = []
    with serving(make_app(vlm)) as url:
        for images in (False, True):
            agent = make_agent(f"openai:tiny-vlm@{url}", env, images=images, **SHORT)
            agent.reset(obs, info, seed=0)
            agent.act(obs, info)
            prompt_tokens.append(agent.last_record["extras"]["usage"]["prompt_tokens"])
    assert prompt_tokens[1] - prompt_tokens[0] == 16


def test_openai_agent_retries_429_and_sends_key_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNGYM_TEST_KEY", "sk-test")
    seen: list[dict[str, Any]] = []
    replies = [(429, {"Retry-After": "0"}, "slow down"), (200, {}, "Thought: walk.\nAction: move north")]
    env = gym.make("turngym/Craft-v0", max_turns=2)
    obs, info = env.reset(seed=0)
    with serving(scripted_app(replies, seen)) as url:
        agent = make_agent(f"openai:scripted@{url}", env, retries=2, api_key_env="TURNGYM_TEST_KEY", max_context=4096)
        agent.reset(obs, info, seed=0)
        assert agent.act(obs, info) == "move north"
    assert len(seen) == 2 and seen[0]["body"] == seen[1]["body"]
    assert seen[0]["headers"]["authorization"] == "Bearer sk-test"
    assert isinstance(seen[0]["body"]["seed"], int) and "logprobs" not in seen[0]["body"]
    assert agent.last_record["extras"]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_openai_agent_gives_up_with_a_clear_error() -> None:
    env = gym.make("turngym/Craft-v0")
    obs, info = env.reset(seed=0)
    seen: list[dict[str, Any]] = []
    with serving(scripted_app([(503, {"Retry-After": "0"}, "overloaded")], seen)) as url:
        agent = make_agent(f"openai:scripted@{url}", env, retries=1, max_context=4096)
        agent.reset(obs, info, seed=0)
        with pytest.raises(RuntimeError, match=r"failed 2 tries \(last: HTTP 503: overloaded\)"):
            agent.act(obs, info)
    assert len(seen) == 2
    with serving(scripted_app([(400, {}, "unknown model")], [])) as url:
        agent = make_agent(f"openai:scripted@{url}", env, retries=3, max_context=4096)
        agent.reset(obs, info, seed=0)
        with pytest.raises(RuntimeError, match="refused the request"):
            agent.act(obs, info)
    with serving(scripted_app([(200, {"x-error": "1"}, "context length exceeded")], [])) as url:
        agent = make_agent(f"openai:scripted@{url}", env, retries=3, max_context=4096)
        agent.reset(obs, info, seed=0)
        with pytest.raises(RuntimeError, match="answered with an error: context length exceeded"):
            agent.act(obs, info)


def test_a_reply_without_an_action_costs_the_turn_and_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    replies = [(200, {}, "I would rather not say."), (200, {}, "Thought: fine.\nAction: noop")]
    env = gym.make("turngym/Craft-v0", max_turns=2)
    with serving(scripted_app(replies, seen)) as url:
        traj = rollout(env, make_agent(f"openai:scripted@{url}", env, max_context=4096), seed=0)
    assert [t.action for t in traj.turns] == ["", "noop"]
    assert traj.turns[0].info["valid"] is False and "parse_error" in traj.turns[0].extras
    last_user = seen[1]["body"]["messages"][-1]["content"]
    assert last_user.startswith("Your previous reply was not used (the reply has no `Action:` line)")


def test_openai_agent_ignores_the_prefill_and_resamples_an_inadmissible_action() -> None:
    """A chat-completions server is sent no prefill (the reply is parsed as usual); a reply whose
    action is not admissible is asked again with a new seed, at temperature 1 when greedy."""
    seen: list[dict[str, Any]] = []
    replies = [(200, {}, "Action: fly away"), (200, {}, "I think move north is best.")]
    env = gym.make("turngym/Craft-v0", max_turns=2)
    obs, info = env.reset(seed=0)
    with serving(scripted_app(replies, seen)) as url:
        agent = make_agent(f"openai:scripted@{url}", env, prompt="compact", prefill="Action:", resample=1,
                           temperature=0, max_context=4096)
        agent.reset(obs, info, seed=0)
        assert agent.act(obs, info) == "move north"
    assert len(seen) == 2 and seen[0]["body"]["messages"][-1]["role"] == "user"
    assert seen[0]["body"]["messages"][0]["content"].endswith("Reply with one line: Action: <one admissible action>")
    assert (seen[0]["body"]["temperature"], seen[1]["body"]["temperature"]) == (0, 1.0)
    assert seen[0]["body"]["seed"] != seen[1]["body"]["seed"]
    extras = agent.last_record["extras"]
    assert extras["rejected"] == ["Action: fly away"] and "prefill" not in extras and "parse_error" not in extras


def test_an_admissible_action_written_loosely_is_sent_as_the_env_spells_it() -> None:
    """`Action: Move  North` names an admissible action: it is taken as `move north`, not judged
    inadmissible and asked again."""
    seen: list[dict[str, Any]] = []
    env = gym.make("turngym/Craft-v0", max_turns=2)
    obs, info = env.reset(seed=0)
    with serving(scripted_app([(200, {}, "Action: Move  North")], seen)) as url:
        agent = make_agent(f"openai:scripted@{url}", env, prompt="compact", resample=1, max_context=4096)
        agent.reset(obs, info, seed=0)
        action = agent.act(obs, info)
    assert action == "move north" and len(seen) == 1 and "rejected" not in agent.last_record["extras"]


# --- a real small model -----------------------------------------------------------------------

def test_smollm2_plays_webshop_with_mostly_valid_actions(one_thread: None) -> None:
    """SmolLM2-135M-Instruct (`hf:smollm2`, when installed) in the default compact style, greedy:
    with the full prompt it echoed the observation's last line on every turn."""
    from turngym.agents.models import MODELS, models_dir

    if not (models_dir() / MODELS["smollm2"].folder / "config.json").exists():
        pytest.skip("hf:smollm2 is not converted here: run `python -m turngym.agents.models smollm2`")
    env = gym.make("turngym/WebShop-v0", max_turns=3)
    agent = make_agent("hf:smollm2", env, temperature=0)
    assert agent.compact and agent.prefill == "Action:" and agent.example
    traj = rollout(env, agent, seed=0, options={"split": "test", "index": 1})
    assert sum(bool(t.info["valid"]) for t in traj.turns) >= 2
    assert traj.turns[0].action.startswith("search[") and "<" not in traj.turns[0].action


# --- the CLI ----------------------------------------------------------------------------------

@pytest.mark.parametrize("server", [False, True], ids=["hf", "openai"])
def test_cli_runs_language_model_agents(lm: str, chat_server: str, server: bool, tmp_path: Path) -> None:
    from turngym.apps.cli import app

    spec = f"openai:tiny@{chat_server}" if server else f"hf:{lm}"
    result = CliRunner().invoke(app, ["run", "turngym/Craft-v0", "--agent", spec, "-n", "1", "-k", "max_turns=3",
                                      "--out", str(tmp_path), "--max-new-tokens", "24", "-o", "max_context=1500"])
    assert result.exit_code == 0, result.output
    [path] = list(tmp_path.glob("episodes/*/*/*.jsonl"))
    [traj] = read_jsonl(path)
    assert len(traj) == 3 and traj.meta["agent"] == spec
    assert all(t.extras["usage"]["completion_tokens"] > 0 for t in traj.turns)
    if not server:
        check_records(traj)
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["agent"] == spec


def test_cli_reports_a_bad_agent_option(lm: str) -> None:
    from turngym.apps.cli import app

    result = CliRunner().invoke(app, ["run", "turngym/Craft-v0", "--agent", f"hf:{lm}", "-n", "1",
                                      "--temperature", "-2"])
    assert result.exit_code != 0 and "temperature must be" in result.output


def test_importing_the_agents_loads_neither_torch_nor_transformers() -> None:
    import subprocess
    import sys

    code = "import sys, turngym.agents; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
