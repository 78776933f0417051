"""A minimal OpenAI-compatible chat-completions server over a local Hugging Face checkpoint.

    turngym serve lm runs/tiny-lm --port 8001      # or: from turngym.serve.lm_server import serve
    # then: --agent openai:tiny-lm@http://127.0.0.1:8001/v1, or the `openai` client with that base_url

`POST /v1/chat/completions` takes `messages` (content a string or a list of parts), `temperature`,
`top_p`, `max_tokens` (or `max_completion_tokens`), `seed`, `logprobs`, `stream` and
`stream_options`, and answers with `choices[0].message.content`, `finish_reason` and `usage`;
`GET /v1/models` lists the one model with its `max_model_len`, as vLLM does. Image parts are
accepted: a vision-language checkpoint sees every image where the request puts it, among the
text of its message (base64 `data:` URLs only, decoded by `turngym.agents.chat_api`: the server
never downloads); a text-only one ignores them. A message's adjacent text parts join with a
newline. A malformed request gets an OpenAI-style JSON error with status 400.

With `"stream": true` the answer is server-sent events (`text/event-stream`), as the `openai`
client expects: `data: {chat.completion.chunk}` events (the role first, then the reply's text cut
at token boundaries, each piece with its tokens' log-probs when `logprobs` is set, then a chunk
with `finish_reason`, then, with `stream_options.include_usage`, one with `usage` and no choices),
and finally `data: [DONE]`. The chunks are cut from the finished reply, not streamed during
generation: the whole reply is generated first, so a request that cannot be served still gets its
400 error, and the joined deltas equal the non-streamed reply for the same seed.

It serves one request at a time; it exists for tests and local smoke runs, not throughput.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from turngym.agents.chat_api import image_from_data_url
from turngym.agents.hf import HFModel
from turngym.agents.lm import Completion, image_part, text_part

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

    def generate(request: dict[str, Any]) -> Completion:
        with lock:
            try:
                return model.generate(request["messages"], seed=request["seed"],
                                      temperature=request["temperature"], top_p=request["top_p"],
                                      max_new_tokens=request["max_tokens"])
            except ValueError as exc:  # the prompt does not fit the model's context
                raise BadRequest(str(exc), "messages", "context_length_exceeded") from None

    def reply(request: dict[str, Any], completion: Completion) -> dict[str, Any]:
        """The chat.completion object of a finished generation."""
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                                  "finish_reason": completion.finish_reason, "logprobs": None}
        if request["logprobs"]:
            choice["logprobs"] = {"content": token_logprobs(model.tokenizer, completion)}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [choice], "usage": completion.usage}

    def chunks(request: dict[str, Any], completion: Completion) -> Iterator[dict[str, Any]]:
        """The chat.completion.chunk objects of a finished generation, in the order OpenAI sends them."""
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": name}
        usage = request["include_usage"]

        def chunk(delta: dict[str, Any], logprobs: list[dict[str, Any]] | None = None,
                  finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None if logprobs is None else {"content": logprobs},
                      "finish_reason": finish_reason}
            # With include_usage every chunk carries "usage": null until the last one fills it in.
            return {**head, "choices": [choice], **({"usage": None} if usage else {})}

        yield chunk({"role": "assistant", "content": ""})
        entries = token_logprobs(model.tokenizer, completion) if request["logprobs"] else None
        for text, tokens in text_pieces(model.tokenizer, completion):
            if text or entries is not None:  # an empty piece only carries the log-prob of a token such as EOS
                yield chunk({"content": text}, None if entries is None else [entries[i] for i in tokens])
        yield chunk({}, finish_reason=completion.finish_reason)
        if usage:
            yield {**head, "choices": [], "usage": completion.usage}

    def answer(request: dict[str, Any]) -> dict[str, Any] | list[str]:
        """The reply object, or with `stream` the reply's server-sent events through `[DONE]`. The
        whole reply is generated before the response starts, so that a request that cannot be
        served still gets a 400 instead of a broken event stream."""
        completion = generate(request)
        if not request["stream"]:
            return reply(request, completion)
        return [f"data: {json.dumps(c)}\n\n" for c in chunks(request, completion)] + ["data: [DONE]\n\n"]

    async def chat_completions(request: Request) -> Response:
        try:
            try:
                body = await request.json()
            except ValueError:
                raise BadRequest("the request body is not valid JSON") from None
            answered = await run_in_threadpool(answer, parse_request(body, vision=model.vision))
        except BadRequest as exc:
            return error_response(str(exc), exc.param, exc.code)
        if isinstance(answered, dict):
            return JSONResponse(answered)
        return StreamingResponse(answered, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

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
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest("stream_options is only allowed with stream=true", "stream_options")
    if options is not None and not (isinstance(options, dict)
                                    and isinstance(options.get("include_usage", False), bool)):
        raise BadRequest('stream_options must be an object such as {"include_usage": true}', "stream_options")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported", "n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}] needs a role among {', '.join(ROLES)}", "messages")
        chat.append({"role": "system" if message["role"] == "developer" else message["role"],
                     "content": _content(message.get("content"), i, vision)})
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
    return {"messages": chat, "temperature": temperature, "top_p": top_p,
            "max_tokens": max_tokens, "seed": seed % 2**63, "logprobs": logprobs, "stream": bool(stream),
            "include_usage": bool((options or {}).get("include_usage"))}


def _content(content: Any, index: int, vision: bool) -> str | list[dict[str, Any]]:
    """A message's content as `HFModel` takes it: its text, or for a vision-language model, its
    text and decoded images as a list of parts in the order sent (adjacent texts joined by a newline)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"messages[{index}].content must be a string or a list of parts", "messages")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if parts and parts[-1]["type"] == "text":
                parts[-1] = text_part(parts[-1]["text"] + "\n" + part["text"])
            else:
                parts.append(text_part(part["text"]))
        elif kind == "image_url":
            url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str):
                raise BadRequest(f"messages[{index}] has an image_url part without a url", "messages")
            if vision:
                try:
                    parts.append(image_part(image_from_data_url(url)))
                except ValueError as exc:
                    raise BadRequest(f"messages[{index}]: {exc}", "messages") from None
        else:
            raise BadRequest(f"messages[{index}] has a part that is neither text nor image_url", "messages")
    if any(part["type"] == "image" for part in parts):
        return parts
    return "".join(part["text"] for part in parts)  # text only: one string, as a text-only chat template expects


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{key} must be a number from {low:g} to {high:g}", key)
    return float(value)


