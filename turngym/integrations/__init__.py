"""Adapters that put turngym envs into other frameworks.

    turngym.integrations.trl       play any env id inside TRL's GRPOTrainer (its `rollout_func`)
    turngym.integrations.openenv   serve any env id as an OpenEnv environment, with its client

Each adapter imports its framework only when used, so `turngym` works without them; the
frameworks come with the `lm` extra (`pip install -e '.[lm]'` or `make install`).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, package: str) -> ModuleType:
    """Import `module`, or raise ImportError in one sentence naming how to install `package`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this turngym integration needs {package} ({exc}): install it with "
                          "`pip install -e '.[lm]'` or `make install`") from None
