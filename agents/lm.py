"""What the language-model agents (`hf:`, `openai:`) share: prompts, reply parsing, history budget.

A language model plays a turngym env as a chat. The system message states the env's action
grammar and the reply format (`Thought: ...` then `Action: ...`); each turn adds a user message
(the observation, the admissible actions and, when the previous turn went wrong, why) and the
model's reply. `parse_action` takes the action out of the reply. When the conversation outgrows
the token budget, the oldest turns shrink to one summary line each, so the prompt keeps the whole
episode in view without ever cutting a turn in half.

Small models (50M to 1B parameters, such as SmolLM2-135M) get the compact style by default
(`prompt=auto`): a two-line system message; no earlier turns (the observation is self-contained,
and the feedback on the previous action carries over); a one-shot example from the family
(`assets/<family>/lm_example.yaml`) as the first chat turns; templates shown as `search[...]`; a
reply that starts after `Action:` in the assistant turn (`prefill`) and stops when the action is
written; and a reply whose action is not admissible asked again (`resample`). SmolLM2-135M given
the full prompt echoed the observation's last line on every WebShop turn (0% valid actions); in
the compact style 97-98% of its actions were valid (10 test episodes, greedy and sampled alike),
at a third of the prompt tokens a turn (bench/lm_agents.py). Bigger models keep the full prompt:
nothing measured here says the compact one serves them as well (a model that can use the
history loses it), so it is theirs only when asked for (`prompt=compact`).

This module imports neither torch nor transformers (it is imported with `turngym.agents`); the
agents themselves (`agents/hf.py`, `agents/chat_api.py`) load when an `hf:` or `openai:` spec is made.
"""

from __future__ import annotations

import itertools
import math
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from turngym.agents.base import Agent, register_agent
from turngym.registry import describe

# {"role": "system" | "user" | "assistant", "content": str}; a message with several images in its text (GVL's
# frames) has a list of parts as content instead, in order: `text_part`s and `image_part`s.
Message = dict[str, Any]

REPLY_FORMAT = "Thought: <one or two sentences of reasoning>\nAction: <exactly one action>"
CUT_MARKER = "\n[... {n} characters cut to fit the context ...]\n"
DEFAULT_CONTEXT = 8192  # prompt tokens when neither the option nor the model says otherwise
COMPACT_CONTEXT = 2048  # the compact style's prompt budget unless max_context says otherwise
PROMPTS = ("auto", "compact", "full")
PREFILLS = ("Thought:", "Action:", "")
ACTION_REPLY_TOKENS = 48  # a reply after an `Action:` prefill is one action: longer is a runaway
# When no admissible action is a template, a reply after the prefill may run this many tokens past the
# longest of them (room to wrap the action in a few words, which lenient parsing takes), no more: SmolLM2's
# runaway Craft replies took 48 tokens at about 0.1 s each, two or three times a turn with resampling.
ACTION_SLACK_TOKENS = 8
# prompt=auto picks the compact style for a model of this many parameters: a real small chat model
# (SmolLM2-135M/360M, Qwen2.5-0.5B); below it is a toy such as turngym.agents.tiny's 0.24M-parameter
# test models, which were trained on the full prompt and keep it.
SMALL_MODEL = range(50_000_000, 1_000_000_000)
MAX_RESAMPLE = 8


@dataclass
class Completion:
    """A model's reply to one prompt, with whatever the backend could report about its tokens."""

    text: str
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None  # one per completion token
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    finish_reason: str | None = None
    prefill: str = ""  # text the reply continues, sent as the start of the assistant turn (not in `text`)


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


# --- message content ---------------------------------------------------------------------------

def text_part(text: str) -> dict[str, Any]:
    """A piece of text in a message whose content is a list of parts."""
    return {"type": "text", "text": text}


def image_part(image: np.ndarray) -> dict[str, Any]:
    """An RGB image (uint8 HxWx3) in a message whose content is a list of parts, where it stands."""
    return {"type": "image", "image": image}


