"""TurnEnv: the DESIGN.md environment contract, implemented once for every family.

A family subclasses `TurnEnv` and writes only its rules:

- `splits`: a mapping from "train", "dev", "test" to sequences of task ids;
- `_load_task(task_id)`: build the state of one task (draw randomness from `self.np_random`);
- `_apply(action)`: carry out one action, or raise `InvalidAction` *before* changing anything;
- `_terminated()` and `_outcome()`: whether the task has ended, and its success and score;
- `_text()`, `_actions()`, `_state()`, `instruction`, and `_image()` if the family has a visual view.

The base class owns everything else: the spaces, seeding and task selection in `reset`, turn
counting and `max_turns` truncation, the `info` keys, invalid-action handling (state unchanged,
`valid=False`, a one-line `error`, the turn still counted, nothing raised), the outcome reward,
`render()` and `state_dict()`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, overload

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator

from turngym.registry import env_class

PRINTABLE = string.printable  # letters, digits, punctuation and whitespace (incl. newline)
SPLITS = ("train", "dev", "test")  # every family's split names (DESIGN.md)


class InvalidAction(Exception):
    """Raised by `_apply` when an action cannot be taken; the message is shown to the agent."""


@dataclass(frozen=True)
class Outcome:
    """How an episode went: `score` in [0, 1], `parts` for analysis (e.g. progress made)."""

    success: bool
    score: float
    parts: dict[str, Any] = field(default_factory=dict)
    reward: float | None = None  # the final reward when configured to differ from the score


def select_task(splits: Mapping[str, Sequence[str]], options: Mapping[str, Any] | None,
                rng: np.random.Generator) -> str | None:
    """The task id that `reset(options=...)` asks for, or None to let the family sample one.

    `{"task_id": id}` picks one task; `{"split": name, "index": i}` picks the i-th task of a split.
    """
    options = dict(options or {})
    unknown = set(options) - {"task_id", "split", "index"}
    if unknown:
        raise ValueError(f"unknown reset option(s) {sorted(unknown)}: use task_id, or split and index")
    if "task_id" in options:
        if "split" in options or "index" in options:
            raise ValueError("give either task_id or split and index in reset options, not both")
        return str(options["task_id"])
    if "split" not in options:
        if "index" in options:
            raise ValueError("reset option index needs a split, e.g. {'split': 'test', 'index': 0}")
        return None
    name = options["split"]
    if name not in splits:
        raise ValueError(f"unknown split {name!r}: choose one of {sorted(splits)}")
    tasks = splits[name]
    if "index" not in options:
        return tasks[int(rng.integers(len(tasks)))]
    index = int(options["index"])
    if not 0 <= index < len(tasks):
        raise ValueError(f"index {index} is out of range for split {name!r} of {len(tasks)} tasks")
    return tasks[index]


class TaskIds(Sequence[str]):
    """Task ids `<prefix><number>` over a sequence of numbers, made on demand (a training split
    can hold millions). Craft numbers its worlds (`wood_pickaxe:17`), WebShop its goals (`ws-17`)."""

    def __init__(self, prefix: str, numbers: Sequence[int]) -> None:
        self.prefix, self.numbers = prefix, numbers

    def __len__(self) -> int:
        return len(self.numbers)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [f"{self.prefix}{n}" for n in self.numbers[index]]
        return f"{self.prefix}{self.numbers[index]}"

    def __repr__(self) -> str:
        return f"TaskIds({self.prefix!r}, {len(self)} tasks)"


TYPOGRAPHY = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "-", "…": "...",
                            "•": "*", "™": "", "®": "", "©": "", "\u00a0": " ", "\ufb01": "fi", "\ufb02": "fl"})


def ascii_text(text: Any) -> str:
    """`text` folded into the observation character set: accents dropped, typographic marks
    replaced, anything else outside printable ASCII removed (scraped and PDF text needs it)."""
    folded = unicodedata.normalize("NFKD", str(text).translate(TYPOGRAPHY))
    return "".join(c for c in folded.encode("ascii", "ignore").decode() if c in PRINTABLE)


@cache
def _verbs(verbs: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\s*(" + "|".join(verbs) + r")\s*\[(.*)\]\s*", re.IGNORECASE | re.DOTALL)


def parse_action(action: str, verbs: Sequence[str], usage: str) -> tuple[str, str]:
    """(verb, argument) of an action `verb[argument]` with one of `verbs` (any case, spaces around),
    or `InvalidAction` pointing at `usage`. The argument runs to the last `]`, so it may hold brackets."""
    match = _verbs(tuple(verbs)).fullmatch(action)
    if not match:
        shown = action if len(action) <= 40 else action[:37] + "..."
        raise InvalidAction(f"unknown action {shown!r}: use {usage}")
    return match.group(1).lower(), match.group(2)


_FRACTION = r"\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*"
_BOX = re.compile(",".join([_FRACTION] * 4))


def parse_box(text: str, *, min_side: float, of: str, usage: str) -> tuple[float, float, float, float]:
    """A zoom box `x0, y0, x1, y1` in fractions of `of` ("the page", "the image"), checked to lie
    inside it with each side at least `min_side`; `InvalidAction` otherwise (`usage` if malformed)."""
    match = _BOX.fullmatch(text)
    if not match:
        raise InvalidAction(usage)
    x0, y0, x1, y1 = (float(v) for v in match.groups())
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise InvalidAction(f"zoom box ({x0}, {y0}, {x1}, {y1}) must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    if min(x1 - x0, y1 - y0) < min_side:
        raise InvalidAction(f"zoom box too small: each side must be at least {min_side} of {of}")
    return x0, y0, x1, y1


def one_line(message: str) -> str:
    """Collapse whitespace so an error message is always a single line."""
    return " ".join(str(message).split()) or "invalid action"


@dataclass(frozen=True)
class VectorBackend:
    """A fast vector env that plays a family's game under some of its settings, for trainers that
    play many episodes at once (Craft in primitive mode: `CraftVectorEnv`, NumPy over whole batches).
    Policies trained on it read its own observations; the single env shows them with `single`."""

    entry_point: str  # "module:Class", made as Class(num_envs, **kwargs)
    requires: Mapping[str, Any]  # env kwargs it plays only at these values (each the kwarg's default)
    takes: tuple[str, ...]  # env kwargs it takes too; the others (rendering, images) do not concern it
    single: Mapping[str, Any]  # single-env kwargs that play a policy trained on it

    def plays(self, kwargs: Mapping[str, Any]) -> bool:
        """Whether the env made with `kwargs` is the game this backend plays."""
        return all(kwargs.get(key, value) == value for key, value in self.requires.items())

    def make(self, num_envs: int, kwargs: Mapping[str, Any]) -> gym.vector.VectorEnv:
        return load_env_creator(self.entry_point)(num_envs, **{k: v for k, v in kwargs.items() if k in self.takes})


def resolve_task(env_id: str, task: str | None, kwargs: Mapping[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Where a task goes, as (gym.make kwargs, reset options): into the constructor kwarg that the
    env class names in `task_kwarg` (Craft's `task` picks the goal, whose worlds make its splits),
    else into every reset, as a split name (tasks of that split) or one task id. The class is
    looked up only when there is a task, so any Gymnasium id works without one."""
    kwargs = dict(kwargs or {})
    if task is None:
        return kwargs, None
    name = getattr(env_class(env_id), "task_kwarg", None)
    if name is None:
        return kwargs, {"split": task} if task in SPLITS else {"task_id": task}
    if kwargs.get(name, task) != task:
        raise ValueError(f"{env_id} got two tasks, {name}={kwargs[name]!r} in its kwargs and task={task!r}: "
                         "give the task once")
    return {**kwargs, name: task}, None


