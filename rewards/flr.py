"""Follow-up Likelihood as Reward (FLR; Zhang et al. 2024, "Aligning Language Models Using Follow-up
Likelihood as Reward Signal"): a response is good when a language model expects the user to be pleased.

A follow-up LM reads the conversation, the response as the assistant's turn, and then a follow-up
f as the next user turn, each in the LM's chat template. With a follow-up set of positive ones
("That is exactly what I needed") and negative ones ("That is not what I asked for"),

    s(f)  = (1 / |f|) sum_k log p_LM(f_k | conversation, response, user-turn opener, f_<k)
    FLR   = mean_{f in positive} s(f) - mean_{f in negative} s(f)

No reward model is trained: the LM's sense of how a user reacts is the judge. Only the follow-up's
own tokens are scored (not the template's end-of-turn token after it), each segment (the template
text up to the response, the response, the text up to the follow-up, the follow-up) tokenized on
its own, so that every follow-up continues exactly the same prompt tokens.

Variants (`variant=`):
- "loglik": s(f) as above, the paper's definition (the default).
- "logit": the mean raw logit of f's tokens, each at the position that predicts it: the log-softmax
  without its normaliser. The public FLR code (github.com/e0397123/FLR, run_llama3.py) scores raw
  logits rather than log-likelihoods.
- "logit_bag": what that code computes exactly, position for position: it slices the logits of the
  last len(tokenizer(f)) positions of the templated chat and reads, at the FIRST of them only, the
  logit of every token id of f, averaged; an order-blind bag of f's tokens at one position. With
  Llama-3 (the tokenizer adds a BOS id, the template one end-of-turn token) that position is f's
  first token, the one predicting its second; this variant reads there (without the BOS id).
  `bench/flr.py` compares the three.

Follow-up sets are data, `assets/flr/<name>.yaml`: aspects, each with positive and negative
follow-ups (about ten of each). `general` has the paper's aspects (understanding, relevance,
correctness, helpfulness, instruction following) in turngym's own wording; `webshop`, `longdoc` and
`craft` are written for those families' tasks. Every follow-up counts once, so an aspect's weight
is its share of the follow-ups.

Speed: one forward pass per batch of items, each row holding the prompt followed by every
follow-up packed one after the other, each at the positions it would have right after the prompt
and seeing only the prompt and its own earlier tokens (a tree attention mask): the prompt goes
through the model once, whatever the number of follow-ups. The same pass gives the response's own
likelihood (`response_loglik`, the baseline a reward model should beat).

In an env (`FLRReward`), the conversation of a turn is one user message holding the observation
text the agent acted on (every turngym observation is self-contained: it restates the instruction,
question or task) and the response is the action string sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
import yaml

from turngym.agents.lm import Message
from turngym.trajectory import Trajectory

if TYPE_CHECKING:
    from turngym.agents.hf import HFModel

VARIANTS = ("loglik", "logit", "logit_bag")
TURNS = ("terminal", "all")
Item = tuple[list[Message], str]  # (chat messages before the response, the response text)
SENTINEL = "\x00FLR-FOLLOW-UP\x00"  # stands for the follow-up while the chat template is laid out
HEAD_CHUNK = 512  # positions per output-layer call: 512 x a 49k vocabulary is 100 MB of float32 logits
PASS_TOKENS = 2**23  # rows x width^2 of one forward: bounds the attention scores a pass holds


# --- follow-up sets -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FollowUps:
    """A follow-up set: aspect -> (positive follow-ups, negative follow-ups)."""

    name: str
    aspects: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]

    @property
    def positive(self) -> tuple[str, ...]:
        return tuple(f for pos, _ in self.aspects.values() for f in pos)

    @property
    def negative(self) -> tuple[str, ...]:
        return tuple(f for _, neg in self.aspects.values() for f in neg)


def followup_sets() -> list[str]:
    """The names of the follow-up sets shipped in assets/flr."""
    folder = resources.files("turngym.assets").joinpath("flr")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_followups(spec: str | Path | Mapping[str, Any] | FollowUps) -> FollowUps:
    """A follow-up set from a shipped name (`general`, `webshop`, ...), a YAML file, or a mapping:
    `{"aspects": {name: {"positive": [...], "negative": [...]}}}` (the files' layout) or just
    `{"positive": [...], "negative": [...]}` (one aspect)."""
    if isinstance(spec, FollowUps):
        return spec
    if isinstance(spec, Mapping):
        return _parse(spec, "custom")
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ValueError(f"no follow-up file {path}: pass an existing YAML file or one of {followup_sets()}")
        return _parse(yaml.safe_load(path.read_text()), path.stem)
    if str(spec) not in followup_sets():
        raise ValueError(f"unknown follow-up set {str(spec)!r}: pass one of {followup_sets()} or a YAML file path")
    text = resources.files("turngym.assets").joinpath(f"flr/{spec}.yaml").read_text()
    return _parse(yaml.safe_load(text), str(spec))


def _parse(data: Any, name: str) -> FollowUps:
    aspects = data.get("aspects", {"all": data}) if isinstance(data, Mapping) else None
    if not isinstance(aspects, Mapping) or not all(isinstance(lists, Mapping) for lists in aspects.values()):
        raise ValueError(f"follow-up set {name!r} is not a mapping of aspects to positive and negative lists: "
                         "write it as `aspects: {NAME: {positive: [...], negative: [...]}}`")
    parsed = {}
    for aspect, lists in aspects.items():
        pos, neg = (tuple(str(f).strip() for f in lists.get(key) or ()) for key in ("positive", "negative"))
        if not pos or not neg or not all(pos + neg):
            raise ValueError(f"follow-up set {name!r}, aspect {aspect!r}: give non-empty `positive` and `negative` "
                             "lists of follow-ups")
        parsed[str(aspect)] = (pos, neg)
    return FollowUps(name, parsed)


# --- items --------------------------------------------------------------------------------------

def turn_item(text: str, action: str) -> Item:
    """The (conversation, response) FLR scores for one env turn: the observation text the agent
    acted on as one user message, and its action."""
    return [{"role": "user", "content": text}], action


def trajectory_item(traj: Trajectory, turn: int = -1) -> Item:
    """`turn_item` of a recorded turn (by default the last, the final answer or purchase)."""
    step = traj.turns[turn]
    return turn_item(step.text, step.action)


# --- the measurement ----------------------------------------------------------------------------

@dataclass
class Measures:
    """Per item and follow-up, s(f) under each variant (name -> array (items, follow-ups)), and per
    item the mean log-likelihood of the response (NaN for an empty response)."""

    followups: tuple[str, ...]
    variants: dict[str, np.ndarray]
    response: np.ndarray

    def flr(self, followups: FollowUps, variant: str = "loglik") -> np.ndarray:
        """FLR of every item: mean s(f) over the positive follow-ups minus over the negative ones."""
        index = {f: j for j, f in enumerate(self.followups)}
        missing = [f for f in followups.positive + followups.negative if f not in index]
        if missing:
            raise ValueError(f"follow-ups not measured: {missing[:3]}: measure them first")
        values = self.variants[variant]
        pos = values[:, [index[f] for f in followups.positive]].mean(1)
        neg = values[:, [index[f] for f in followups.negative]].mean(1)
        return pos - neg


@dataclass
class Prompt:
    """The token ids every follow-up of an item continues, and the response's token span in them."""

    ids: list[int]
    response: tuple[int, int]


class FollowUpLikelihood:
    """FLR scores of (conversation, response) items with a local chat LM (`hf:` paths and short
    names such as `smollm2`, loaded by `turngym.agents.hf.HFModel`; text-only, on the GPU if any).

    Args:
        lm: the follow-up LM, a checkpoint folder or a short name (or a loaded HFModel, to share it).
        followups: a follow-up set, as `load_followups` takes it (default: `general`).
        variant: "loglik" (the paper), "logit" or "logit_bag" (the public code's raw logits); see
            the module docstring.
        batch_size: items per forward pass (fewer when long prompts would make a pass too big).
    """

    def __init__(self, lm: str | HFModel, followups: str | Mapping[str, Any] | FollowUps = "general", *,
                 variant: str = "loglik", batch_size: int = 8) -> None:
        from turngym.agents.hf import HFModel

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.lm = lm if isinstance(lm, HFModel) else HFModel(lm)
        if self.lm.vision:
            raise ValueError(f"{self.lm.name} is a vision-language model: FLR needs a text-only chat LM")
        config = self.lm.model.config.get_text_config()
        if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
            # the pass applies the output layer to hidden states itself, without such post-processing
            raise ValueError(f"{self.lm.name} post-processes its logits, which FLR does not reproduce: "
                             "use a Llama/Mistral/Qwen/GPT-2-style chat LM")
        self.followups = load_followups(followups)
        self.variant, self.batch_size = variant, batch_size
        self.tokenizer = self.lm.tokenizer
        self._tokens: dict[str, list[int]] = {}

    # -- public scores --

    def scores(self, items: Sequence[Item]) -> np.ndarray:
        """FLR of each (messages, response) item, in log-likelihood (or logit) units per token."""
        followups = self.followups.positive + self.followups.negative
        return self.measure(items, followups).flr(self.followups, self.variant)

    def response_loglik(self, items: Sequence[Item]) -> np.ndarray:
        """The baseline: the LM's mean log-likelihood per token of each response given its
        conversation (NaN for an empty response)."""
        return self.measure(items, ()).response

    def score_trajectory(self, traj: Trajectory, turn: int = -1) -> float:
        """FLR of one recorded turn (by default the last: the final answer or purchase)."""
        return float(self.scores([trajectory_item(traj, turn)])[0])

    # -- layout --

    def _ids(self, text: str) -> list[int]:
        if text not in self._tokens:
            self._tokens[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._tokens[text]

    def prompt(self, messages: list[Message], response: str) -> Prompt:
        """The token ids every follow-up of (messages, response) continues: the chat template up to
        the response, the response, and the template up to the next user turn's content."""
        template = self.tokenizer.apply_chat_template
        head = template(messages, add_generation_prompt=True, tokenize=False)
        chat = [*messages, {"role": "assistant", "content": response}, {"role": "user", "content": SENTINEL}]
        full = template(chat, tokenize=False)
        before = full[:full.find(SENTINEL)] if SENTINEL in full else ""
        at = before.find(response, len(head)) if response else len(head)
        if not before.startswith(head) or at < 0:
            raise ValueError(f"the chat template of {self.lm.name} does not render an assistant turn as the "
                             "generation prompt followed by the response: use a ChatML-style chat LM")
        ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        ids += self.tokenizer(before[len(head):at], add_special_tokens=False)["input_ids"] if at > len(head) else []
        start = len(ids)
        ids += self.tokenizer(response, add_special_tokens=False)["input_ids"] if response else []
        end = len(ids)
        ids += self.tokenizer(before[at + len(response):], add_special_tokens=False)["input_ids"]
        return Prompt(ids, (start, end))

    def sequence(self, messages: list[Message], response: str, followup: str) -> list[int]:
        """The token ids scored for one follow-up: `prompt` then the follow-up's own tokens."""
        return self.prompt(messages, response).ids + self._ids(followup)

    # -- the pass --

    def measure(self, items: Sequence[Item], followups: Sequence[str]) -> Measures:
        """s(f) of every follow-up under every variant, and the response's likelihood, for every item."""
        followups = tuple(followups)
        if any(not f for f in followups):
            raise ValueError("a follow-up is empty: every follow-up needs at least one token")
        tokens = [self._ids(f) for f in followups]
        prompts = [self.prompt(list(messages), response) for messages, response in items]
        limit = self.lm.context_length
        longest = max((len(p.ids) for p in prompts), default=0) + max((len(t) for t in tokens), default=0)
        if limit is not None and longest > limit:
            raise ValueError(f"a prompt plus follow-up has {longest} tokens but {self.lm.name} takes at most "
                             f"{limit}: shorten the conversation")
        packing = _Packing.of(tokens)
        out = {v: np.zeros((len(items), len(followups))) for v in VARIANTS}
        response = np.full(len(items), np.nan)
        order = sorted(range(len(items)), key=lambda i: -len(prompts[i].ids))  # similar lengths pad little
        at = 0
        while at < len(order):
            width = len(prompts[order[at]].ids) + len(packing.packed)
            rows = max(1, min(self.batch_size, PASS_TOKENS // (width * width)))
            batch = order[at:at + rows]
            at += rows
            values, resp = self._pass([prompts[i] for i in batch], packing)
            for b, i in enumerate(batch):
                response[i] = resp[b]
                for v in VARIANTS:
                    out[v][i] = values[v][b]
        return Measures(followups, out, response)

    @torch.inference_mode()
    def _pass(self, prompts: list[Prompt], packing: _Packing) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One forward over the rows [prompt, f_1, f_2, ...] under the tree mask; returns s(f) per
        variant (rows, follow-ups) and the response's mean log-likelihood per row."""
        model, device = self.lm.model, self.lm.device
        ids, pos, seg = (t.to(device) for t in packing.rows(prompts, self.lm.pad_id))
        hidden = model.base_model(input_ids=ids, attention_mask=_tree_mask(model, pos, seg), position_ids=pos,
                                  use_cache=False).last_hidden_state
        head = model.get_output_embeddings()

        # every scored token, the response's and the follow-ups', with the position that predicts it
        rows, places, targets = [], [], []
        for b, p in enumerate(prompts):
            start, end = p.response
            predictors = [len(p.ids) + at if at >= 0 else len(p.ids) - 1 for at in packing.predictor]
            rows += [b] * (end - start + len(packing.flat))
            places += [*range(start - 1, end - 1), *predictors]
            targets += [*p.ids[start:end], *packing.flat]
        states = hidden[torch.tensor(rows, dtype=torch.long), torch.tensor(places, dtype=torch.long)]
        target = torch.tensor(targets, dtype=torch.long, device=device)
        logit, logprob = [torch.zeros(0, device=device)], [torch.zeros(0, device=device)]
        for c in range(0, len(targets), HEAD_CHUNK):
            logits = head(states[c:c + HEAD_CHUNK]).float()
            picked = logits.gather(1, target[c:c + HEAD_CHUNK, None])[:, 0]
            logit.append(picked)
            logprob.append(picked - torch.logsumexp(logits, 1))
        token_logit, token_logprob = (torch.cat(x).cpu().double().numpy() for x in (logit, logprob))

        count = len(packing.lengths)
        values = {v: np.zeros((len(prompts), count)) for v in VARIANTS}
        response = np.full(len(prompts), np.nan)
        at = 0
        for b, p in enumerate(prompts):
            start, end = p.response
            if end > start:
                response[b] = token_logprob[at:at + end - start].mean()
            at += end - start
            scored = slice(at, at + len(packing.flat))
            values["loglik"][b] = packing.means(token_logprob[scored])
            values["logit"][b] = packing.means(token_logit[scored])
            at += len(packing.flat)
            if count:  # logit_bag: the logits at each follow-up's first token, at every token id of it
                at_first = head(hidden[b, torch.as_tensor(len(p.ids) + packing.starts)]).float()
                picked = at_first[torch.as_tensor(packing.owner), torch.tensor(packing.flat, dtype=torch.long)]
                values["logit_bag"][b] = packing.means(picked.cpu().double().numpy())
        return values, response


@dataclass
class _Packing:
    """Where the follow-ups go after a prompt. Targets: every token of every follow-up (`flat`,
    `owner`: which follow-up each is of). Inputs (`packed`): each follow-up but its last token,
    which predicts nothing (a one-token follow-up keeps it: logit_bag reads the output at its
    first token), one after the other, each token at the position it has right after the prompt.
    `predictor[k]`: the packed index whose output predicts target k, or -1 for the prompt's last
    token (a follow-up's first token). `starts`: each follow-up's first packed index."""

    flat: list[int]
    owner: np.ndarray
    lengths: np.ndarray
    packed: list[int]
    packed_owner: np.ndarray
    packed_offset: np.ndarray
    starts: np.ndarray
    predictor: np.ndarray

    @classmethod
    def of(cls, tokens: list[list[int]]) -> _Packing:
        lengths = np.array([len(t) for t in tokens], dtype=int)
        inputs = [t[:-1] if len(t) > 1 else t for t in tokens]
        widths = np.array([len(t) for t in inputs], dtype=int)
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int) if tokens else np.zeros(0, int)
        owner = np.repeat(np.arange(len(tokens)), lengths)
        offset = np.concatenate([np.arange(n) for n in lengths]) if tokens else np.zeros(0, int)
        return cls(flat=[t for f in tokens for t in f], owner=owner, lengths=lengths,
                   packed=[t for f in inputs for t in f], packed_owner=np.repeat(np.arange(len(tokens)), widths),
                   packed_offset=np.concatenate([np.arange(n) for n in widths]) if tokens else np.zeros(0, int),
                   starts=starts, predictor=np.where(offset == 0, -1, starts[owner] + offset - 1))

    def rows(self, prompts: list[Prompt], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids, positions and segments (-1 prompt, j follow-up j, -2 padding) of the rows."""
        width = max(len(p.ids) for p in prompts) + len(self.packed)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        pos = torch.zeros((len(prompts), width), dtype=torch.long)
        seg = torch.full((len(prompts), width), -2, dtype=torch.long)
        for b, p in enumerate(prompts):
            n, end = len(p.ids), len(p.ids) + len(self.packed)
            ids[b, :end] = torch.tensor(p.ids + self.packed, dtype=torch.long)
            pos[b, :n] = torch.arange(n)
            pos[b, n:end] = torch.as_tensor(n + self.packed_offset)
            seg[b, :n] = -1
            seg[b, n:end] = torch.as_tensor(self.packed_owner)
        return ids, pos, seg

    def means(self, per_token: np.ndarray) -> np.ndarray:
        """The mean over each follow-up's tokens of a value per target token."""
        return np.bincount(self.owner, per_token, len(self.lengths)) / np.maximum(self.lengths, 1)


def _tree_mask(model: torch.nn.Module, pos: torch.Tensor, seg: torch.Tensor) -> torch.Tensor | dict[str, Any]:
    """The (rows, 1, width, width) attention mask: a token sees the prompt and its own segment up to
    itself; padding sees itself (never an empty row, whose NaN would leak through the values), and
    no real token sees padding."""
    from turngym.agents.hf import attention_masks

    order = torch.arange(seg.shape[1], device=seg.device)
    seen = (order[None, None, :] <= order[None, :, None]) & \
           ((seg[:, None, :] == -1) | (seg[:, None, :] == seg[:, :, None]))
    return attention_masks(model, seen, pos[:, :, None] - pos[:, None, :])


# --- the reward wrapper -------------------------------------------------------------------------

TurnRule = Callable[[str, dict[str, Any], bool], bool]  # (action, info, terminated) -> score this turn?


class FLRReward(gym.Wrapper):
    """Mixes the FLR score of chosen turns into any env's reward: on a chosen turn

        r' = (1 - weight) * r_env + weight * FLR(observation acted on, action)

    and every other turn's reward is unchanged. FLR is a difference of mean log-likelihoods per
    token, 0 when the LM finds positive and negative follow-ups equally likely, and small: with
    SmolLM2-135M and the general set, the final turns of WebShop and LongDocVQA score between about
    -0.3 and 0.1 (bench/flr.py), so its weight must be near 1 for it to weigh against a 0/1 outcome.
    Each chosen turn is one `FollowUpLikelihood.scores` call; the wrapper holds no other state than
    the last observation's text.

    Args:
        env: a turngym env (or any env whose observations have a `text`).
        flr: a FollowUpLikelihood, or the follow-up LM to build one with (`flr_options` go to it).
        weight: the FLR's share of the chosen turn's reward, in [0, 1].
        turns: which turns are scored: "terminal" (the default: the turn that ends the episode,
            the final answer or purchase; a truncated episode has none), "all", or a function
            `(action, info, terminated) -> bool`.

    `info` on a chosen turn gains `env_reward` (r_env) and `flr` (the score).
    """

    def __init__(self, env: gym.Env, flr: FollowUpLikelihood | str, *, weight: float = 0.5,
                 turns: str | TurnRule = "terminal", **flr_options: Any) -> None:
        super().__init__(env)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1]; got {weight}")
        if isinstance(turns, str) and turns not in TURNS:
            raise ValueError(f"turns must be one of {', '.join(TURNS)} or a function, not {turns!r}")
        if flr_options and isinstance(flr, FollowUpLikelihood):
            raise ValueError(f"{sorted(flr_options)} configure a new FollowUpLikelihood: pass them to it instead")
        self.flr = flr if isinstance(flr, FollowUpLikelihood) else FollowUpLikelihood(flr, **flr_options)
        self.weight, self.turns = float(weight), turns
        self._text: str | None = None

    def _chosen(self, action: str, info: dict[str, Any], terminated: bool) -> bool:
        if self.turns == "terminal":
            return terminated
        if self.turns == "all":
            return True
        return bool(self.turns(action, info, terminated))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._text = obs["text"]
        return obs, info

    def step(self, action: str):
        if self._text is None:
            raise RuntimeError("FLRReward.step() before reset(): call reset() first")
        obs, reward, terminated, truncated, info = self.env.step(action)
        text, self._text = self._text, obs["text"]
        action = action if isinstance(action, str) else str(action)
        if self._chosen(action, info, terminated):
            score = float(self.flr.scores([turn_item(text, action)])[0])
            info = {**info, "env_reward": float(reward), "flr": score}
            reward = (1.0 - self.weight) * float(reward) + self.weight * score
        return obs, reward, terminated, truncated, info
