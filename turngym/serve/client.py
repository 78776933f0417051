"""RemoteEnv: a turngym env served over HTTP by `turngym serve env`, used like `gym.make(...)`.

    env = RemoteEnv("http://127.0.0.1:8002", "turngym/Craft-v0", task="wood_pickaxe")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("move north")
    env.close()

The env itself lives in the server (`turngym.serve.env_server`); this client holds one session of
it and rebuilds its spaces exactly (the wire format is `turngym.serve.wire`), so a remote
trajectory equals a local one for the same seed and actions.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, ClassVar

import gymnasium as gym
import httpx
from gymnasium.envs.registration import EnvSpec

from turngym.serve.wire import decode, space_from_json
from turngym.trajectory import jsonable


class RemoteEnvError(RuntimeError):
    """The env server refused a request or could not be reached; the message says what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, None when the server was not reached


class RemoteEnv(gym.Env[dict, str]):
    """A session of `env_id` on the env server at `url`, made with `kwargs` as `gym.make` would.

    `observation_space`, `action_space`, `metadata` and every observation, reward and info are
    the server env's (infos as JSON: tuples arrive as lists, numpy values as Python ones).
    `render_mode` is passed to the server env ("ansi" or "rgb_array" where its metadata lists
    them). `np_random` is this client's own generator, seeded by `reset(seed)` as in any gymnasium
    env; the env's randomness lives on the server. `http_timeout` bounds each request in seconds.
    `close()` (or leaving a `with` block) ends the session; one left open expires after the
    server's idle timeout. Failures raise `RemoteEnvError`.
    """

    # What a remote env may offer; each instance then holds its server env's metadata.
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"]}

    def __init__(self, url: str, env_id: str, *, render_mode: str | None = None, http_timeout: float = 60.0,
                 **kwargs: Any) -> None:
        self.url = url.rstrip("/")
        self.session_id: str | None = None
        self.http = httpx.Client(base_url=self.url, timeout=http_timeout)
        env_kwargs = kwargs if render_mode is None else {**kwargs, "render_mode": render_mode}
        try:
            created = self._request("POST", "/sessions", {"env_id": env_id, "kwargs": env_kwargs})
        except RemoteEnvError:
            self.http.close()
            raise
        self.session_id = created["session_id"]
        self.env_id = env_id
        self.observation_space = space_from_json(created["observation_space"])
        self.action_space = space_from_json(created["action_space"])
        self.metadata = created["metadata"]
        self.render_mode = render_mode
        # A spec makes `gym.make(env.spec)` (and gymnasium's checker) open another session like this one.
        self.spec = EnvSpec(env_id, entry_point="turngym.serve.client:RemoteEnv",
                            kwargs={"url": self.url, "env_id": env_id, "http_timeout": http_timeout, **env_kwargs})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        result = self._request("POST", f"/sessions/{self.session_id}/reset", {"seed": seed, "options": options})
        return decode(result["observation"]), result["info"]

    def step(self, action: str):
        result = self._request("POST", f"/sessions/{self.session_id}/step", {"action": action})
        return (decode(result["observation"]), result["reward"], result["terminated"], result["truncated"],
                result["info"])

    def render(self) -> Any:
        if self.render_mode is None:
            return None
        return decode(self._request("GET", f"/sessions/{self.session_id}/render")["render"])

    def close(self) -> None:
        """End the session on the server; calling it again does nothing."""
        if self.session_id is not None:
            with contextlib.suppress(RemoteEnvError):  # expired already, or the server is gone: it is over
                self._request("DELETE", f"/sessions/{self.session_id}")
            self.session_id = None
        self.http.close()
        super().close()

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if self.session_id is None and path != "/sessions":
            raise RemoteEnvError("this RemoteEnv is closed: create a new one")
        # json.dumps escapes to ASCII, so an action with any character (even a lone surrogate) can
        # travel; jsonable lets numpy values in options through.
        content = None if body is None else json.dumps(jsonable(body))
        try:
            response = self.http.request(method, path, content=content,
                                         headers={"content-type": "application/json"} if content else None)
        except httpx.TimeoutException:
            raise RemoteEnvError(f"the env server at {self.url} did not answer {method} {path} within "
                                 f"{self.http.timeout.read} s: pass a larger http_timeout") from None
        except httpx.TransportError as exc:
            raise RemoteEnvError(f"cannot reach the env server at {self.url} ({type(exc).__name__}: {exc}): "
                                 "start it with `turngym serve env` or check the URL") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_error or not isinstance(data, dict):
            message = data.get("error") if isinstance(data, dict) else None
            raise RemoteEnvError(message or f"the env server answered {method} {path} with HTTP "
                                 f"{response.status_code} and no error message: check the URL", response.status_code)
        return data
