"""A WebShop catalog: one read-only SQLite file with the products, the goals and the BM25 index.

Every env in a process shares one open `Catalog` per file (opened immutable, so processes share
the operating system's page cache too); an extra env instance therefore costs almost no memory.
Files are built once into the cache directory (`TURNGYM_CACHE`, default ~/.cache/turngym), through
a temporary file and a rename under a lock, so concurrent builders never see half a catalog.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from turngym.envs.webshop import generate
from turngym.envs.webshop.search import BM25, IndexWriter

SIZES = {"small": 1_000, "medium": 100_000, "full": 1_000_000}
FORMAT = 2  # bump when the file layout changes (the file name carries it)
GENERATOR = 2  # bump when generated products or goals change (the file name carries it)
GOALS_PER_PRODUCT = 10


def cache_dir() -> Path:
    return Path(os.environ.get("TURNGYM_CACHE", Path.home() / ".cache" / "turngym")) / "webshop"


def _pack(record: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(record, separators=(",", ":")).encode(), 6)


def _unpack(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


def search_text(product: dict[str, Any]) -> str:
    """What search sees of a product: title, description, features and option values."""
    options = " ".join(v for values in product.get("options", {}).values() for v in values)
    return " ".join((product["Title"], product.get("Description", ""), " ".join(product.get("BulletPoints", [])),
                     options))


def write_catalog(path: Path, meta: dict[str, Any], products: Iterable[dict[str, Any]],
                  goals: Iterable[dict[str, Any]] = ()) -> Path:
    """Write a catalog file atomically: products (in id order), optional stored goals, the index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA page_size = 8192;
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE products (id INTEGER PRIMARY KEY, asin TEXT NOT NULL UNIQUE, record BLOB NOT NULL);
            CREATE TABLE goals (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
        """)
        index = IndexWriter()

        def rows():
            for i, product in enumerate(products):
                index.add(search_text(product))
                yield i, product["asin"], _pack(product)

        conn.executemany("INSERT INTO products VALUES (?, ?, ?)", rows())
        conn.executemany("INSERT INTO goals VALUES (?, ?)", ((i, _pack(g)) for i, g in enumerate(goals)))
        index.write(conn)
        count = index.count
        stored = conn.execute("SELECT COUNT(*) FROM goals").fetchone()[0]
        meta = {**meta, "format": FORMAT, "products": count, "stored_goals": stored}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", ((k, json.dumps(v)) for k, v in meta.items()))
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, path)
    return path


def build_once(path: Path, build: Callable[[Path], Any]) -> Path:
    """Run `build(path)` unless the file exists; concurrent callers wait for the first one."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            build(path)
    return path


class Catalog:
    """An open catalog file. Use `Catalog.open(path)`: one shared instance per file and process."""

    _open: ClassVar[dict[tuple[Path, int], Catalog]] = {}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self.conn.execute("PRAGMA cache_size = -4096")  # 4 MB: the OS page cache does the rest
        self.conn.execute(f"PRAGMA mmap_size = {1 << 40}")  # read straight from the page cache
        self.meta = {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{path} was built by another turngym version: delete it and build it again")
        self.size = int(self.meta["products"])
        self.index = BM25(self.conn)
        self.product = lru_cache(maxsize=8192)(self._product)
        self.asin_to_id = lru_cache(maxsize=8192)(self._asin_to_id)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Catalog:
        # Keyed by process too: SQLite connections must not cross a fork (vector envs, pools).
        key = (Path(path).resolve(), os.getpid())
        if key not in cls._open:
            if not key[0].exists():
                raise FileNotFoundError(f"no WebShop catalog at {key[0]}: build one with `turngym webshop build` "
                                        "or pass catalog='small'")
            cls._open[key] = cls(key[0])
        return cls._open[key]

    def _product(self, product_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT record FROM products WHERE id = ?", (product_id,)).fetchone()
        if row is None:
            raise KeyError(f"no product {product_id} in {self.path.name}")
        return _unpack(row[0])

    def _asin_to_id(self, asin: str) -> int | None:
        row = self.conn.execute("SELECT id FROM products WHERE asin = ?", (asin,)).fetchone()
        return None if row is None else row[0]

    def stored_goal(self, goal_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT record FROM goals WHERE id = ?", (goal_id,)).fetchone()
        if row is None:
            raise KeyError(f"no goal {goal_id} in {self.path.name}")
        return _unpack(row[0])

    def search(self, query: str, k: int = 50) -> list[int]:
        return self.index.search(query, k)

    @property
    def goal_count(self) -> int:
        if self.meta["source"] == "generated":
            return self.size * GOALS_PER_PRODUCT
        return int(self.meta["stored_goals"])

    def goal(self, k: int) -> dict[str, Any]:
        """Goal k: generated on demand for generated catalogs, read from the file otherwise."""
        if self.meta["source"] == "generated":
            return generate.goal(k, self.size, self.meta["seed"])
        return self.stored_goal(k)


def generated_path(size: str) -> Path:
    return cache_dir() / f"{size}-f{FORMAT}-g{GENERATOR}.sqlite"


def build_generated(size: str, path: Path | None = None) -> Path:
    """Generate the `size` catalog (small, medium or full) into `path` (default: the cache)."""
    if size not in SIZES:
        raise ValueError(f"unknown catalog size {size!r}: use one of {', '.join(SIZES)}")
    path = path or generated_path(size)
    meta = {"source": "generated", "name": size, "seed": generate.SEED, "generator": GENERATOR}
    return build_once(path, lambda p: write_catalog(p, meta, (generate.product(i) for i in range(SIZES[size]))))


def open_catalog(catalog: str | os.PathLike) -> Catalog:
    """A catalog by size name or file path; `small` is built on first use, the others on request."""
    if str(catalog) in SIZES:
        path = generated_path(str(catalog))
        if not path.exists():
            if catalog != "small":
                raise FileNotFoundError(f"the WebShop catalog {catalog!r} is not built yet: run "
                                        f"`turngym webshop build --size {catalog}` once")
            build_generated("small")
        return Catalog.open(path)
    return Catalog.open(catalog)
