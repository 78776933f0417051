"""HopVQA: multi-hop visual queries over generated scenes, with chained, verifiable integer answers.

`HopVQAEnv` is `turngym/HopVQA-v1` and, with version=0, the frozen `turngym/HopVQA-v0`. scene.py
generates and draws the scenes (the scene graph is the ground truth), program.py represents and
executes the typed multi-hop programs and checks claims, generate.py draws the queries, tasks.py
holds the frozen splits, commands.py the `turngym hopvqa` tools.
"""

from turngym.envs.hopvqa.env import HopVQAEnv

__all__ = ["HopVQAEnv"]
