"""A complete turngym family in one file: guess a secret number from higher/lower hints.

Run it:  python docs/examples/guess_number.py
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import gymnasium as gym

import turngym
from turngym.agents import Agent, make_agent, register_agent
from turngym.envs.base import InvalidAction, Outcome, TurnEnv


class GuessNumberEnv(TurnEnv):
    """Find the secret integer in [1, high]; each guess is answered with higher, lower or correct.

    ## Description
    A number-guessing game, the smallest complete family: bisection finds any secret in
    about log2(high) guesses.

    ## Action Space
    `guess <n>` with n in [1, high].

    ## Observation Space
    `text`: the instruction, the guesses so far, the last hint and the turn count (no image).

    `state_dict()`: secret, guesses.

    ## Rewards
    0 until the episode ends, then 1 if the secret was guessed, else 0. `score_parts`: `guesses`.

    ## Starting State
    The task id is the secret itself, so every task is reproducible (a reset with no task id
    draws a training secret); no guesses yet.

    ## Episode End
    Terminated by the correct guess; truncated after `max_turns` turns.

    ## Arguments
    - `high`: the largest possible secret (default 100).
    - `max_turns`: turn budget (default None: 10).
    - `render_mode`: "ansi" (the text view) (default None).

    ## Version History
    - v0: the first version.
    """

    metadata: ClassVar[dict] = {"render_modes": ["ansi"], "render_fps": 4}  # text only: no image view
    default_max_turns = 10

    def __init__(self, high: int = 100, max_turns: int | None = None, render_mode: str | None = None) -> None:
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        self.high = high
        numbers = [str(n) for n in range(1, high + 1)]
        self.splits = {"test": numbers[::10], "dev": numbers[5::10],
                       "train": [n for i, n in enumerate(numbers) if i % 5]}

    def _load_task(self, task_id: str | None) -> str:
        if task_id is None:  # sample a training task with the env's seeded generator
            task_id = self.splits["train"][int(self.np_random.integers(len(self.splits["train"])))]
        if not task_id.isdigit() or not 1 <= int(task_id) <= self.high:
            raise ValueError(f"task id must be a number from 1 to {self.high}, got {task_id!r}")
        self.secret, self.guesses, self.hint = int(task_id), [], "no guess yet"
        self.instruction = f"Guess the secret number between 1 and {self.high}."
        return task_id

    def _apply(self, action: str) -> None:
        match = re.fullmatch(r"\s*guess\s+(\d+)\s*", action.lower())
        if match is None:
            raise InvalidAction("use guess <number>, for example: guess 50")  # nothing has changed yet
        n = int(match.group(1))
        if not 1 <= n <= self.high:
            raise InvalidAction(f"guess a number from 1 to {self.high}")
        self.guesses.append(n)
        self.hint = "correct" if n == self.secret else ("higher" if n < self.secret else "lower")

    def _terminated(self) -> bool:
        return self.hint == "correct"

    def _outcome(self) -> Outcome:
        return Outcome(self.hint == "correct", float(self.hint == "correct"), {"guesses": len(self.guesses)})

    def _text(self) -> str:
        return (f"{self.instruction}\nYour guesses so far: {self.guesses or 'none'}. Last hint: {self.hint}.\n"
                f"Turn {self.turn} of {self.max_turns}. Action: guess <number>")

    def _actions(self) -> list[str]:
        return ["guess <number>"]

    def _state(self) -> dict[str, Any]:
        return {"secret": self.secret, "guesses": list(self.guesses)}


@register_agent("heuristic", GuessNumberEnv)
class BisectAgent(Agent):
    """Halves the interval after every hint, reading only the observation text."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        self.high = env.unwrapped.high

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.low, self.top, self.last = 1, self.high, None

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        if self.last is not None:
            if "Last hint: higher" in obs["text"]:
                self.low = self.last + 1
            elif "Last hint: lower" in obs["text"]:
                self.top = self.last - 1
        self.last = (self.low + self.top) // 2
        return f"guess {self.last}"


@register_agent("oracle", GuessNumberEnv)
class SecretReader(Agent):
    """Reads the secret from the privileged state: an upper bound, as every family's oracle is."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        self.env = env

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        return f"guess {self.env.unwrapped.state_dict()['secret']}"


turngym.register("guessing/GuessNumber-v0", GuessNumberEnv,
                 "Guess a secret number from higher/lower hints (the custom-family example).")

if __name__ == "__main__":
    env = gym.make("guessing/GuessNumber-v0")
    for spec in ("random", "heuristic", "oracle"):
        agent = make_agent(spec, env)
        episodes = [turngym.rollout(env, agent, seed=i, options={"split": "test", "index": i}) for i in range(10)]
        wins = sum(t.success for t in episodes)
        print(f"{spec:9s} solved {wins}/10, {sum(len(t) for t in episodes) / 10:.1f} turns on average")
