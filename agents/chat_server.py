"""A minimal OpenAI-compatible chat-completions server over a local Hugging Face checkpoint.

    from turngym.agents.chat_server import serve
    serve("runs/tiny-lm", port=8001)      # then: --agent openai:tiny-lm@http://127.0.0.1:8001/v1

`POST /v1/chat/completions` takes `messages` (content a string or a list of parts), `temperature`,
`top_p`, `max_tokens` (or `max_completion_tokens`), `seed` and `logprobs`, and answers with
`choices[0].message.content`, `finish_reason` and `usage`; `GET /v1/models` lists the one model
with its `max_model_len`, as vLLM does. Image parts are accepted: a vision-language checkpoint
sees the request's last image, with the last message (base64 `data:` URLs only: the server never
downloads); a text-only one ignores them. A malformed request gets an OpenAI-style JSON error with status
400. It serves one request at a time; it exists for tests and local smoke runs, not throughput.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from turngym.agents.hf import HFModel

ROLES = ("system", "developer", "user", "assistant")
DEFAULT_MAX_TOKENS = 256


class BadRequest(Exception):
    """A request the server cannot serve; the message goes back to the client with status 400."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


def make_app(model_path: str | Path, *, name: str | None = None) -> Starlette:
    """The Starlette app serving the checkpoint at `model_path` under `name` (default: its folder name).
    Requests may name any model: there is only one."""
    model = HFModel(str(model_path))
    name = name or Path(model_path).name
    lock = threading.Lock()  # one generation at a time: the model is shared

    def generate(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            try:
                completion = model.generate(request["messages"], request["image"], seed=request["seed"],
                                            temperature=request["temperature"], top_p=request["top_p"],
                                            max_new_tokens=request["max_tokens"])
            except ValueError as exc:  # the prompt does not fit the model's context
                raise BadRequest(str(exc), "messages", "context_length_exceeded") from None
        ids = completion.completion_ids or []
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                                  "finish_reason": completion.finish_reason, "logprobs": None}
        if request["logprobs"]:
            tokens = [model.tokenizer.decode([i]) for i in ids]
            choice["logprobs"] = {"content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8")), "top_logprobs": []}
                for t, lp in zip(tokens, completion.logprobs or [], strict=True)]}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [choice], "usage": completion.usage}

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            try:
                body = await request.json()
            except ValueError:
                raise BadRequest("the request body is not valid JSON") from None
            parsed = parse_request(body, vision=model.vision)
            return JSONResponse(await run_in_threadpool(generate, parsed))
        except BadRequest as exc:
            return error_response(str(exc), exc.param, exc.code)

    async def models(request: Request) -> JSONResponse:
        card = {"id": name, "object": "model", "created": 0, "owned_by": "turngym",
                "max_model_len": model.context_length}
        return JSONResponse({"object": "list", "data": [card]})

    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8001, name: str | None = None) -> None:
    """Serve `model_path` until interrupted (what `turngym serve lm PATH` runs)."""
    uvicorn.run(make_app(model_path, name=name), host=host, port=port, log_level="info")


def error_response(message: str, param: str | None = None, code: str | None = None,
                   status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}}, status_code=status)


def parse_request(body: Any, *, vision: bool) -> dict[str, Any]:
    """The generation settings of a chat-completions request body; BadRequest if malformed."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("streaming is not supported: send stream=false", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported", "n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
    chat, image = [], None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}] needs a role among {', '.join(ROLES)}", "messages")
        text, found = _content(message.get("content"), i, vision)
        image = found if found is not None else image
        chat.append({"role": "system" if message["role"] == "developer" else message["role"], "content": text})
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise BadRequest("top_p must be in (0, 1]", "top_p")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_TOKENS))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens must be a whole number >= 1", "max_tokens")
    seed = body.get("seed")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**31)
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise BadRequest("seed must be a whole number", "seed")
    logprobs = body.get("logprobs", False)
    if not isinstance(logprobs, bool):
        raise BadRequest("logprobs must be true or false", "logprobs")
    return {"messages": chat, "image": image if vision else None, "temperature": temperature, "top_p": top_p,
            "max_tokens": max_tokens, "seed": seed % 2**63, "logprobs": logprobs}


def _content(content: Any, index: int, vision: bool) -> tuple[str, np.ndarray | None]:
    """A message's text and its last image (decoded only for a vision-language model)."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise BadRequest(f"messages[{index}].content must be a string or a list of parts", "messages")
    texts, image = [], None
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str):
                raise BadRequest(f"messages[{index}] has an image_url part without a url", "messages")
            if vision:
                image = _decode_image(url, index)
        else:
            raise BadRequest(f"messages[{index}] has a part that is neither text nor image_url", "messages")
    return "\n".join(texts), image


def _decode_image(url: str, index: int) -> np.ndarray:
    header, _, data = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise BadRequest(f"messages[{index}]: send images as base64 data: URLs (this server never downloads)",
                         "messages")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (ValueError, OSError):
        raise BadRequest(f"messages[{index}] has an image that does not decode", "messages") from None


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{key} must be a number from {low:g} to {high:g}", key)
    return float(value)
