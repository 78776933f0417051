"""What the language-model agents (`hf:`, `openai:`) share: prompts, reply parsing, history budget.

A language model plays a turngym env as a chat. The system message states the env's action
grammar and the reply format (`Thought: ...` then `Action: ...`); each turn adds a user message
(the observation, the admissible actions and, when the previous turn went wrong, why) and the
model's reply. `parse_action` takes the action out of the reply. When the conversation outgrows
the token budget, the oldest turns shrink to one summary line each, so the prompt keeps the whole
episode in view without ever cutting a turn in half.

This module imports neither torch nor transformers (it is imported with `turngym.agents`); the
agents themselves (`agents/hf.py`, `agents/chat_api.py`) load when an `hf:` or `openai:` spec is made.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from turngym.agents.base import Agent, register_agent
from turngym.registry import describe

Message = dict[str, Any]  # {"role": "system" | "user" | "assistant", "content": str}

REPLY_FORMAT = "Thought: <one or two sentences of reasoning>\nAction: <exactly one action>"
CUT_MARKER = "\n[... {n} characters cut to fit the context ...]\n"
DEFAULT_CONTEXT = 8192  # prompt tokens when neither the option nor the model says otherwise


@dataclass
class Completion:
    """A model's reply to one prompt, with whatever the backend could report about its tokens."""

    text: str
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None  # one per completion token
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    finish_reason: str | None = None


@dataclass
class Exchange:
    """One past turn of the conversation, kept verbatim while it fits and summarized after."""

    turn: int
    user: str
    reply: str
    action: str | None  # None: the reply had no usable action
    tokens: int  # estimated tokens of the user message and the reply
    outcome: str = "?"  # "valid" or "invalid: <why>", known once the next observation arrives

    def summary(self) -> str:
        return f"Turn {self.turn}: {self.action if self.action is not None else '(no action)'} -> {self.outcome}"


# --- reply parsing ----------------------------------------------------------------------------

_ACTION_LINE = re.compile(r"^[\s>*_#-]*action[\s*_]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_ACTION_ANYWHERE = re.compile(r"\baction[*_]*\s*:(.*)$", re.IGNORECASE | re.MULTILINE)
_WRAPPERS = ("**", "__", "```", "`", '"', "'", "*", "_")


def parse_action(reply: str) -> tuple[str | None, str | None]:
    """The action of a `Thought: ... / Action: ...` reply, as (action, None) or (None, error).

    The last `Action:` line wins (models revise themselves); markdown bold, quotes and backticks
    around the action are dropped; text after the closing bracket of `name[...]` is dropped and
    an unclosed bracket is closed (`search[red shoes` -> `search[red shoes]`). When the line holds
    only `Action:`, the next non-empty line is the action. Never raises.
    """
    matches = list(_ACTION_LINE.finditer(reply)) or list(_ACTION_ANYWHERE.finditer(reply))
    if not matches:
        return None, "the reply has no `Action:` line"
    last = matches[-1]
    text = last.group(1)
    if not _strip(text):
        following = [line for line in reply[last.end():].splitlines() if _strip(line)]
        text = following[0] if following else ""
    action = _strip(_balance(_strip(text)))
    if not action:
        return None, "the `Action:` line of the reply is empty"
    return action, None


def _strip(text: str) -> str:
    """Drop whitespace and matching markdown or quote wrappers, repeatedly (`**"do"**` -> `do`)."""
    text = text.strip()
    changed = True
    while changed and text:
        changed = False
        for mark in _WRAPPERS:
            if text.startswith(mark) and text.endswith(mark) and len(text) >= 2 * len(mark):
                text, changed = text[len(mark):-len(mark)].strip(), True
            elif text.startswith(mark) and mark not in text[len(mark):]:  # an opener with no closer
                text, changed = text[len(mark):].strip(), True
            elif text.endswith(mark) and mark not in text[:-len(mark)]:
                text, changed = text[:-len(mark)].strip(), True
        if text.startswith("<") and text.endswith(">") and len(text) > 2:  # the template's <...> copied
            text, changed = text[1:-1].strip(), True
    if "[" not in text:
        text = text.rstrip(".").strip()  # `Action: move north.` ends a sentence, not the action
    return text


def _balance(text: str) -> str:
    """Cut after the bracket that closes the first `[`, or close the brackets left open."""
    depth = 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0:
                return text[:i + 1]
    return text.rstrip() + "]" * depth


# --- prompts ----------------------------------------------------------------------------------

def system_prompt(description: str, obs: dict[str, Any], info: dict[str, Any]) -> str:
    """The system message: the env, its action grammar (the observation's `Actions:` line, else
    the admissible actions) and the reply format."""
    grammar = re.search(r"^Actions?:\s*(.+)$", str(obs.get("text", "")), re.MULTILINE)
    lines = ["You are an agent acting in an environment, one action per turn."]
    if description:
        lines.append(f"Environment: {description}")
    if info.get("instruction"):
        lines.append(f"Your task: {info['instruction']}")
    if grammar:
        lines.append(f"Action grammar: {grammar.group(1).strip()}")
    else:
        lines.append("Action grammar: the admissible actions listed each turn, e.g. "
                     + ", ".join(info.get("actions") or ["(none listed)"]))
    lines += ["Each turn you see the observation and the admissible actions; replace a <placeholder> with "
              "your own text. An invalid action changes nothing and costs a turn.",
              "Reply in exactly this format:", REPLY_FORMAT]
    return "\n".join(lines)


def user_message(turn: int, text: str, actions: list[str], feedback: str | None) -> str:
    """The user message of one turn: feedback on the previous turn, the observation, the actions."""
    parts = [feedback] if feedback else []
    parts.append(f"Turn {turn}. Observation:\n{text}")
    if actions:
        parts.append("Admissible actions now: " + ", ".join(actions))
    return "\n\n".join(parts)


def shorten(text: str, max_chars: int) -> str:
    """`text` cut to about `max_chars` characters, keeping the head and the tail, with a marker."""
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - len(CUT_MARKER.format(n=len(text))), 0)
    head, tail = (keep * 2) // 3, keep // 3
    return text[:head] + CUT_MARKER.format(n=len(text) - head - tail) + text[len(text) - tail:]


