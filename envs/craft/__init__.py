"""Craft: Minecraft-style sparse-reward tasks on a procedurally generated tile world.

`CraftEnv` is the turn-based text/image env (`turngym/Craft-v0`); `CraftVectorEnv` steps many
worlds as one NumPy batch with symbolic observations, for fast neural-policy training. The rules
are data: assets/craft/rules.yaml.
"""

from turngym.envs.craft.env import CraftEnv
from turngym.envs.craft.rules import Rules, load_rules
from turngym.envs.craft.vector import CraftVectorEnv

__all__ = ["CraftEnv", "CraftVectorEnv", "Rules", "load_rules"]
