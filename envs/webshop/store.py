"""The WebShop store as a state machine: one shopping session over a catalog.

Pages: search -> results (10 per page of the top 50) -> item (option groups, Description,
Features, Reviews, Buy Now) -> a detail page -> ... -> done. A page is a list of `Element`s, the
one model that the text, text_rich and html observations and the web site all render, so what an
agent reads and what a browser shows cannot drift apart.

Actions follow WebShop's grammar: `search[query]` where a search bar is shown and
`click[label]` on a button, product link or option (labels match case-insensitively).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from turngym.envs.base import InvalidAction, parse_action
from turngym.envs.webshop.catalog import Catalog

RESULTS, PER_PAGE = 50, 10
SEARCH, RESULT, ITEM, DETAIL, DONE = "search", "results", "item", "detail", "done"
BACK, NEXT, PREV, BUY = "Back to Search", "Next >", "< Prev", "Buy Now"
DETAILS = ("Description", "Features", "Reviews")


@dataclass(frozen=True)
class Element:
    """One thing on a page. `kind`: text, heading, search (the search bar), button, product
    (a result link), option (one value of an option group)."""

    kind: str
    label: str
    group: str = ""  # the option group, for options
    selected: bool = False  # options: chosen

    @property
    def clickable(self) -> bool:
        return self.kind in ("button", "product", "option")


@dataclass
class Session:
    """A shopping session for one goal. `act()` changes it; `page()` shows it."""

    catalog: Catalog
    goal: dict[str, Any]
    view: str = SEARCH
    query: str = ""
    results: list[int] = field(default_factory=list)
    result_page: int = 0
    item: int | None = None
    detail: str = ""
    options: dict[str, str] = field(default_factory=dict)  # chosen option per group
    purchased: dict[str, Any] | None = None

    @property
    def instruction(self) -> str:
        return self.goal["instruction_text"]

    @property
    def done(self) -> bool:
        return self.view == DONE

    # ---- pages ----------------------------------------------------------------------------
    def page(self) -> list[Element]:
        if self.view == SEARCH:
            return [Element("search", "Search")]
        if self.view == RESULT:
            pages = max(1, math.ceil(len(self.results) / PER_PAGE))
            elements = [Element("button", BACK),
                        Element("text", f"Page {self.result_page + 1} (Total results: {len(self.results)})")]
            if self.result_page > 0:
                elements.append(Element("button", PREV))
            if self.result_page < pages - 1:
                elements.append(Element("button", NEXT))
            start = self.result_page * PER_PAGE
            for pid in self.results[start:start + PER_PAGE]:
                product = self.catalog.product(pid)
                elements += [Element("product", product["asin"]), Element("text", product["Title"]),
                             Element("text", _price(product))]
            return elements
        if self.view in (ITEM, DETAIL):
            product = self.catalog.product(self.item)
            elements = [Element("button", BACK), Element("button", PREV)]
            if self.view == DETAIL:
                texts = _detail_texts(product, self.detail)
                return [*elements, Element("heading", self.detail), *(Element("text", t) for t in texts)]
            for group, values in product.get("options", {}).items():
                elements.append(Element("heading", group, group))
                elements += [Element("option", v, group, self.options.get(group) == v) for v in values]
            elements += [Element("heading", product["Title"]), Element("text", f"Price: {_price(product)}"),
                         Element("text", f"Rating: {product.get('Rating') or 'N.A.'}")]
            elements += [Element("button", d) for d in DETAILS] + [Element("button", BUY)]
            return elements
        product = self.purchased or {}
        return [Element("heading", "Thank you for shopping with us!"),
                Element("text", f"Purchased: {product.get('asin', '')} {product.get('Title', '')}")]

    def clickables(self) -> list[str]:
        return [e.label for e in self.page() if e.clickable]

    @property
    def has_search_bar(self) -> bool:
        return self.view == SEARCH

    def actions(self) -> list[str]:
        """`info["actions"]`: the search template where a search bar is shown, then every click."""
        return (["search[<query>]"] if self.has_search_bar else []) + [f"click[{c}]" for c in self.clickables()]

    # ---- acting ---------------------------------------------------------------------------
    def act(self, action: str) -> None:
        """Carry out one action, or raise `InvalidAction` (saying why) and change nothing."""
        if self.done:
            raise InvalidAction("the purchase is made: the episode is over")
        verb, argument = parse_action(action, ("search", "click"), "search[<query>] or click[<label>]")
        if verb == "click":
            self._click(" ".join(argument.split()))
            return
        if not self.has_search_bar:
            raise InvalidAction(f"there is no search bar on this page: click[{BACK}] first")
        query = " ".join(argument.split())
        if not query:
            raise InvalidAction("search needs words to look for, e.g. search[red running shoes]")
        self.query, self.results = query, self.catalog.search(query, RESULTS)
        self.view, self.result_page = RESULT, 0

    def _click(self, label: str) -> None:
        wanted = " ".join(label.split()).casefold()  # (labels built from data may hold runs of spaces)
        element = next((e for e in self.page() if e.clickable and " ".join(e.label.split()).casefold() == wanted),
                       None)
        if element is None:
            choices = ", ".join(self.clickables()[:12]) or "nothing"
            raise InvalidAction(f"nothing called {label[:40]!r} to click here; clickable: {choices}")
        if element.kind == "product":
            self.item, self.view, self.options = self.catalog.asin_to_id(element.label), ITEM, {}
        elif element.kind == "option":
            self.options[element.group] = element.label
        elif element.label == BACK:
            self.view, self.query, self.results, self.item, self.options = SEARCH, "", [], None, {}
        elif element.label == NEXT:
            self.result_page += 1
        elif element.label == PREV:
            if self.view == RESULT:
                self.result_page -= 1
            elif self.view == ITEM:
                self.view, self.item, self.options = RESULT, None, {}
            else:
                self.view = ITEM
        elif element.label in DETAILS:
            self.view, self.detail = DETAIL, element.label
        elif element.label == BUY:
            product = self.catalog.product(self.item)
            self.purchased = {**product, "options": dict(self.options)}
            self.view = DONE


def _price(product: dict[str, Any]) -> str:
    low, *high = product["pricing"]
    return f"${low:.2f}" + (f" to ${high[0]:.2f}" if high else "")


def _detail_texts(product: dict[str, Any], detail: str) -> list[str]:
    if detail == "Description":
        return [product.get("Description") or "N.A."]
    if detail == "Features":
        return list(product.get("BulletPoints") or ["N.A."])
    return [f"{r['score']} stars: {r['title']} - {r['body']}" for r in product.get("Reviews", [])] or ["N.A."]