# --- options ----------------------------------------------------------------------------------

def check_options(temperature: float, top_p: float, max_new_tokens: int, max_context: int | None) -> None:
    """Raise ValueError, in one sentence, on a sampling option out of range."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 is greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    if max_context is not None and (not isinstance(max_context, int) or isinstance(max_context, bool)
                                    or max_context < 64):
        raise ValueError(f"max_context must be a whole number of tokens >= 64, got {max_context!r}")


def check_flag(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def turn_seed(episode_seed: int, turn: int) -> int:
    """A 31-bit seed for one turn of one episode: same (seed, turn), same sample."""
    return int(np.random.SeedSequence([episode_seed, turn]).generate_state(1)[0] & 0x7FFFFFFF)


# --- the agent --------------------------------------------------------------------------------

class LMAgent(Agent):
    """An agent that asks a chat model for `Thought: ... / Action: ...` each turn.

    Subclasses implement `complete` (messages -> Completion) and may refine `count_tokens` and
    `estimate_tokens` with the model's own tokenizer (the default estimate is 3 characters a token).
    `max_context` bounds the prompt tokens: recent turns stay verbatim, older ones shrink to
    `Turn k: action -> valid` lines in one message, and an observation too long on its own keeps
    its head and tail around a visible cut marker.
    """

    def __init__(self, env: gym.Env, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256,
                 max_context: int | None = None, images: bool | None = None) -> None:
        check_options(temperature, top_p, max_new_tokens, max_context)
        check_flag("images", images)
        self.temperature, self.top_p, self.max_new_tokens = float(temperature), float(top_p), max_new_tokens
        self.max_context = max_context
        self.images = bool(images)
        self.description = _describe(env)
        self.seed = 0
        self.system = system_prompt(self.description, {}, {})
        self.history: list[Exchange] = []

    # What a backend provides.

    @abstractmethod
    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        """The model's reply to `messages`; `image` goes with the last message; `seed` fixes sampling."""

    def estimate_tokens(self, text: str) -> int:
        return math.ceil(len(text) / 3)

    def count_tokens(self, messages: list[Message]) -> int:
        """Tokens of the prompt these messages make (an estimate unless the backend knows better)."""
        return sum(self.estimate_tokens(m["content"]) + 4 for m in messages) + 3

    def image_cost(self, image: np.ndarray) -> int:
        """Prompt tokens an image takes (unknown, so 0, unless the backend knows)."""
        return 0

    def context_budget(self) -> int:
        return self.max_context or DEFAULT_CONTEXT

    # The episode.

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        # Without an episode seed each episode samples afresh; with one it replays exactly.
        self.seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.system = system_prompt(self.description, obs, info)
        self.history = []
        self.last_record = {}

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        feedback = self._feedback(info)
        turn = int(info.get("turn", len(self.history)))
        image = obs.get("image") if self.images else None
        messages, user = self.build_messages(turn, str(obs.get("text", "")), list(info.get("actions") or []), feedback,
                                             reserve=self.image_cost(image) if image is not None else 0)
        completion = self.complete(messages, image, turn_seed(self.seed, turn))
        action, error = parse_action(completion.text)
        self.history.append(Exchange(turn, user, completion.text, action,
                                     self.estimate_tokens(user) + self.estimate_tokens(completion.text) + 8,
                                     outcome=f"invalid: {error}" if error else "?"))
        extras: dict[str, Any] = {"reply": completion.text, "usage": completion.usage,
                                  "finish_reason": completion.finish_reason}
        if error:
            extras["parse_error"] = error
        self.last_record = {"prompt_ids": completion.prompt_ids, "completion_ids": completion.completion_ids,
                            "logprobs": completion.logprobs, "extras": extras}
        # An empty action is invalid in every env: the turn is lost and the model hears why next turn.
        return action if action is not None else ""

    def _feedback(self, info: dict[str, Any]) -> str | None:
        """Record how the previous turn went and say so to the model when it went wrong."""
        if not self.history:
            return None
        last = self.history[-1]
        if last.action is None:
            return (f"Your previous reply was not used ({last.outcome.removeprefix('invalid: ')}), so the turn "
                    "was lost. End every reply with one line `Action: <one admissible action>`.")
        if info.get("valid", True):
            last.outcome = "valid"
            return None
        error = str(info.get("error") or "the env rejected it")
        last.outcome = f"invalid: {error}"
        return f"Your previous action `{last.action}` was invalid: {error}"

    # The token budget.

    def build_messages(self, turn: int, text: str, actions: list[str], feedback: str | None,
                       reserve: int = 0) -> tuple[list[Message], str]:
        """The chat for this turn within `context_budget()` less `reserve` tokens (an image's), and
        the user message it ends with."""
        budget = self.context_budget() - reserve
        system = {"role": "system", "content": self.system}
        user = user_message(turn, text, actions, feedback)
        fixed = self.count_tokens([system, {"role": "user", "content": user}])
        while fixed > budget:  # the observation alone is too long: cut its middle, visibly
            shorter = shorten(text, int(len(text) * budget / fixed * 0.9))
            if len(shorter) >= len(text):  # nothing left to cut: the system prompt alone is too long
                break
            text, user = shorter, user_message(turn, shorter, actions, feedback)
            fixed = self.count_tokens([system, {"role": "user", "content": user}])
        room = budget - fixed
        keep = len(self.history)
        while keep and sum(e.tokens for e in self.history[-keep:]) + self._summary_cost(keep) > room:
            keep -= 1
        while True:  # the estimate chose `keep`; the exact count has the last word
            messages = self._assemble(system, user, keep, room)
            if keep == 0 or self.count_tokens(messages) <= budget:
                return messages, user
            keep -= 1

    def _summary_cost(self, keep: int) -> int:
        older = self.history[:len(self.history) - keep]
        return sum(self.estimate_tokens(e.summary()) + 1 for e in older) + 12 if older else 0

    def _assemble(self, system: Message, user: str, keep: int, room: int) -> list[Message]:
        kept = self.history[len(self.history) - keep:]
        older = self.history[:len(self.history) - keep]
        turns: list[Message] = []
        for e in kept:
            turns += [{"role": "user", "content": e.user}, {"role": "assistant", "content": e.reply}]
        turns.append({"role": "user", "content": user})
        if older:
            # The summary opens the first user message (roles must alternate in many chat templates);
            # when even the summary is too long, its oldest lines go first.
            lines = [e.summary() for e in older]
            room -= sum(e.tokens for e in kept)
            while len(lines) > 1 and sum(self.estimate_tokens(line) + 1 for line in lines) + 12 > room:
                lines.pop(0)
            omitted = len(older) - len(lines)
            head = f"Summary of earlier turns{f' ({omitted} oldest omitted)' if omitted else ''}:\n"
            turns[0] = {"role": "user", "content": head + "\n".join(lines) + "\n\n" + turns[0]["content"]}
        return [system, *turns]


