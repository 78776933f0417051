"""`hf:` agents: a local Hugging Face checkpoint, a causal LM or a vision-language model.

`HFModel` loads the checkpoint (never downloading: a folder, or a name already in the local
cache) and generates chat replies that record their token ids and log-probs; `HFAgent` plays an
env with it, and the chat server (`turngym/serve/lm_server.py`) serves it over HTTP.
"""

from __future__ import annotations

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
)
from transformers.utils import logging as hf_logging

from turngym.agents.lm import DEFAULT_CONTEXT, Completion, LMAgent, Message

hf_logging.disable_progress_bar()  # a bar per checkpoint load would break into turngym's own progress bars


class HFModel:
    """A local checkpoint with its chat template, on the GPU when there is one.

    Sampling is exactly temperature then top-p: the checkpoint's own top-k, min-p and repetition
    penalty are switched off so that the recorded log-probs describe the sampling distribution.
    The log-prob of a completion token is the log-softmax of the model's logits divided by the
    temperature (1 when greedy), taken before top-p: the smooth policy a trainer differentiates,
    not the truncated one the token was drawn from (they agree on every token top-p keeps, up to
    the renormalizing constant of the nucleus).
    """

    def __init__(self, path: str) -> None:
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
        self.model = model_class.from_pretrained(path, local_files_only=True, dtype="auto").to(self.device).eval()
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
        self._image_tokens: dict[tuple[int, ...], int] = {}

    def _chat_template(self) -> str | None:
        return getattr(self.processor, "chat_template", None) or self.tokenizer.chat_template

    def prompt_text(self, messages: list[Message], image: np.ndarray | None = None) -> str:
        """The chat template applied to `messages`, ending with the assistant's turn opener."""
        if not self.vision:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        chat = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages]
        if image is not None:
            chat[-1]["content"].insert(0, {"type": "image"})
        return self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)

    def encode(self, messages: list[Message], image: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Model inputs (token ids, attention mask, pixels) for `messages` and an optional image."""
        text = self.prompt_text(messages, image)
        if image is not None and self.vision:
            inputs = self.processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt")
        else:
            inputs = self.tokenizer([text], add_special_tokens=False, return_tensors="pt")
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

    def generate(self, messages: list[Message], image: np.ndarray | None = None, *, seed: int = 0,
                 temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256) -> Completion:
        """Sample a reply; the same `seed` and inputs give the same reply."""
        inputs = self.encode(messages, image if self.vision else None)
        prompt_len = inputs["input_ids"].shape[1]
        if self.context_length is not None:
            if prompt_len >= self.context_length:
                raise ValueError(f"the prompt has {prompt_len} tokens but {self.name} takes at most "
                                 f"{self.context_length}: lower max_context")
            max_new_tokens = min(max_new_tokens, self.context_length - prompt_len)
        # Exactly temperature and top-p: the checkpoint's own top-k and min-p are switched off.
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0} \
            if temperature > 0 else {"do_sample": False}
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, **sampling, max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                      no_repeat_ngram_size=0, num_beams=1, pad_token_id=self.pad_id,
                                      eos_token_id=sorted(self.eos_ids), output_logits=True,
                                      return_dict_in_generate=True)
        ids = out.sequences[0, prompt_len:]
        logits = torch.stack(out.logits)[:, 0].float() / (temperature or 1.0)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, ids[:, None])[:, 0]
        completion_ids = ids.tolist()
        finish = "stop" if completion_ids and completion_ids[-1] in self.eos_ids else "length"
        usage = {"prompt_tokens": prompt_len, "completion_tokens": len(completion_ids),
                 "total_tokens": prompt_len + len(completion_ids)}
        return Completion(self.tokenizer.decode(completion_ids, skip_special_tokens=True),
                          inputs["input_ids"][0].tolist(), completion_ids, logprobs.tolist(), usage, finish)


class HFAgent(LMAgent):
    """Plays an env with a local Hugging Face checkpoint; see `HFModel` for sampling and log-probs.

    `images` (default: on for a vision-language checkpoint) sends the current observation's
    image with the last message; earlier turns go as text only, to keep the prompt short.
    """

    def __init__(self, env: gym.Env, path: str, *, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, max_context: int | None = None, images: bool | None = None) -> None:
        super().__init__(env, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         max_context=max_context, images=images)
        self.model = HFModel(path)
        if images and not self.model.vision:
            raise ValueError(f"{path} is a text-only model: leave the images option off")
        self.images = self.model.vision if images is None else images

    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        return self.model.generate(messages, image, seed=seed, temperature=self.temperature, top_p=self.top_p,
                                   max_new_tokens=self.max_new_tokens)

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