def content_text(content: str | list[dict[str, Any]]) -> str:
    """A message's text with its images left out (what a text-only model reads): the text parts
    joined as they are, since they carry their own spacing."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


# --- reply parsing ----------------------------------------------------------------------------

_ACTION_LINE = re.compile(r"^[\s>*_#-]*action[\s*_]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_ACTION_ANYWHERE = re.compile(r"\baction[*_]*\s*:(.*)$", re.IGNORECASE | re.MULTILINE)
_WRAPPERS = ("**", "__", "```", "`", '"', "'", "*", "_")
PLACEHOLDER = re.compile(r"<[^<>]*>")
_COPIED_PLACEHOLDERS = re.compile(r"(?:(?:<[^<>]*>|\.\.\.|…)[\s,]*)+")  # `<query>` or `...` copied


def parse_action(reply: str, actions: list[str] | None = None) -> tuple[str | None, str | None]:
    """The action of a `Thought: ... / Action: ...` reply, as (action, None) or (None, error).

    The last `Action:` line wins (models revise themselves); markdown bold, quotes and backticks
    around the action are dropped; text after the closing bracket of `name[...]` is dropped and
    an unclosed bracket is closed (`search[red shoes` -> `search[red shoes]`). When the line holds
    only `Action:`, the next non-empty line is the action. Given the admissible `actions`, a reply
    with no usable `Action:` line is still taken when it is itself an admissible action, or names
    exactly one (see `find_admissible`). Never raises.
    """
    action, error = _action_line(reply)
    if action is None and actions:
        found = find_admissible(reply, actions)
        if found is not None:
            return found, None
    return action, error


def _action_line(reply: str) -> tuple[str | None, str | None]:
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


def find_admissible(reply: str, actions: list[str]) -> str | None:
    """The one admissible action a reply without an `Action:` line means, or None.

    The reply (wrappers stripped) may be an action itself, or mention exactly one distinct
    admissible action among other words. A template such as `search[<query>]` stands for any
    `search[...]` whose argument is not a copied `<placeholder>`; a fixed action such as `move
    north` must stand as whole words. Matching ignores case and returns the env's spelling of a
    fixed action. Never raises.
    """
    whole = _strip(reply)
    if _balance(whole).startswith(whole):  # an unclosed bracket closed, nothing after it cut
        whole = _strip(_balance(whole))
    hits = [hit for action in actions for hit in _spans(reply, action)]
    for hit, _, _ in hits:
        if hit.lower() == whole.lower():
            return hit
    # a mention inside a longer one is part of it (`move north` in `move north east`), not a second action
    found = dict.fromkeys(hit for hit, start, end in hits
                          if not any(a <= start and end <= b and b - a > end - start for _, a, b in hits))
    return next(iter(found)) if len(found) == 1 else None


def _spans(reply: str, action: str) -> list[tuple[str, int, int]]:
    """Every mention of `action` (a fixed action or a template) in `reply`, as the action to take,
    with where it starts and ends in `reply`."""
    action = action.strip()
    if len(action.splitlines()) != 1:  # empty, or not one line: no env lists such an action
        return []
    template = re.fullmatch(r"([^\[\]<>]+?)\s*\[.*<[^<>]*>.*\]", action, re.DOTALL)
    if template is not None:  # `verb[<...>]`: any verb[argument] on one line, brackets balanced
        verb = template.group(1).strip()
        hits = []
        for m in re.finditer(rf"(?<![\w\-]){re.escape(verb)}\s*\[", reply, re.IGNORECASE):
            raw = _balance(reply[m.end() - 1:].splitlines()[0])[1:-1]
            argument = _strip(raw)
            if argument and not _COPIED_PLACEHOLDERS.fullmatch(raw.strip("`'\"*_ ")):
                hits.append((f"{verb}[{argument}]", m.start(), m.end() + len(raw) + 1))
        return hits
    if "<" in action and ">" in action:  # a template without brackets: a placeholder is one word, or
        parts = re.split(r"<[^<>]*>", action)  # any text on the line where it stands in quotes (type(<id>, "<text>"))
        pattern = re.escape(parts[0]) + "".join(
            (r"([^\"'\n]+)" if before.endswith(('"', "'")) else r"(\S+)") + re.escape(part)
            for before, part in itertools.pairwise(parts))
        return [(m.group(0), *m.span()) for m in re.finditer(rf"(?<!\w){pattern}(?!\w)", reply, re.IGNORECASE)
                if not any("<" in g for g in m.groups())]
    words = r"\s+".join(re.escape(word) for word in action.split())
    return [(action, *m.span()) for m in re.finditer(rf"(?<![\w\[]){words}(?![\w\]])", reply, re.IGNORECASE)]


def admissible_form(action: str, actions: list[str]) -> str | None:
    """`action` as the env spells it, when it is one of `actions` or fills one of its templates,
    else None. Case and the spacing between words do not matter (`Move  North` -> `move north`), nor
    spaces or wrappers inside a template's brackets (`search[ red shoes ]` -> `search[red shoes]`)."""
    action = action.strip()
    return next((hit for a in actions for hit, start, end in _spans(action, a)
                 if (start, end) == (0, len(action))), None)


