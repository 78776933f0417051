"""The env server: every registered turngym env over HTTP, for trainers in other processes or machines.

    turngym serve env --port 8002
    env = RemoteEnv("http://127.0.0.1:8002", "turngym/Craft-v0", task="wood_pickaxe")   # turngym.serve

Endpoints (JSON; observations and spaces in the wire format of `turngym.serve.wire`):

    GET    /envs                   registered ids with their one-line descriptions
    POST   /sessions               {"env_id", "kwargs"} -> session_id, observation_space, action_space, metadata
    POST   /sessions/{id}/reset    {"seed", "options"} -> observation, info
    POST   /sessions/{id}/step     {"action"} -> observation, reward, terminated, truncated, info
    GET    /sessions/{id}/render   {"render"}: the env's render in its render_mode
    DELETE /sessions/{id}          closes the env
    GET    /sessions               ids, env ids, idle seconds
    GET    /health                 session count, server memory

A session is `gym.make(env_id, **kwargs)`, so a remote trajectory equals a local one. Every error
answers `{"error": "<one sentence naming the fix>"}` and the server keeps serving; an action never
is an error (the env reports it in `info["valid"]` and `info["error"]`). A session left idle for
`idle_timeout` seconds is closed; at most `max_sessions` live at once.

Threads: endpoints run in the thread pool, so sessions step in parallel, and a lock per session
keeps each session's calls in order. Playwright's sync API (WebShopBrowser-v0) may only be called
from the thread that started it, and the process shares one Chromium among its browser envs, so
every call into a thread-bound env (make, reset, step, render, close) runs on one dedicated
thread: browser sessions take turns on it while all others step in parallel.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import gymnasium as gym
import psutil
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from turngym.envs.base import one_line
from turngym.registry import describe, env_class, list_envs
from turngym.serve.wire import encode, space_to_json
from turngym.trajectory import jsonable

T = TypeVar("T")
MAX_BODY = 1 << 20  # bytes in a request: an action is at most a few thousand characters, kwargs a few fields

EXAMPLES = {"sessions": '{"env_id": "turngym/Craft-v0", "kwargs": {"task": "wood_pickaxe"}}',
            "reset": '{"seed": 0, "options": null}', "step": '{"action": "move north"}'}


class ServiceError(Exception):
    """A request the service refuses: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class JSON(JSONResponse):
    """JSON escaped to ASCII: an error message or observation echoing a lone surrogate of an
    action still encodes (Starlette's UTF-8 encoding would fail on it)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error(status: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status)


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    env_id: str
    kwargs: dict[str, Any] = {}  # pydantic copies a field's default for every request


class ResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seed: int | None = None
    options: dict[str, Any] | None = None


class StepBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    action: str


class Session:
    """One env of the service, with the lock that keeps its calls in order and the thread they run on."""

    def __init__(self, env_id: str, env: gym.Env, run: Callable[[Callable[[], Any]], Any]) -> None:
        self.id = secrets.token_hex(8)
        self.env_id, self.env, self.run = env_id, env, run
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.was_reset = self.closed = False

    def call(self, fn: Callable[[gym.Env], T], *, needs_reset: bool = True) -> T:
        """`fn(env)` under the session lock, on the env's thread."""
        with self.lock:
            if self.closed:  # expired or deleted while this request waited
                raise ServiceError(404, f"session {self.id} was closed: create a new one with POST /sessions")
            if needs_reset and not self.was_reset:
                raise ServiceError(400, f"session {self.id} has not been reset: POST /sessions/{self.id}/reset first")
            try:
                return self.run(lambda: fn(self.env))
            finally:
                self.last_used = time.monotonic()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                with suppress(Exception):  # a broken env must not keep the others from closing
                    self.run(self.env.close)


