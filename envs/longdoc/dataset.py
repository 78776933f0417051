"""LongDocVQA question sets: the generated one (frozen manifests of seeds) and benchmark folders.

A benchmark folder has MMLongBench-Doc's layout: `samples.json` (a list of records with `doc_id`,
`doc_type`, `question`, `answer`, `evidence_pages`, `evidence_sources`, `answer_format`; the lists
may be strings such as "[5]") and `documents/` with the PDFs. All its questions form the test split,
in file order, with task ids `q-<index in the file>`. A missing or unreadable PDF is reported once
by name (a warning) and its questions are skipped and counted in `skipped`.

The generated set: task `gen-<k>` is question `k % 10` of generated document `k // 10` (see
generate.py; a document's seed is its number). Test and dev are frozen lists of k in
assets/longdoc/splits.yaml; train is the first five questions (every document has at least five)
of documents 100,000 to 999,999. Documents are generated on first use into the cache directory
(`TURNGYM_CACHE`, default ~/.cache/turngym) as a PDF and a JSON file of its questions, written
atomically, and reused; `turngym longdoc build` writes whole splits in the benchmark layout.
"""

from __future__ import annotations

import ast
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, overload

import pymupdf
import yaml

from turngym.envs.base import TaskIds
from turngym.trajectory import atomic_write_bytes, atomic_write_json

FORMATS = ("Str", "Int", "Float", "List", "None")
SOURCES = ("Pure-text", "Layout", "Table", "Chart", "Figure")
TRAIN_DOCS = range(100_000, 1_000_000)
TRAIN_QUESTIONS = 5  # per training document


@dataclass(frozen=True)
class Question:
    """One question about one document, in MMLongBench-Doc's schema (lists parsed)."""

    task_id: str
    doc_id: str
    doc_type: str
    question: str
    answer: str
    answer_format: str
    evidence_pages: tuple[int, ...]
    evidence_sources: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """As a samples.json record."""
        return {"doc_id": self.doc_id, "doc_type": self.doc_type, "question": self.question,
                "answer": self.answer, "evidence_pages": list(self.evidence_pages),
                "evidence_sources": list(self.evidence_sources), "answer_format": self.answer_format}


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        value = ast.literal_eval(value.strip() or "[]")
    return list(value or [])


def parse_record(task_id: str, record: dict[str, Any]) -> Question:
    """A samples.json record as a Question; raises ValueError on a malformed one."""
    try:
        fmt = str(record["answer_format"]).strip()
        if fmt not in FORMATS:
            raise ValueError(f"answer_format {fmt!r} is not one of {FORMATS}")
        return Question(task_id, str(record["doc_id"]), str(record.get("doc_type", "")), str(record["question"]),
                        str(record["answer"]), fmt, tuple(int(p) for p in _as_list(record.get("evidence_pages"))),
                        tuple(str(s) for s in _as_list(record.get("evidence_sources"))))
    except (KeyError, ValueError, SyntaxError, TypeError) as exc:
        raise ValueError(f"bad samples.json record {task_id}: {exc}") from exc


