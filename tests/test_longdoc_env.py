"""LongDocVQA-v0 on a small benchmark folder the test writes (MMLongBench-Doc's layout, real PDFs)."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pymupdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym import rollout
from turngym.agents import make_agent
from turngym.envs.longdoc import accuracy, generalized_f1
from turngym.envs.longdoc.answers import candidate_answers, names_all
from turngym.envs.longdoc.env import HIT, READ

PAGES = {
    1: "Norhaven Annual Review 2021. Prepared by the Office of Planning. Published 4 May 2022.",
    2: "Contents. Overview 3. Workforce 4. Finance 5. Outlook 6.",
    3: "Overview. Norhaven is a river town. In 2021 the town council employed 1,250 people across its "
       "departments. The council is led by Mayor Ingrid Solberg.",
    4: "Workforce. The largest department is Transport with 410 staff. Parks employs 85 staff. "
       "Libraries employ 64 staff.",
    5: "Finance. Revenue in 2021 reached 48.6 million crowns. The budget surplus was 3.2 percent.",
    6: "Outlook. New libraries will open in Eskvik and Lindmoen in 2023.",
}
SAMPLES = [
    ("report.pdf", "How many people did the town council employ in 2021?", "1250", "[3]", "['Pure-text']", "Int"),
    ("report.pdf", "Who leads the council?", "Ingrid Solberg", "[3]", "['Pure-text']", "Str"),
    ("missing.pdf", "What is on page 2?", "Nothing", "[2]", "['Pure-text']", "Str"),
    ("report.pdf", "What was the revenue in 2021 in million crowns?", "48.6", "[5]", "['Pure-text']", "Float"),
    ("broken.pdf", "What is the title?", "Broken", "[1]", "['Layout']", "Str"),
    ("report.pdf", "List the towns where new libraries will open.", "['Eskvik', 'Lindmoen']", "[6]",
     "['Pure-text']", "List"),
    ("report.pdf", "How many staff work in Parks and Libraries together?", "149", "[4]", "['Pure-text']", "Int"),
    ("report.pdf", "What was the revenue of the harbour authority in 2019?", "Not answerable", "[]", "[]", "None"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmlb")
    (root / "documents").mkdir()
    pdf = pymupdf.open()
    for number, text in PAGES.items():
        page = pdf.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 540, 400), text, fontsize=12)
        page.draw_rect(pymupdf.Rect(72, 450, 300, 600), color=(0, 0, 0.8), fill=(0.8, 0.85, 1.0))
        page.insert_text((300, 760), str(number), fontsize=10)
    pdf.save(root / "documents" / "report.pdf")
    (root / "documents" / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a PDF")
    records = [dict(zip(("doc_id", "question", "answer", "evidence_pages", "evidence_sources", "answer_format"),
                        row, strict=True), doc_type="Research report / Introduction") for row in SAMPLES]
    (root / "samples.json").write_text(json.dumps(records))
    return root


def make(dataset, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make("turngym/LongDocVQA-v0", dataset=str(dataset), **kwargs)


def test_the_loader_skips_missing_and_unreadable_pdfs_once_by_name(dataset):
    with pytest.warns(UserWarning) as caught:
        env = gym.make("turngym/LongDocVQA-v0", dataset=str(dataset))
    messages = [str(w.message) for w in caught]
    assert sum("missing.pdf" in m for m in messages) == 1 and sum("broken.pdf" in m for m in messages) == 1
    data = env.unwrapped.data
    assert data.skipped == {"missing.pdf": 1, "broken.pdf": 1}
    assert list(data.splits["test"]) == ["q-0", "q-1", "q-3", "q-5", "q-6", "q-7"] and not data.splits["dev"]
    question = data.question("q-5")
    assert question.evidence_pages == (6,) and question.evidence_sources == ("Pure-text",)
    _, info = env.reset(options={"split": "test", "index": 2})
    assert info["task_id"] == "q-3" and "revenue" in info["instruction"]


def test_a_full_episode_search_read_view_zoom_answer(dataset):
    env = make(dataset, evidence_weight=0.5)
    obs, info = env.reset(seed=0, options={"task_id": "q-0"})
    assert obs["text"].startswith("Question: How many people") and "6 pages" in obs["text"]
    assert obs["image"].shape == (1056, 816, 3) and not obs["image"].any()  # nothing shown yet
    obs, _, _, _, info = env.step("search[council employed people]")
    assert info["valid"] and "p. 3:" in obs["text"] and "1,250" in obs["text"]
    obs, _, _, _, info = env.step("read[3]")
    assert "Text of page 3: Overview. Norhaven" in obs["text"]
    obs, _, _, _, info = env.step("view[page 4]")
    page = obs["image"]
    assert info["valid"] and page.std() > 10 and (page > 200).mean() > 0.5  # a white page with text
    obs, _, _, _, info = env.step("zoom[4, 0.1, 0.05, 0.6, 0.3]")
    assert info["valid"] and obs["image"].shape == page.shape and not np.array_equal(obs["image"], page)
    assert env.unwrapped.state_dict()["seen"] == [3, 4]
    obs, reward, terminated, truncated, info = env.step("answer[1250]")
    assert terminated and not truncated and info["success"]
    assert info["score_parts"] == {"answer": 1.0, "evidence_recall": 1.0, "answer_format": "Int",
                                   "prediction": "1250"} and reward == 1.0
    env.reset(seed=0, options={"task_id": "q-1"})
    _, reward, _, _, info = env.step("answer[Ingrid Solberg]")  # right, but page 3 never seen
    assert info["score_parts"]["evidence_recall"] == 0.0 and reward == 0.5


@pytest.mark.parametrize(("action", "error"), [
    ("view[0]", "from 1 to 6"), ("view[7]", "from 1 to 6"), ("read[two]", "from 1 to 6"), ("view[]", "from 1 to 6"),
    ("zoom[3, 0.5, 0.5, 0.2, 0.9]", "x0 < x1"), ("zoom[3, 0, 0, 1, 1.5]", "x0 < x1"),
    ("zoom[3, 0.5, 0.5, 0.51, 0.9]", "too small"), ("zoom[3, 0.5, 0.5]", "zoom needs a page and a box"),
    ("zoom[9, 0, 0, 1, 1]", "from 1 to 6"), ("search[]", "needs keywords"), ("search[the of and]", "needs keywords"),
    ("answer[  ]", "answer needs a value"), ("look[3]", "unknown action"), ("", "unknown action"),
])
def test_invalid_actions_explain_themselves_and_change_nothing(dataset, action, error):
    env = make(dataset)
    env.reset(seed=0, options={"task_id": "q-0"})
    env.step("view[2]")
    before = env.unwrapped.state_dict()
    _, reward, terminated, _, info = env.step(action)
    assert not info["valid"] and error in info["error"] and reward == 0 and not terminated
    assert {**env.unwrapped.state_dict(), "turn": 0} == {**before, "turn": 0}


def test_reading_a_page_without_text_does_not_count_it_as_seen(tmp_path):
    (tmp_path / "documents").mkdir()
    pdf = pymupdf.open()
    pdf.new_page().insert_text((72, 72), "Cover page")
    pdf.new_page().draw_rect(pymupdf.Rect(72, 72, 300, 300), fill=(0, 0, 1))  # a scan: no text layer
    pdf.save(tmp_path / "documents" / "d.pdf")
    (tmp_path / "samples.json").write_text(json.dumps([{
        "doc_id": "d.pdf", "doc_type": "x", "question": "What colour is the box?", "answer": "blue",
        "evidence_pages": "[2]", "evidence_sources": "['Figure']", "answer_format": "Str"}]))
    env = make(tmp_path, obs_mode="text", evidence_weight=1.0)
    env.reset(seed=0, options={"task_id": "q-0"})
    obs, *_ = env.step("read[2]")
    assert "no text layer" in obs["text"]
    _, reward, _, _, info = env.step("answer[Not answerable]")
    assert info["score_parts"]["evidence_recall"] == 0.0 and reward == 0.0


def test_text_mode_and_the_view_budget(dataset):
    env = make(dataset, obs_mode="text")
    obs, info = env.reset(seed=0, options={"task_id": "q-0"})
    assert "image" not in obs and "view[<page>]" not in info["actions"]
    _, _, _, _, info = env.step("view[3]")
    assert not info["valid"] and "read[page]" in info["error"]
    env = make(dataset, view_budget=1)
    env.reset(seed=0, options={"task_id": "q-0"})
    _, _, _, _, info = env.step("view[3]")
    assert info["valid"] and "view[<page>]" not in info["actions"]
    _, _, _, _, info = env.step("zoom[3, 0, 0, 0.5, 0.5]")
    assert not info["valid"] and "budget" in info["error"]


def test_read_truncates_to_its_budget_with_a_note(dataset):
    env = make(dataset, read_chars=40)
    env.reset(seed=0, options={"task_id": "q-0"})
    obs, *_ = env.step("read[3]")
    assert "more characters not shown" in obs["text"]


def test_oracle_is_perfect_and_the_heuristic_is_scored(dataset):
    env = make(dataset)
    results = {}
    for spec in ("oracle", "heuristic"):
        agent = make_agent(spec, env)
        runs = [rollout(env, agent, seed=i, options={"split": "test", "index": i}) for i in range(6)]
        results[spec] = [{"score": r.score_parts["answer"], "answer_format": r.score_parts["answer_format"],
                          "pred": r.score_parts["prediction"]} for r in runs]
    assert accuracy(results["oracle"]) == 1.0 and generalized_f1(results["oracle"]) == 1.0
    assert all(r.turns[-1].action.startswith("answer[") for r in runs)
    assert 0.0 <= accuracy(results["heuristic"]) <= 1.0


_fuzz_env = None


@settings(max_examples=200, deadline=None)
@given(action=st.one_of(
    st.text(max_size=80),
    st.builds(lambda verb, arg: f"{verb}[{arg}]",
              st.sampled_from(["search", "view", "read", "zoom", "answer", "VIEW "]),
              st.one_of(st.text(max_size=30), st.sampled_from(["3", "0", "-1", "3, 0, 0, 1, 1", "1, .2, .2, .9, .9",
                                                                "2, nan, 0, 1, 1", "99999999999999999999",
                                                                "²", "²,0,0,1,1"])))))
def test_any_string_is_handled(dataset, action):
    global _fuzz_env
    if _fuzz_env is None:
        _fuzz_env = make(dataset, max_turns=10**9)
    env = _fuzz_env
    env.reset(seed=0, options={"task_id": "q-1"})
    env.step("view[2]")
    before = env.unwrapped.state_dict()
    obs, _, terminated, _, info = env.step(action)
    assert env.observation_space.contains(obs) and info["valid"] == (info["error"] is None)
    if not info["valid"]:
        assert {**env.unwrapped.state_dict(), "turn": 0} == {**before, "turn": 0} and not terminated


def test_proposals_read_the_hits_and_offer_the_page_answers():
    """A policy choosing among the proposals can search, read what search found and answer from
    the page read; the proposals come from the text alone, and every one is a valid action."""
    env = gym.make("turngym/LongDocVQA-v0", obs_mode="text")
    obs, info = env.reset(options={"split": "train", "index": 0})  # "... Eindhoven study site, when was it set up?"
    question = env.unwrapped.state_dict()["question"]
    propose = type(env.unwrapped).propose_actions
    first = propose(obs, info)
    assert [a for a in first if a.startswith("search[")] == ["search[according figure about eindhoven study site when "
                                                             "set up]", "search[eindhoven]"]
    assert first[-1] == "answer[Not answerable]" and not any(a.startswith("read[") for a in first)
    obs, _, _, _, info = env.step(first[1])
    hits = [a for a in propose(obs, info) if a.startswith("read[")]
    assert hits and hits == [f"read[{p}]" for p in dict.fromkeys(HIT.findall(obs["text"]))]
    assert f"read[{question['evidence_pages'][0]}]" in hits
    obs, _, _, _, info = env.step(f"read[{question['evidence_pages'][0]}]")
    answers = [a for a in propose(obs, info) if a.startswith("answer[")]
    assert f"answer[{question['answer']}]" in answers and len(answers) <= 13
    for action in propose(obs, info):  # (an answer would end the episode)
        if not action.startswith("answer["):
            assert env.unwrapped.step(action)[4]["valid"], action


def test_train_documents_limits_the_training_pool_and_nothing_else(dataset):
    """Training questions come from the first N generated documents (made once, then reused);
    the frozen test and dev splits stay as they are."""
    env = gym.make("turngym/LongDocVQA-v0", obs_mode="text", train_documents=2)
    full = gym.make("turngym/LongDocVQA-v0", obs_mode="text").unwrapped.splits
    splits = env.unwrapped.splits
    assert list(splits["train"]) == list(full["train"][:10]) and len(splits["train"]) == 10
    assert list(splits["test"]) == list(full["test"]) and list(splits["dev"]) == list(full["dev"])
    drawn = {env.reset(seed=seed)[1]["task_id"] for seed in range(30)}
    assert drawn <= set(splits["train"]) and len(drawn) > 3
    for bad, match in ((0, "at least 1"), (-3, "at least 1")):
        with pytest.raises(ValueError, match=match):
            gym.make("turngym/LongDocVQA-v0", train_documents=bad)
    with pytest.raises(ValueError, match="no training split"):
        make(dataset, train_documents=5)


@pytest.mark.parametrize(("page", "question", "first"), [
    ("The revenue of the Linz branch came to 515.3 million US dollars in 2016. The revenue of the Innsbruck branch "
     "came to 878.3 million US dollars in 2015.", "What was the revenue of the Innsbruck branch in 2015?", "878.3"),
    ("Daily visitors 0 3000 6000 4596 Fortress Walls 3390 Castle Hill 951 Botanical Garden 886 Water Mill Figure 3: "
     "Daily visitors by attraction, 2020", "What was the average number of daily visitors to the Botanical Garden in "
     "2020?", "951"),
    ("Table 2: Headcount, selected branches (Headcount) Branch Haarlem Geneva Valencia Coimbra 2016 1704 511 1692 554 "
     "2017 799 394 2198 187 2018 2244 427 743 1791", "How large was the headcount of the Valencia branch in 2017?",
     "2198"),
    ("Attraction Old Harbour Cathedral Square Water Mill 2019 120 340 560 2020 130 350 570",
     "What was the adult ticket price at the Cathedral Square in 2020?", "350"),
    ("Contents Overview ........ 9 Complaints and Appeals ........ 17 Digital Services ........ 21",
     'According to the table of contents, on which page does "Complaints and Appeals" start?', "17"),
    ("Staff costs: 6.6% Facilities: 11.1% Training: 20.1% Contracted services: 16.7% Figure 11: Share of expenditure "
     "by category, 2018", "What figure does the report give for the share of expenditure spent on staff costs in "
     "2018?", "6.6%"),
    ("Regional Focus: Linz The head office of Oakridge Group is located in Salzburg. Further detail follows.",
     "Where is the head office of Oakridge Group?", "Salzburg"),
])
def test_answer_proposals_rank_the_value_the_page_ties_to_the_question_first(page, question, first):
    """Prose gives a value after its subject, a chart's text layer before its label, a table's text
    layer column by column; the value bound to the question's names comes first."""
    answers = candidate_answers(page, question)
    assert answers[0] == first, answers[:4]
    assert not any(a.lower() in question.lower() for a in answers)  # nothing the question says