class Sessions:
    """The live sessions by id: creation under the cap, lookup, idle expiry."""

    def __init__(self, max_sessions: int, idle_timeout: float) -> None:
        self.max_sessions, self.idle_timeout = max_sessions, idle_timeout
        self.by_id: dict[str, Session] = {}
        self.pending = 0  # sessions being made, counted against the cap
        self.lock = threading.Lock()
        self.bound_thread = ThreadPoolExecutor(1, thread_name_prefix="turngym-env-bound")

    def _runner(self, env_id: str) -> Callable[[Callable[[], T]], T]:
        if getattr(env_class(env_id), "thread_bound", False):  # e.g. Playwright's sync API (WebShopBrowser-v0)
            return lambda fn: self.bound_thread.submit(fn).result()
        return lambda fn: fn()

    def create(self, env_id: str, kwargs: dict[str, Any]) -> Session:
        if env_id not in list_envs():
            raise ServiceError(404, f"unknown env id {env_id!r}: GET /envs lists the registered ids")
        self.sweep()
        with self.lock:
            if len(self.by_id) + self.pending >= self.max_sessions:
                raise ServiceError(429, f"the server already holds its maximum of {self.max_sessions} sessions: "
                                        "close finished ones (DELETE /sessions/{id}) or restart it with a larger "
                                        "--max-sessions")
            self.pending += 1
        try:
            run = self._runner(env_id)
            try:
                # No passive checker: gymnasium 1.4's breaks the env for good once a first reset raises
                # (a bad option), and its warnings would only reach the server log.
                env = run(lambda: gym.make(env_id, **{"disable_env_checker": True, **kwargs}))
            except (TypeError, ValueError, OverflowError, FileNotFoundError) as exc:  # the kwargs, named by the env
                if isinstance(exc, TypeError):  # gym.make wraps the constructor's own, clearer TypeError
                    raise ServiceError(400, f"cannot make {env_id}: {one_line(str(exc.__cause__ or exc))}: check "
                                            "the kwargs against its class docstring") from None
                raise ServiceError(400, f"cannot make {env_id}: {one_line(str(exc))}") from None
            session = Session(env_id, env, run)
            with self.lock:
                self.by_id[session.id] = session
        finally:
            with self.lock:
                self.pending -= 1
        return session

    def get(self, sid: str) -> Session:
        """The session `sid`, marked as used now; 404 if unknown or idle too long."""
        with self.lock:
            session = self.by_id.get(sid)
            expired = session is not None and self._idle(session)
            if expired:
                del self.by_id[sid]
            elif session is not None:
                session.last_used = time.monotonic()
        if expired:
            session.close()
        if session is None or expired:
            raise ServiceError(404, f"unknown session {sid!r} (closed, or idle for more than {self.idle_timeout:g} s):"
                                    " create a new one with POST /sessions")
        return session

    def remove(self, sid: str) -> None:
        session = self.get(sid)
        with self.lock:
            self.by_id.pop(sid, None)
        session.close()

    def _idle(self, session: Session) -> bool:
        return not session.lock.locked() and time.monotonic() - session.last_used > self.idle_timeout

    def sweep(self) -> None:
        """Close every session idle for longer than `idle_timeout` (a busy one is never idle)."""
        with self.lock:
            expired = [s for s in self.by_id.values() if self._idle(s)]
            for session in expired:
                del self.by_id[session.id]
        for session in expired:
            session.close()

    def close_all(self) -> None:
        with self.lock:
            sessions, self.by_id = list(self.by_id.values()), {}
        for session in sessions:
            session.close()
        self.bound_thread.shutdown()


