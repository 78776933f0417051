"""Tiny checkpoints built locally, for tests, docs and smoke runs of `hf:` and `openai:` agents.

`build_tiny_lm(path)` writes a causal LM of about 0.24M parameters with a byte-level BPE tokenizer
trained on the envs' own text and a ChatML chat template, with no download. With `train_steps > 0`
(the default; about 10 s on one CPU core) it is also trained to answer each turn of the envs in
the agents' reply format (`Thought: ...` then `Action: ...`, the action the family's oracle would
take), so that it usually emits a well-formed action; it plays badly, which is all a smoke test
needs. The default architecture is Mistral-style (RoPE, 32-token sliding window), because a reply
token then sees only the last 64 prompt tokens (with 2 layers), so cheap training on short windows is exact for
prompts of any length; `arch="gpt2"` gives the plain GPT-2 (learned positions, full attention)
that many tests and recipes assume, trained on the same windows at their true positions, which
for full attention is only an approximation (it still mostly keeps the reply format).
`build_tiny_vlm(path)` writes a Llava-style vision-language model with random weights, to
exercise the image path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

import turngym  # noqa: F401  (registers the envs)
from turngym.agents.base import make_agent
from turngym.agents.lm import Completion, LMAgent, Message
from turngym.rollout import rollout

PAD, START, END, IMAGE = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"
CHAT_TEMPLATE = (  # ChatML; a message's content is a string or a list of text and image parts
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# (env id, gym.make kwargs, episodes): short episodes of every family, oracle-played.
TEACHING = (("turngym/Craft-v0", {"max_turns": 40}, 4), ("turngym/WebShop-v0", {}, 8),
            ("turngym/HopVQA-v0", {}, 6), ("turngym/LongDocVQA-v0", {}, 6))
ARCHS = ("mistral", "gpt2")
WINDOW = 32  # attention reach of a layer: with 2 layers a token depends on the 64 tokens before it, no more


def build_tiny_lm(path: str | Path, *, seed: int = 0, vocab_size: int = 2048, hidden_size: int = 64,
                  layers: int = 2, heads: int = 2, context: int = 2048, train_steps: int = 200,
                  arch: str = "mistral") -> Path:
    """Build, optionally train, and save a tiny chat LM into `path`; returns `path`.

    The same arguments give the same checkpoint. `train_steps=0` leaves the weights random
    (replies are gibberish, often without an `Action:` line). `arch` is "mistral" (the default)
    or "gpt2"; a GPT-2 is trained on the same short windows, at their true positions, which is
    only an approximation for it (see the module docstring).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHS))}, not {arch!r}.")
    path = Path(path)
    examples = _teacher_examples(seed)
    tokenizer = _train_tokenizer(_corpus(examples), vocab_size, context)
    pad, end = tokenizer.convert_tokens_to_ids(PAD), tokenizer.convert_tokens_to_ids(END)
    special = {"bos_token_id": pad, "eos_token_id": end, "pad_token_id": pad}
    config: MistralConfig | GPT2Config
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden_size, n_inner=3 * hidden_size, n_layer=layers,
                            n_head=heads, n_positions=context, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            tie_word_embeddings=True, **special)
    else:
        # A Mistral-style decoder (RoPE, sliding-window attention): a reply token sees only the last
        # `layers * WINDOW` tokens, so training on short windows of the prompts is exact, and cheap,
        # for prompts of any length up to `context`.
        config = MistralConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=3 * hidden_size,
                               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                               max_position_embeddings=context, sliding_window=WINDOW, tie_word_embeddings=True,
                               **special)
    threads = torch.get_num_threads()
    # One thread: a model this small gains nothing from more, and its weights then do not depend on
    # the machine's core count.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(config) if arch == "gpt2" else MistralForCausalLM(config)
            if train_steps > 0:
                _train(model, tokenizer, examples, train_steps)
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.bos_token_id)
    _save(model, path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_vlm(path: str | Path, *, seed: int = 0, vocab_size: int = 2048, hidden_size: int = 64,
                   layers: int = 2, heads: int = 2, context: int = 2048) -> Path:
    """Save a Llava-style vision-language model with random weights into `path`; returns `path`.

    A one-layer CLIP vision tower sees each image at 32x32 pixels as 16 patch tokens; the language
    model is a small Llama with the tokenizer and chat template of `build_tiny_lm`.
    """
    path = Path(path)
    tokenizer = _train_tokenizer(_corpus(_teacher_examples(seed)), vocab_size, context, image=True)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # 16 patches plus CLIP's class token, which the "default" strategy drops again: 16 image tokens.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               num_additional_image_tokens=1, vision_feature_select_strategy="default",
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=context, tie_word_embeddings=True)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
                         vision_feature_select_strategy="default")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.convert_tokens_to_ids(PAD),
                                               eos_token_id=tokenizer.convert_tokens_to_ids(END),
                                               pad_token_id=tokenizer.convert_tokens_to_ids(PAD))
    _save(model, path)
    processor.save_pretrained(path)
    return path