class TurnEnv(gym.Env[dict, str], ABC):
    """Base class of every turngym environment (see the module docstring for the hooks).

    Observation: `Dict(text=Text, [image=Box(uint8, H x W x 3)])`. Action: any string (`Text`).
    `info` on every turn: `task_id`, `instruction`, `turn`, `actions`, `valid`, `error`; when the
    episode ends also `success`, `score` and `score_parts`. The reward is 0 on intermediate turns
    and `score` on the last one.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    charset: ClassVar[str] = PRINTABLE  # characters that may appear in obs["text"]
    max_text_length: ClassVar[int] = 32_768
    max_action_length: ClassVar[int] = 4_096
    default_max_turns: int = 50
    thread_bound: ClassVar[bool] = False  # every call must come from one thread (Playwright's sync API)
    # Capabilities that generic code (trainers, the CLI) asks the class about, never the env id:
    task_kwarg: ClassVar[str | None] = None  # the constructor kwarg that picks the task (see resolve_task)
    vector_backend: ClassVar[VectorBackend | None] = None  # a fast vector env for trainers

    def __init__(self, *, max_turns: int | None = None, render_mode: str | None = None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported: use one of "
                             f"{self.metadata['render_modes']} or None")
        if max_turns is not None and int(max_turns) < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.render_mode = render_mode
        self._max_turns = None if max_turns is None else int(max_turns)
        obs = {"text": spaces.Text(self.max_text_length, min_length=0, charset=self.charset)}
        if image_shape is not None:
            obs["image"] = spaces.Box(0, 255, tuple(image_shape), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Text(self.max_action_length, min_length=0, charset=PRINTABLE)
        self.task_id = ""
        self._turn = 0
        self._done = False
        self.admissible: list[str] = []  # the actions possible now, computed once per turn

    # ---- hooks a family implements --------------------------------------------------------
    splits: Mapping[str, Sequence[str]]
    instruction: str = ""

    @abstractmethod
    def _load_task(self, task_id: str | None) -> str:
        """Set up the task `task_id` (None: sample a training task) and return its id."""

    @abstractmethod
    def _apply(self, action: str) -> None:
        """Carry out `action`, or raise `InvalidAction` without changing the state."""

    @abstractmethod
    def _terminated(self) -> bool:
        """Whether the task has ended (success, final answer, death)."""

    @abstractmethod
    def _outcome(self) -> Outcome:
        """Success, score and score parts of the episode so far."""

    @abstractmethod
    def _text(self) -> str:
        """obs["text"]: self-contained for a language model (instruction, view, action hint)."""

    @abstractmethod
    def _actions(self) -> list[str]:
        """The admissible actions now; free-text arguments as templates like `search[<query>]`."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """The family's true state as JSON-ready data (see `state_dict`)."""

    def _image(self) -> np.ndarray | None:
        return None

    def _extra_info(self) -> dict[str, Any]:
        """Family-specific info keys added on every turn."""
        return {}

    # ---- the contract ---------------------------------------------------------------------
    @classmethod
    def propose_actions(cls, obs: dict[str, Any], info: dict[str, Any]) -> list[str]:
        """Complete actions for agents that choose among candidates (the neural policy): the
        admissible actions of `info["actions"]`, with templates such as `search[<query>]` filled in
        from what the turn shows. Families override it to fill their templates; the base leaves
        templates out. It reads only `obs` and `info`, so it works on vector-env outputs too."""
        return [a for a in info.get("actions", []) if "<" not in a]

    @classmethod
    def run_metrics(cls, score_parts: list[dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, float]:
        """Measures of a whole set of episodes that are no mean of per-episode numbers (LongDocVQA's
        generalized F1, say), from their `score_parts` and the env kwargs they were played with;
        results and reports show them beside the score parts. None by default."""
        return {}

    @classmethod
    def evolve_task(cls, task_id: str, rng: np.random.Generator) -> str | None:
        """A curriculum's child of `task_id`: a valid task id of the same family, near it in
        difficulty, drawn from `rng` alone (Craft mutates the start, spawn or turn budget on a fresh
        training world). None: this family cannot evolve tasks."""
        return None

    @property
    def task_type(self) -> str:
        """The kind of the current task, for results broken down by type (Craft: the goal;
        WebShop: the product category; LongDocVQA: single-page, cross-page or unanswerable;
        HopVQA: the number of hops). Empty where a family has one kind."""
        return ""

    @property
    def max_turns(self) -> int:
        """Turns before truncation: the constructor's `max_turns`, else the family default."""
        return self._max_turns if self._max_turns is not None else int(self.default_max_turns)

    @property
    def turn(self) -> int:
        return self._turn

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        requested = select_task(self.splits, options, self.np_random)
        self.task_id = self._load_task(requested)
        self._turn = 0
        self._done = False
        self.admissible = self._actions()
        return self._observe(), self._info(True, None)

    def step(self, action: str):
        if self._done:
            obs = self._observe()
            info = self._info(False, "the episode is over: call reset() to start a new one")
            return obs, 0.0, self._terminated(), not self._terminated(), info
        self._turn += 1
        error = self._malformed(action)
        if error is None:
            try:
                self._apply(action)
            except InvalidAction as exc:
                error = one_line(str(exc))
        terminated = bool(self._terminated())
        truncated = not terminated and self._turn >= self.max_turns
        self._done = terminated or truncated
        self.admissible = [] if self._done else self._actions()
        info = self._info(error is None, error)
        reward = 0.0
        if self._done:
            outcome = self._outcome()
            info.update(success=bool(outcome.success), score=float(outcome.score),
                        score_parts=dict(outcome.parts))
            reward = float(outcome.score if outcome.reward is None else outcome.reward)
        return self._observe(), reward, terminated, truncated, info

    def render(self):
        if self.render_mode == "ansi":
            return self._text()
        if self.render_mode == "rgb_array":
            return self._image()
        return None

    def state_dict(self) -> dict[str, Any]:
        """The true state as JSON-ready data (for oracles and reward code, never for agents)."""
        return {"task_id": self.task_id, "turn": self._turn, **self._state()}

    # ---- internals ------------------------------------------------------------------------
    def _malformed(self, action: Any) -> str | None:
        if not isinstance(action, str):
            return f"actions are strings, got {type(action).__name__}"
        if len(action) > self.max_action_length:
            return f"action too long ({len(action)} characters; the limit is {self.max_action_length})"
        return None

    def _observe(self) -> dict[str, Any]:
        obs: dict[str, Any] = {"text": self._text()}
        if "image" in self.observation_space.spaces:
            obs["image"] = self._image()
        return obs

    def _info(self, valid: bool, error: str | None) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "instruction": self.instruction,
            "turn": self._turn,
            "actions": list(self.admissible),
            "valid": valid,
            "error": error,
            **self._extra_info(),
        }
