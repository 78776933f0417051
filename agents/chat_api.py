"""`openai:` agents: any OpenAI-compatible chat-completions server (vLLM, SGLang, OpenAI, the
built-in `turngym serve lm`), over plain HTTP with httpx.

The images-as-data-URLs encoding at the end is the one part of the chat wire format that the
built-in server (`turngym.serve.lm_server`) must read back exactly; it lives here, not in the
server, because agents may not import from `turngym.serve` (servers sit above agents).
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import gymnasium as gym
import httpx
import numpy as np
from PIL import Image

from turngym.agents.lm import DEFAULT_CONTEXT, Completion, LMAgent, Message, check_flag, content_text

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF = 60.0  # seconds: the longest wait between two tries, whatever Retry-After asks


class OpenAIAgent(LMAgent):
    """Plays an env through `POST {base_url}/chat/completions`.

    Each turn sends a per-turn `seed` (servers that honour it, such as vLLM, then replay an
    episode exactly), retries 429, 5xx and connection errors with exponential backoff (honouring
    Retry-After) `retries` times, and records the server's `usage` and, with `logprobs=True`, its
    token log-probs. The API key, if any, is read from the env var named by `api_key_env`.
    `images=True` sends the observation's image as a base64 PNG `image_url` part. Without
    `max_context`, the prompt budget is the server's `max_model_len` (vLLM lists it under
    /models) less `max_new_tokens`, else 8192 tokens; tokens are estimated at 3 characters each
    until the server's `usage` shows how its tokenizer counts.

    `prompt`, `example`, `prefill` and `resample` choose the prompt style as for `hf:` (see `LMAgent`), except
    that the model's size is unknown here, so `prompt=auto` is the full prompt, and that a prefill
    is not sent (chat-completions servers do not generally continue an assistant turn): with
    `prefill=Action:` the system message still asks for a one-line `Action:` reply, and the reply
    is parsed as any other.
    """

    def __init__(self, env: gym.Env, model: str, base_url: str, *, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, max_context: int | None = None, images: bool | None = None,
                 timeout: float = 60.0, retries: int = 3, api_key_env: str = "OPENAI_API_KEY",
                 logprobs: bool = False, prompt: str = "auto", example: bool | None = None,
                 prefill: str | None = None, resample: int | None = None) -> None:
        super().__init__(env, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         max_context=max_context, images=images, prompt=prompt, example=example, prefill=prefill,
                         resample=resample)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        if not isinstance(api_key_env, str) or not api_key_env:
            raise ValueError(f"api_key_env must name an environment variable, got {api_key_env!r}")
        check_flag("logprobs", logprobs)
        self.model, self.base_url = model, base_url.rstrip("/")
        self.retries, self.logprobs = retries, bool(logprobs)
        headers = {"Authorization": f"Bearer {os.environ[api_key_env]}"} if os.environ.get(api_key_env) else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)
        self.server_context: int | None = None  # looked up on the first turn
        self.chars_per_token = 3.0  # until the server's usage tells how its tokenizer counts

    def complete(self, messages: list[Message], image: np.ndarray | None, seed: int) -> Completion:
        return self._chat(messages, image, seed, self.temperature)

    def complete_turn(self, messages: list[Message], image: np.ndarray | None, seed: int,
                      temperature: float, actions: Sequence[str] = ()) -> Completion:
        return self._chat(messages, image, seed, temperature)  # no prefill: see the class docstring

    def _chat(self, messages: list[Message], image: np.ndarray | None, seed: int, temperature: float) -> Completion:
        chat: list[dict[str, Any]] = [{**m, "content": wire_content(m["content"])} for m in messages]
        if image is not None:
            last = chat[-1]["content"]
            chat[-1]["content"] = [image_url_part(image),
                                   *(last if isinstance(last, list) else [{"type": "text", "text": last}])]
        body: dict[str, Any] = {"model": self.model, "messages": chat, "temperature": temperature,
                                "top_p": self.top_p, "max_tokens": self.max_new_tokens, "seed": seed}
        if self.logprobs:
            body["logprobs"] = True
        reply = self._post("/chat/completions", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            error = reply.get("error") if isinstance(reply, dict) else None  # some servers answer errors with 200
            if error:
                message = error.get("message") if isinstance(error, dict) else error
                raise RuntimeError(f"{self.base_url} answered with an error: {str(message)[:300]}") from None
            raise RuntimeError(f"{self.base_url} sent a reply with no choices[0].message.content: check that it "
                               "is an OpenAI-compatible chat-completions server") from None
        tokens = ((choice.get("logprobs") or {}).get("content") or []) if self.logprobs else []
        usage = {k: int(v) for k, v in (reply.get("usage") or {}).items() if isinstance(v, (int, float))}
        # calibrate the estimate, with a 10% margin, from what was just counted (text alone: an image's
        # tokens in the count would make every character look like a token)
        if usage.get("prompt_tokens") and image is None:
            sent = sum(len(content_text(m["content"])) for m in messages)
            self.chars_per_token = min(max(0.9 * sent / usage["prompt_tokens"], 1.0), 6.0)
        return Completion(text, logprobs=[float(t["logprob"]) for t in tokens] or None, usage=usage,
                          finish_reason=choice.get("finish_reason"))

    def estimate_tokens(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def context_budget(self) -> int:
        if self.max_context is not None:
            return self.max_context
        if self.server_context is None:
            self.server_context = self._lookup_context() or DEFAULT_CONTEXT + self.max_new_tokens
        return max(self.server_context - self.max_new_tokens, 64)

    def _lookup_context(self) -> int | None:
        """The served model's context length, where the server lists it (vLLM: `max_model_len`)."""
        try:
            response = self.client.get(f"{self.base_url}/models")
            models = response.json().get("data", []) if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            return None  # optional: the default budget does
        length = next((m.get("max_model_len") for m in models if isinstance(m, dict) and m.get("id") == self.model),
                      None)
        return int(length) if isinstance(length, int) else None

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + route
        problem = ""
        for attempt in range(self.retries + 1):
            wait = min(2.0 ** attempt, MAX_BACKOFF)
            try:
                response = self.client.post(url, json=body)
            except httpx.TransportError as exc:  # connection refused, timeout, dropped connection
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise RuntimeError(f"{url} answered with something other than JSON: point the base URL at "
                                           "an OpenAI-compatible server (it usually ends in /v1)") from None
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in RETRY_STATUS:
                    raise RuntimeError(f"{url} refused the request ({problem}); fix the model name or options")
                wait = _retry_after(response, wait)
            if attempt < self.retries:
                time.sleep(wait)
        tries = self.retries + 1
        raise RuntimeError(f"{url} failed {tries} {'try' if tries == 1 else 'tries'} (last: {problem}); check that "
                           "the server is up, or raise -o retries / -o timeout")


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text[:200] or response.reason_phrase)


