"""Renderings of a store page: WebShop's text and text_rich observations, and HTML.

The HTML is the web site's page (assets/webshop/templates/page.html); `base` is the URL prefix
its forms and links point at (a session's address on the site, empty for the html observation).
"""

from __future__ import annotations

from functools import cache

import jinja2

from turngym.envs.webshop.store import Element

SEP = " [SEP] "


def text(instruction: str, page: list[Element]) -> str:
    """Visible strings joined with [SEP], as WebShop's `text` mode, instruction first."""
    return SEP.join(["Instruction:", instruction, *(e.label for e in page)])


def text_rich(instruction: str, page: list[Element]) -> str:
    """As `text`, with clickables marked [button] ... [button_] and chosen options [clicked button]."""
    def show(e: Element) -> str:
        if e.selected:
            return f"[clicked button] {e.label} [clicked button_]"
        return f"[button] {e.label} [button_]" if e.clickable or e.kind == "search" else e.label

    return SEP.join(["Instruction:", instruction, *(show(e) for e in page)])


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("turngym.assets", "webshop/templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("page.html")


def html(instruction: str, page: list[Element], base: str = "") -> str:
    return _template().render(instruction=instruction, elements=page, base=base)