def test_the_proposal_rule_reads_the_best_hit_and_answers_the_first_value_or_abstains():
    """heuristic:proposed keeps to the proposals: the first search, the best hit, then the first
    proposed answer: the abstention where the page lacks a name the question gives, else the
    first value."""
    env = gym.make("turngym/LongDocVQA-v0", obs_mode="text")
    agent, propose = make_agent("heuristic:proposed", env), type(env.unwrapped).propose_actions
    outcomes = []
    for index in range(10):
        obs, info = env.reset(options={"split": "test", "index": index})
        agent.reset(obs, info)
        expected = [propose(obs, info)[0]]
        while True:
            action = agent.act(obs, info)
            assert action in propose(obs, info)
            if action.startswith("answer["):
                page = READ.search(obs["text"]).group(1)
                values = [a for a in propose(obs, info) if a.startswith("answer[") and a != "answer[Not answerable]"]
                named = names_all(page, info["instruction"])
                assert action == (values[0] if named else "answer[Not answerable]")  # the abstention ranks first
            else:
                first = expected.pop() if expected else next(a for a in propose(obs, info) if a.startswith("read["))
                assert action == first
            obs, reward, terminated, _, info = env.step(action)
            if terminated:
                break
        outcomes.append((action == "answer[Not answerable]", reward == 1.0))
    assert {a for a, _ in outcomes} == {True, False} and sum(r for _, r in outcomes) >= 3
    with pytest.raises(ValueError, match="unknown heuristic variant"):
        make_agent("heuristic:best", env)