def create_app(max_sessions: int = 256, idle_timeout: float = 600.0) -> FastAPI:
    """The service app: at most `max_sessions` envs at once, each closed after `idle_timeout`
    seconds without a request."""
    if max_sessions < 1 or not idle_timeout > 0:
        raise ValueError(f"max_sessions must be at least 1 and idle_timeout positive, got {max_sessions} and "
                         f"{idle_timeout}")
    store = Sessions(max_sessions, idle_timeout)
    process = psutil.Process()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sweep_forever() -> None:  # frees idle envs even when no request comes
            while True:
                await asyncio.sleep(min(idle_timeout / 2, 30.0))
                await run_in_threadpool(store.sweep)

        sweeper = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await run_in_threadpool(store.close_all)

    app = FastAPI(title="turngym env service", lifespan=lifespan)
    app.state.sessions = store

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSON:
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSON:
        example = EXAMPLES.get(request.url.path.rstrip("/").rsplit("/", 1)[-1], "{}")
        problem = exc.errors()[0]
        if problem["type"] == "json_invalid":
            return error(400, f"the request body is not valid JSON: send a JSON object such as {example}")
        field = ".".join(str(part) for part in problem["loc"][1:]) or "the body"
        return error(422, f"invalid request body ({field}: {problem['msg']}): send a JSON object such as {example}")

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> JSON:
        if exc.status_code in (404, 405):
            return error(exc.status_code, f"there is no endpoint {request.method} {request.url.path}: see "
                                          "GET /docs for the endpoints")
        return error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Any:
        """Refuse a body past MAX_BODY before reading it, and answer a crash with the 500 here:
        Starlette's last-resort handler answers, then re-raises, and the server then drops the
        keep-alive connection, so the client's next call would fail as if the server were gone."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return error(413, f"the request body has {int(length):,} bytes; the limit is {MAX_BODY:,}: send "
                              "a shorter action or fewer kwargs")
        try:
            return await call_next(request)
        except Exception as exc:
            return error(500, f"the server failed on {request.method} {request.url.path} ({type(exc).__name__}: "
                              f"{one_line(str(exc))}): report it with the server log")

    @app.get("/envs")
    def envs() -> JSON:
        return JSON({"envs": [{"id": env_id, "description": describe(env_id)} for env_id in list_envs()]})

    @app.post("/sessions")
    def create(body: CreateBody) -> JSON:
        session = store.create(body.env_id, body.kwargs)
        env = session.env
        return JSON({"session_id": session.id, "env_id": session.env_id,
                     "observation_space": space_to_json(env.observation_space),
                     "action_space": space_to_json(env.action_space), "metadata": jsonable(env.metadata),
                     "render_mode": env.render_mode})

    @app.get("/sessions")
    def sessions() -> JSON:
        now = time.monotonic()
        with store.lock:
            live = list(store.by_id.values())
        return JSON({"sessions": [{"session_id": s.id, "env_id": s.env_id, "idle_seconds": now - s.last_used}
                                  for s in live]})

    @app.post("/sessions/{sid}/reset")
    def reset(sid: str, body: ResetBody | None = None) -> JSON:
        body = body or ResetBody()
        session = store.get(sid)

        def do_reset(env: gym.Env) -> tuple[Any, dict[str, Any]]:
            try:
                result = env.reset(seed=body.seed, options=body.options)
            except (TypeError, ValueError, OverflowError, gym.error.Error) as exc:  # a bad seed or options (1e400)
                raise ServiceError(400, f"cannot reset {session.env_id}: {one_line(str(exc))}") from None
            session.was_reset = True
            return result

        obs, info = session.call(do_reset, needs_reset=False)
        return JSON({"observation": encode(obs), "info": jsonable(info)})

    @app.post("/sessions/{sid}/step")
    def step(sid: str, body: StepBody) -> JSON:
        session = store.get(sid)
        obs, reward, terminated, truncated, info = session.call(lambda env: env.step(body.action))
        return JSON({"observation": encode(obs), "reward": float(reward), "terminated": bool(terminated),
                     "truncated": bool(truncated), "info": jsonable(info)})

    @app.get("/sessions/{sid}/render")
    def render(sid: str) -> JSON:
        return JSON({"render": encode(store.get(sid).call(lambda env: env.render()))})

    @app.delete("/sessions/{sid}")
    def delete(sid: str) -> JSON:
        store.remove(sid)
        return JSON({"session_id": sid, "closed": True})

    @app.get("/health")
    def health() -> JSON:
        children = 0
        for child in process.children(recursive=True):  # Chromium and Playwright's driver, if running
            with suppress(psutil.Error):
                children += child.memory_info().rss
        return JSON({"status": "ok", "sessions": len(store.by_id), "max_sessions": max_sessions,
                     "idle_timeout": idle_timeout, "rss_bytes": process.memory_info().rss,
                     "children_rss_bytes": children})

    return app


def serve(host: str = "127.0.0.1", port: int = 8002, max_sessions: int = 256, idle_timeout: float = 600.0) -> None:
    """Serve every registered env until interrupted (what `turngym serve env` runs). No access
    log: a trainer makes many step requests a second."""
    uvicorn.run(create_app(max_sessions, idle_timeout), host=host, port=port, log_level="info", access_log=False)
