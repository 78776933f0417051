"""Scoring mode for `hf:` agents (GLAM, Carta et al. 2023): the policy is a distribution over the
env's proposed actions, each weighed by how likely the language model finds it as its reply.

Each turn the family's `propose_actions(obs, info)` gives the candidates c_1..c_N (admissible and
complete, so every action is valid by construction). The prompt is `LMAgent`'s compact chat (its
system message asking for `Action: <one admissible action>`, the family's one-shot example where
it has one, the feedback on the previous action, the observation, the candidates listed as the
admissible actions) with the assistant's reply opened by `Action:`. A candidate c is scored as the
rest of that reply, its tokens t_1..t_m being ` c` and the chat template's end-of-turn token:

    s(c) = sum_k log p_LM(t_k | prompt, t_<k)          reduce="sum" (the default)
    s(c) = (1 / m) sum_k log p_LM(t_k | prompt, t_<k)   reduce="mean"
    pi(c) = softmax(s / T)(c)                           sampled per (episode seed, turn); T = 0: argmax

Why `Action:` in the prompt and the end-of-turn token in the scored reply: `Action: <action>` is
the reply the system message asks for and the example shows, so the scored text is exactly what a
chat model (SmolLM2 included) would write there, rather than a bare action it was never asked for;
`Action:` is shared by every candidate, so scoring it would add the same constant to every sum and
only blur the per-token means; and the end-of-turn token makes s(c) the likelihood of the complete
reply, so that `make wood_pickaxe` does not win just for being the start of a longer reply.

Speed: one forward pass over the prompt, where only the tokens after its common prefix with the
previous turn's prompt go through the model (within an episode the prompts share their head, the
system message and example, whose keys and values are kept and cropped to that prefix), then ONE
forward over all candidates packed into one row after the prompt, under a tree attention mask,
reading the prompt's keys and values in place.

`prompt_cache` and `candidate_scores` are the same computation for the trainer (trainers/lm.py),
with gradients and for many turns at once (left-padded prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import DynamicCache

from turngym.agents.hf import HFAgent, attention_masks, sliding_window
from turngym.agents.lm import Exchange, Message, turn_seed
from turngym.agents.neural import proposer

REDUCES = ("sum", "mean")
OPENER = "Action:"  # the reply's start, in the prompt; a candidate's tokens follow it
OPTIONS = ("temperature", "max_context", "reduce", "max_candidates", "dtype")


# --- the computation (shared with the trainer) ------------------------------------------------

@dataclass
class PromptCache:
    """What a forward pass over B prompts leaves for their candidates: each layer's keys and values
    (B, heads, L, dim; left-padded), the attention mask (B, L), each prompt's length (the position
    of its first candidate token) and the log-probs of the token after each prompt (B, V)."""

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    lengths: torch.Tensor
    next_logprobs: torch.Tensor
    reused: int = 0  # leading tokens whose keys and values came from an earlier prompt


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def prompt_cache(model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int,
                 device: torch.device) -> PromptCache:
    """One forward pass over `prompts` (positions start at 0 at each prompt's first token); only the
    last position goes through the output layer. The head every prompt shares (a system message
    and example, the same on every turn) goes through the model once, its keys and values read by
    every row; the rest of each prompt follows it, left-padded, so that every prompt ends at the
    last column. With gradients, the head's are the sum over the rows, as when each row recomputes it."""
    shared = _shared_head(prompts) if not sliding_window(model) else 0
    cache = DynamicCache()  # no config: full layers (a sliding window's would drop what later turns reuse)
    if shared:
        model(input_ids=torch.tensor([list(prompts[0][:shared])], device=device), cache=cache, use_cache=True,
              logits_to_keep=1)
        cache = DynamicCache(ddp_cache_data=[(k.expand(len(prompts), -1, -1, -1), v.expand(len(prompts), -1, -1, -1))
                                             for k, v in _layers(cache)])
    length = max(len(p) for p in prompts) - shared
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), shared + length), dtype=torch.long)
    mask[:, :shared] = 1
    for b, prompt in enumerate(prompts):
        ids[b, length - len(prompt) + shared:] = torch.tensor(prompt[shared:])
        mask[b, shared + length - len(prompt) + shared:] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)[:, shared:]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1)
    return PromptCache(_layers(cache), mask, mask.sum(1), torch.log_softmax(out.logits[:, -1].float(), -1))