@pytest.mark.parametrize("variant", ["proposed", "guess"])
def test_oracle_proposed_keeps_to_the_proposals_and_abstains_only_after_reading(variant):
    """oracle:guess plays as oracle:proposed but answers, where no proposal is right, the first
    proposed value: it abstains on the unanswerable questions only."""
    env = gym.make("turngym/LongDocVQA-v0", obs_mode="text")
    agent, propose = make_agent(f"oracle:{variant}", env), type(env.unwrapped).propose_actions
    right, abstained = 0, []
    for index in range(12):
        obs, info = env.reset(options={"split": "test", "index": index})
        agent.reset(obs, info)
        done, actions = False, []
        while not done:
            actions.append(agent.act(obs, info))
            assert actions[-1] in propose(obs, info)
            obs, reward, terminated, truncated, info = env.step(actions[-1])
            done = terminated or truncated
        assert any(a.startswith("read[") for a in actions)
        right += reward == 1.0
        if actions[-1] == "answer[Not answerable]":
            abstained.append(env.unwrapped.state_dict()["question"]["answer_format"])
    assert right >= 3  # the ceiling of a policy that keeps to the proposals (42% over 100 test questions)
    if variant == "guess":
        assert abstained and set(abstained) == {"None"}
    else:
        assert "None" in abstained and set(abstained) != {"None"}  # it abstains where the truth was not proposed
    with pytest.raises(ValueError, match="unknown oracle variant"):
        make_agent("oracle:truth", env)
