"""BM25 search, stored inside the catalog's SQLite file.

Each term's postings are two NumPy arrays saved as blobs (document ids as uint32 and each
document's finished BM25 weight for the term as float32), so a query reads only its own terms'
rows and scores them in one vectorised pass. Blobs are read through SQLite's incremental blob API
over a memory map, about ten times faster than selecting them. The analysis and parameters are
envs/bm25.py's: Pyserini's defaults, as the original WebShop used them.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from turngym.envs.bm25 import K1, STOP_WORDS, WORD, B, idf, stem, tokenize

CHUNK = 20_000  # documents per indexing batch: bounds memory while building


SCHEMA = """
CREATE TABLE postings (term TEXT PRIMARY KEY, df INTEGER NOT NULL, docs BLOB NOT NULL, weights BLOB NOT NULL);
CREATE TABLE corpus (id INTEGER PRIMARY KEY CHECK (id = 0), documents INTEGER NOT NULL, avgdl REAL NOT NULL);
"""


class IndexWriter:
    """Builds the index one document at a time (document ids are 0, 1, 2, ... in `add` order).

    Stemming and stop words are resolved once per distinct word (`_term_ids`), and document ids
    and lengths are computed per batch with NumPy, so a document costs one regex pass and one
    dictionary lookup per word.
    """

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}  # stemmed term -> term id
        self.term_ids = _TermIds(self.vocab)  # raw word -> term id, -1 for stop words
        self.slices: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per term: (docs, tfs) per batch
        self.lengths: list[np.ndarray] = []
        self.count = 0
        self.terms: list[int] = []
        self.words_per_doc: list[int] = []

    def add(self, text: str) -> None:
        words = WORD.findall(text.lower())
        self.terms.extend(map(self.term_ids.__getitem__, words))
        self.words_per_doc.append(len(words))
        self.count += 1
        if len(self.words_per_doc) == CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self.words_per_doc:
            return
        first = self.count - len(self.words_per_doc)
        terms = np.array(self.terms, np.int64)
        docs = np.repeat(np.arange(first, self.count, dtype=np.int64), self.words_per_doc)
        kept = terms >= 0
        terms, docs = terms[kept], docs[kept]
        self.lengths.append(np.bincount(docs - first, minlength=len(self.words_per_doc)))
        key, tf = np.unique((terms << 32) | docs, return_counts=True)  # sorted by term, then document
        terms, docs = key >> 32, (key & 0xFFFFFFFF).astype(np.uint32)
        tf = np.minimum(tf, 255).astype(np.uint8)
        while len(self.slices) < len(self.vocab):
            self.slices.append([])
        starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]])
        for start, stop in zip(starts.tolist(), np.r_[starts[1:], len(terms)].tolist(), strict=True):
            self.slices[terms[start]].append((docs[start:stop], tf[start:stop]))
        self.terms.clear()
        self.words_per_doc.clear()

    def write(self, conn: sqlite3.Connection) -> None:
        """Write the postings, each with its finished BM25 weight, into `conn`."""
        self._flush()
        dl = np.concatenate(self.lengths).astype(np.float64) if self.lengths else np.zeros(0)
        avgdl = float(dl.mean()) if len(dl) else 1.0
        norms = K1 * (1 - B + B * dl / avgdl)
        n = self.count

        def rows():
            for token, term in self.vocab.items():
                if self.slices[term]:
                    docs = np.concatenate([d for d, _ in self.slices[term]])
                    tf = np.concatenate([t for _, t in self.slices[term]]).astype(np.float64)
                    weights = (idf(n, len(docs)) * (K1 + 1) * tf / (tf + norms[docs])).astype(np.float32)
                    yield token, len(docs), docs.tobytes(), weights.tobytes()

        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO postings VALUES (?, ?, ?, ?)", rows())
        conn.execute("INSERT INTO corpus VALUES (0, ?, ?)", (n, avgdl))


class _TermIds(dict):
    """raw word -> term id of its stem (new stems get the next id), or -1 for a stop word."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__()
        self.vocab = vocab

    def __missing__(self, word: str) -> int:
        term = -1 if word in STOP_WORDS else self.vocab.setdefault(stem(word), len(self.vocab))
        self[word] = term
        return term


class BM25:
    """Queries the index written by `IndexWriter`: exact BM25 top-k.

    Every query term is scored over the whole collection in one pass (float32, terms added in a
    fixed order, so equal documents tie exactly). The k best are then found without sorting a
    million scores: the k-th best score among the documents of the rarest term is a lower bound of
    the k-th best overall, so only documents at or above it are sorted.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.size = conn.execute("SELECT documents FROM corpus").fetchone()[0]

    def search(self, query: str, k: int = 50) -> list[int]:
        """The ids of the (at most) `k` best documents, best first; ties go to the lower id."""
        terms = sorted(set(tokenize(query)))
        if not terms or not self.size:
            return []
        rows = self.conn.execute(f"SELECT rowid FROM postings WHERE term IN ({','.join('?' * len(terms))}) "
                                 "ORDER BY df, term", terms).fetchall()
        if not rows:
            return []
        postings = [(self._read(rowid, "docs", np.uint32), self._read(rowid, "weights", np.float32))
                    for (rowid,) in rows]
        scores = np.zeros(self.size, np.float32)
        for docs, weights in postings:
            np.add.at(scores, docs, weights)
        docs = np.flatnonzero(scores >= max(self._floor(scores, postings, k), np.finfo(np.float32).tiny))
        order = np.lexsort((docs, -scores[docs]))[:k]
        return docs[order].tolist()

    @staticmethod
    def _floor(scores: np.ndarray, postings: list[tuple[np.ndarray, np.ndarray]], k: int) -> float:
        """A lower bound of the k-th best score: the k-th best among the rarest terms' documents."""
        seed = np.zeros(0, np.uint32)
        for docs, _ in postings:
            seed = np.union1d(seed, docs)
            if len(seed) >= k:
                return float(np.partition(scores[seed], len(seed) - k)[len(seed) - k])
        return 0.0  # fewer than k documents match at all

    def _read(self, rowid: int, column: str, dtype: type) -> np.ndarray:
        if hasattr(self.conn, "blobopen"):  # Python >= 3.11
            with self.conn.blobopen("postings", column, rowid, readonly=True) as blob:
                return np.frombuffer(blob.read(), dtype)
        row = self.conn.execute(f"SELECT {column} FROM postings WHERE rowid = ?", (rowid,)).fetchone()
        return np.frombuffer(row[0], dtype)