class BenchmarkSet:
    """A folder in MMLongBench-Doc's layout (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        samples = self.root / "samples.json"
        if not samples.is_file():
            raise FileNotFoundError(f"{samples} not found: a LongDocVQA dataset folder holds samples.json and "
                                    "documents/ (MMLongBench-Doc's layout)")
        records = json.loads(samples.read_text())
        usable: dict[str, bool] = {}
        self.questions: dict[str, Question] = {}
        self.skipped: dict[str, int] = {}
        for i, record in enumerate(records):
            question = parse_record(f"q-{i}", record)
            if question.doc_id not in usable:
                usable[question.doc_id] = self._check(question.doc_id)
            if usable[question.doc_id]:
                self.questions[question.task_id] = question
            else:
                self.skipped[question.doc_id] = self.skipped.get(question.doc_id, 0) + 1
        ids = list(self.questions)
        self.splits: dict[str, Sequence[str]] = {"test": ids, "dev": [], "train": []}

    def _check(self, doc_id: str) -> bool:
        path = self.document(doc_id)
        try:
            with pymupdf.open(path) as pdf:
                if pdf.page_count and pdf.is_pdf:
                    return True
            reason = "it has no pages"
        except Exception as exc:  # pymupdf raises several types for missing and damaged files
            reason = f"it cannot be opened ({type(exc).__name__})"
        warnings.warn(f"LongDocVQA: skipping the questions of {doc_id}: {reason} (looked in {path.parent})",
                      stacklevel=3)
        return False

    def question(self, task_id: str) -> Question:
        if task_id not in self.questions:
            raise ValueError(f"unknown task id {task_id!r} in {self.root}: use q-<index in samples.json>")
        return self.questions[task_id]

    def document(self, doc_id: str) -> Path:
        return self.root / "documents" / doc_id


class _FirstQuestions(Sequence[int]):
    """k = 10 * document + question for the first `per_doc` questions of each document."""

    def __init__(self, documents: range, per_doc: int) -> None:
        self.documents, self.per_doc = documents, per_doc

    def __len__(self) -> int:
        return len(self.documents) * self.per_doc

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return 10 * self.documents[index // self.per_doc] + index % self.per_doc


@cache
def manifest() -> dict[str, Any]:
    """assets/longdoc/splits.yaml: version, the test and dev question numbers, document fingerprints."""
    return yaml.safe_load(resources.files("turngym.assets").joinpath("longdoc/splits.yaml").read_text())


def cache_dir() -> Path:
    return Path(os.environ.get("TURNGYM_CACHE", Path.home() / ".cache" / "turngym")) / "longdoc"


class GeneratedSet:
    """The generated questions (see the module docstring)."""

    def __init__(self, folder: Path | None = None, train_documents: int | None = None) -> None:
        self.root = folder or cache_dir()
        frozen = manifest()
        documents = TRAIN_DOCS if train_documents is None else TRAIN_DOCS[:train_documents]
        self.splits = {"test": TaskIds("gen-", frozen["test"]), "dev": TaskIds("gen-", frozen["dev"]),
                       "train": TaskIds("gen-", _FirstQuestions(documents, TRAIN_QUESTIONS))}
        self.skipped: dict[str, int] = {}

    @staticmethod
    def parse(task_id: str) -> tuple[int, int]:
        """(document seed, question index) of `gen-<k>`."""
        text = str(task_id).removeprefix("gen-")
        if not text.isdigit():
            raise ValueError(f"bad LongDocVQA task id {task_id!r}: expected gen-<k> (question k % 10 of "
                             "document k // 10)")
        return int(text) // 10, int(text) % 10

    def questions_of(self, seed: int) -> list[dict[str, Any]]:
        """The question records of document `seed`, generating the document on first use."""
        path = self.root / "questions" / f"gen-{seed:06d}.json"
        if not path.exists():
            self._generate(seed)
        return json.loads(path.read_text())

    def _generate(self, seed: int) -> None:
        from turngym.envs.longdoc.generate import generate

        doc = generate(seed)
        atomic_write_bytes(self.root / "documents" / doc.doc_id, doc.pdf)
        atomic_write_json(self.root / "questions" / f"gen-{seed:06d}.json", doc.questions)

    def question(self, task_id: str) -> Question:
        seed, index = self.parse(task_id)
        records = self.questions_of(seed)
        if index >= len(records):
            raise ValueError(f"document {seed} has {len(records)} questions; {task_id!r} asks for number {index}")
        return parse_record(f"gen-{10 * seed + index}", records[index])

    def document(self, doc_id: str) -> Path:
        path = self.root / "documents" / doc_id
        if not path.exists():
            self._generate(int(doc_id.removeprefix("gen-").removesuffix(".pdf")))
        return path


def open_dataset(dataset: str | Path | None, train_documents: int | None = None) -> BenchmarkSet | GeneratedSet:
    """None: the generated questions (training on the first `train_documents` training documents,
    or all); a folder: a benchmark in MMLongBench-Doc's layout."""
    if dataset is None:
        return GeneratedSet(train_documents=train_documents)
    if train_documents is not None:
        raise ValueError("train_documents picks generated training documents; a benchmark folder has no "
                         "training split: leave it unset")
    return BenchmarkSet(dataset)
