"""turngym/HopVQA-v0 and -v1: a multi-hop question about a generated scene, with one verifiable integer answer."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from turngym.envs.base import InvalidAction, Outcome, TurnEnv, ascii_text, parse_action, parse_box
from turngym.envs.draw import Draw
from turngym.envs.hopvqa.generate import build_query
from turngym.envs.hopvqa.program import MAX_ANSWER, Query, hop_value_matches
from turngym.envs.hopvqa.scene import Scene, generate_scene, render
from turngym.envs.hopvqa.tasks import parse_task_id, splits

VARIANTS = ("full", "half", "single")
VERSIONS = (0, 1)
CLAIM = re.compile(r"\s*(\d+)\s*,(.*)", re.DOTALL)
INTEGER = re.compile(r"\s*([-+]?\d+)(?:\.0*)?\s*")
MIN_ZOOM = 0.05  # the smallest zoom box side, as a fraction of the image
ATTEMPTS = 200  # scene redraws before a seed gives up (none does in practice)


def chain_length(seed: int, variant: str, hops: int | None) -> int:
    """Hops of task `seed`: `hops` if given, else full 3-5 (drawn), half of that (rounded up), or 1."""
    if hops is not None:
        return hops
    full = Draw(seed, 5).between(3, 5)
    return {"full": full, "half": (full + 1) // 2, "single": 1}[variant]


@lru_cache(maxsize=64)
def make_task(seed: int, hops: int, size: int, version: int = 0) -> tuple[Scene, Query]:
    """Task `seed`: the first (scene, query) draw that gives a valid, unambiguous chain of `hops` hops
    (from version 1 on, unambiguous under program.py's strict rules)."""
    for attempt in range(ATTEMPTS):
        scene = generate_scene(seed, size=size, attempt=attempt)
        query = build_query(scene, Draw(seed, 4, attempt), hops, strict=version >= 1)
        if query is not None:
            return scene, query
    raise RuntimeError(f"no valid {hops}-hop query for seed {seed} in {ATTEMPTS} scenes")


def task_answer(seed: int, chain: str, version: int = 0, size: int = 768) -> int:
    """Task hop-<seed>'s answer in a chain setting of the splits ("full", "half", "single", "1"-"5")."""
    variant, hops = (chain, None) if chain in VARIANTS else ("full", int(chain))
    return make_task(seed, chain_length(seed, variant, hops), size, version)[1].answer


@lru_cache(maxsize=8)
def _picture(seed: int, hops: int, size: int, version: int) -> tuple[np.ndarray, Image.Image]:
    """Task `seed`'s rendering, as an array and as the PIL image zooms resample from."""
    pixels = render(make_task(seed, hops, size, version)[0])
    pixels.flags.writeable = False
    return pixels, Image.fromarray(pixels)


class HopVQAEnv(TurnEnv):
    """HopVQA: a chained question about a generated scene; zoom in, claim hop answers, answer a number.

    ## Description
    Multi-hop visual queries after HopChain: each hop of the question finds one object of a
    generated scene from what the previous hop found, and the last hop's answer is a number.

    ## Action Space
    `zoom[x0, y0, x1, y1]` (fractions of the image: that region, enlarged, becomes obs["image"];
    zoom[0, 0, 1, 1] shows the whole picture again), `claim[k, value]` (your answer for hop k,
    checked against the hop's truth and reported in info["hop_checks"]; it changes nothing else)
    and `answer[number]` (final).

    ## Observation Space
    `text`: the question, its number of hops, the region shown, your claims and the actions.
    `image`: the scene or the zoomed region, `size` x `size` x 3.

    `state_dict()`: the scene graph, the query with every hop's truth, the view, the claims.

    ## Rewards
    0 until the answer, then 1 if the final number is right, else 0. `score_parts`: `correct` and
    `claims_correct`, the share of claimed hops whose latest claim was right (0 with no claims).

    ## Starting State
    The task's scene and query (a reset with no task id draws a training task), the whole picture
    in view and no claims.

    ## Episode End
    Terminated by `answer[...]`; truncated after `max_turns` turns.

    ## Arguments
    - `variant`: "full" (default; 3-5 hops), "half" (half of the full chain, rounded up) or
      "single" (one hop), HopChain's ablation; the same task id keeps its scene across variants.
    - `hops`: a fixed number of hops (1-5) instead of the variant's (default None). Each setting
      has its own frozen, answer-balanced test and dev seeds.
    - `size`: the image side in pixels (default 768).
    - `max_turns`: turn budget (default None: 8).
    - `render_mode`: "ansi" (the text view) or "rgb_array" (the image view) (default None).
    - `version`: the task generation, which the registered id sets: 0 for HopVQA-v0, 1 for
      HopVQA-v1 (default 0).

    ## Version History
    - v1: no question that people could read differently from its rules: a size or "not in any
      container" filter never runs over containers, side relations keep every object clear of the
      anchor's edge, "largest" and "smallest" agree between drawn areas and extents, the nearest
      object is also nearest edge to edge (program.py's `strict`). New frozen, answer-balanced splits
      (assets/hopvqa/splits-v1.yaml); the scenes, actions and rewards are v0's.
    - v0: the first version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 2}  # noqa: RUF012 (gymnasium's convention)
    default_max_turns = 8

    def __init__(self, variant: str = "full", hops: int | None = None, size: int = 768, max_turns: int | None = None,
                 render_mode: str | None = None, version: int = 0) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
        if hops is not None and not 1 <= int(hops) <= 5:
            raise ValueError(f"hops must be 1 to 5, got {hops}")
        if not 256 <= int(size) <= 2048:
            raise ValueError(f"size must be 256 to 2048 pixels, got {size}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS} (make turngym/HopVQA-v{VERSIONS[-1]} for the latest), "
                             f"got {version!r}")
        super().__init__(max_turns=max_turns, render_mode=render_mode, image_shape=(int(size), int(size), 3))
        self.variant, self.hops, self.size = variant, None if hops is None else int(hops), int(size)
        self.version = version
        self.splits = splits(self.variant if self.hops is None else str(self.hops), version)

    def _load_task(self, task_id: str | None) -> str:
        if task_id is None:
            train = self.splits["train"]
            task_id = train[int(self.np_random.integers(len(train)))]
        self.seed_of_task = parse_task_id(task_id)
        length = chain_length(self.seed_of_task, self.variant, self.hops)
        self.scene, self.query = make_task(self.seed_of_task, length, self.size, self.version)
        self.picture, self.pil = _picture(self.seed_of_task, length, self.size, self.version)
        self.instruction = self.query.question
        self.view = (0.0, 0.0, 1.0, 1.0)
        self.claims: dict[int, tuple[str, bool]] = {}
        self.answer: int | None = None
        return f"hop-{self.seed_of_task}"

    @property
    def task_type(self) -> str:
        return f"{len(self.query.hops)}-hop"

    def _apply(self, action: str) -> None:
        verb, argument = parse_action(action, ("zoom", "claim", "answer"),
                                      "zoom[x0, y0, x1, y1], claim[hop, value] or answer[number]")
        if verb == "zoom":
            self.view = parse_box(argument, min_side=MIN_ZOOM, of="the image",
                                  usage="zoom needs four fractions of the image: zoom[x0, y0, x1, y1], e.g. "
                                        "zoom[0.5, 0, 1, 0.5] for the top-right quarter")
        elif verb == "claim":
            hop, value = self._claim(argument)
            self.claims[hop] = (value, hop_value_matches(self.query.hops[hop - 1], value))
        else:
            number = INTEGER.fullmatch(argument)
            if not number:
                raise InvalidAction(f"answer needs a whole number, e.g. answer[12]; got {argument.strip()[:20]!r}")
            self.answer = int(number.group(1))

    def _claim(self, argument: str) -> tuple[int, str]:
        match = CLAIM.fullmatch(argument)
        hops = len(self.query.hops)
        if not match or not 1 <= int(match.group(1)) <= hops or not match.group(2).strip():
            raise InvalidAction(f"claim needs a hop number from 1 to {hops} and a value, e.g. claim[1, 7]")
        return int(match.group(1)), " ".join(match.group(2).split())

    def _terminated(self) -> bool:
        return self.answer is not None

    def _outcome(self) -> Outcome:
        correct = self.answer == self.query.answer
        right = sum(ok for _, ok in self.claims.values())
        return Outcome(correct, float(correct), {"correct": float(correct),
                                                 "claims_correct": right / len(self.claims) if self.claims else 0.0})

    def _text(self) -> str:
        x0, y0, x1, y1 = self.view
        view = "the whole picture" if self.view == (0.0, 0.0, 1.0, 1.0) else \
            f"the region x {x0:.2f}-{x1:.2f}, y {y0:.2f}-{y1:.2f} of the picture, enlarged"
        claims = "; ".join(f"hop {k}: {ascii_text(v)}" for k, (v, _) in sorted(self.claims.items()))
        return "\n".join([f"Question: {self.query.question}",
                          f"The question has {len(self.query.hops)} hop(s). The image shows {view}.",
                          *([f"Your claims: {claims}"] if claims else []),
                          "Actions: " + ", ".join(self._actions()) + " (zoom coordinates are fractions of the "
                          "picture; claim[k, value] records your answer to hop k; answer ends the episode)."])

    def _actions(self) -> list[str]:
        return ["zoom[<x0>, <y0>, <x1>, <y1>]", "claim[<hop>, <value>]", "answer[<number>]"]

    @classmethod
    def propose_actions(cls, obs: dict[str, Any], info: dict[str, Any]) -> list[str]:
        """The whole picture and its four quadrants to zoom to, and every answer in range."""
        boxes = ["0, 0, 1, 1", "0, 0, 0.5, 0.5", "0.5, 0, 1, 0.5", "0, 0.5, 0.5, 1", "0.5, 0.5, 1, 1"]
        return [f"zoom[{box}]" for box in boxes] + [f"answer[{n}]" for n in range(MAX_ANSWER + 1)]

    def _image(self) -> np.ndarray:
        if self.view == (0.0, 0.0, 1.0, 1.0):
            return self.picture.copy()
        # Bilinear keeps a zoom step under 5 ms at 768 px; the shapes and text are flat colors anyway.
        box = tuple(v * self.size for v in self.view)
        return np.array(self.pil.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))

    def _extra_info(self) -> dict[str, Any]:
        return {"hop_checks": {str(k): ok for k, (_, ok) in sorted(self.claims.items())}}

    def _state(self) -> dict[str, Any]:
        q = self.query
        return {"scene": self.scene.to_json(), "question": q.question, "answer": q.answer,
                "hops": [{"index": h.index, "text": h.text, "kind": h.kind, "value": h.value} for h in q.hops],
                "view": list(self.view), "claims": {str(k): v for k, (v, _) in sorted(self.claims.items())},
                "final": self.answer}