def token_logprobs(tokenizer: Any, completion: Completion) -> list[dict[str, Any]]:
    """OpenAI's per-token log-prob entries of a completion, one per completion token."""
    tokens = [tokenizer.decode([i]) for i in completion.completion_ids or []]
    return [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8")), "top_logprobs": []}
            for t, lp in zip(tokens, completion.logprobs or [], strict=True)]


def text_pieces(tokenizer: Any, completion: Completion) -> list[tuple[str, list[int]]]:
    """The reply's text cut at token boundaries: (piece, indices of the completion tokens it covers).

    The pieces join to exactly `completion.text`. A token's piece is what decoding the reply up to
    it adds; a token that adds nothing (end of sequence) or whose prefix decodes to something the
    full reply does not start with (half of a multi-byte character, or spaces the tokenizer cleans
    up later) joins the next piece. Decoding every prefix costs O(n^2) in the reply's length, which
    is nothing at the lengths this server is for.
    """
    ids, text = completion.completion_ids or [], completion.text
    pieces: list[tuple[str, list[int]]] = []
    sent, pending = 0, []
    for k in range(len(ids)):
        pending.append(k)
        prefix = tokenizer.decode(ids[:k + 1], skip_special_tokens=True)
        if len(prefix) > sent and text.startswith(prefix) and not prefix.endswith("\ufffd"):
            pieces.append((prefix[sent:], pending))
            sent, pending = len(prefix), []
    if sent < len(text) or pending:  # what is left, and the tokens (such as end of sequence) that added nothing
        pieces.append((text[sent:], pending))
    return pieces

