"""GVL (Ma et al. 2024, "Vision Language Models are In-Context Value Learners"): a vision-language
model's estimate of task progress for every frame of an episode, asked for all frames at once.

The model sees the task, the episode's first frame as the "initial scene" at 0%, and the other
frames (at most `max_frames` of them, evenly spaced, the last one always among them) in a random
order, each to be answered with a one-line description and a completion percentage; optionally
other episodes of the task come first as in-context examples, their frames shuffled and labelled
with linear progress. Shuffling is the point: shown in order, a model can write rising numbers
without looking at the frames, and the values would look right for free. The reply is parsed,
un-shuffled and returned in chronological order as values in [0, 1].

Two pitfalls of public implementations are avoided on purpose: the anchor is the episode's true
first frame (not the first of the subsampled frames, which would call progress already made 0%),
and the percentages are not rescaled to sum to 100 (they are progress levels, not a distribution;
rescaling would make every value depend on how many frames were shown). A frame the reply does
not answer usably is reported as missing (NaN), never filled in; the uses below interpolate
between answered frames where they need a value for every turn, and say so.

Value-Order Correlation (`voc`, from `turngym.rewards.voc`) of the answered frames judges an
episode: near 1 when the values rise with time (success, or at least steady progress), near 0 or
below otherwise. The uses:

- `gvl_shaped_rewards`: potential-based shaping with the progress as the potential (see
  `turngym.rewards.shaping`); the anchor's potential is 0, so a terminated episode's return is
  unchanged and only the credit moves between turns.
- `gvl_critic`: the values as a frozen critic, in the form `Rollouts.values` takes (for `gae`, `evpo`).
- `filter_by_voc`: success detection, and keeping only good demonstrations before behaviour cloning.
- `awr_weights`: advantage-weighted regression weights exp(tau * (v_{t+1} - v_t)), clipped.
- `annotate`: the values into the turns' `extras["gvl"]`, where reports find per-turn values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np

from turngym.agents.base import make_agent, split_spec
from turngym.agents.lm import LMAgent, Message, image_part, text_part
from turngym.rewards.voc import voc
from turngym.trajectory import Trajectory

__all__ = ["GVLResult", "GVLScorer", "annotate", "awr_weights", "episode_frames", "filter_by_voc", "gvl_critic",
           "gvl_shaped_rewards", "parse_percentages", "turn_progress", "voc"]

Episode = Trajectory | Sequence[np.ndarray]
T = TypeVar("T")
TOKENS_PER_FRAME = 48  # a reply line ("Frame 12: <a short sentence>. Task completion percentage: 40%"), with room


@dataclass
class GVLResult:
    """What GVL made of one episode.

    `frames` are the indices (into the episode's frames) of the frames in the prompt, in time
    order: `frames[0] == 0` is the anchor, the rest were shown shuffled. `values[j]` is the
    progress in [0, 1] of `frames[j]` (`values[0] = 0`: the prompt states it), NaN where the reply
    gave none. "Frame k" of the prompt showed `frames[permutation[k - 1]]`. `missing` lists the
    episode frame indices of shown frames left unanswered. `voc` is the value-order correlation of
    the answered shown frames (the anchor's given 0 left out), NaN with fewer than two.
    """

    values: np.ndarray
    frames: list[int]
    permutation: list[int]
    missing: list[int]
    reply: str
    voc: float
    n_frames: int  # frames in the episode
    usage: dict[str, int] = field(default_factory=dict)

    def frame_values(self) -> np.ndarray:
        """Progress at every frame of the episode: linear between answered frames, flat past the
        last one (the anchor's 0 always counts as answered, so with no answer at all it is 0)."""
        known = ~np.isnan(self.values)
        return np.interp(np.arange(self.n_frames), np.asarray(self.frames)[known], self.values[known])


class _NoEnv(gym.Env):
    """The env an LM agent is built for when it only scores: LM agents read an env for their play
    prompts (the family's description and example), which scoring never sends."""

    observation_space = gym.spaces.Text(1)
    action_space = gym.spaces.Text(1)


class GVLScorer:
    """Scores episodes with a vision-language model the GVL way (see the module docstring).

    Args:
        agent: an `hf:` or `openai:` spec of a vision-language model (options may follow `?`), or
            an LM agent already made (its own sampling settings are then used).
        max_frames: at most this many frames besides the anchor are shown, evenly spaced in time,
            the episode's last frame always among them.
        seed: the seed of the shuffles (and of the model's sampling): the same seed gives the
            same prompt.
        examples: in-context episodes of the task (trajectories or lists of frames), shown
            before the episode with linear progress labels; `score` may pass others.
        example_frames: at most this many frames of each example, evenly spaced, the first and
            last among them.
        agent_options: the agent's settings, on top of those in the spec; `temperature` defaults
            to 0 (greedy) and `max_new_tokens` to TOKENS_PER_FRAME per frame shown, plus 32.
    """

    def __init__(self, agent: str | LMAgent, *, max_frames: int = 30, seed: int = 0,
                 examples: Sequence[Episode] = (), example_frames: int = 10, **agent_options: Any) -> None:
        for name, value in (("max_frames", max_frames), ("example_frames", example_frames)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        self.max_frames, self.seed, self.example_frames = max_frames, int(seed), example_frames
        self.examples = list(examples)
        if isinstance(agent, str):
            base, written = split_spec(agent)
            options = {"temperature": 0.0, "max_new_tokens": TOKENS_PER_FRAME * max_frames + 32,
                       **written, **agent_options}
            agent = make_agent(base, _NoEnv(), **options)
        elif agent_options:
            raise ValueError("agent options go with an agent spec: set them on the agent you pass instead")
        if not isinstance(agent, LMAgent):
            raise ValueError(f"GVL needs a language-model agent, not {type(agent).__name__}: use hf:PATH or "
                             "openai:MODEL@BASE_URL of a vision-language model")
        if getattr(getattr(agent, "model", None), "vision", True) is False:
            raise ValueError("GVL shows the model images, and this checkpoint is text-only: use a vision-language "
                             "model")
        self.lm = agent

    def prompt(self, episode: Episode, task: str | None = None, *, seed: int | None = None,
               examples: Sequence[Episode] | None = None) -> tuple[list[Message], list[int], list[int]]:
        """The chat GVL sends for `episode`, the frames it shows (chronological, the anchor first)
        and its permutation (see `GVLResult`); the same seed gives the same prompt."""
        return self._prompt(episode_frames(episode), _task(episode, task), self.seed if seed is None else seed,
                            self.examples if examples is None else list(examples))

    def _prompt(self, frames: list[np.ndarray], task: str, seed: int,
                examples: list[Episode]) -> tuple[list[Message], list[int], list[int]]:
        rng = np.random.default_rng(seed)
        shown = sample_frames(len(frames), self.max_frames, keep_first=False)
        # The query's order is drawn first, so adding examples never changes it.
        permutation = [1 + int(q) for q in rng.permutation(len(shown))]
        used = [0, *shown]
        parts = _Parts()
        parts.text(f"You are an expert at judging from images how far a task has progressed. The task: {task}\n"
                   "Estimate the task completion percentage of frames of an episode: a number from 0 to 100, "
                   "where 100 means the task is fully done. The frames are shown in random order, not the "
                   "order in which they happened, so judge each frame on its own.\n")
        if examples:
            parts.text("\nExamples: other episodes of the same task, their frames in random order, each with "
                       "its task completion percentage.\n")
            for e, example in enumerate(examples, 1):
                pictures = episode_frames(example)
                picked = sample_frames(len(pictures), self.example_frames, keep_first=True)
                parts.text(f"Example {e}:\n")
                for k, i in enumerate(rng.permutation(picked), 1):
                    parts.text(f"Example frame {k}: ")
                    parts.image(pictures[i])
                    parts.text(f" Task completion percentage: {_linear(int(i), len(pictures))}%\n")
            parts.text("\nNow the episode to judge.\n")
        parts.text("Initial scene: ")
        parts.image(frames[0])
        parts.text("\nIn the initial scene, the task completion percentage is 0%.\n")
        for k, j in enumerate(permutation, 1):
            parts.text(f"Frame {k}: ")
            parts.image(frames[used[j]])
            parts.text("\n")
        parts.text(f"For each of the frames 1 to {len(shown)}, write one line, in this format:\n"
                   "Frame <number>: <one short sentence describing the frame>. Task completion percentage: "
                   "<0 to 100>%")
        return [{"role": "user", "content": parts.parts}], used, permutation

    def score(self, episode: Episode, task: str | None = None, *, seed: int | None = None,
              examples: Sequence[Episode] | None = None) -> GVLResult:
        """Ask the model about `episode` (a trajectory, whose instruction is the task unless
        `task` is given, or a list of frames with `task`) and return its values in time order."""
        frames = episode_frames(episode)
        seed = self.seed if seed is None else seed
        messages, used, permutation = self._prompt(frames, _task(episode, task), seed,
                                                   self.examples if examples is None else list(examples))
        try:
            completion = self.lm.complete(messages, None, seed & 0x7FFFFFFF)
        except ValueError as exc:  # the prompt does not fit the model's context
            raise ValueError(f"{exc}; for GVL, lower max_frames or show fewer examples") from None
        answers = parse_percentages(completion.text, len(permutation))
        values = np.full(len(used), np.nan)
        values[0] = 0.0
        for k, j in enumerate(permutation, 1):
            if k in answers:
                values[j] = answers[k] / 100.0
        missing = [used[j] for j in range(1, len(used)) if np.isnan(values[j])]
        answered = values[1:][~np.isnan(values[1:])]
        return GVLResult(values, used, permutation, missing, completion.text, voc(answered), len(frames),
                         dict(completion.usage))

    __call__ = score


class _Parts:
    """A message's content parts, built in order; adjacent texts are merged, so that the content
    reads the same to every backend (the chat server joins adjacent text parts with a newline)."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def text(self, text: str) -> None:
        if self.parts and self.parts[-1]["type"] == "text":
            self.parts[-1] = text_part(self.parts[-1]["text"] + text)
        else:
            self.parts.append(text_part(text))

    def image(self, image: np.ndarray) -> None:
        self.parts.append(image_part(image))


def episode_frames(episode: Episode) -> list[np.ndarray]:
    """The frames of an episode: a trajectory's turn images, then its final image when it has one
    (the state after the last action), or a list of frames as given. Each must be uint8 HxWx3."""
    if isinstance(episode, Trajectory):
        frames = [turn.image for turn in episode.turns]
        if any(image is None for image in frames):
            raise ValueError("GVL scores what the agent saw, and this trajectory has turns without an image: roll "
                             "out an env with an image view with record_images=True")
        final = getattr(episode, "final_image", None)
        frames += [final] if final is not None else []
    else:
        frames = list(episode)
    for k, frame in enumerate(frames):
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
                and frame.shape[2] == 3):
            raise ValueError(f"frame {k} is not an RGB image: pass uint8 arrays of shape HxWx3")
    if len(frames) < 2:
        raise ValueError(f"GVL needs an episode of at least 2 frames (the anchor and one to judge), got {len(frames)}")
    return frames


def sample_frames(n: int, at_most: int, *, keep_first: bool) -> list[int]:
    """At most `at_most` indices of n frames, evenly spaced and always ending with the last; from
    index 0 with `keep_first`, else from 1 (the anchor is shown apart)."""
    first = 0 if keep_first else 1
    count = min(at_most, n - first)
    return sorted(set(np.rint(np.linspace(n - 1, first, count)).astype(int).tolist()))


def _linear(i: int, n: int) -> int:
    """The example label of frame i of n: progress linear in time, 0% first and 100% last."""
    return round(100 * i / (n - 1)) if n > 1 else 100


def _task(episode: Episode, task: str | None) -> str:
    text = task if task is not None else (episode.instruction if isinstance(episode, Trajectory) else "")
    if not text.strip():
        raise ValueError("GVL needs the task in words: pass task=..., or a trajectory with an instruction")
    return text.strip()


# --- reading the reply ---------------------------------------------------------------------------

_FRAME = re.compile(r"^[\s>*_#`|-]*frame\s*(\d+)\b[*_`]*(.*)$", re.IGNORECASE | re.MULTILINE)
_NUMBER = r"(-?\d+(?:\.\d+)?)"  # a sign, so that "-5%" is read, and refused, as -5
_KEYED = re.compile(r"(?:percentage|completion|progress)[^\d\n]{0,40}?" + _NUMBER, re.IGNORECASE)
_PERCENT = re.compile(_NUMBER + r"\s*%")
_BARE = re.compile(r"[\s:.=*_`-]*" + _NUMBER + r"\s*%?[\s.*_`]*")


def parse_percentages(reply: str, count: int) -> dict[int, float]:
    """The percentage the reply gives each of frames 1..count, as {frame number: percent}.

    A frame's answer is read from its `Frame k` line, or failing that from the lines up to the
    next frame's: the number after "percentage", "completion" or "progress" if any (the last
    such), else the last number followed by %, else a line holding only a number. Markdown
    around the header is ignored, and so are lines such as `Example frame 2` or `Initial scene`.
    The first answer for a frame wins (a model that starts its list again is rambling); numbers
    outside 0..100 and frame numbers outside 1..count are not answers. Never raises.
    """
    headers = list(_FRAME.finditer(reply))
    found: dict[int, float] = {}
    for h, header in enumerate(headers):
        k = int(header.group(1))
        if not 1 <= k <= count or k in found:
            continue
        end = headers[h + 1].start() if h + 1 < len(headers) else len(reply)
        rest = reply[header.end():end].splitlines()
        for text in [header.group(2), *rest]:
            value = _percentage(text)
            if value is not None:
                if 0.0 <= value <= 100.0:
                    found[k] = value
                break
    return found


def _percentage(text: str) -> float | None:
    keyed = _KEYED.findall(text)
    if keyed:
        return float(keyed[-1])
    marked = _PERCENT.findall(text)
    if marked:
        return float(marked[-1])
    bare = _BARE.fullmatch(text)
    return float(bare.group(1)) if bare else None


# --- uses ------------------------------------------------------------------------------------------

def annotate(trajectory: Trajectory, result: GVLResult, key: str = "gvl") -> Trajectory:
    """Write the answered values of a scored trajectory into its turns' `extras[key]` (where
    `turngym.rewards.voc` and the report look for them) and return it. Only frames the model
    judged get one: not the anchor, whose 0 the prompt gave (it would lift every VOC for free),
    and not the final frame, which is no turn; so the report's VOC can differ from `result.voc`."""
    _check_match(trajectory, result)
    for frame, value in zip(result.frames[1:], result.values[1:], strict=True):
        if frame < len(trajectory.turns) and not np.isnan(value):
            trajectory.turns[frame].extras[key] = float(value)
    return trajectory


def _check_match(trajectory: Trajectory, result: GVLResult) -> None:
    turns = len(trajectory.turns)
    if result.n_frames not in (turns, turns + 1):
        raise ValueError(f"the GVL result is of an episode of {result.n_frames} frames, not of this trajectory "
                         f"of {turns} turns: score the trajectory itself")


def turn_progress(trajectory: Trajectory, result: GVLResult) -> np.ndarray:
    """Progress at s_0..s_T of a scored trajectory (T turns): the frame values at its turns, and
    at the state after the last action its final frame's where it has one, else the last turn's."""
    _check_match(trajectory, result)
    values, turns = result.frame_values(), len(trajectory.turns)
    return np.append(values[:turns], values[turns] if result.n_frames > turns else values[turns - 1])


def gvl_critic(trajectories: Sequence[Trajectory], results: Sequence[GVLResult], *,
               scale: float = 1.0) -> list[np.ndarray]:
    """GVL's values as a frozen critic, in the form `Rollouts.values` takes: V(s_0..s_{T-1}) and
    the bootstrap V(s_T), which is 0 when the episode terminated. `scale` maps progress 1 to the
    return of a success (1 for turngym's scores)."""
    critic = []
    for trajectory, result in zip(trajectories, results, strict=True):
        progress = turn_progress(trajectory, result)
        critic.append(scale * np.append(progress[:-1], 0.0 if trajectory.terminated else progress[-1]))
    return critic


def gvl_shaped_rewards(trajectory: Trajectory, result: GVLResult, *, gamma: float = 1.0,
                       scale: float = 1.0) -> np.ndarray:
    """Each turn's reward plus gamma * Phi(s_{t+1}) - Phi(s_t), Phi the GVL progress times `scale`
    and 0 after termination, as `PotentialShaping` does. The anchor makes Phi(s_0) = 0, so the
    discounted return of a terminated episode is unchanged; a truncated one gains
    gamma^T Phi(s_T), the potential standing in for the return still to come."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1]; got {gamma}")
    phi = gvl_critic([trajectory], [result], scale=scale)[0]
    rewards = np.array([turn.reward for turn in trajectory.turns], dtype=np.float64)
    return rewards + gamma * phi[1:] - phi[:-1]


def awr_weights(trajectory: Trajectory, result: GVLResult, *, tau: float = 1.0,
                max_weight: float = 20.0) -> np.ndarray:
    """Advantage-weighted regression weights of a trajectory's turns: min(exp(tau * (v_{t+1} -
    v_t)), max_weight), v the GVL progress (`turn_progress`), so that behaviour cloning leans on
    the actions that made progress. A turn after which nothing was scored weighs 1."""
    if tau < 0 or max_weight <= 0:
        raise ValueError(f"tau must be >= 0 and max_weight > 0, got tau={tau}, max_weight={max_weight}")
    return np.minimum(np.exp(tau * np.diff(turn_progress(trajectory, result))), max_weight)


def filter_by_voc(episodes: Sequence[T], threshold: float, results: Sequence[GVLResult] | GVLScorer) -> list[T]:
    """The episodes whose VOC is at least `threshold` (NaN never is): GVL's success detection, and
    its filter of demonstrations before behaviour cloning. `results` are the episodes' GVL
    results in the same order, or a scorer to score them with."""
    if isinstance(results, GVLScorer):
        results = [results.score(episode) for episode in episodes]
    if len(results) != len(episodes):
        raise ValueError(f"got {len(results)} GVL results for {len(episodes)} episodes")
    return [episode for episode, result in zip(episodes, results, strict=True) if result.voc >= threshold]