def is_admissible(action: str, actions: list[str]) -> bool:
    """Whether `action` is one of `actions` (ignoring case and spacing), or fills one of its templates."""
    return admissible_form(action, actions) is not None


def action_line_done(text: str) -> bool:
    """Whether a reply has written its action in full: a line that starts with `Action:`, with an
    action on it (or on the next non-empty line) that a newline ends, or whose `name[...]` bracket
    has closed (`parse_action` drops what follows). Generation can stop there."""
    m = _ACTION_LINE.search(text)  # (not one inside a thought: "the best action: go north is blocked")
    if m is None:
        return False
    rest = m.group(1) + text[m.end():]
    line, newline, _ = (rest.lstrip(" \t") if _strip(m.group(1)) else rest.lstrip()).partition("\n")
    if not _strip(line):
        return False
    return bool(newline) or ("[" in line and _closed(line))


def _closed(line: str) -> bool:
    """Whether the first `[` of `line` has its closing `]`."""
    depth = 0
    for char in line[line.index("["):]:
        depth += (char == "[") - (char == "]" and depth > 0)
        if depth == 0:
            return True
    return False


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


def compact_system_prompt(prefill: str) -> str:
    """The compact style's system message: the game and the reply format, nothing else (the
    observation states the task, the user message lists the actions)."""
    reply = ("Reply with one line: Action: <one admissible action>" if prefill == "Action:" else
             "Reply in exactly this format:\n" + REPLY_FORMAT.replace("one or two sentences", "one short sentence"))
    return ("You play a text game: each turn, choose one of the admissible actions. Where an action shows ..., "
            "write your own words instead.\n" + reply)


def compact_user_message(text: str, actions: list[str], feedback: str | None) -> str:
    """The compact style's user message: feedback on the previous turn, the observation, the
    actions, a template's `<placeholder>` shown as `...` (small models copy `<query>` verbatim).
    An observation line that already lists exactly these actions (Craft's `Possible now: ...`) is
    left out: the list follows anyway, and every token is a small model's time."""
    parts = [feedback] if feedback else []
    listed = ", ".join(actions)
    parts.append("\n".join(line for line in text.strip().splitlines()
                           if not (actions and line.partition(": ")[2] == listed)))
    if actions:
        parts.append("Admissible actions now: " + ", ".join(PLACEHOLDER.sub("...", a) for a in actions))
    return "\n\n".join(parts)


def reply_text(thought: str, action: str, prefill: str) -> str:
    """A reply in the format the model is asked for (an `Action:` prefill asks for the action alone)."""
    return f"Action: {action}" if prefill == "Action:" else f"Thought: {thought}\nAction: {action}"


@cache
def _examples(family: str) -> tuple[dict[str, Any], ...]:
    path = resources.files("turngym.assets").joinpath(f"{family}/lm_example.yaml")
    if not path.is_file():
        return ()
    return tuple(yaml.safe_load(path.read_text())["examples"])


def family_example(env: gym.Env) -> list[dict[str, Any]] | None:
    """The one-shot example for this env (its turns: observation, actions, thought, action), from
    `assets/<family>/lm_example.yaml`: the first example whose `when` settings the env has."""
    module = type(env.unwrapped).__module__.split(".")
    if module[:2] != ["turngym", "envs"] or len(module) < 3:
        return None
    unwrapped = env.unwrapped
    for example in _examples(module[2]):
        if all(getattr(unwrapped, key, None) == value for key, value in (example.get("when") or {}).items()):
            return list(example["turns"])
    return None


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


