"""Any turngym env id as an OpenEnv environment, on openenv-core's own server and client.

    python -m turngym.integrations.openenv turngym/Craft-v0 --port 8003 task=wood_pickaxe
    # or, in Python: serve("turngym/Craft-v0", port=8003, task="wood_pickaxe")

    from turngym.integrations.openenv import TurnGymAction, TurnGymEnvClient
    with TurnGymEnvClient(base_url="http://127.0.0.1:8003").sync() as env:
        result = env.reset(seed=0)                                 # optional: options={"task_id": ...}
        result = env.step(TurnGymAction(action="move north"))    # or env.step("move north")
        result.observation.text, result.reward, result.done, result.observation.info["error"]

A server holds one env id made with fixed `gym.make` kwargs; each WebSocket session of the
client (`/ws`, how OpenEnv's `EnvClient` talks) is an env of its own, so a session replays a
local `gym.make(env_id, **kwargs)` exactly: same seed and actions, same observations, rewards
and infos. The observation carries the env's `text`, its `image` (a base64 PNG, lossless;
`image_array()` decodes it), any other observation keys in `extra`, the step's `info` (also in
`metadata` where OpenEnv keeps it in-process; its wire format drops `metadata`), and
`terminated`/`truncated`, whose "or" is OpenEnv's `done`. An action is never an error: a bad one
comes back with `info["valid"] = False` and `info["error"]` saying why. OpenEnv's stateless HTTP
`/reset` and `/step` make a fresh env per request, so a `/step` there answers that the env must
be reset first in the same session.

openenv-core is imported on first use (its classes are built then), so turngym works without it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sys
from types import SimpleNamespace
from typing import Any

import gymnasium as gym

from turngym.envs.base import one_line
from turngym.integrations import require
from turngym.registry import describe, env_class
from turngym.serve.wire import decode, encode
from turngym.trajectory import jsonable

LAZY = ("TurnGymAction", "TurnGymObservation", "TurnGymState", "TurnGymEnvironment", "TurnGymEnvClient")
__all__ = [*LAZY, "create_app", "environment_class", "serve"]  # LAZY: built on first use (__getattr__)

NOT_RESET = ("the env has not been reset: reset it first in the same session (OpenEnv's HTTP /step makes a fresh "
             "env on every call; use the WebSocket client, TurnGymEnvClient)")


def __getattr__(name: str) -> Any:
    """The OpenEnv types, built when first asked for (importing openenv-core then)."""
    if name in LAZY:
        return getattr(_types(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def environment_class(env_id: str, **env_kwargs: Any) -> type:
    """A `TurnGymEnvironment` subclass whose instances are `gym.make(env_id, **env_kwargs)`: the
    no-argument factory that openenv's `HTTPEnvServer` and `create_app` take. Sessions may run
    concurrently; a thread-bound family (WebShopBrowser-v0) runs all its calls on one thread."""
    base = _types().TurnGymEnvironment
    try:
        describe(env_id)
    except KeyError:
        gym.spec(env_id)  # a plain Gymnasium id is fine; an unknown one raises gymnasium's error
        thread_bound = False
    else:
        thread_bound = bool(getattr(env_class(env_id), "thread_bound", False))
    name = "".join(ch for ch in env_id.rsplit("/", 1)[-1].split("-")[0] if ch.isalnum()) + "Environment"
    return type(name, (base,), {"__module__": __name__, "env_id": env_id, "env_kwargs": dict(env_kwargs),
                                "REQUIRES_SINGLE_THREAD_EXECUTOR": thread_bound})


def create_app(env_id: str, *, max_concurrent_envs: int = 64, session_timeout: float | None = 600.0,
               **env_kwargs: Any) -> Any:
    """openenv's FastAPI app (`openenv.core.env_server.create_app`) serving `env_id` made with
    `env_kwargs`: at most `max_concurrent_envs` sessions, each closed after `session_timeout`
    idle seconds (None: never)."""
    server = require("openenv.core.env_server", "openenv-core")
    types = _types()
    try:  # bad kwargs fail now, not at the first session
        gym.make(env_id, **{"disable_env_checker": True, **env_kwargs}).close()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot make {env_id} with {env_kwargs}: {one_line(str(exc.__cause__ or exc))}") from None
    config = server.ConcurrencyConfig(max_concurrent_envs=max_concurrent_envs, session_timeout=session_timeout)
    app = server.create_app(environment_class(env_id, **env_kwargs), types.TurnGymAction, types.TurnGymObservation,
                            env_name=env_id.rsplit("/", 1)[-1], concurrency_config=config)
    app.add_middleware(QuietDisconnects)
    return app


class QuietDisconnects:
    """ASGI middleware: a WebSocket session that the client closed cleanly ends quietly. openenv-core
    0.3 lets the `WebSocketDisconnect` of its closing handshake escape the app, and uvicorn logs
    each one as an error with a traceback (huggingface/OpenEnv#1159)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        from starlette.websockets import WebSocketDisconnect

        with contextlib.suppress(WebSocketDisconnect):
            await self.app(scope, receive, send)


def serve(env_id: str, host: str = "127.0.0.1", port: int = 8003, *, max_concurrent_envs: int = 64,
          session_timeout: float | None = 600.0, **env_kwargs: Any) -> None:
    """Serve `env_id` as an OpenEnv environment until interrupted."""
    import uvicorn

    app = create_app(env_id, max_concurrent_envs=max_concurrent_envs, session_timeout=session_timeout, **env_kwargs)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


@functools.cache
def _types() -> SimpleNamespace:
    """Define the OpenEnv types on openenv-core's base classes (imported here, once)."""
    require("openenv.core", "openenv-core")
    from openenv.core import EnvClient
    from openenv.core.client_types import StepResult
    from openenv.core.env_server import Action, Environment, Observation, State
    from openenv.core.env_server.types import EnvironmentMetadata
    from pydantic import Field

    class TurnGymAction(Action):
        """One turn's action string, in the env's grammar (any string is accepted)."""

        action: str = Field(description="the action, e.g. `move north` or `search[red shoes]`")

    class TurnGymObservation(Observation):
        """A turngym observation and step info; `done` is `terminated or truncated`."""

        text: str = Field(default="", description="obs['text']: everything the agent needs this turn")
        image: str | None = Field(default=None, description="obs['image'] as a base64 PNG, if the env has one")
        extra: dict[str, Any] = Field(default_factory=dict, description="other observation keys (wire format)")
        info: dict[str, Any] = Field(default_factory=dict, description="the env's info: task_id, actions, valid, "
                                                                       "error, and at the end success and score")
        terminated: bool = Field(default=False, description="the task ended (success, final answer, death)")
        truncated: bool = Field(default=False, description="the turn budget ran out")

        def image_array(self) -> Any:
            """The image as a uint8 H x W x 3 array (None without one)."""
            return None if self.image is None else decode({"__png__": self.image})

    class TurnGymState(State):
        """The session's episode: env id, task id, seed, turn and whether it is over."""

        env_id: str = ""
        task_id: str = ""
        seed: int | None = None
        done: bool = False

    class TurnGymEnvironment(Environment):
        """`gym.make(env_id, **env_kwargs)` behind OpenEnv's Environment API (see `environment_class`)."""

        SUPPORTS_CONCURRENT_SESSIONS = True
        env_id: str = ""
        env_kwargs: dict[str, Any] = {}  # noqa: RUF012  (set per subclass, never mutated)

        def __init__(self) -> None:
            super().__init__()
            if not self.env_id:
                raise TypeError("make the class with environment_class(env_id, **kwargs)")
            # No passive checker, as in turngym's env server: it would break the env for good once a
            # reset raises (bad options); it changes no output.
            self.env = gym.make(self.env_id, **{"disable_env_checker": True, **self.env_kwargs})
            self._state = TurnGymState(env_id=self.env_id)
            self._obs: dict[str, Any] = {}

        def reset(self, seed: int | None = None, episode_id: str | None = None,
                  options: dict[str, Any] | None = None, **kwargs: Any) -> TurnGymObservation:
            """Start an episode: `seed` and `options` as in `env.reset` (`{"task_id": ...}`, or
            `{"split": ..., "index": ...}`)."""
            if kwargs:
                raise ValueError(f"unknown reset argument(s) {sorted(kwargs)}: use seed, episode_id and options")
            self._obs, info = self.env.reset(seed=seed, options=options)
            self._state = TurnGymState(env_id=self.env_id, episode_id=episode_id, step_count=0,
                                       task_id=str(info.get("task_id", "")), seed=seed)
            return self._observation(self._obs, info, None, False, False)

        def step(self, action: TurnGymAction, timeout_s: float | None = None, **kwargs: Any) -> TurnGymObservation:
            """One turn; a bad action comes back in `info["error"]`, never as an exception."""
            if not self._obs:
                return self._observation({"text": ""}, {"valid": False, "error": NOT_RESET}, 0.0, False, True)
            self._obs, reward, terminated, truncated, info = self.env.step(action.action)
            self._state.step_count += 1
            self._state.done = bool(terminated or truncated)
            return self._observation(self._obs, info, float(reward), bool(terminated), bool(truncated))

        @property
        def state(self) -> TurnGymState:
            return self._state

        def get_metadata(self) -> EnvironmentMetadata:
            try:
                description, readme = describe(self.env_id), inspect.getdoc(env_class(self.env_id))
            except KeyError:
                description, readme = self.env_id, None
            return EnvironmentMetadata(name=self.env_id, description=description, readme_content=readme,
                                       version=_version())

        def close(self) -> None:
            self.env.close()

        @staticmethod
        def _observation(obs: dict[str, Any], info: dict[str, Any], reward: float | None, terminated: bool,
                         truncated: bool) -> TurnGymObservation:
            info = jsonable(info)
            image = obs.get("image")
            return TurnGymObservation(
                text=str(obs.get("text", "")), image=None if image is None else encode(image)["__png__"],
                extra={k: encode(v) for k, v in obs.items() if k not in ("text", "image")}, info=info,
                terminated=terminated, truncated=truncated, done=terminated or truncated, reward=reward,
                metadata=info)

    class TurnGymEnvClient(EnvClient[TurnGymAction, TurnGymObservation, TurnGymState]):
        """OpenEnv's WebSocket client for a turngym env server: async by default, `.sync()` for
        blocking calls; `step` takes a `TurnGymAction` or a plain string."""

        def _step_payload(self, action: TurnGymAction | str) -> dict[str, Any]:
            return (TurnGymAction(action=action) if isinstance(action, str) else action).model_dump()

        def _parse_result(self, payload: dict[str, Any]) -> StepResult[TurnGymObservation]:
            data = dict(payload.get("observation", {}))
            observation = TurnGymObservation(**data, done=payload.get("done", False), reward=payload.get("reward"),
                                             metadata=data.get("info", {}))
            return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

        def _parse_state(self, payload: dict[str, Any]) -> TurnGymState:
            return TurnGymState(**payload)

    classes = (TurnGymAction, TurnGymObservation, TurnGymState, TurnGymEnvironment, TurnGymEnvClient)
    for cls in classes:
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return SimpleNamespace(**{cls.__name__: cls for cls in classes})


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("turngym")
    except PackageNotFoundError:
        return None


def _main(argv: list[str]) -> None:
    """`python -m turngym.integrations.openenv ENV_ID [--host H] [--port P] [key=json_value ...]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m turngym.integrations.openenv",
                                     description="Serve a turngym env id as an OpenEnv environment.")
    parser.add_argument("env_id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("kwargs", nargs="*", help="gym.make kwargs as key=value (JSON values, else strings)")
    args = parser.parse_intermixed_args(argv)
    kwargs: dict[str, Any] = {}
    for item in args.kwargs:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"kwargs are key=value, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    serve(args.env_id, args.host, args.port, **kwargs)


if __name__ == "__main__":
    _main(sys.argv[1:])
