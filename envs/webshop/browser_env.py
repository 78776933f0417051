"""turngym/WebShopBrowser-v0: the WebShop tasks on the real store web site, in headless Chromium.

The site (envs/webshop/server.py) serves HTML pages over the same `Session` state machine as
text mode, on 127.0.0.1; this env drives it with Playwright. A WebShop action (`search[...]`,
`click[...]`) is first checked by the store logic, exactly as in text mode (an invalid one gets
text mode's error and never reaches the browser), then carried out on the page: typing into
the search box and pressing Enter, or clicking the link, radio button or button of that name.
The server applies it to the session, so rewards and success are text mode's by construction;
`bench/webshop_browser.py` checks action-by-action parity on 50 test tasks.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from PIL import Image

from turngym.envs.base import InvalidAction, ascii_text, parse_action
from turngym.envs.webshop.browser import Chromium, Site
from turngym.envs.webshop.env import WebShopEnv

INTERACTIVE = ("link", "button", "radio", "searchbox", "textbox", "checkbox", "combobox")
SNAPSHOT_LINE = re.compile(r'^(\s*)- (' + "|".join(INTERACTIVE) + r')(?: "((?:[^"\\]|\\.)*)")?(.*)$')
ELEMENT_ACTIONS = ["click(<id>)", 'type(<id>, "<text>")', 'press(<id>, "<key>")', "scroll(down)", "scroll(up)",
                   "back()"]
ELEMENT_VERB = re.compile(r"\s*(click|type|press|scroll|back)\s*\(", re.IGNORECASE)
ARGUMENTS = {
    "click": re.compile(r"\s*(\d+)\s*"),
    "type": re.compile(r"\s*(\d+)\s*,\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')\s*", re.DOTALL),
    "press": re.compile(r"\s*(\d+)\s*,\s*(\"[^\"]*\"|'[^']*')\s*"),
    "scroll": re.compile(r"\s*(down|up)\s*", re.IGNORECASE),
    "back": re.compile(r"\s*"),
}
USAGE = {"click": "click(12)", "type": 'type(12, "red shoes")', "press": 'press(12, "Enter")',
         "scroll": "scroll(down) or scroll(up)", "back": "back()"}
ROLE_OF_KIND = {"product": "link", "option": "radio", "button": "button"}


def number_elements(snapshot: str) -> tuple[str, list[tuple[str, str, int]]]:
    """The snapshot with `[k]` before every interactive element, and the elements as (role, name,
    occurrence of that role and name so far): what `get_by_role(role, name).nth(occurrence)` finds.
    Link targets (`/url:` lines) are dropped: they hold session ids, not content."""
    lines, elements, seen = [], [], {}
    for line in snapshot.splitlines():
        if line.lstrip().startswith("- /url:"):
            continue
        match = SNAPSHOT_LINE.match(line)
        if match:
            indent, role, quoted, rest = match.groups()
            name = _unquote(quoted) if quoted is not None else ""
            nth = seen.get((role, name), 0)
            seen[(role, name)] = nth + 1
            elements.append((role, name, nth))
            label = f' "{quoted}"' if quoted is not None else ""
            line = f"{indent}- [{len(elements)}] {role}{label}{rest}"
        lines.append(line)
    return "\n".join(lines), elements


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class WebShopBrowserEnv(WebShopEnv):
    """WebShop in a real browser: the same tasks, reward and success as `turngym/WebShop-v0`.

    ## Description
    The store of `turngym/WebShop-v0` served as web pages and driven in Chromium (Playwright): the
    agent reads an accessibility snapshot and a screenshot and acts on page elements. One Chromium
    per Python process is shared by all browser envs (a context each); it closes with the last env.

    ## Action Space
    WebShop's `search[<query>]` and `click[<label>]`, and element actions on the numbers of the
    last observation: `click(12)`, `type(12, "text")`, `press(12, "Enter")`, `scroll(down)`,
    `scroll(up)`, `back()` (the browser's back button; the store keeps its state on the server, so
    its own `< Prev` and `Back to Search` buttons are how to move through it). A missing element, a
    timeout or a failed load is `info["error"]` and costs the turn; if Chromium (or just the tab)
    dies, the next step relaunches it, reopens the page and says so in `info["error"]`.

    ## Observation Space
    `text` is the instruction, then the page's accessibility snapshot with a number on every
    interactive element (`- [12] button "Buy Now"`), then the action grammar; `image` the
    screenshot (height x width x 3 uint8) when `screenshot` is on. `info` adds the page's `url`
    (and `timings`, see Arguments). `state_dict()` is WebShop-v0's.

    ## Rewards
    As `turngym/WebShop-v0`: 0 until the purchase, then WebShop's score of it against the goal.

    ## Starting State
    The store's search page for a new session of the task's goal, loaded in a fresh page.

    ## Episode End
    Terminated by the purchase; truncated after `max_turns` turns.

    ## Arguments
    - `catalog`: as WebShop-v0: "small" (default), "medium", "full" or a catalog file.
    - `viewport`: (width, height) of the page and the screenshot (default (1024, 768)).
    - `screenshot`: put a screenshot in obs["image"] every turn (default True).
    - `timings`: add `info["timings"]`, the milliseconds this turn spent on the action, waiting for
      the page to load, and observing it (default False: they are measurements, so they would make
      two identical episodes' infos differ).
    - `timeout`: seconds any one browser wait may take: a click, a page load, a snapshot (default 5.0).
    - `max_turns`: turn budget (default None: 15).
    - `render_mode`: "ansi" (the text view) or "rgb_array" (the screenshot) (default None).

    ## Version History
    - v0: the first version.
    """

    thread_bound: ClassVar[bool] = True  # Playwright's sync API

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __deepcopy__(self, memo: dict[int, Any]) -> WebShopBrowserEnv:
        # the episode lives in a Chromium page, which no copy can take along
        raise TypeError(f"{type(self).__name__} cannot be copied: its state lives in a browser page; "
                        "copy turngym/WebShop-v0 (the same tasks, as text) instead")

    def __init__(self, catalog: str = "small", viewport: tuple[int, int] = (1024, 768), screenshot: bool = True,
                 timings: bool = False, timeout: float = 5.0, max_turns: int | None = None,
                 render_mode: str | None = None) -> None:
        width, height = (int(v) for v in viewport)
        if not (200 <= width <= 4096 and 200 <= height <= 4096):
            raise ValueError(f"viewport must be (width, height) between 200 and 4096 pixels, got {viewport}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        super().__init__(catalog=catalog, max_turns=max_turns, render_mode=render_mode)
        if screenshot:
            self.observation_space = spaces.Dict({**self.observation_space.spaces,
                                                  "image": spaces.Box(0, 255, (height, width, 3), np.uint8)})
        self.viewport, self.screenshot, self.timeout_ms = (width, height), bool(screenshot), float(timeout) * 1e3
        self.report_timings = bool(timings)
        self.chromium = Chromium.get()  # BrowserNotFound (one sentence naming the fix) when there is none
        self.site = Site.get(self.catalog)
        self.context = self.page = None
        self._open_page()
        self.sid = self.site.sessions.claim()
        self.view_text, self.elements, self.image = "", [], np.zeros((height, width, 3), np.uint8)
        self.timings: dict[str, float] = {}

    # ---- the browser ------------------------------------------------------------------------
    def _open_page(self) -> None:
        self.context = self.chromium.new_context(self.viewport)
        self.owner = self.chromium.browser  # a relaunched Chromium leaves this page behind
        self._new_tab()

    def _new_tab(self) -> None:
        """A fresh tab in this env's context: its history starts with the episode, so `back()`
        never walks into an earlier one (every episode of an env has the same address)."""
        if self.page is not None:
            with contextlib.suppress(Exception):
                self.page.close()
        self.page = self.context.new_page()
        self.page_crashed, self.loads = False, 0
        self.page.on("crash", self._on_crash)
        self.page.on("framenavigated", self._on_navigated)
        self.page.set_default_timeout(self.timeout_ms)
        self.page.set_default_navigation_timeout(self.timeout_ms)

    def _on_crash(self, page: Any) -> None:
        self.page_crashed = page is self.page  # its renderer died: every later action on it fails

    def _on_navigated(self, frame: Any) -> None:
        if frame.parent_frame is None:  # a new document in the tab, however it was asked for
            self.loads += 1

    @property
    def url(self) -> str:
        return f"{self.site.url}/s/{self.sid}/"

    def _goto_session(self) -> None:
        self.page.goto(self.url, wait_until="domcontentloaded")

    def _observe_page(self) -> None:
        start = time.perf_counter()
        snapshot = self.page.locator("body").aria_snapshot()
        self.view_text, self.elements = number_elements(ascii_text(snapshot))
        if self.screenshot:
            png = self.page.screenshot(type="png", caret="hide", animations="disabled")
            self.image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        self.timings["observe_ms"] = (time.perf_counter() - start) * 1e3

    @property
    def _crashed(self) -> bool:
        return (not self.chromium.browser.is_connected() or self.owner is not self.chromium.browser
                or self.page_crashed)

    def _reopen(self) -> None:
        """A new page in a live Chromium (relaunched if it died, by this env or another)."""
        if not self.chromium.browser.is_connected():
            self.chromium.relaunch()
        with contextlib.suppress(Exception):  # gone with its browser, or holding a crashed tab
            self.context.close()
        self.chromium.contexts -= 1
        self._open_page()

    def _recover(self, exc: Exception) -> None:
        """After a browser failure: relaunch Chromium if it died, reopen the page, look again."""
        if self._crashed:
            self._reopen()
            self._goto_session()
            self._observe_page()
            raise InvalidAction(f"the browser crashed and was restarted ({type(exc).__name__}); the store kept "
                                "its state: here is the page again") from None
        with contextlib.suppress(Exception):  # the browser lives: put the page back on the session
            self._goto_session()
            self._observe_page()
        raise InvalidAction(f"the browser action failed: {str(exc).splitlines()[0][:160]}") from None

    # ---- the TurnEnv hooks --------------------------------------------------------------------
    def _load_task(self, task_id: str | None) -> str:
        task_id = super()._load_task(task_id)
        self.site.sessions.add(self.sid, task_id, self.session)  # replaces the last episode's session
        self.timings = {}
        for attempt in range(2):
            try:
                start = time.perf_counter()
                if self.loads:
                    self._new_tab()
                self._goto_session()
                self.timings["load_ms"] = (time.perf_counter() - start) * 1e3
                self._observe_page()
                break
            except Exception:
                if attempt or not self._crashed:
                    raise
                self._reopen()
        return task_id

    def _apply(self, action: str) -> None:
        from playwright.sync_api import Error as PlaywrightError

        self.timings = {}
        start = time.perf_counter()
        try:
            if self._crashed:  # Chromium died since the last turn
                raise PlaywrightError("Chromium is gone")
            element = ELEMENT_VERB.match(action)
            if element:
                self._element_action(element.group(1).lower(), action[element.end():])
            else:
                self._store_action(action)
        except PlaywrightError as exc:
            self._recover(exc)
        self.timings["action_ms"] = (time.perf_counter() - start) * 1e3 - self.timings.get("load_ms", 0.0)
        self._observe_page()
        alert = re.search(r"^\s*- alert: (.*)$", self.view_text, re.MULTILINE) if "load_ms" in self.timings else None
        if alert:  # the page just loaded says the server refused what it sent (an empty search): nothing changed
            raise InvalidAction(alert.group(1).strip().strip('"'))

    def _store_action(self, action: str) -> None:
        """A WebShop action: checked by the store logic as in text mode, then done on the page."""
        with self.site.sessions.lock:  # the catalog's connection is shared with the server's threads
            trial = replace(self.session, results=list(self.session.results), options=dict(self.session.options))
            trial.act(action)  # InvalidAction here: text mode's message, and the page is untouched
        verb, argument = parse_action(action, ("search", "click"), "search[<query>] or click[<label>]")
        if verb == "search":
            box = self.page.get_by_role("searchbox")
            box.fill(trial.query)
            self._navigate(lambda: box.press("Enter"))
            return
        wanted = " ".join(argument.split()).casefold()
        element = next(e for e in self.session.page() if e.clickable and e.label.casefold() == wanted)
        if element.kind == "option" and element.selected:
            return  # choosing the chosen option again changes nothing, and a radio would not fire
        target = self.page.get_by_role(ROLE_OF_KIND[element.kind], name=element.label, exact=True).first
        self._navigate(target.click)

    def _navigate(self, act: Any) -> None:
        start = time.perf_counter()
        with self.page.expect_navigation(wait_until="domcontentloaded"):
            act()
        self.timings["load_ms"] = (time.perf_counter() - start) * 1e3

    def _element_action(self, verb: str, rest: str) -> None:
        close = rest.rfind(")")
        match = ARGUMENTS[verb].fullmatch(rest[:close]) if close >= 0 and not rest[close + 1:].strip() else None
        if match is None:
            raise InvalidAction(f"{verb} takes {USAGE[verb]}")
        if verb == "scroll":
            # By script, not the mouse wheel: a wheel scroll runs on its own and may land after the screenshot.
            down = match.group(1).lower() == "down"
            self.page.evaluate("dy => window.scrollBy({top: dy, behavior: 'instant'})",
                               (1 if down else -1) * int(self.viewport[1] * 0.8))
            return
        if verb == "back":
            if self.page.go_back(wait_until="domcontentloaded") is None or not self.page.url.startswith(self.url):
                self._goto_session()
                raise InvalidAction("there is no earlier page in this session")
            return
        number = int(match.group(1))
        if not 1 <= number <= len(self.elements):
            raise InvalidAction(f"there is no element [{number}] on this page; the numbers go from 1 to "
                                f"{len(self.elements)}")
        role, name, nth = self.elements[number - 1]
        target = self.page.get_by_role(role, name=name, exact=True).nth(nth)
        if verb == "type":
            if role not in ("searchbox", "textbox", "combobox"):
                raise InvalidAction(f"[{number}] is a {role}, not a text box: type into a searchbox or textbox")
            target.fill(_unquote(match.group(2)[1:-1]))
        elif verb == "press":
            key = match.group(2)[1:-1]
            if key == "Enter" and role in ("searchbox", "textbox"):
                self._navigate(lambda: target.press(key))
            else:  # Enter on a link or button, Space or an arrow on a radio: any key may load a page
                loads, start = self.loads, time.perf_counter()
                target.press(key)
                if self.loads != loads:  # Playwright waited for it to commit; a load is checked for an alert
                    self.page.wait_for_load_state("domcontentloaded")
                    self.timings["load_ms"] = (time.perf_counter() - start) * 1e3
        elif role in ("link", "button", "radio"):  # every one of these loads a page on this site
            if role == "radio" and target.is_checked():
                return
            self._navigate(target.click)
        else:
            target.click()

    def _text(self) -> str:
        return (f"Instruction: {self.instruction}\n{self.view_text}\nActions: search[<query>], click[<label>], "
                "click(<id>), type(<id>, \"<text>\"), press(<id>, \"<key>\"), scroll(down|up), back()")

    def _image(self) -> np.ndarray:
        if not self.screenshot:
            png = self.page.screenshot(type="png", caret="hide", animations="disabled")
            return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        return self.image.copy()

    def _actions(self) -> list[str]:
        return [*self.session.actions(), *ELEMENT_ACTIONS]

    def _extra_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"url": self.page.url if self.page is not None else ""}
        if self.report_timings:
            info["timings"] = dict(self.timings)
        return info

    def close(self) -> None:
        if self.sid is not None:
            self.site.sessions.release(self.sid)
            self.sid = None
        if self.context is not None:
            self.chromium.release(self.context)
            self.context = self.page = None
        super().close()
