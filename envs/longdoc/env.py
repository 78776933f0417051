"""turngym/LongDocVQA-v0: answer a question about a long PDF by searching, reading, viewing and zooming."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from turngym.envs.base import InvalidAction, Outcome, TurnEnv, ascii_text, parse_action, parse_box
from turngym.envs.bm25 import STOP_WORDS, WORD, tokenize
from turngym.envs.longdoc.answers import candidate_answers, named, names_all
from turngym.envs.longdoc.dataset import Question, open_dataset
from turngym.envs.longdoc.document import PdfDocument, image_shape
from turngym.envs.longdoc.scoring import SCORINGS, accuracy, extracted_prediction, generalized_f1, score_answer

OBS_MODES = ("both", "image", "text")
VERBS = ("search", "view", "read", "zoom", "answer")
SEARCH_HITS = 5
SNIPPET = 160
MIN_ZOOM = 0.02  # the smallest zoom box side, as a fraction of the page
OPEN_DOCUMENTS = 4  # PDFs kept open per process


ABSTAIN = "answer[Not answerable]"
HIT = re.compile(r"p\. (\d+): ")
READ = re.compile(r"^Text of page \d+: (.*)$", re.MULTILINE)


class LongDocEnv(TurnEnv):
    """LongDocVQA: a question about a 20-150 page PDF; search it, read and view pages, zoom, answer.

    ## Description
    Document visual question answering after MMLongBench-Doc: the answer may sit in text, a table,
    a chart or an image on any page, or the document may not say.

    ## Action Space
    `search[<keywords>]` (BM25 over the pages: the 5 best with a snippet), `view[<page>]` (the page
    into obs["image"]), `read[<page>]` (its text), `zoom[<page>, <x0>, <y0>, <x1>, <y1>]` (a
    region, fractions of the page, at a higher resolution), and `answer[<short answer>]` (final;
    answer[Not answerable] when the document does not say).

    ## Observation Space
    `text`: the question, the document's id, type and page count, the result of the last action,
    the views left (with a `view_budget`) and the actions. `image` (obs_mode "both" or "image"): the
    page or region on screen, a letter-size page at `dpi`; black until one is shown.

    `state_dict()`: the question record (with its answer), the pages seen, the page on screen
    and the answer given.

    ## Rewards
    0 until the answer, then the answer's score (`scoring.score_answer`, by the `scoring` rules),
    optionally mixed with evidence recall, the share of the evidence pages the agent viewed, read
    or zoomed into: (1 - w) * answer score + w * evidence recall with w = `evidence_weight`.
    `score_parts`: `answer`, `evidence_recall`, and `answer_format` and `prediction` (what
    `scoring.accuracy` and `scoring.generalized_f1` take). Success means an answer score of 1.

    ## Starting State
    The question's document opened with no page shown (a reset with no task id draws a training
    question, or a test one from a dataset that has only a test split).

    ## Episode End
    Terminated by `answer[...]`; truncated after `max_turns` turns.

    ## Arguments
    - `dataset`: None (default) for the generated questions (documents made on first use and
      cached), or a folder in MMLongBench-Doc's layout (samples.json + documents/), all of it the
      test split.
    - `obs_mode`: "both" (default; text and page image), "image" or "text" (no image; view and zoom
      are unavailable, so text-only models play by reading).
    - `dpi`: page rendering resolution (default 96).
    - `max_turns`: turn budget (default None: 16).
    - `view_budget`: at most this many view and zoom actions per episode (default None: no limit).
    - `evidence_weight`: w in the score above (default 0.0).
    - `read_chars`: the most page text one read shows (default 3,000).
    - `train_documents`: draw training questions from the first N generated training documents
      (each made once, then cached: a run that reuses a few hundred documents skips generating one
      per episode) (default None: all 900,000).
    - `scoring`: "mmlongbench" (default; MMLongBench-Doc's exact rules, comparable with published
      numbers) or "lenient" (more forgiving matching, for rewards).
    - `render_mode`: "ansi" (the text view) or "rgb_array" (the image view) (default None).

    ## Version History
    - v0: the first version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 2}  # noqa: RUF012 (gymnasium's convention)
    default_max_turns = 16

    def __init__(self, dataset: str | Path | None = None, obs_mode: str = "both", dpi: int = 96,
                 max_turns: int | None = None, view_budget: int | None = None, evidence_weight: float = 0.0,
                 read_chars: int = 3_000, scoring: str = "mmlongbench", train_documents: int | None = None,
                 render_mode: str | None = None) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {obs_mode!r}: use one of {', '.join(OBS_MODES)}")
        if not 24 <= int(dpi) <= 300:
            raise ValueError(f"dpi must be between 24 and 300, got {dpi}")
        if not 0.0 <= float(evidence_weight) <= 1.0:
            raise ValueError(f"evidence_weight must be in [0, 1], got {evidence_weight}")
        if scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {scoring!r}: use 'mmlongbench' (MMLongBench-Doc's own rules, for "
                             "numbers comparable with published ones) or 'lenient' (forgiving formatting, for rewards)")
        super().__init__(max_turns=max_turns, render_mode=render_mode,
                         image_shape=None if obs_mode == "text" else image_shape(int(dpi)))
        if train_documents is not None and int(train_documents) < 1:
            raise ValueError(f"train_documents must be at least 1 (or None for all), got {train_documents}")
        self.data = open_dataset(dataset, None if train_documents is None else int(train_documents))
        self.splits = self.data.splits
        self.obs_mode, self.dpi = obs_mode, int(dpi)
        self.view_budget = view_budget
        self.evidence_weight = float(evidence_weight)
        self.read_chars = int(read_chars)
        self.scoring = scoring
        self._documents: OrderedDict[Path, PdfDocument] = OrderedDict()

    # ---- the task ----------------------------------------------------------------------------
    def _load_task(self, task_id: str | None) -> str:
        if task_id is None:
            pool = self.splits["train"] or self.splits["test"]
            task_id = pool[int(self.np_random.integers(len(pool)))]
        self.question: Question = self.data.question(task_id)
        self.document = self._open(self.data.document(self.question.doc_id))
        self.instruction = self.question.question
        self.seen: set[int] = set()
        self.shown: tuple[int, tuple[float, ...] | None] | None = None  # (page, zoom region) on screen
        self.views = 0
        self.result = "No page is shown yet. Search the document, or view[1] to see the cover."
        self.answer: str | None = None
        return task_id

    def _open(self, path: Path) -> PdfDocument:
        if path not in self._documents:
            self._documents[path] = PdfDocument(path)
            if len(self._documents) > OPEN_DOCUMENTS:
                self._documents.popitem(last=False)[1].close()
        self._documents.move_to_end(path)
        return self._documents[path]

    def close(self) -> None:
        for document in self._documents.values():
            document.close()
        self._documents.clear()

    @classmethod
    def run_metrics(cls, score_parts: list[dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, float]:
        """MMLongBench-Doc's accuracy and generalized F1 of a set of answered questions."""
        # MMLongBench-Doc's F1 reads preds from its answer extractor, which writes a decline as exactly
        # "Not answerable"; the agent's own answer[not answerable] is that decline too.
        answers = [{"score": p["answer"], "answer_format": p["answer_format"],
                    "pred": extracted_prediction(p.get("prediction"))} for p in score_parts if "answer_format" in p]
        if not answers:
            return {}
        return {"accuracy": accuracy(answers),
                "f1": generalized_f1(answers, scoring=kwargs.get("scoring", "mmlongbench"))}

    # ---- acting ------------------------------------------------------------------------------
    @property
    def task_type(self) -> str:
        """MMLongBench-Doc's breakdown by evidence: single-page, cross-page or unanswerable."""
        pages = len(self.question.evidence_pages)
        return "unanswerable" if pages == 0 else "single-page" if pages == 1 else "cross-page"

    def _apply(self, action: str) -> None:
        verb, argument = parse_action(action, VERBS, "search[...], view[page], read[page], zoom[page, x0, y0, x1, "
                                      "y1] or answer[...]")
        argument = argument.strip()
        if verb == "search":
            self._search(argument)
        elif verb == "read":
            page = self._page(argument)
            text = " ".join(ascii_text(self.document.texts[page - 1]).split())
            if len(text) > self.read_chars:
                text = (f"{text[:self.read_chars]} [... {len(text) - self.read_chars} more characters not shown: "
                        "view or zoom into the page to see the rest]")
            if text:  # a page with no text layer showed nothing: it counts as seen once viewed
                self.seen.add(page)
            self.result = f"Text of page {page}: {text or '(this page has no text layer: view it)'}"
        elif verb == "answer":
            if not argument:
                raise InvalidAction("answer needs a value, e.g. answer[42]; answer[Not answerable] if the "
                                    "document does not say")
            self.answer = " ".join(argument.split())  # scored as given; echoed in the observation's charset
            self.result = f"You answered: {ascii_text(self.answer)}"
        else:
            self._look(verb, argument)

    def _search(self, keywords: str) -> None:
        if not tokenize(keywords):
            raise InvalidAction("search needs keywords, e.g. search[revenue 2021]")
        pages = self.document.search(keywords, SEARCH_HITS)
        said = " ".join(ascii_text(keywords).split())[:80]
        if not pages:
            self.result = f"Search '{said}': no page matches; try other words."
            return
        hits = "; ".join(f"p. {p}: {self._snippet(p, keywords)}" for p in pages)
        self.result = f"Search '{said}', best pages: {hits}"

    def _snippet(self, page: int, keywords: str) -> str:
        """The page text around the first query word found on it."""
        text = " ".join(ascii_text(self.document.texts[page - 1]).split())
        lowered = text.lower()
        words = [w for w in re.findall(r"[a-z0-9]+", keywords.lower()) if len(w) > 2] or [keywords.lower()]
        at = min((i for i in (lowered.find(w) for w in words) if i >= 0), default=0)
        start = max(0, at - SNIPPET // 3)
        return ("..." if start else "") + text[start:start + SNIPPET] + ("..." if start + SNIPPET < len(text) else "")

    def _look(self, verb: str, argument: str) -> None:
        if self.obs_mode == "text":
            raise InvalidAction(f"{verb} shows images, which this env does not send (obs_mode='text'): use "
                                "read[page]")
        if self.view_budget is not None and self.views >= self.view_budget:
            raise InvalidAction(f"the view budget ({self.view_budget}) is spent: read pages or answer")
        if verb == "view":
            page, region = self._page(argument), None
            self.result = f"Showing page {page} of {self.document.pages} (the image)."
        else:
            page, region = self._zoom_box(argument)
            self.result = (f"Showing page {page}, region x {region[0]:.2f}-{region[2]:.2f}, "
                           f"y {region[1]:.2f}-{region[3]:.2f} (the image), enlarged.")
        self.views += 1
        self.seen.add(page)
        self.shown = (page, region)

    def _page(self, argument: str) -> int:
        text = argument.strip().lower().removeprefix("page").removeprefix("p.").strip()
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= self.document.pages:
            raise InvalidAction(f"page must be a number from 1 to {self.document.pages}, got {argument[:20]!r}")
        return int(text)

    def _zoom_box(self, argument: str) -> tuple[int, tuple[float, float, float, float]]:
        usage = ("zoom needs a page and a box of fractions: zoom[page, x0, y0, x1, y1], e.g. zoom[3, 0, 0.5, 0.5, 1] "
                 "for the bottom-left quarter")
        page, comma, box = argument.partition(",")
        if not comma or not (page.strip().isascii() and page.strip().isdigit()):
            raise InvalidAction(usage)
        region = parse_box(box, min_side=MIN_ZOOM, of="the page", usage=usage)
        return self._page(page), region

    # ---- what the agent sees -----------------------------------------------------------------
    def _terminated(self) -> bool:
        return self.answer is not None

    def _outcome(self) -> Outcome:
        q = self.question
        answer = 0.0 if self.answer is None else score_answer(q.answer, self.answer, q.answer_format,
                                                                 scoring=self.scoring)
        evidence = set(q.evidence_pages)
        recall = len(evidence & self.seen) / len(evidence) if evidence else 1.0
        score = (1 - self.evidence_weight) * answer + self.evidence_weight * recall
        return Outcome(answer >= 1.0, score, {"answer": answer, "evidence_recall": recall,
                                              "answer_format": q.answer_format, "prediction": self.answer})

    def _text(self) -> str:
        q = self.question
        lines = [f"Question: {ascii_text(q.question)}",
                 f"Document: {q.doc_id} ({ascii_text(q.doc_type) or 'document'}), {self.document.pages} pages.",
                 self.result]
        if self.view_budget is not None and self.obs_mode != "text":
            lines.append(f"Views left: {self.view_budget - self.views}.")
        lines.append("Actions: " + ", ".join(self._actions()) + " (answer[Not answerable] if the document does "
                     "not say; zoom coordinates are fractions of the page).")
        return "\n".join(lines)

    def _actions(self) -> list[str]:
        looks = self.obs_mode != "text" and (self.view_budget is None or self.views < self.view_budget)
        return ["search[<keywords>]", "read[<page>]",
                *(["view[<page>]", "zoom[<page>, <x0>, <y0>, <x1>, <y1>]"] if looks else []),
                "answer[<answer>]"]

    @classmethod
    def propose_actions(cls, obs: dict[str, Any], info: dict[str, Any]) -> list[str]:
        """Searches for the question's keywords and for its names and numbers alone; a read of each
        page the last search found; after a read, the page's numbers and names ranked by how its
        layout ties them to the question's names (`answers.candidate_answers`, at most 12); and the
        abstention, last, or before the values when the page read lacks a name or number the
        question gives. It reads the text only, so a policy choosing among these never sees the
        truth."""
        question = info.get("instruction", "")
        keywords = [w for w in WORD.findall(question.lower()) if w not in STOP_WORDS]
        names = [w.lower() for w in named(question)]
        proposed = [f"search[{' '.join(keywords)}]", *([f"search[{' '.join(names)}]"] if names else [])]
        text = obs.get("text", "") if isinstance(obs, dict) else ""
        proposed += [f"read[{page}]" for page in dict.fromkeys(HIT.findall(text))]
        if (page := READ.search(text)) is not None:
            values = [f"answer[{a}]" for a in candidate_answers(page.group(1), question)]
            # a page that lacks a name or number the question gives does not answer it
            proposed += values if names_all(page.group(1), question) else [ABSTAIN, *values]
        return list(dict.fromkeys([*proposed, ABSTAIN]))

    def _image(self) -> np.ndarray:
        if self.shown is None:
            return np.zeros(image_shape(self.dpi), np.uint8)
        page, region = self.shown
        return self.document.render(page, self.dpi, region).copy()

    def _state(self) -> dict[str, Any]:
        return {"question": self.question.record(), "pages": self.document.pages, "seen": sorted(self.seen),
                "shown": None if self.shown is None else {"page": self.shown[0], "region": self.shown[1]},
                "views": self.views, "answer": self.answer}
