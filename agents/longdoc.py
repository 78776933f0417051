"""LongDocVQA agents: the oracle (reads the evidence, answers with the truth) and a rule baseline."""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym

from turngym.agents.base import Agent, register_agent
from turngym.envs.bm25 import STOP_WORDS
from turngym.envs.longdoc import LongDocEnv
from turngym.envs.longdoc.answers import QUESTION_WORDS
from turngym.envs.longdoc.env import ABSTAIN, HIT, READ  # how the env prints search hits and a page read
from turngym.envs.longdoc.scoring import score_answer

NOT_ANSWERS = frozenset("Table Figure Chart Source Note Page Contents Section".split())  # labels, not names
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
NAME = re.compile(r"(?:[A-Z][a-zA-Z&'.-]+ ?)+")
YEAR = re.compile(r"(19|20)\d\d")
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9.&'-]*")


@register_agent("oracle", LongDocEnv)
class LongDocOracle(Agent):
    """Reads every evidence page, then answers with the ground truth (unanswerable questions after
    one search). Reads `env.unwrapped.state_dict()`: an upper bound, not an agent to evaluate.

    `oracle:proposed` is the expert for cloning a policy that chooses among the env's proposed
    actions: it takes only those. It searches (the next proposed search while no hit is an
    evidence page), reads an evidence page among the hits (else the best hit), and answers with a
    proposed answer that scores as right, or else searches on, or abstains.

    `oracle:guess` is `oracle:proposed` that abstains only on unanswerable questions: where no
    proposal is right it answers the proposal the env ranks first (the value nearest the question's
    words). A clone of `oracle:proposed` learns to abstain wherever the truth was not proposed, which
    looks the same to it as an unanswerable question; a clone of this one learns to answer there."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        if argument not in ("", "proposed", "guess"):
            raise ValueError(f"unknown oracle variant {argument!r}: use oracle, oracle:proposed or oracle:guess")
        self.env, self.proposed, self.guess = env, argument in ("proposed", "guess"), argument == "guess"

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.searched: set[str] = set()

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        state = self.env.unwrapped.state_dict()
        question = state["question"]
        if self.proposed:
            return self._proposed(obs, info, state, question)
        unread = [p for p in question["evidence_pages"] if p not in state["seen"]]
        if unread:
            return f"read[{unread[0]}]"
        if not question["evidence_pages"] and info["turn"] == 0:
            return f"search[{question['question']}]"
        return f"answer[{question['answer']}]"


    def _proposed(self, obs: dict[str, Any], info: dict[str, Any], state: dict[str, Any],
                  question: dict[str, Any]) -> str:
        env = self.env.unwrapped
        candidates = type(env).propose_actions(obs, info)
        for action in candidates:  # abstaining only after reading, as a policy must
            right = action.startswith("answer[") and score_answer(
                question["answer"], action[len("answer["):-1], question["answer_format"], env.scoring) >= 1.0
            if right and (action != ABSTAIN or state["seen"]):
                return action
        evidence = [f"read[{p}]" for p in question["evidence_pages"] if p not in state["seen"]]
        reads = [a for a in candidates if a.startswith("read[")]
        if wanted := [a for a in reads if a in evidence]:
            return wanted[0]
        searches = [a for a in candidates if a.startswith("search[") and a not in self.searched]
        if searches and (not reads or evidence):
            self.searched.add(searches[0])
            return searches[0]
        if reads and not state["seen"]:
            return reads[0]
        if self.guess and question["answer_format"] != "None":  # answer the first proposed value, reading for one
            guesses = [a for a in candidates if a.startswith("answer[") and a != ABSTAIN]
            unseen = [a for a in reads if int(a[len("read["):-1]) not in state["seen"]]
            if guesses or unseen:
                return (guesses or unseen)[0]
        return ABSTAIN


def keywords(question: str) -> list[str]:
    return [w for w in WORD.findall(question)
            if w.lower() not in STOP_WORDS and w.lower() not in QUESTION_WORDS]


def answer_format(question: str) -> str:
    """The answer format a question's wording asks for (the agent is not told)."""
    q = question.lower()
    if q.startswith("how many") or "number of" in q:
        return "Int"
    if any(w in q for w in ("percentage", "percent", "share", "rate", "how much", "average", "ratio", "total",
                            "difference", "sum")):
        return "Float"
    if q.startswith(("list", "name all", "which ones")) or "list the" in q or "list all" in q:
        return "List"
    return "Str"


