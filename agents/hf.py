"""`hf:` agents: a local Hugging Face checkpoint, a causal LM or a vision-language model.

`HFModel` loads the checkpoint (never downloading: a folder, or a name already in the local
cache) and generates chat replies that record their token ids and log-probs; `HFAgent` plays an
env with it, and the chat server (`turngym/serve/lm_server.py`) serves it over HTTP.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.utils import logging as hf_logging

from turngym.agents.lm import (
    ACTION_REPLY_TOKENS,
    ACTION_SLACK_TOKENS,
    DEFAULT_CONTEXT,
    PLACEHOLDER,
    SMALL_MODEL,
    Completion,
    LMAgent,
    Message,
    action_line_done,
    content_text,
)
from turngym.agents.models import DTYPES, resolve

hf_logging.disable_progress_bar()  # a bar per checkpoint load would break into turngym's own progress bars
MIN_SHARED_PREFIX = 16  # prompt tokens shared with the cached prefix before it is worth reusing


def fast_dtype() -> str:
    """bfloat16 where it runs natively (a GPU with bf16, a CPU with AMX or AVX512-BF16), else float32."""
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "float32"
    return "bfloat16" if {"amx_bf16", "avx512_bf16"} & set(flags) else "float32"


def weights_dtype(name: str) -> Any:
    """The torch dtype (or "auto": the checkpoint's own) of a `dtype` option."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: use {', '.join(DTYPES)}")
    return name if name == "auto" else getattr(torch, name)


class HFModel:
    """A local checkpoint with its chat template, on the GPU when there is one.

    Sampling is exactly temperature then top-p: the checkpoint's own top-k, min-p and repetition
    penalty are switched off so that the recorded log-probs describe the sampling distribution.
    The log-prob of a completion token is the log-softmax of the model's logits divided by the
    temperature (1 when greedy), taken before top-p: the smooth policy a trainer differentiates,
    not the truncated one the token was drawn from (they agree on every token top-p keeps, up to
    the renormalizing constant of the nucleus).

    A `prefill` is text the assistant's reply starts with (`Action:`, say): it is appended to the
    prompt after the generation prompt, its tokens end the prompt ids, and the completion ids are
    exactly the tokens the model generated after it. With `reuse_prefix=True` the key/value cache
    of the previous call is kept and its longest common prefix with the next prompt is not
    computed again (the agent's prompts of one episode share their head); `reset_prefix(base)`
    starts over from the cache of the token ids `base` alone (the part every episode's prompts
    share), computed once, so that an episode's replies never depend on the episodes before it.

    `dtype` is the weights' type: `auto` keeps the checkpoint's (SmolLM2's converted folder is
    float32); `bfloat16` runs about 2x faster on CPUs with AMX or AVX512-BF16 (and on GPUs).
    Logits are read in float32 either way; SmolLM2's choice among WebShop's proposals moved by a
    total variation of 0.024 a turn on average (0.053 at most in one candidate's probability).
    """

    def __init__(self, path: str, dtype: str = "auto") -> None:
        torch_dtype = weights_dtype(dtype)
        path = resolve(path)  # a short name such as `smollm2` becomes its converted local folder
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            raise ValueError(f"no local checkpoint {path!r}: pass a folder saved with save_pretrained, or a model "
                             "name already in the Hugging Face cache (fetch it with `hf download`)") from None
        self.name = path
        self.vision = hasattr(config, "vision_config")
        if self.vision:
            self.processor: Any = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.tokenizer: Any = self.processor.tokenizer
            model_class: Any = AutoModelForImageTextToText
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model_class = AutoModelForCausalLM
        if self._chat_template() is None:
            raise ValueError(f"checkpoint {path!r} has no chat template: use a chat/instruct checkpoint, or add a "
                             "chat_template to its tokenizer_config.json")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model_class.from_pretrained(path, local_files_only=True, dtype=torch_dtype).to(self.device).eval()
        text_config = config.get_text_config()
        self.context_length: int | None = getattr(text_config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.pad_id = pad
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self._image_tokens: dict[tuple[int, ...], int] = {}
        self._prefix: tuple[Any, list[int]] | None = None  # (cache, the token ids it holds)
        self._wanted: list[int] | None = None  # the base prefix asked for by reset_prefix
        self._base: tuple[Any, list[int], tuple[int, int]] | None = None  # reset_prefix's, and the weights' version


    def _chat_template(self) -> str | None:
        return getattr(self.processor, "chat_template", None) or self.tokenizer.chat_template

    def prompt_text(self, messages: list[Message], image: np.ndarray | None = None, prefill: str = "") -> str:
        """The chat template applied to `messages`, ending with the assistant's turn opener (and
        the `prefill` the reply starts with). `image` opens the last message; a message whose
        content is a list of parts has its own images where they stand (a text-only model reads
        only their text)."""
        if not self.vision:
            chat = [m if isinstance(m["content"], str) else {**m, "content": content_text(m["content"])}
                    for m in messages]
            return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + prefill
        chat = [{"role": m["role"], "content": _template_parts(m["content"])} for m in messages]
        if image is not None:
            chat[-1]["content"].insert(0, {"type": "image"})
        return self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + prefill

    def encode(self, messages: list[Message], image: np.ndarray | None = None,
               prefill: str = "") -> dict[str, torch.Tensor]:
        """Model inputs (token ids, attention mask, pixels) for `messages` and an optional image;
        a text-only prompt ends with exactly the tokens of `prefill` on its own."""
        images = _images_in_order(messages, image) if self.vision else []
        if images:
            text = self.prompt_text(messages, image, prefill)
            inputs = self.processor(text=[text], images=[Image.fromarray(i) for i in images], return_tensors="pt")
        else:
            inputs = self.tokenizer([self.prompt_text(messages)], add_special_tokens=False, return_tensors="pt")
            if prefill:
                extra = self.tokenizer([prefill], add_special_tokens=False, return_tensors="pt")
                inputs = {k: torch.cat([inputs[k], extra[k]], dim=1) for k in ("input_ids", "attention_mask")}
        return {k: v.to(self.device) for k, v in inputs.items()}

    def count(self, messages: list[Message]) -> int:
        return len(self.tokenizer(self.prompt_text(messages), add_special_tokens=False)["input_ids"])

    def image_tokens(self, image: np.ndarray) -> int:
        """How many prompt tokens an image of this shape becomes (0 for a text-only model)."""
        if not self.vision:
            return 0
        if image.shape not in self._image_tokens:
            probe = [{"role": "user", "content": "x"}]
            with_image = self.encode(probe, image)["input_ids"].shape[1]
            self._image_tokens[image.shape] = with_image - self.encode(probe)["input_ids"].shape[1]
        return self._image_tokens[image.shape]

    def reset_prefix(self, base: list[int] | None = None) -> None:
        """Forget the cached prompt prefix; the next call that reuses one starts from (a copy of)
        the cache of the token ids `base` alone, computed when first needed and again whenever
        the weights change (a trainer's update between episodes)."""
        self._prefix = None
        self._wanted = list(base) if base and len(base) >= MIN_SHARED_PREFIX else None

    def _base_prefix(self) -> tuple[Any, list[int]] | None:
        """A copy of the cache of `reset_prefix`'s base, or None (none asked for, or no cache that
        can be cut back)."""
        if self._wanted is None:
            return None
        weights = self._weights_version()
        if self._base is None or self._base[1:] != (self._wanted, weights):
            self._base = None
            with torch.inference_mode():
                # only the cache is wanted: logits at every position, a (tokens x vocabulary) tensor, took
                # SmolLM2's 1,084-token Craft head from 10.1 to 12.1 s on one core and 76 to 265 MB
                out = self.model(input_ids=torch.tensor([self._wanted], device=self.device), use_cache=True,
                                 logits_to_keep=1)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            if not _croppable(cache):
                self._wanted = None
                return None
            self._base = (cache, self._wanted, weights)
        return copy.deepcopy(self._base[0]), list(self._base[1])

    def _weights_version(self) -> tuple[int, int]:
        """Changes whenever a weight does: the model object, and the sum of its parameters' version
        counters (torch bumps a tensor's on every in-place change, an optimizer step included)."""
        return id(self.model), sum(p._version for p in self.model.parameters())

    def generate(self, messages: list[Message], image: np.ndarray | None = None, *, seed: int = 0,
                 temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256, prefill: str = "",
                 stop_after_action: bool = False, reuse_prefix: bool = False) -> Completion:
        """Sample a reply (after `prefill`); the same `seed`, inputs and cached prefix give the
        same reply. `stop_after_action` ends it with the line that completes its `Action:`."""
        inputs = self.encode(messages, image if self.vision else None, prefill)
        prompt_len = inputs["input_ids"].shape[1]
        if self.context_length is not None:
            if prompt_len >= self.context_length:
                raise ValueError(f"the prompt has {prompt_len} tokens but {self.name} takes at most "
                                 f"{self.context_length}: lower max_context")
            max_new_tokens = min(max_new_tokens, self.context_length - prompt_len)
        # Exactly temperature and top-p: the checkpoint's own top-k and min-p are switched off.
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0} \
            if temperature > 0 else {"do_sample": False}
        stop = StoppingCriteriaList([_ActionLineEnd(self.tokenizer, prompt_len, prefill)] if stop_after_action else [])
        reuse = reuse_prefix and "pixel_values" not in inputs
        cache = self._cached_prefix(inputs["input_ids"][0].tolist()) if reuse else None
        self._prefix = None  # until this call succeeds
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, **sampling, max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                      no_repeat_ngram_size=0, num_beams=1, pad_token_id=self.pad_id,
                                      eos_token_id=sorted(self.eos_ids), output_logits=True,
                                      return_dict_in_generate=True, stopping_criteria=stop,
                                      **({"cache": cache} if cache is not None else {}))
        if reuse and getattr(out, "cache", None) is not None:
            held = out.cache.get_seq_length()
            self._prefix = (out.cache, out.sequences[0, :held].tolist())
        ids = out.sequences[0, prompt_len:]
        logits = torch.stack(out.logits)[:, 0].float() / (temperature or 1.0)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, ids[:, None])[:, 0]
        completion_ids = ids.tolist()
        text = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
        stopped = completion_ids and (completion_ids[-1] in self.eos_ids
                                      or (stop_after_action and action_line_done(prefill + text)))
        usage = {"prompt_tokens": prompt_len, "completion_tokens": len(completion_ids),
                 "total_tokens": prompt_len + len(completion_ids)}
        return Completion(text, inputs["input_ids"][0].tolist(), completion_ids, logprobs.tolist(), usage,
                          "stop" if stopped else "length", prefill=prefill)

    def _cached_prefix(self, ids: list[int]) -> Any:
        """The cache of the previous call cut to its common prefix with `ids` (leaving at least
        one prompt token to compute), or None when too little is shared to be worth it."""
        if self._prefix is None:
            self._prefix = self._base_prefix()
        if self._prefix is None:
            return None
        cache, held = self._prefix
        shared = 0
        for a, b in zip(held, ids[:-1], strict=False):
            if a != b:
                break
            shared += 1
        if shared < MIN_SHARED_PREFIX or not _croppable(cache):
            return None
        if shared < cache.get_seq_length():
            cache.crop(shared - cache.get_seq_length())  # negative: tokens to drop from the end
        return cache


