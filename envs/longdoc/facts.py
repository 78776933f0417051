"""Fact records and the small text helpers that key and print them, shared by every stage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SOURCES = ("Pure-text", "Layout", "Table", "Chart", "Figure")
NOT_ANSWERABLE = "Not answerable"


@dataclass(frozen=True)
class Fact:
    """One fact as printed: `text` occurs in the extracted text of `page` (1-based)."""

    key: str
    value: Any
    text: str
    page: int
    source: str  # one of SOURCES


@dataclass(frozen=True)
class Pending:
    """A fact whose page is known once it is laid out."""

    key: str
    value: Any
    text: str
    source: str


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def norm(text: str) -> str:
    return " ".join(text.split())


def format_value(value: float, fmt: str) -> str:
    if fmt == "int":
        return str(int(value))
    return f"{value:.1f}%" if fmt == "pct" else f"{value:.1f}"
