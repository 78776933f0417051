"""The WebShop store as a web site: real HTML pages over the same `Session` state machine.

    turngym serve webshop --port 8000

Endpoints run in Starlette's thread pool (searching the full catalog takes milliseconds);
`/` lists a few tasks and starts sessions; `/start?task=ws-12` opens a new session for a task
and redirects to `/s/<session id>/`, its current page. Every button, product link and option on
a page leads to `/s/<id>/click?label=...`, the search form to `/s/<id>/search?q=...`; both apply
the action and redirect back to the page. Many sessions live side by side, each under its own id,
and a new session for the same task always starts from the same page.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from html import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from turngym.envs.base import InvalidAction
from turngym.envs.webshop import render
from turngym.envs.webshop.catalog import Catalog
from turngym.envs.webshop.reward import score
from turngym.envs.webshop.store import Session
from turngym.envs.webshop.tasks import goal_index, splits_for

MAX_SESSIONS = 10_000  # the oldest sessions are forgotten beyond this


class Sessions:
    """The live sessions of a site, by id; the browser env adds its own (`app.state.sessions`)."""

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[str, Session]] = {}
        self.errors: dict[str, str] = {}  # an invalid action's message, shown on the next page
        self.claimed: set[str] = set()
        self.lock = threading.Lock()

    def claim(self) -> str:
        """The lowest free id `envN`, held until `release`: a browser env keeps one for its life,
        so its URLs depend only on how many envs are open, not on chance."""
        with self.lock:
            n = 1
            while f"env{n}" in self.claimed:
                n += 1
            self.claimed.add(f"env{n}")
            return f"env{n}"

    def release(self, sid: str) -> None:
        self.remove(sid)
        with self.lock:
            self.claimed.discard(sid)

    def add(self, sid: str, task: str, session: Session) -> None:
        with self.lock:
            self.by_id[sid] = (task, session)
            while len(self.by_id) > MAX_SESSIONS:
                self.by_id.pop(next(iter(self.by_id)))

    def remove(self, sid: str) -> None:
        with self.lock:
            self.by_id.pop(sid, None)
            self.errors.pop(sid, None)


def create_app(catalog: Catalog) -> Starlette:
    store = Sessions()
    sessions, errors, lock = store.by_id, store.errors, store.lock

    def in_session(handler: Callable[[Request, str, str, Session], Response]) -> Callable[[Request], Response]:
        """An endpoint under /s/{sid}/: the session is looked up (404 if unknown) and passed on."""
        def endpoint(request: Request) -> Response:
            sid = request.path_params["sid"]
            if sid not in sessions:
                return HTMLResponse("unknown session: start one at /", status_code=404)
            return handler(request, sid, *sessions[sid])
        return endpoint

    def index(request: Request) -> Response:
        items = []
        for task in splits_for(catalog)["test"][:20]:
            instruction = escape(catalog.goal(goal_index(task, catalog))["instruction_text"])
            items.append(f'<li><a href="/start?task={task}">{task}</a>: {instruction}</li>')
        return HTMLResponse("<!doctype html><title>WebShop</title><h1>WebShop</h1><p>Pick a task (or open "
                            f"/start?task=ws-&lt;k&gt;):</p><ul>{''.join(items)}</ul>")

    def start(request: Request) -> Response:
        task = request.query_params.get("task", "ws-0")
        try:
            goal = catalog.goal(goal_index(task, catalog))
        except ValueError as exc:
            return HTMLResponse(escape(str(exc)), status_code=400)
        sid = secrets.token_hex(8)
        store.add(sid, task, Session(catalog, goal))
        return RedirectResponse(f"/s/{sid}/", status_code=303)

    @in_session
    def page(request: Request, sid: str, task: str, session: Session) -> Response:
        html = render.html(session.instruction, session.page(), base=f"/s/{sid}")
        error = errors.pop(sid, None)
        if error:
            html = html.replace("<main>", f'<main><p role="alert" class="error">{escape(error)}</p>', 1)
        return HTMLResponse(html, headers={"X-Task-Id": task})

    def action(make: Callable[[Request], str]) -> Callable[[Request], Response]:
        @in_session
        def endpoint(request: Request, sid: str, task: str, session: Session) -> Response:
            with lock:
                try:
                    session.act(make(request))
                except InvalidAction as exc:
                    errors[sid] = str(exc)
            return RedirectResponse(f"/s/{sid}/", status_code=303)
        return endpoint

    @in_session
    def state(request: Request, sid: str, task: str, session: Session) -> Response:
        result = score(session.goal, session.purchased) if session.purchased else None
        return JSONResponse({"task_id": task, "page": session.view, "actions": session.actions(),
                             "done": session.done, "score": result})

    app = Starlette(routes=[
        Route("/", index),
        Route("/start", start),
        Route("/s/{sid}/", page),
        Route("/s/{sid}/click", action(lambda r: f"click[{r.query_params.get('label', '')}]")),
        Route("/s/{sid}/search", action(lambda r: f"search[{r.query_params.get('q', '')}]")),
        Route("/s/{sid}/state", state),
    ])
    app.state.sessions = store
    return app