@torch.no_grad()
def detached_prompt_cache(model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int,
                          device: torch.device) -> tuple[PromptCache, list[int]]:
    """`prompt_cache` of the prompts without their last token, computed without gradients, and those
    last tokens (`candidate_scores`'s `lead`). The scores are the same; their gradients flow only
    through the candidates' tokens and each prompt's last one, not back into the prompt's keys and
    values: a truncated gradient that spares the trainer the backward pass over every prompt."""
    return prompt_cache(model, [p[:-1] for p in prompts], pad_id, device), [int(p[-1]) for p in prompts]


def _shared_head(prompts: Sequence[Sequence[int]]) -> int:
    """The length of the prefix all prompts share, leaving each at least one token of its own."""
    if len(prompts) < 2:
        return 0
    limit = min(len(p) for p in prompts) - 1
    first, common = prompts[0], 0
    while common < limit and all(p[common] == first[common] for p in prompts):
        common += 1
    return common


def extend_prompt(model: torch.nn.Module, ids: Sequence[int], previous: tuple[list[int], PromptCache] | None,
                  pad_id: int, device: torch.device) -> PromptCache:
    """`prompt_cache` of one prompt, reusing the keys and values of `previous` (its token ids and
    cache) up to their common prefix: only the tokens after it go through the model."""
    common = 0
    if previous is not None:
        old = previous[0]
        limit = min(len(old), len(ids) - 1)  # at least one new token: its logits predict the reply
        while common < limit and old[common] == ids[common]:
            common += 1
    if common == 0:
        return prompt_cache(model, [ids], pad_id, device)
    cache = DynamicCache(ddp_cache_data=[(k[:, :, :common], v[:, :, :common]) for k, v in previous[1].keys_values])
    new = torch.tensor([list(ids[common:])], device=device)
    out = model(input_ids=new, attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                position_ids=torch.arange(common, len(ids), device=device)[None], cache=cache, use_cache=True,
                logits_to_keep=1)
    return PromptCache(_layers(cache), torch.ones((1, len(ids)), dtype=torch.long, device=device),
                       torch.tensor([len(ids)], device=device), torch.log_softmax(out.logits[:, -1].float(), -1),
                       common)


