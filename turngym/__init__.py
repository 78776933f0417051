"""turngym: Gymnasium-compatible multi-turn agent environments.

Importing turngym registers every built-in env id with Gymnasium:

    import gymnasium as gym, turngym
    env = gym.make("turngym/Craft-v0", task="wood_pickaxe")
"""

from turngym.registry import describe, list_envs, register
from turngym.rollout import rollout
from turngym.trajectory import Trajectory, Turn, read_jsonl, write_jsonl

__version__ = "0.1.0"
__all__ = ["Trajectory", "Turn", "describe", "list_envs", "read_jsonl", "register", "rollout", "write_jsonl"]

import turngym.envs  # registers the built-in families
import turngym.vector  # noqa: F401  (live Text observations in AsyncVectorEnv)
from turngym.registry import load_plugins

load_plugins()
