"""BM25's text analysis, shared by every family that searches text, and a small in-memory index.

Parameters and analysis follow Pyserini's BM25 defaults (k1 = 0.9, b = 0.4, lowercase, Lucene's
English stop words), with a light plural stemmer in place of Porter's. WebShop's million-product
index (envs/webshop/search.py) stores its postings on disk with this analysis; `BM25Index` here
holds a few hundred texts (the pages of a document) in memory.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

K1, B = 0.9, 0.4
WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)


def stem(word: str) -> str:
    """Strip English plural endings: shoes -> shoe, batteries -> battery, glasses -> glass."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    return [stem(w) for w in WORD.findall(text.lower()) if w not in STOP_WORDS]


def idf(documents: int, df: int) -> float:
    """Lucene's BM25 idf, always positive."""
    return math.log(1 + (documents - df + 0.5) / (df + 0.5))


class BM25Index:
    """BM25 over a list of texts held in memory: a term -> weight-per-text table built once."""

    def __init__(self, texts: list[str]) -> None:
        counts = [Counter(tokenize(t)) for t in texts]
        lengths = np.array([sum(c.values()) for c in counts], np.float64)
        norms = K1 * (1 - B + B * lengths / max(lengths.mean() if len(texts) else 1.0, 1e-9))
        df = Counter(term for c in counts for term in c)
        self.size = len(texts)
        self.weights: dict[str, np.ndarray] = {}
        for term, n in df.items():
            tf = np.array([c.get(term, 0) for c in counts], np.float64)
            self.weights[term] = idf(self.size, n) * (K1 + 1) * tf / (tf + norms)

    def scores(self, query: str) -> np.ndarray:
        total = np.zeros(self.size)
        for term in set(tokenize(query)):
            if term in self.weights:
                total += self.weights[term]
        return total

    def search(self, query: str, k: int) -> list[int]:
        """The indices of the (at most) `k` best texts with a positive score; ties go to the lower index."""
        scores = self.scores(query)
        ranked = np.lexsort((np.arange(self.size), -scores))[:k]
        return [int(i) for i in ranked if scores[i] > 0]