def _describe(env: gym.Env) -> str:
    try:
        return describe(env.spec.id) if env.spec is not None else ""
    except KeyError:
        return ""


# --- registration -----------------------------------------------------------------------------

@register_agent("hf")
def _hf_agent(env: gym.Env, argument: str, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256,
              max_context: int | None = None, images: bool | None = None) -> Agent:
    """`hf:PATH_OR_NAME`: a local Hugging Face checkpoint (a folder, or a name in the local cache)."""
    if not argument:
        raise ValueError("the hf agent needs a checkpoint: use hf:PATH (a folder saved with save_pretrained)")
    from turngym.agents.hf import HFAgent

    return HFAgent(env, argument, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                   max_context=max_context, images=images)


@register_agent("openai")
def _openai_agent(env: gym.Env, argument: str, *, temperature: float = 1.0, top_p: float = 1.0,
                  max_new_tokens: int = 256, max_context: int | None = None, images: bool | None = None,
                  timeout: float = 60.0, retries: int = 3, api_key_env: str = "OPENAI_API_KEY",
                  logprobs: bool = False) -> Agent:
    """`openai:MODEL@BASE_URL`: any OpenAI-compatible chat-completions server (vLLM, OpenAI, ...)."""
    match = re.fullmatch(r"(.+?)@(https?://\S+)", argument)
    if match is None:
        raise ValueError(f"openai agent spec needs MODEL@BASE_URL, got {argument!r}: "
                         "e.g. openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
    from turngym.agents.chat_api import OpenAIAgent

    return OpenAIAgent(env, match.group(1), match.group(2), temperature=temperature, top_p=top_p,
                       max_new_tokens=max_new_tokens, max_context=max_context, images=images, timeout=timeout,
                       retries=retries, api_key_env=api_key_env, logprobs=logprobs)
