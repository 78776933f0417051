"""The neural policy: a small torch model that scores the candidate actions of a turn.

The observation text is cut into lines (and WebShop's `[SEP]` segments); each line becomes a bag
of hashed word n-grams (1 to 3 words; digits count as words, one by one), so any env's text maps
to ids with no vocabulary to build or ship and local word order survives. The line embeddings,
with their line numbers, go through a small transformer whose first position is read out; an
optional CNN adds `obs["image"]`. A transformer over lines rather than words keeps a batch of 64
Craft observations (about 250 words but 20 lines each) cheap on a CPU. Each candidate action is a
bag of n-grams too, and a small MLP scores (observation, candidate) pairs; a softmax over the
candidates is the policy. A pooled observation cannot say which of ten opaque ids carries the
instruction's words, or whether an option is already chosen, so each candidate also reads what the
observation shows of it (`with_context`: its line's mark, an id's title and price, the sentence an
answer comes from), attends over the encoded lines (`attend`), and is scored with the shares of its
words in the observation's first lines and theirs in it (`overlap_lines`: every family puts the
instruction there), also through a linear path that carries "the instruction names it" over to
words never seen in training. A value head on the observation serves critics.

The candidates are the env's `propose_actions(obs, info)`: `info["actions"]` with templates such
as `search[<query>]` filled in by the family (see `TurnEnv.propose_actions`), so one network
plays Craft in both action modes, WebShop and HopVQA.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from turngym.agents.base import Agent
from turngym.envs.base import TurnEnv
from turngym.trajectory import atomic_write_bytes

PIECE = re.compile(r"[a-z]+|\d|[^\sa-z\d]")  # digits one by one, so numbers of any size share pieces
LINE = re.compile(r"\n|\[SEP\]|[.;] ")  # lines, WebShop segments, sentences and clauses
ARGUMENT = re.compile(r"\w+\[(.*)\]", re.DOTALL)  # click[B0ZLFRF0QZ] -> B0ZLFRF0QZ
OPAQUE = re.compile(r"(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z\d]{4,}")  # letters and digits, both
SHORT = 4  # words of an argument that reads the line holding it (an answer, a page), not a query
WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?")
TAG = re.compile(r"\[[a-z _]+\]")  # text_rich's [button] ... [button_] marks
Propose = Callable[[dict[str, Any], dict[str, Any]], list[str]]


@dataclass(frozen=True)
class PolicyConfig:
    """Sizes of the network; saved with the weights."""

    buckets: int = 1 << 15  # hashed ids for word n-grams
    ngram: int = 3  # longest n-gram
    dim: int = 64
    layers: int = 2
    heads: int = 4
    max_lines: int = 64  # observation lines kept (the head of the text: instructions come first)
    max_words: int = 64  # words kept per line
    image: bool = False  # add a CNN over obs["image"]
    image_size: int = 64  # images are resized to this square before the CNN
    context: int = 2  # lines a candidate reads after the observation line it names (0: none)
    attend: bool = True  # each candidate attends over the observation's encoded lines
    overlap_lines: int = 4  # shares of a candidate's words in each of the first N lines, and of theirs in it
    slots: int = 32  # candidates get an embedding of their place in the list (the first N; 0: none)


@lru_cache(maxsize=1 << 18)
def _gram_id(gram: str, buckets: int) -> int:
    return zlib.crc32(gram.encode()) % buckets  # crc32: stable across runs, unlike hash()


@lru_cache(maxsize=1 << 14)
def bag(line: str, buckets: int, ngram: int, max_words: int) -> tuple[int, ...]:
    """Hashed ids of the 1..`ngram`-word n-grams of a line (an empty line still gets one id)."""
    words = PIECE.findall(line.lower())[:max_words] or [""]
    return tuple(_gram_id(" ".join(words[i:i + n]), buckets)
                 for n in range(1, ngram + 1) for i in range(len(words) - n + 1))


def lines(text: str, limit: int) -> list[str]:
    return [line for line in (part.strip() for part in LINE.split(text)) if line][:limit] or [""]


@lru_cache(maxsize=1 << 14)
def words(text: str) -> frozenset[str]:
    """The lowercased words and numbers of a text, for overlaps."""
    return frozenset(WORD.findall(text.lower()))


def with_context(text: str, candidates: Sequence[str], context: int) -> list[str]:
    """Each candidate with what the observation shows of it: the marks of the line its argument
    names (text_rich's `[clicked button] Grey [clicked button_]`: an option already chosen), and,
    for an opaque id (one token of letters and digits, such as an ASIN), the (at most `context`)
    lines after that line, up to the next line another candidate names (a product's title, price).
    A short argument (at most SHORT words) that no line names whole reads the first line holding
    it as words (LongDocVQA's `answer[1998]`: the sentence the value was read from)."""
    if not context:
        return list(candidates)
    raw = [part.strip() for part in LINE.split(text)]
    found = [TAG.sub("", part).strip() for part in raw]
    where: dict[str, int] = {}
    for k, line in enumerate(found):
        where.setdefault(line, k)
    named = {m.group(1) for m in map(ARGUMENT.fullmatch, candidates) if m}
    out = []
    for action in candidates:
        m = ARGUMENT.fullmatch(action)
        k = where.get(m.group(1)) if m and m.group(1) else None
        if k is None:
            short = m is not None and 0 < len(m.group(1).split()) <= SHORT
            pattern = re.compile(rf"(?<!\w){re.escape(m.group(1))}(?!\w)") if short else None
            holder = next((line for line in found if pattern.search(line)), None) if pattern else None
            out.append(f"{action} {holder}" if holder else action)
            continue
        after: list[str] = []
        if OPAQUE.fullmatch(m.group(1)):
            for line in found[k + 1:]:
                if len(after) == context or line in named:
                    break
                if line:
                    after.append(line)
        out.append(" ".join([action, *TAG.findall(raw[k])[:1], *after]))
    return out


@dataclass
class Bags:
    """Many bags of ids, flattened for `nn.EmbeddingBag`."""

    ids: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def of(cls, bags: Sequence[Sequence[int]]) -> Bags:
        sizes = [len(b) for b in bags]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if bags else np.zeros(0)
        ids = [i for b in bags for i in b]
        return cls(torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long))

    @classmethod
    def join(cls, parts: Sequence[Bags]) -> Bags:
        """The bags of `parts`, in order, as one."""
        starts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        offsets = [p.offsets + int(start) for p, start in zip(parts, starts, strict=True)]
        return cls(torch.cat([p.ids for p in parts]), torch.cat(offsets))


@dataclass
class Batch:
    """Encoded turns: the observations' lines (with the turn and line number of each), optional
    images (B, 3, S, S), and the candidates of all turns (with the turn and slot of each)."""

    lines: Bags
    line_owner: torch.Tensor
    line_number: torch.Tensor
    images: torch.Tensor | None
    actions: Bags
    overlap: torch.Tensor  # (candidates, 2 x overlap_lines): shares of its words, of each line's
    owner: torch.Tensor
    slot: torch.Tensor
    counts: list[int]
    candidates: list[list[str]]

    @classmethod
    def join(cls, parts: Sequence[Batch]) -> Batch:
        """The turns of `parts`, in order, as one batch: equal to encoding them together, so turns
        encoded once can be batched again every epoch without re-encoding."""
        first = np.cumsum([0] + [len(p.counts) for p in parts[:-1]])
        cat = torch.cat
        return cls(Bags.join([p.lines for p in parts]),
                   cat([p.line_owner + int(f) for p, f in zip(parts, first, strict=True)]),
                   cat([p.line_number for p in parts]),
                   None if parts[0].images is None else cat([p.images for p in parts]),
                   Bags.join([p.actions for p in parts]), cat([p.overlap for p in parts]),
                   cat([p.owner + int(f) for p, f in zip(parts, first, strict=True)]), cat([p.slot for p in parts]),
                   [n for p in parts for n in p.counts], [c for p in parts for c in p.candidates])


@dataclass
class PolicyStep:
    """What the policy did on a batch of turns (one entry per turn)."""

    actions: list[str]
    index: torch.Tensor  # chosen candidate per turn (-1 where a turn had none)
    logprob: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor


def _long(values: Sequence[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


class NeuralPolicy(nn.Module):
    """Scores candidate actions given the observation; also gives a value estimate."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or PolicyConfig()
        self.grams = nn.EmbeddingBag(c.buckets, c.dim, mode="mean")
        self.first = nn.Parameter(torch.zeros(c.dim))  # the read-out position
        self.position = nn.Embedding(c.max_lines, c.dim)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, c.dim),
        ) if c.image else None
        self.slot = nn.Embedding(c.slots, c.dim) if c.slots else None
        # a linear path from the overlaps to the score: the rule "the instruction names it" then
        # holds for words the network never saw, where a hashed bag would be memorised
        self.overlap_score = nn.Linear(2 * c.overlap_lines, 1) if c.overlap_lines else None
        self.action_mlp = nn.Sequential(nn.Linear(c.dim, c.dim), nn.ReLU(), nn.Linear(c.dim, c.dim))
        self.attention = nn.ModuleDict({k: nn.Linear(c.dim, c.dim) for k in "qkv"}) if c.attend else None
        width = (6 if c.attend else 3) * c.dim + (1 if c.attend else 0) + 2 * c.overlap_lines
        self.scorer = nn.Sequential(nn.Linear(width, 2 * c.dim), nn.ReLU(), nn.Linear(2 * c.dim, 1))
        self.value_head = nn.Sequential(nn.Linear(c.dim, c.dim), nn.ReLU(), nn.Linear(c.dim, 1))

    # ---- encoding ---------------------------------------------------------------------------
    def encode(self, observations: Sequence[dict[str, Any]], candidates: Sequence[Sequence[str]]) -> Batch:
        """Turn observations and their candidate actions into tensors."""
        c = self.config
        line_bags, line_owner, line_number = [], [], []
        for i, obs in enumerate(observations):
            for k, line in enumerate(lines(obs["text"], c.max_lines)):
                line_bags.append(bag(line, c.buckets, c.ngram, c.max_words))
                line_owner.append(i)
                line_number.append(k)
        images = torch.stack([self._image(o.get("image")) for o in observations]) if c.image else None
        action_bags, overlap, owner, slot = [], [], [], []
        for i, actions in enumerate(candidates):
            head = [words(line) for line in lines(observations[i]["text"], c.overlap_lines)][:c.overlap_lines]
            head += [frozenset()] * (c.overlap_lines - len(head))
            for j, action in enumerate(with_context(observations[i]["text"], actions, c.context)):
                action_bags.append(bag(action, c.buckets, c.ngram, c.max_words))
                mine = words(TAG.sub("", action.partition("[")[2] or action))
                shared = [len(mine & line) for line in head]
                overlap.append([n / max(len(mine), 1) for n in shared]
                               + [n / max(len(line), 1) for n, line in zip(shared, head, strict=True)])
                owner.append(i)
                slot.append(j)
        return Batch(Bags.of(line_bags), _long(line_owner), _long(line_number), images, Bags.of(action_bags),
                     torch.tensor(overlap, dtype=torch.float32).reshape(len(overlap), 2 * c.overlap_lines),
                     _long(owner), _long(slot), [len(a) for a in candidates], [list(a) for a in candidates])

    def _image(self, image: np.ndarray | None) -> torch.Tensor:
        size = self.config.image_size
        if image is None:
            return torch.zeros(3, size, size)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]

    # ---- the network ------------------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, max candidates; -inf past a turn's candidates) and values (B,)."""
        n = len(batch.counts)
        width = int(batch.line_number.max()) + 2 if batch.line_number.numel() else 1
        x = torch.zeros(n, width, self.config.dim)
        x[:, 0] = self.first
        lines_h = self.grams(batch.lines.ids, batch.lines.offsets) + self.position(batch.line_number)
        x = x.index_put((batch.line_owner, batch.line_number + 1), lines_h)
        pad = torch.ones(n, width, dtype=torch.bool)
        pad[:, 0] = False
        pad[batch.line_owner, batch.line_number + 1] = False
        encoded = self.encoder(x, src_key_padding_mask=pad)
        h = self.norm(encoded[:, 0])
        if self.cnn is not None and batch.images is not None:
            h = h + self.cnn(batch.images)
        values = self.value_head(h).squeeze(-1)
        logits = torch.full((n, max([*batch.counts, 1])), float("-inf"))
        if batch.owner.numel():
            a = self.grams(batch.actions.ids, batch.actions.offsets)
            if self.slot is not None:
                a = a + self.slot(batch.slot.clamp(max=self.config.slots - 1))
            a = self.action_mlp(a)
            o = h[batch.owner]
            features = [o, a, o * a, batch.overlap]
            if self.attention is not None:
                features += self._attend(a, encoded, pad, batch.owner)
            scores = self.scorer(torch.cat(features, dim=-1)).squeeze(-1)
            if self.overlap_score is not None:
                scores = scores + self.overlap_score(batch.overlap).squeeze(-1)
            logits = logits.index_put((batch.owner, batch.slot), scores)
        return logits, values

    def _attend(self, a: torch.Tensor, encoded: torch.Tensor, pad: torch.Tensor, owner: torch.Tensor
                ) -> list[torch.Tensor]:
        """Each candidate's attention over its observation's encoded lines: what it read, that times
        itself, its best match's score, and the encoder's read-out position before its norm. Keys
        and values are projected once per observation, not once per candidate."""
        q = self.attention["q"](a)
        k, v = (self.attention[name](encoded)[owner] for name in "kv")
        logits = (k @ q[:, :, None]).squeeze(-1).masked_fill(pad[owner], float("-inf")) / self.config.dim ** 0.5
        read = (torch.softmax(logits, dim=-1)[:, None] @ v).squeeze(1)
        return [read, read * a, logits.max(-1, keepdim=True).values, encoded[owner, 0]]

    def evaluate(self, batch: Batch, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-prob and entropy of the chosen candidates, and the values (with gradients), for
        losses. Turns without candidates (index -1) get log-prob and entropy 0."""
        logits, values = self(batch)
        return (*choice_stats(logits, index), values)

    @torch.no_grad()
    def act(self, observations: Sequence[dict[str, Any]], infos: Sequence[dict[str, Any]], propose: Propose, *,
            sample: bool = True, generator: torch.Generator | None = None) -> PolicyStep:
        """Choose one candidate per turn (sampled, or the most likely with `sample=False`)."""
        candidates = [propose(o, i) for o, i in zip(observations, infos, strict=True)]
        batch = self.encode(observations, candidates)
        logits, values = self(batch)
        probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        has = torch.tensor([n > 0 for n in batch.counts])
        if sample:
            index = torch.multinomial(probs + (~has)[:, None].float(), 1, generator=generator).squeeze(1)
        else:
            index = logits.argmax(-1)
        index = torch.where(has, index, -1)
        actions = [c[k] if k >= 0 else "" for c, k in zip(candidates, index.tolist(), strict=True)]
        return PolicyStep(actions, index, *choice_stats(logits, index), values)

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | Path, **meta: Any) -> Path:
        """Write the config, weights and `meta` (env id, training figures, ...) atomically."""
        buf = io.BytesIO()
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict(), "meta": meta}, buf)
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[NeuralPolicy, dict[str, Any]]:
        """The policy saved at `path`, and its meta."""
        saved = load_saved(path)
        return cls.from_saved(saved), saved.get("meta", {})

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> NeuralPolicy:
        # files saved before these candidate features existed were trained without them
        before = {"context": 0, "attend": False, "overlap_lines": 0, "slots": 0}
        policy = cls(PolicyConfig(**{**before, **saved["config"]}))
        policy.load_state_dict(saved["state_dict"])
        return policy.eval()


def load_saved(path: str | Path) -> dict[str, Any]:
    """What a policy's `save` wrote (config, weights, meta; `kind` for non-text policies)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no neural policy at {path}: train one with `turngym train` or `turngym bc`, "
                         "or check the path")
    return torch.load(path, map_location="cpu", weights_only=True)


def choice_stats(logits: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each turn's chosen candidate and the entropy over its candidates (both 0 for a
    turn with none, index -1)."""
    has = index >= 0
    logp = torch.log_softmax(logits, dim=-1).masked_fill(~torch.isfinite(logits), 0.0)
    return logp.gather(1, index.clamp(min=0)[:, None]).squeeze(1) * has, -(logp.exp() * logp).sum(-1) * has


def proposer(env: gym.Env | gym.vector.VectorEnv | str) -> Propose:
    """The `propose_actions` of an env's family (an env, a vector env or an env id)."""
    if isinstance(env, str):
        spec = gym.spec(env)
        creator = spec.entry_point if callable(spec.entry_point) else gym.envs.registration.load_env_creator(
            spec.entry_point)
        return getattr(creator, "propose_actions", TurnEnv.propose_actions)
    if isinstance(env, gym.vector.VectorEnv):
        spec = getattr(env, "spec", None)
        if spec is None:
            raise ValueError("this vector env has no spec: pass its env id to proposer()")
        return proposer(spec.id)
    return getattr(type(env.unwrapped), "propose_actions", TurnEnv.propose_actions)


def unbatch(obs: dict[str, Any], info: dict[str, Any], n: int) -> tuple[list[dict], list[dict]]:
    """Split a vector env's batched observation and info into one dict per env."""
    return [{k: v[i] for k, v in obs.items()} for i in range(n)], _split_info(info, n)


def _split_info(info: dict[str, Any], n: int) -> list[dict[str, Any]]:
    infos: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, values in info.items():
        if key.startswith("_"):
            continue
        present = info.get("_" + key, np.ones(n, bool))
        parts = _split_info(values, n) if isinstance(values, dict) else values  # e.g. score_parts
        for i in range(n):
            if present[i]:
                infos[i][key] = parts[i]
    return infos


def new_policy(config: PolicyConfig | None = None, seed: int = 0) -> NeuralPolicy:
    """A freshly initialized policy; the same seed gives the same weights."""
    with torch.random.fork_rng():  # leave the caller's global torch stream alone
        torch.manual_seed(seed)
        return NeuralPolicy(config)


class NeuralAgent(Agent):
    """Plays one env with a `NeuralPolicy`; records the action's log-prob, entropy and value.

    It samples from the policy (reproducibly: the stream is seeded from the episode seed), which
    is also how it is evaluated: a greedy clone can repeat one action forever in a state its
    expert never showed it (Craft: walking into a tree), where sampling steps out of the loop.
    `sample=False` takes the most likely candidate instead."""

    def __init__(self, policy: NeuralPolicy, env: gym.Env, *, sample: bool = True) -> None:
        self.policy = policy.eval()
        self.propose = proposer(env)
        self.sample = bool(sample)
        self.generator = torch.Generator().manual_seed(0)

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.generator = torch.Generator().manual_seed(0 if seed is None else int(seed) & 0x7FFFFFFF)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        step = self.policy.act([obs], [info], self.propose, sample=self.sample, generator=self.generator)
        self.last_record = {"logprobs": [float(step.logprob[0])],
                            "extras": {"value": float(step.value[0]), "entropy": float(step.entropy[0])}}
        return step.actions[0]


def make_neural_agent(env: gym.Env, argument: str = "", *, sample: bool = True, seed: int = 0,
                      **config: Any) -> NeuralAgent:
    """`neural:PATH` loads a saved policy; bare `neural` builds a fresh one (seeded by `seed`,
    sized by PolicyConfig keywords such as `dim=128`), e.g. to start training."""
    if argument:
        if config:
            raise ValueError(f"neural:{argument} is a saved policy; its sizes ({', '.join(config)}) are fixed")
        saved = load_saved(argument)
        if saved.get("kind") == "craft-symbolic":  # trained on CraftVectorEnv (agents/symbolic.py)
            from turngym.agents.symbolic import SymbolicAgent, SymbolicPolicy
            return SymbolicAgent(SymbolicPolicy.from_saved(saved), env, sample=sample)
        policy = NeuralPolicy.from_saved(saved)
    else:
        unknown = set(config) - set(PolicyConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown neural option(s) {sorted(unknown)}: use sample, seed or "
                             f"{', '.join(PolicyConfig.__dataclass_fields__)}")
        policy = new_policy(PolicyConfig(**config), seed)
    return NeuralAgent(policy, env, sample=sample)