@register_agent("heuristic", LongDocEnv)
class LongDocRuleBaseline(Agent):
    """Searches the question's keywords, reads the three best pages, and answers from the sentence
    that shares the most keywords with the question: for numeric questions (or when it names
    nothing new) the number nearest the entity the question names, years only when asked when; its
    capitalised names otherwise. It answers "Not answerable" when a name or number the question
    gives is missing from the pages read, or no sentence shares two keywords. Reads only its
    observations.

    `heuristic:proposed` keeps to the env's proposals, as a policy choosing among them does: the
    first proposed search, then a read of the best hit, then the first proposed answer (the value
    the page ties to the question's names, or the abstention where the page lacks one). It is the
    rule to beat for such a policy: what the proposals' ranking gives with no learning."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        if argument not in ("", "proposed"):
            raise ValueError(f"unknown heuristic variant {argument!r}: use heuristic or heuristic:proposed")
        self.proposed = argument == "proposed"
        self.propose = type(env.unwrapped).propose_actions

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.question = info["instruction"]
        self.keywords = keywords(self.question)
        self.pages: list[int] = []
        self.texts: list[str] = []

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        if self.proposed:
            return self._proposed(obs, info)
        text = obs["text"]
        if info["turn"] == 0:
            return f"search[{' '.join(self.keywords) or self.question}]"
        if info["turn"] == 1:
            self.pages = [int(p) for p in HIT.findall(text)][:3]
        elif (read := READ.search(text)) is not None:
            self.texts.append(read.group(1))
        if len(self.texts) < len(self.pages):
            return f"read[{self.pages[len(self.texts)]}]"
        return f"answer[{self.extract()}]"

    def _proposed(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        kind = "answer[" if READ.search(obs["text"]) else "read[" if info["turn"] else "search["
        return next((a for a in self.propose(obs, info) if a.startswith(kind)), ABSTAIN)

    def extract(self) -> str:
        text = " ".join(self.texts)
        # Every name and number the question gives must be in what was read, or the answer is not there.
        anchors = [w for w in self.keywords[1:] if w[0].isupper() or w[0].isdigit()] + \
            [w for w in self.keywords[:1] if w[0].isdigit()]
        if not self.texts or any(a.lower().rstrip("?.,") not in text.lower() for a in anchors):
            return "Not answerable"
        wanted = {w.lower() for w in self.keywords}
        best, overlap = "", 1
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            shared = len(wanted & {w.lower() for w in WORD.findall(sentence)})
            if shared > overlap:
                best, overlap = sentence, shared
        if not best:
            return "Not answerable"
        fmt = answer_format(self.question)
        when = re.search(r"\b(when|what year|which year)\b", self.question.lower()) is not None
        numbers = [(m.start(), m.group().replace(",", "")) for m in NUMBER.finditer(best)
                   if m.group().replace(",", "") not in self.question and (when or not YEAR.fullmatch(m.group()))]
        names = [(m.start(), m.group().strip(" .")) for m in NAME.finditer(best)
                 if m.group().strip(" .").lower() not in self.question.lower()
                 and m.group().strip(" .") not in NOT_ANSWERS]
        entity = next((a for a in reversed(anchors) if not a[0].isdigit() and a.lower() in best.lower()), None)
        at = best.lower().find(entity.lower()) if entity else 0
        if when or fmt in ("Int", "Float") or not names:  # "what was the revenue ..." asks for a number too
            # the number nearest the entity named: tables print it after the row label, charts before
            return min(numbers, key=lambda n: abs(n[0] - at))[1] if numbers else "Not answerable"
        if fmt == "List":
            return str([name for _, name in names])
        return min(names, key=lambda n: (n[0] < at, abs(n[0] - at)))[1]  # the first name after the entity
