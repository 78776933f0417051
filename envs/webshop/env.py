"""turngym/WebShop-v0: find and buy the product an instruction describes, in a searchable store."""

from __future__ import annotations

import copy
from typing import Any

from turngym.envs.base import PRINTABLE, Outcome, TurnEnv
from turngym.envs.webshop import render
from turngym.envs.webshop.catalog import Catalog, open_catalog
from turngym.envs.webshop.reward import score
from turngym.envs.webshop.store import Session
from turngym.envs.webshop.tasks import goal_index, splits_for

OBS_MODES = ("text", "text_rich", "html")


class WebShopEnv(TurnEnv):
    """WebShop: search a catalog, open products, choose options and buy what the instruction asks for.

    ## Description
    A text web store after WebShop (Yao et al. 2022): the instruction describes a product (type,
    attributes, options, a price limit); the agent searches, opens results, picks options and buys.

    ## Action Space
    `search[<query>]` where a search bar is shown, `click[<label>]` on a button, a product (its
    ASIN) or an option value; labels match case-insensitively.

    ## Observation Space
    `text`: the instruction and the page, as set by `obs_mode` (no image).

    `state_dict()`: goal, page, query, results (ASINs), result page, item (ASIN), chosen
    options, purchased (ASIN and options).

    ## Rewards
    0 until `click[Buy Now]`, then WebShop's score of the purchase against the goal
    (`turngym.envs.webshop.reward.score`; its parts are `info["score_parts"]`). Success means 1.

    ## Starting State
    The search page of a new session for the task's goal (a reset with no task id draws a training
    goal).

    ## Episode End
    Terminated by `click[Buy Now]`; truncated after `max_turns` turns.

    ## Arguments
    - `catalog`: "small" (default; 1,000 products, built on first use), "medium" (100,000), "full"
      (1,000,000; build these with `turngym webshop build --size ...`), or the path of a catalog
      file (e.g. one built from the original WebShop data).
    - `obs_mode`: "text" (default; visible strings joined with [SEP], as WebShop), "text_rich"
      (buttons marked [button] ... [button_], chosen options [clicked button]) or "html".
    - `max_turns`: turn budget (default None: 15).
    - `render_mode`: "ansi" (the text view) (default None).

    ## Version History
    - v0: the first version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012 (gymnasium's own convention)
    charset = PRINTABLE
    default_max_turns = 15

    def __init__(self, catalog: str = "small", obs_mode: str = "text", max_turns: int | None = None,
                 render_mode: str | None = None) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {obs_mode!r}: use one of {', '.join(OBS_MODES)}")
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        self.catalog: Catalog = open_catalog(catalog)
        self.obs_mode = obs_mode
        self.splits = splits_for(self.catalog)
        self.session: Session | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> WebShopEnv:
        """A copy that plays on independently (the session, turn count and random stream are its
        own) and shares the catalog: products, goals and search index are large and read-only, and
        the sqlite connection behind them cannot be copied. So `copy.deepcopy(env)` is all PRM
        search needs to branch an episode."""
        memo[id(self.catalog)] = self.catalog  # every reference to it, the session's included, stays shared
        clone = memo[id(self)] = type(self).__new__(type(self))
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone

    def _load_task(self, task_id: str | None) -> str:
        if task_id is None:
            train = self.splits["train"]
            task_id = train[int(self.np_random.integers(len(train)))]
        goal = self.catalog.goal(goal_index(task_id, self.catalog))
        self.session = Session(self.catalog, goal)
        self.instruction = goal["instruction_text"]
        return task_id

    @property
    def task_type(self) -> str:
        return str(self.session.goal.get("category", ""))

    def _apply(self, action: str) -> None:
        self.session.act(action)

    def _terminated(self) -> bool:
        return self.session.done

    def _outcome(self) -> Outcome:
        if self.session.purchased is None:
            return Outcome(False, 0.0, {"r_type": 0.0, "r_att": 0.0, "r_option": None, "r_price": 0.0,
                                        "reward": 0.0})
        parts = score(self.session.goal, self.session.purchased)
        return Outcome(parts["reward"] >= 1.0, parts["reward"], parts)

    def _text(self) -> str:
        page = self.session.page()
        if self.obs_mode == "html":  # the page's own header repeats it; a model should read it first
            return f"Instruction: {self.instruction}\n{render.html(self.instruction, page)}"
        return (render.text_rich if self.obs_mode == "text_rich" else render.text)(self.instruction, page)

    def _actions(self) -> list[str]:
        return self.session.actions()

    @classmethod
    def propose_actions(cls, obs: dict[str, Any], info: dict[str, Any]) -> list[str]:
        """The clicks as they are; `search[<query>]` becomes queries from the instruction: all of it
        (as the rule baseline searches) and, where a phrasing ends with `; <price clause>`, the
        part before it."""
        proposed = super().propose_actions(obs, info)
        if "search[<query>]" in info.get("actions", []):
            instruction = info["instruction"].lower()
            queries = dict.fromkeys([instruction, instruction.split(";")[0].strip()])
            proposed = [f"search[{q}]" for q in queries if q] + proposed
        return proposed

    def _state(self) -> dict[str, Any]:
        s = self.session
        product = self.catalog.product(s.item)["asin"] if s.item is not None else None
        bought = s.purchased
        return {
            "goal": s.goal, "page": s.view, "query": s.query,
            "results": [self.catalog.product(p)["asin"] for p in s.results], "result_page": s.result_page,
            "item": product, "detail": s.detail, "options": dict(s.options),
            "purchased": None if bought is None else {"asin": bought["asin"], "options": bought["options"]},
        }