def check_style(prompt: Any, prefill: Any) -> str | None:
    """Raise ValueError, in one sentence, on a bad prompt or prefill option; return the prefill
    spelled as one of PREFILLS (None: the style's default). `action`, `thought` and `none` are
    accepted too, and so is the mapping YAML makes of `-o prefill=Action:`."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be auto, compact or full, got {prompt!r}")
    if isinstance(prefill, dict) and len(prefill) == 1 and next(iter(prefill.values())) is None:
        prefill = f"{next(iter(prefill))}:"  # YAML reads `Action:` as {"Action": None}
    if prefill is None:
        return None
    spelled = {"action": "Action:", "action:": "Action:", "thought": "Thought:", "thought:": "Thought:",
               "": "", "none": ""}
    if not isinstance(prefill, str) or prefill.strip().lower() not in spelled:
        raise ValueError(f"prefill must be one of {', '.join(map(repr, PREFILLS))} (none), got {prefill!r}")
    return spelled[prefill.strip().lower()]


def turn_seed(episode_seed: int, turn: int, attempt: int = 0) -> int:
    """A 31-bit seed for one turn of one episode (and a resampled reply's `attempt`): same
    (seed, turn, attempt), same sample."""
    entropy = [episode_seed, turn, attempt] if attempt else [episode_seed, turn]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


# --- the agent --------------------------------------------------------------------------------

class LMAgent(Agent):
    """An agent that asks a chat model for `Thought: ... / Action: ...` each turn.

    Subclasses implement `complete` (messages -> Completion) and may refine `count_tokens` and
    `estimate_tokens` with the model's own tokenizer (the default estimate is 3 characters a token).
    `max_context` bounds the prompt tokens: recent turns stay verbatim, older ones shrink to
    `Turn k: action -> valid` lines in one message, and an observation too long on its own keeps
    its head and tail around a visible cut marker.

    The style (see the module docstring): `prompt` is "compact", "full" or "auto" (compact for a
    small model: `small_model()`); `example` adds the family's one-shot example (default: with the
    compact prompt); `prefill` ("Thought:", "Action:" or "") starts the reply (default: "Action:"
    with the compact prompt, else none). A backend that cannot prefill (`complete_turn` not
    overridden) ignores it, and the reply is parsed the same way. `resample` (default: 2 with the
    compact prompt, else 0) asks again, up to that many times, when a reply's action is not one
    of the turn's admissible actions (info["actions"]), with a new seed and, if decoding is greedy,
    at temperature 1 (greedy would only repeat itself); the turn keeps the first admissible reply,
    else the last one, and `extras["rejected"]` lists the replies it passed over. A small model's
    invalid action otherwise tends to come back turn after turn (greedily: identically).
    """

    def __init__(self, env: gym.Env, *, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256,
                 max_context: int | None = None, images: bool | None = None, prompt: str = "auto",
                 example: bool | None = None, prefill: str | None = None, resample: int | None = None) -> None:
        check_options(temperature, top_p, max_new_tokens, max_context)
        check_flag("images", images)
        check_flag("example", example)
        if resample is not None and (not isinstance(resample, int) or isinstance(resample, bool)
                                     or not 0 <= resample <= MAX_RESAMPLE):
            raise ValueError(f"resample must be a whole number from 0 to {MAX_RESAMPLE}, got {resample!r}")
        self.resample_option = resample
        self.prefill_option = check_style(prompt, prefill)
        self.temperature, self.top_p, self.max_new_tokens = float(temperature), float(top_p), max_new_tokens
        self.max_context = max_context
        self.images = bool(images)
        self.prompt, self.example_option = prompt, example
        self.example_turns = family_example(env)
        if example and self.example_turns is None:
            raise ValueError(f"{env.spec.id if env.spec else 'this env'} has no one-shot example (no "
                             "assets/<family>/lm_example.yaml entry for its settings): leave example off")
        self.description = _describe(env)
        self.seed = 0
        self.system = system_prompt(self.description, {}, {})
        self.history: list[Exchange] = []

    # The style, settled once the backend can tell whether its model is small.

    def small_model(self) -> bool:
        """Whether the model is small enough for the compact style (unknown here: no)."""
        return False

    @property
    def compact(self) -> bool:
        return self.prompt == "compact" or (self.prompt == "auto" and self.small_model())

    @property
    def prefill(self) -> str:
        if self.prefill_option is not None:
            return self.prefill_option
        return "Action:" if self.compact else ""

    @property
    def resample(self) -> int:
        if self.resample_option is not None:
            return self.resample_option
        return 2 if self.compact else 0

    @property
    def example(self) -> bool:
        wanted = self.compact if self.example_option is None else self.example_option
        return wanted and self.example_turns is not None

    # What a backend provides.

    @abstractmethod
    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        """The model's reply to `messages`; `image` goes with the last message; `seed` fixes sampling.
        A message may carry images of its own where its text puts them (content: a list of
        `text_part`s and `image_part`s); a text-only model reads only their text."""

    def complete_turn(self, messages: list[Message], image: np.ndarray | None, seed: int,
                      temperature: float, actions: Sequence[str] = ()) -> Completion:
        """The reply of one turn of play, sampled at `temperature`: a backend that can start the
        assistant turn with `self.prefill`, and stop after the action, does so here (and says so
        in `Completion.prefill`), and may bound the reply by the turn's admissible `actions`; this
        default sends the plain chat at the agent's temperature."""
        return self.complete(messages, image, seed)

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
        self.system = compact_system_prompt(self.prefill) if self.compact else system_prompt(self.description, obs,
                                                                                                info)
        self.history = []
        self.last_record = {}

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        feedback = self._feedback(info)
        turn = int(info.get("turn", len(self.history)))
        image = obs.get("image") if self.images else None
        messages, user = self.build_messages(turn, str(obs.get("text", "")), list(info.get("actions") or []), feedback,
                                             reserve=self.image_cost(image) if image is not None else 0)
        admissible = list(info.get("actions") or [])
        rejected: list[str] = []
        for attempt in range(self.resample + 1):
            temperature = self.temperature if attempt == 0 or self.temperature > 0 else 1.0
            completion = self.complete_turn(messages, image, turn_seed(self.seed, turn, attempt), temperature,
                                            admissible)
            reply = completion.prefill + completion.text  # the whole assistant turn
            action, error = parse_action(reply, admissible)
            canonical = admissible_form(action, admissible) if action is not None else None
            if canonical is not None:
                action = canonical  # the env's spelling: `Move  North` would be invalid there
            if not admissible or attempt == self.resample or canonical is not None:
                break
            rejected.append(reply)
        self.history.append(Exchange(turn, user, reply, action,
                                     self.estimate_tokens(user) + self.estimate_tokens(reply) + 8,
                                     outcome=f"invalid: {error}" if error else "?"))
        extras: dict[str, Any] = {"reply": reply, "usage": completion.usage,
                                  "finish_reason": completion.finish_reason}
        if completion.prefill:
            extras["prefill"] = completion.prefill  # the reply's start, part of the prompt ids
        if rejected:
            extras["rejected"] = rejected
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
        the user message it ends with. The compact style shows no earlier turn (the observation is
        self-contained; only the feedback on the previous action carries over) and budgets at most
        COMPACT_CONTEXT tokens unless `max_context` is set."""
        budget = self.context_budget() - reserve
        if self.compact and self.max_context is None:
            budget = min(budget, COMPACT_CONTEXT - reserve)
        head = [{"role": "system", "content": self.system}, *self.example_messages()]
        user = self.user_message(turn, text, actions, feedback)
        fixed = self.count_tokens([*head, {"role": "user", "content": user}])
        while fixed > budget:  # the observation alone is too long: cut its middle, visibly
            shorter = shorten(text, int(len(text) * budget / fixed * 0.9))
            if len(shorter) >= len(text):  # nothing left to cut: the system prompt alone is too long
                break
            text, user = shorter, self.user_message(turn, shorter, actions, feedback)
            fixed = self.count_tokens([*head, {"role": "user", "content": user}])
        room = budget - fixed
        keep = 0 if self.compact else len(self.history)
        while keep and sum(e.tokens for e in self.history[-keep:]) + self._summary_cost(keep) > room:
            keep -= 1
        while True:  # the estimate chose `keep`; the exact count has the last word
            messages = self._assemble(head, user, keep, room)
            over = self.count_tokens(messages) - budget
            if over <= 0 or (keep == 0 and room <= 0):
                return messages, user
            if keep:
                keep -= 1
            else:  # the estimate let the summary of earlier turns run over: shrink it by as much
                room -= over

    def user_message(self, turn: int, text: str, actions: list[str], feedback: str | None) -> str:
        return compact_user_message(text, actions, feedback) if self.compact else \
            user_message(turn, text, actions, feedback)

    def example_messages(self) -> list[Message]:
        """The one-shot example as earlier chat turns, each reply in the format asked for."""
        if not self.example:
            return []
        messages: list[Message] = []
        for k, step in enumerate(self.example_turns or []):
            user = self.user_message(k, str(step["observation"]).strip(), list(step["actions"]), None)
            messages += [{"role": "user", "content": ("Example episode.\n\n" if k == 0 else "") + user},
                         {"role": "assistant", "content": reply_text(step["thought"], step["action"], self.prefill)}]
        return messages

    def _summary_cost(self, keep: int) -> int:
        older = [] if self.compact else self.history[:len(self.history) - keep]
        return sum(self.estimate_tokens(e.summary()) + 1 for e in older) + 12 if older else 0

    def _assemble(self, head: list[Message], user: str, keep: int, room: int) -> list[Message]:
        kept = self.history[len(self.history) - keep:]
        older = [] if self.compact else self.history[:len(self.history) - keep]
        turns: list[Message] = []
        for e in kept:
            turns += [{"role": "user", "content": e.user}, {"role": "assistant", "content": e.reply}]
        turns.append({"role": "user", "content": user})
        if head[1:] and not older:  # after the example, say where this episode starts
            turns[0] = {"role": "user", "content": "Your episode.\n\n" + turns[0]["content"]}
        lines = [e.summary() for e in older]
        room -= sum(e.tokens for e in kept)
        # when even the summary is too long its oldest lines go first, all of them if none fits the context
        while lines and sum(self.estimate_tokens(line) + 1 for line in lines) + 12 > room:
            lines.pop(0)
        if lines:
            # The summary opens the first user message (roles must alternate in many chat templates).
            omitted = len(older) - len(lines)
            summary = f"Summary of earlier turns{f' ({omitted} oldest omitted)' if omitted else ''}:\n"
            opener = "Your episode. " if head[1:] else ""
            turns[0] = {"role": "user",
                        "content": opener + summary + "\n".join(lines) + "\n\n" + turns[0]["content"]}
        return [*head, *turns]


def _describe(env: gym.Env) -> str:
    try:
        return describe(env.spec.id) if env.spec is not None else ""
    except KeyError:
        return ""


# --- registration -----------------------------------------------------------------------------

@register_agent("hf")
def _hf_agent(env: gym.Env, argument: str, *, mode: str = "generate", temperature: float = 1.0, top_p: float = 1.0,
              max_new_tokens: int = 256, max_context: int | None = None, images: bool | None = None,
              prompt: str = "auto", example: bool | None = None, prefill: str | None = None,
              resample: int | None = None, dtype: str = "auto", **score_options: Any) -> Agent:
    """`hf:PATH_OR_NAME`: a local Hugging Face checkpoint (a folder, a name in the local cache, or a
    packaged model such as `smollm2`); `mode=generate` writes replies, `mode=score` picks among the
    env's proposed actions by their likelihood (`agents/hf_score.py`)."""
    if not argument:
        raise ValueError("the hf agent needs a checkpoint: use hf:PATH (a folder saved with save_pretrained) "
                         "or hf:smollm2")
    if mode == "score":
        from turngym.agents.hf_score import HFScoreAgent

        return HFScoreAgent(env, argument, temperature=temperature, max_context=max_context, dtype=dtype,
                            **score_options)
    if mode != "generate":
        raise ValueError(f"unknown mode {mode!r} for an hf agent: use generate or score")
    if score_options:
        raise ValueError(f"option(s) {', '.join(sorted(score_options))} apply to mode=score only")
    from turngym.agents.hf import HFAgent

    return HFAgent(env, argument, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                   max_context=max_context, images=images, prompt=prompt, example=example, prefill=prefill,
                   resample=resample, dtype=dtype)


@register_agent("openai")
def _openai_agent(env: gym.Env, argument: str, *, temperature: float = 1.0, top_p: float = 1.0,
                  max_new_tokens: int = 256, max_context: int | None = None, images: bool | None = None,
                  timeout: float = 60.0, retries: int = 3, api_key_env: str = "OPENAI_API_KEY",
                  logprobs: bool = False, prompt: str = "auto", example: bool | None = None,
                  prefill: str | None = None, resample: int | None = None) -> Agent:
    """`openai:MODEL@BASE_URL`: any OpenAI-compatible chat-completions server (vLLM, OpenAI, ...)."""
    match = re.fullmatch(r"(.+?)@(https?://\S+)", argument)
    if match is None:
        raise ValueError(f"openai agent spec needs MODEL@BASE_URL, got {argument!r}: "
                         "e.g. openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
    from turngym.agents.chat_api import OpenAIAgent

    return OpenAIAgent(env, match.group(1), match.group(2), temperature=temperature, top_p=top_p,
                       max_new_tokens=max_new_tokens, max_context=max_context, images=images, timeout=timeout,
                       retries=retries, api_key_env=api_key_env, logprobs=logprobs, prompt=prompt, example=example,
                       prefill=prefill, resample=resample)