def _retry_after(response: httpx.Response, default: float) -> float:
    """Seconds the server asks to wait (Retry-After: seconds or an HTTP date), capped; else `default`."""
    value = response.headers.get("retry-after")
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), MAX_BACKOFF)


# ---- the chat wire format shared with turngym.serve.lm_server --------------------------------------
def wire_content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A message's content as OpenAI's chat format writes it: a string stays one; a list of parts
    keeps its order, each image an `image_url` part."""
    if isinstance(content, str):
        return content
    return [part if part["type"] == "text" else image_url_part(part["image"]) for part in content]


def image_url_part(image: np.ndarray) -> dict[str, Any]:
    """An `image_url` content part holding `image` as a data URL."""
    return {"type": "image_url", "image_url": {"url": image_data_url(image)}}


def image_data_url(image: np.ndarray) -> str:
    """An RGB image as the base64 PNG `data:` URL of an `image_url` part (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_from_data_url(url: str) -> np.ndarray:
    """The RGB image of a base64 `data:image/...` URL; ValueError, naming the problem, for any other."""
    header, _, data = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise ValueError("send images as base64 data:image/...;base64 URLs (nothing is ever downloaded)")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (ValueError, OSError):  # bad base64 (binascii.Error is a ValueError) or not an image
        raise ValueError("the image does not decode: send a PNG or JPEG as a base64 data: URL") from None
