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


def create_app(catalog: Catalog) -> Starlette:
    sessions: dict[str, tuple[str, Session]] = {}
    errors: dict[str, str] = {}
    lock = threading.Lock()

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
        with lock:
            sessions[sid] = (task, Session(catalog, goal))
            while len(sessions) > MAX_SESSIONS:
                sessions.pop(next(iter(sessions)))
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

    return Starlette(routes=[
        Route("/", index),
        Route("/start", start),
        Route("/s/{sid}/", page),
        Route("/s/{sid}/click", action(lambda r: f"click[{r.query_params.get('label', '')}]")),
        Route("/s/{sid}/search", action(lambda r: f"search[{r.query_params.get('q', '')}]")),
        Route("/s/{sid}/state", state),
    ])
