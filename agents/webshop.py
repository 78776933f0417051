"""WebShop agents: the oracle (knows the target) and WebShop's rule baseline (the heuristic)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from turngym.agents.base import Agent, register_agent
from turngym.envs.webshop import WebShopEnv
from turngym.envs.webshop.catalog import search_text
from turngym.envs.webshop.reward import FUZZY, normalize_color, similarity
from turngym.envs.webshop.store import BACK, BUY, NEXT, PER_PAGE, PREV


def _wanted_options(goal: dict[str, Any], product_options: dict[str, list[str]]) -> dict[str, str]:
    """Group -> value the goal asks for. A goal listing bare values (the original WebShop data,
    written by people) gets, for each value, the product's most similar option in a group not yet
    taken, judged as the reward judges options."""
    options = goal.get("goal_options") or {}
    if isinstance(options, dict):
        return dict(options)
    wanted: dict[str, str] = {}
    for value in options:
        scored = [(similarity(normalize_color(str(value)), normalize_color(v)), group, v)
                  for group, values in product_options.items() if group not in wanted for v in values]
        if scored:
            best, group, choice = max(scored, key=lambda s: s[0])
            if best > FUZZY:
                wanted[group] = choice
    return wanted


@register_agent("oracle", WebShopEnv)
class WebShopOracle(Agent):
    """Searches for the target product by its title, opens it, picks the goal's options and buys.
    In a large catalog dozens of listings can share a title, so when the target is not among the
    results the second search is its whole listing text, which only the target matches in full.
    Reads `env.unwrapped.state_dict()` and the catalog: an upper bound, not an agent to evaluate.

    `oracle:instruction` is the expert for cloning a policy that chooses among the env's proposed
    actions (`propose_actions`): it searches the instruction as proposed, opens the target when the
    results hold it (paging to it) and otherwise the first result, then picks options and buys as
    the oracle does, so every one of its actions is a candidate the clone can take."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        if argument not in ("", "instruction"):
            raise ValueError(f"unknown oracle variant {argument!r}: use oracle or oracle:instruction")
        self.env, self.proposed = env, argument == "instruction"

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.searches = 0

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        state = self.env.unwrapped.state_dict()
        goal, page = state["goal"], state["page"]
        catalog = self.env.unwrapped.catalog
        product = catalog.product(catalog.asin_to_id(goal["asin"]))
        if page == "search":
            self.searches += 1
            if self.proposed:
                return type(self.env.unwrapped).propose_actions(obs, info)[0]
            return f"search[{goal['name'] if self.searches == 1 else search_text(product)[:2000]}]"
        if page == "results":
            if goal["asin"] not in state["results"]:
                if self.proposed and state["results"]:
                    return f"click[{state['results'][state['result_page'] * PER_PAGE]}]"
                return f"click[{BACK}]"
            where = state["results"].index(goal["asin"]) // PER_PAGE
            if where == state["result_page"]:
                return f"click[{goal['asin']}]"
            return f"click[{NEXT if where > state['result_page'] else PREV}]"
        if page == "detail" or (state["item"] != goal["asin"] and not self.proposed):
            return f"click[{PREV}]"
        if state["item"] != goal["asin"]:  # oracle:instruction on the first result: its options that match
            product = catalog.product(catalog.asin_to_id(state["item"]))
        for group, value in _wanted_options(goal, product.get("options", {})).items():
            if state["options"].get(group) != value and f"click[{value}]" in info.get("actions", ()):
                return f"click[{value}]"
        return f"click[{BUY}]"


@register_agent("heuristic", WebShopEnv)
class WebShopRuleBaseline(Agent):
    """WebShop's rule baseline: search the instruction, open the first result, click every option
    value the instruction mentions, buy. `heuristic:no-options` skips the options, which is the
    paper's rule exactly (45.6 score, 9.6% success on the original data). Reads only the
    observation and `info["actions"]`."""

    def __init__(self, env: gym.Env, argument: str = "") -> None:
        if argument not in ("", "no-options"):
            raise ValueError(f"unknown heuristic variant {argument!r}: use heuristic or heuristic:no-options")
        self.pick_options = argument != "no-options"

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.instruction = info["instruction"].lower()
        self.stage = "search"
        self.clicked: set[str] = set()

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        actions = info["actions"]
        if self.stage == "search" and "search[<query>]" in actions:
            self.stage = "results"
            return f"search[{self.instruction}]"
        labels = [a[len("click["):-1] for a in actions if a.startswith("click[")]
        if self.stage == "results":
            fixed = {BACK.lower(), NEXT.lower(), PREV.lower()}
            products = [label for label in labels if label.lower() not in fixed]
            if products:
                self.stage = "item"
                return f"click[{products[0]}]"
            return f"click[{BACK}]"
        for label in labels if self.pick_options else ():
            if label not in self.clicked and label.lower() in self.instruction and label.lower() not in (
                    BUY.lower(), BACK.lower(), PREV.lower()) and len(label) > 1:
                self.clicked.add(label)
                return f"click[{label}]"
        return f"click[{BUY}]"