def candidate_scores(model: torch.nn.Module, prompts: PromptCache, candidates: Sequence[Sequence[Sequence[int]]],
                     pad_id: int, reduce: str = "sum", lead: Sequence[int] | None = None) -> list[torch.Tensor]:
    """s(c) for every candidate of every prompt (one tensor of N_b scores per prompt b), in ONE
    forward pass with the candidates packed: row b holds every candidate of prompt b one after the
    other, each token at the position it would have right after the prompt, under a tree mask (a
    token sees its prompt and the earlier tokens of its own candidate). So the prompt's keys and
    values are read in place, never copied per candidate: a copy per candidate made this pass cost
    more than the prompt itself at 1,500-token prompts.

    `lead`: the last token of each prompt, when `prompts` holds the prompts without it
    (`detached_prompt_cache`); it then goes through this pass in front of every candidate, so that
    a candidate's first token is scored here too, with gradients."""
    device = prompts.mask.device
    batch = len(candidates)
    if lead is not None:  # score [lead] + c from its second token on: the same s(c)
        scored = [[[int(lead[b]), *c] for c in group] for b, group in enumerate(candidates)]
        token_logp = [torch.zeros(len(group), device=device) for group in candidates]
    else:  # a candidate's first token is scored by the prompt's last position
        scored = candidates
        first = [torch.tensor([c[0] for c in group], device=device) for group in candidates]
        token_logp = [prompts.next_logprobs[b, ids] for b, ids in enumerate(first)]
    # the packed inputs: each scored sequence but its last token, predicting the next
    width = max(sum(len(c) - 1 for c in group) for group in scored)
    if width == 0:
        rest = [torch.zeros(len(group), device=device) for group in candidates]
    else:
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        targets = torch.zeros((batch, width), dtype=torch.long)
        owner = torch.full((batch, width), -1, dtype=torch.long)  # which candidate a packed token is of (-1: pad)
        offset = torch.zeros((batch, width), dtype=torch.long)  # its position after the prompt
        for b, group in enumerate(scored):
            at = 0
            for j, c in enumerate(group):
                n = len(c) - 1
                ids[b, at:at + n], targets[b, at:at + n] = torch.tensor(c[:-1]), torch.tensor(c[1:])
                owner[b, at:at + n], offset[b, at:at + n] = j, torch.arange(n)
                at += n
        ids, targets, owner, offset = ids.to(device), targets.to(device), owner.to(device), offset.to(device)
        real = owner >= 0
        order = torch.arange(width, device=device)
        own = (owner[:, :, None] == owner[:, None, :]) & (order[None, None, :] <= order[None, :, None]) & real[:, None]
        seen = torch.cat([prompts.mask.bool()[:, None, :].expand(-1, width, -1), own], 2)  # (B, Q, L+Q)
        query = prompts.lengths[:, None] + offset
        key = torch.cat([prompts.mask.cumsum(1) - 1, query], 1)
        masks = attention_masks(model, seen, query[:, :, None] - key[:, None, :])  # (B, 1, Q, L+Q)
        cache = DynamicCache(ddp_cache_data=list(prompts.keys_values))
        logits = model(input_ids=ids, attention_mask=masks, position_ids=prompts.lengths[:, None] + offset,
                       cache=cache, use_cache=True).logits.float()
        packed = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)
        rest = []
        for b, group in enumerate(candidates):
            sums = torch.zeros(len(group), device=device, dtype=packed.dtype)
            mask = real[b]
            rest.append(sums.index_add(0, owner[b][mask], packed[b][mask]))
    totals = []
    for b, group in enumerate(candidates):
        total = token_logp[b] + rest[b]
        if reduce == "mean":
            total = total / torch.tensor([len(c) for c in group], device=device, dtype=total.dtype)
        totals.append(total)
    return totals


