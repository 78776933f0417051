"""The env server's wire format, shared by the server (`turngym.serve.env_server`) and its client
(`turngym.serve.client.RemoteEnv`): spaces as JSON, and observations as JSON with images as PNG
(lossless, so arrays come back identical). It lives apart from both so that neither side imports
the other's dependencies (the server needs FastAPI, the client only httpx).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from gymnasium import spaces
from PIL import Image


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of `space` from which `space_from_json` rebuilds an equal one."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[key, space_to_json(sub)] for key, sub in space.spaces.items()]}
    if isinstance(space, spaces.Text):
        # character_list keeps the constructor's order, which `sample()` draws from.
        return {"type": "Text", "max_length": space.max_length, "min_length": space.min_length,
                "charset": "".join(space.character_list)}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": space.dtype.name,
                "low": _compact(space.low), "high": _compact(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"the env server cannot send a {type(space).__name__} space: use Dict, Text, Box or Discrete")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """The space that `space_to_json` described."""
    kind = data["type"]
    if kind == "Dict":
        return spaces.Dict([(key, space_from_json(sub)) for key, sub in data["spaces"]])
    if kind == "Text":
        return spaces.Text(data["max_length"], min_length=data["min_length"], charset=data["charset"])
    if kind == "Box":
        shape, dtype = tuple(data["shape"]), np.dtype(data["dtype"])
        low, high = (np.full(shape, data[k], dtype) if np.isscalar(data[k]) else np.asarray(data[k], dtype)
                     for k in ("low", "high"))
        return spaces.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    raise ValueError(f"unknown space type {kind!r} from the env server: update turngym on the client")


def _compact(bound: np.ndarray) -> Any:
    """A Box bound as one number when it is the same everywhere (images: 0 and 255), else a list."""
    flat = bound.ravel()
    return flat[0].item() if flat.size and np.all(flat == flat[0]) else bound.tolist()


def encode(value: Any) -> Any:
    """`value` (an observation or a render) as JSON: RGB images as PNG, other arrays as lists."""
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3:
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(value)).save(buffer, format="PNG", compress_level=1)
            return {"__png__": base64.b64encode(buffer.getvalue()).decode("ascii")}
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.name, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value: Any) -> Any:
    """The value that `encode` sent, with arrays rebuilt."""
    if isinstance(value, dict):
        if "__png__" in value:
            with Image.open(io.BytesIO(base64.b64decode(value["__png__"]))) as image:
                return np.array(image.convert("RGB"))
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: decode(v) for k, v in value.items()}
    return value