def _template_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A message's content as the parts a processor's chat template reads (an image as a placeholder)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{"type": "text", "text": part["text"]} if part["type"] == "text" else {"type": "image"}
            for part in content]


def _images_in_order(messages: list[Message], image: np.ndarray | None) -> list[np.ndarray]:
    """The prompt's images in the order their placeholders appear: `image` first in the last
    message, then each message's own image parts."""
    images = []
    for k, message in enumerate(messages):
        if k == len(messages) - 1 and image is not None:
            images.append(image)
        if not isinstance(message["content"], str):
            images += [part["image"] for part in message["content"] if part["type"] == "image"]
    return images


def sliding_window(model: torch.nn.Module) -> int | None:
    """The model's attention window, or None (HF applies a window by cache index, not position)."""
    config = model.config
    return getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None


def attention_masks(model: torch.nn.Module, seen: torch.Tensor, gap: torch.Tensor) -> torch.Tensor | dict[str, Any]:
    """A ready attention mask for `model` from a boolean (B, Q, K) `seen` and the query-key position
    gaps `gap` (B, Q, K): HF applies no window to a ready mask, so a sliding-window model's window is
    cut here, on the layers that have one (a mask per layer type where windowed and full layers mix:
    Gemma 3, Qwen2 past max_window_layers). Boolean for SDPA, additive floats for the others."""
    window = sliding_window(model)
    types = set(getattr(model.config, "layer_types", None) or ["sliding_attention" if window else "full_attention"])
    masks = {kind: seen & (gap < window) if window and kind == "sliding_attention" else seen for kind in types}
    if getattr(model.config, "_attn_implementation", "sdpa") != "sdpa":
        dtype = model.dtype  # an additive mask in the weights' type (eager attention adds it as is)
        masks = {kind: torch.zeros(m.shape, device=m.device, dtype=dtype).masked_fill(~m, torch.finfo(dtype).min)
                 for kind, m in masks.items()}
    masks = {kind: m[:, None] for kind, m in masks.items()}  # (B, 1, Q, K)
    return masks if len(masks) > 1 else next(iter(masks.values()))