def policy_logprobs(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi = log softmax(s / T) over one turn's candidates (T = 0: the smooth policy at T = 1,
    as the generating agent records its greedy tokens)."""
    return torch.log_softmax(scores / (temperature or 1.0), -1)


# --- the agent --------------------------------------------------------------------------------

class HFScoreAgent(HFAgent):
    """Chooses among the env's proposed actions by the model's likelihood of each as its reply.

    The prompt is `LMAgent`'s compact style with an `Action:` prefill whatever the model's size
    (the style's choices of example, feedback and history apply: scoring needs the task, the
    observation and what just happened, and a short prompt keeps each turn cheap).

    Options: `temperature` (>= 0; 0 takes the most likely candidate), `max_context` (the prompt's
    token budget; default 2048 within the model's context), `reduce` (`sum` or `mean` of a
    candidate's token log-likelihoods), `max_candidates` (keep the first N proposals; default
    all) and `dtype` (the weights' type, see `HFModel`). `last_record` holds per turn the prompt's
    token ids, the chosen candidate's tokens as the completion, [log pi(chosen)] as the log-probs,
    and in extras every candidate (`candidates`, `candidate_ids`), its score s(c) (`scores`), the
    chosen index (`choice`) and the entropy of pi.
    """

    def __init__(self, env: gym.Env, path: str, *, temperature: float = 1.0, max_context: int | None = None,
                 **options: Any) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for mode=score: use {', '.join(OPTIONS)}")
        reduce, max_candidates = options.get("reduce", "sum"), options.get("max_candidates")
        if reduce not in REDUCES:
            raise ValueError(f"reduce must be sum or mean, got {reduce!r}")
        if max_candidates is not None and (not isinstance(max_candidates, int) or isinstance(max_candidates, bool)
                                           or max_candidates < 1):
            raise ValueError(f"max_candidates must be a whole number >= 1 (none: all), got {max_candidates!r}")
        super().__init__(env, path, temperature=temperature, max_context=max_context, images=False, prompt="compact",
                         prefill=OPENER, dtype=options.get("dtype", "auto"))
        if self.model.vision:
            raise ValueError(f"{path} is a vision-language checkpoint: mode=score takes text-only checkpoints")
        self.reduce, self.max_candidates = reduce, max_candidates
        self.propose = proposer(env)
        self.end_of_turn = self._end_of_turn()
        self.cached: tuple[list[int], PromptCache] | None = None

    def _end_of_turn(self) -> int:
        """The token that ends an assistant turn in the chat template (SmolLM2: <|im_end|>)."""
        tokenizer, marker = self.model.tokenizer, "\x00REPLY\x00"
        chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
        tail = tokenizer.apply_chat_template(chat, tokenize=False).rsplit(marker, 1)[-1]
        ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
        return next((i for i in ids if i in self.model.eos_ids), tokenizer.eos_token_id)

    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Any:
        raise TypeError("a scoring agent chooses among proposed actions; it writes no replies (use mode=generate)")

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        super().reset(obs, info, seed=seed)
        self.cached = None  # the weights may have changed since the last episode (training)

    def candidates(self, obs: dict[str, Any], info: dict[str, Any]) -> list[str]:
        """The family's proposals without repeats (a repeat would count twice), at most `max_candidates`."""
        proposed = list(dict.fromkeys(self.propose(obs, info)))[:self.max_candidates]
        if not proposed:
            raise ValueError(f"the env proposed no actions on turn {info.get('turn')}: mode=score needs an env whose "
                             "propose_actions lists complete actions (use mode=generate)")
        return proposed

    def encode_turn(self, messages: list[Message], candidates: list[str]) -> tuple[list[int], list[list[int]]]:
        """Token ids of the prompt (the chat, then `Action:` on its own, as `HFModel.encode` does)
        and of each candidate's rest of the reply (` <candidate>` and the end-of-turn token)."""
        tokenizer = self.model.tokenizer
        prompt = tokenizer(self.model.prompt_text(messages), add_special_tokens=False)["input_ids"] + \
            tokenizer(OPENER, add_special_tokens=False)["input_ids"]
        replies = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] + [self.end_of_turn] for c in candidates]
        longest = len(prompt) + max(len(r) for r in replies)
        if self.model.context_length is not None and longest > self.model.context_length:
            raise ValueError(f"the prompt and a candidate take {longest} tokens but {self.model.name} takes at most "
                             f"{self.model.context_length}: lower max_context")
        return prompt, replies

    @torch.inference_mode()
    def scores(self, prompt: list[int], replies: list[list[int]]) -> tuple[torch.Tensor, int]:
        """s(c) of every candidate reply after `prompt` (reusing the previous prompt's cache), and
        how many prompt tokens the cache held."""
        model = self.model.model
        cache = extend_prompt(model, prompt, self.cached, self.model.pad_id, self.model.device)
        self.cached = (prompt, cache)
        return candidate_scores(model, cache, [replies], self.model.pad_id, self.reduce)[0].cpu().double(), cache.reused

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        feedback = self._feedback(info)
        turn = int(info.get("turn", len(self.history)))
        candidates = self.candidates(obs, info)
        messages, user = self.build_messages(turn, str(obs.get("text", "")), candidates, feedback)
        prompt, replies = self.encode_turn(messages, candidates)
        scores, reused = self.scores(prompt, replies)
        logpi = policy_logprobs(scores, self.temperature)
        if self.temperature == 0:
            choice = int(scores.argmax())
        else:
            generator = torch.Generator().manual_seed(turn_seed(self.seed, turn))
            choice = int(torch.multinomial(logpi.exp(), 1, generator=generator))
        action, reply = candidates[choice], f"{OPENER} {candidates[choice]}"
        self.history.append(Exchange(turn, user, reply, action,
                                     self.estimate_tokens(user) + self.estimate_tokens(reply) + 8))
        self.last_record = {
            "prompt_ids": prompt, "completion_ids": replies[choice], "logprobs": [float(logpi[choice])],
            "extras": {"mode": "score", "candidates": candidates, "candidate_ids": replies, "choice": choice,
                       "scores": scores.tolist(), "entropy": float(-(logpi.exp() * logpi).sum()),
                       "temperature": self.temperature, "reduce": self.reduce,
                       "usage": {"prompt_tokens": len(prompt), "cached_tokens": reused,
                                 "candidate_tokens": sum(len(r) for r in replies)}}}
        return action