def _corpus(examples: list[tuple[list[Message], str]]) -> list[str]:
    return [text for messages, reply in examples for text in [*(m["content"] for m in messages), reply]]


def _save(model: Any, path: Path) -> None:
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for writing a 1 MB file is noise
    try:
        model.eval().save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _train_tokenizer(texts: list[str], vocab_size: int, context: int,
                     image: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts` (any string encodes), with ChatML's special tokens and, for a
    vision-language model, the image placeholder."""
    extra = [START, *([IMAGE] if image else [])]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, END, *extra], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=PAD, eos_token=END, pad_token=PAD,
                                   unk_token=PAD, additional_special_tokens=extra,
                                   chat_template=CHAT_TEMPLATE, model_max_length=context)


class _Teacher(LMAgent):
    """Plays like an LM agent (same prompts and history) but replies with the oracle's action."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env, max_context=1792)
        self.oracle = make_agent("oracle", env)
        self.examples: list[tuple[list[Message], str]] = []

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        super().reset(obs, info, seed=seed)
        self.oracle.reset(obs, info, seed=seed)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        self.action = self.oracle.act(obs, info)
        return super().act(obs, info)

    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        verb = re.split(r"[\s\[]", self.action.strip(), maxsplit=1)[0] or "act"
        reply = f"Thought: I will {verb} next.\nAction: {self.action}"
        self.examples.append((messages, reply))
        return Completion(reply)


def _teacher_examples(seed: int) -> list[tuple[list[Message], str]]:
    """(chat messages, reply) of every turn of short oracle episodes of every family."""
    examples = []
    for env_id, kwargs, episodes in TEACHING:
        env = gym.make(env_id, **kwargs)
        teacher = _Teacher(env)
        for i in range(episodes):
            rollout(env, teacher, seed=seed * 1000 + i, record_images=False)
        env.close()
        examples += teacher.examples
    return examples


def _train(model: MistralForCausalLM | GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast,
           examples: list[tuple[list[Message], str]], steps: int, batch: int = 16, lr: float = 5e-3) -> None:
    """Next-token loss on the replies only, each seen with the prompt tokens it can attend to (for a
    GPT-2, which attends to the whole prompt, the same window, at its true positions)."""
    reach = WINDOW * model.config.num_hidden_layers
    absolute = model.config.model_type == "gpt2"  # learned absolute positions: pass the window's own
    rows = []
    for messages, reply in examples:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt + reply + END, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        first = max(start - reach, 0)
        rows.append((ids[first:], start - first, first))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(steps):
        picked = [rows[i] for i in torch.randint(len(rows), (batch,), generator=generator).tolist()]
        width = max(len(ids) for ids, _, _ in picked)
        input_ids = torch.full((batch, width), tokenizer.pad_token_id)
        targets = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        for b, (ids, reply_at, first) in enumerate(picked):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            targets[b, reply_at - 1:len(ids) - 1] = torch.tensor(ids[reply_at:])  # position i predicts token i + 1
            mask[b, :len(ids)] = 1
            positions[b, :len(ids)] = torch.arange(first, first + len(ids))
        extra = {"position_ids": positions.clamp(max=model.config.n_positions - 1)} if absolute else {}
        hidden = model.base_model(input_ids=input_ids, attention_mask=mask, **extra).last_hidden_state
        scored = targets != -100  # the logits only where a reply token follows: the prompt carries no loss
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]), targets[scored])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