def _croppable(cache: Any) -> bool:
    """Whether every layer of `cache` can be cut back to a prefix (a sliding-window layer past its
    window cannot: it no longer holds the early tokens)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(getattr(layer, "is_croppable", False) and not getattr(layer, "is_sliding", False)
                                for layer in layers)


class _ActionLineEnd(StoppingCriteria):
    """Stops a reply at the end of the line that holds its action (see `lm.action_line_done`)."""

    def __init__(self, tokenizer: Any, prompt_len: int, prefill: str) -> None:
        self.tokenizer, self.prompt_len, self.prefill = tokenizer, prompt_len, prefill

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_len:], skip_special_tokens=True)
        return torch.full((input_ids.shape[0],), action_line_done(self.prefill + text), dtype=torch.bool,
                          device=input_ids.device)


class HFAgent(LMAgent):
    """Plays an env with a local Hugging Face checkpoint; see `HFModel` for sampling and log-probs.

    `images` (default: on for a vision-language checkpoint) sends the current observation's
    image with the last message; earlier turns go as text only, to keep the prompt short.

    Each turn starts the reply with the prefill (see `LMAgent`); with the compact style the reply
    ends with its `Action:` line, and after an `Action:` prefill it is at most ACTION_REPLY_TOKENS
    tokens, or ACTION_SLACK_TOKENS past the longest admissible action when none is a template. The
    head every prompt of an episode shares (the system message and example) is computed once, and
    within an episode each prompt's common prefix with the previous one (with the full style: the
    earlier turns too) is read from the key/value cache rather than computed again; greedy replies
    are the same either way (log-probs to float rounding).
    """

    def __init__(self, env: gym.Env, path: str, *, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, max_context: int | None = None, images: bool | None = None,
                 prompt: str = "auto", example: bool | None = None, prefill: str | None = None,
                 resample: int | None = None, dtype: str = "auto") -> None:
        super().__init__(env, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         max_context=max_context, images=images, prompt=prompt, example=example, prefill=prefill,
                         resample=resample)
        self.model = HFModel(path, dtype)
        if images and not self.model.vision:
            raise ValueError(f"{path} is a text-only model: leave the images option off")
        self.images = self.model.vision if images is None else images

    def small_model(self) -> bool:
        return self.model.parameters in SMALL_MODEL

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        super().reset(obs, info, seed=seed)
        # Every prompt of the episode starts with the system message (and example): computed once.
        head = [{"role": "system", "content": self.system}, *self.example_messages()]
        base = None if self.model.vision else self.model.tokenizer(
            self.model.tokenizer.apply_chat_template(head, tokenize=False), add_special_tokens=False)["input_ids"]
        self.model.reset_prefix(base)

    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        return self.model.generate(messages, image, seed=seed, temperature=self.temperature, top_p=self.top_p,
                                   max_new_tokens=self.max_new_tokens)

    def complete_turn(self, messages: list[Message], image: np.ndarray | None, seed: int,
                      temperature: float, actions: Sequence[str] = ()) -> Completion:
        prefill = self.prefill
        limit = min(self.max_new_tokens, ACTION_REPLY_TOKENS) if prefill == "Action:" else self.max_new_tokens
        if prefill == "Action:" and actions and not any(PLACEHOLDER.search(a) for a in actions):
            longest = max(len(self.model.tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in actions)
            limit = min(limit, longest + ACTION_SLACK_TOKENS)
        return self.model.generate(messages, image, seed=seed, temperature=temperature, top_p=self.top_p,
                                   max_new_tokens=limit, prefill=prefill, stop_after_action=self.compact,
                                   reuse_prefix=True)

    def estimate_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: list[Message]) -> int:
        return self.model.count(messages)

    def image_cost(self, image: np.ndarray) -> int:
        return self.model.image_tokens(image)

    def context_budget(self) -> int:
        if self.max_context is not None:
            return self.max_context
        if self.model.context_length is None:
            return DEFAULT_CONTEXT
        return max(min(self.model.context_length - self.max_new_tokens, DEFAULT_CONTEXT), 64)
