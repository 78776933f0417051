"""Agents: policies that map (observation, info) to an action string.

    from turngym.agents import make_agent
    agent = make_agent("oracle", env)

Each family's agents live in a module here that registers them (`register_agent`); importing
this package imports them all.
"""

from turngym.agents import craft, hopvqa, lm, longdoc, webshop  # noqa: F401  (register the agents they define)
from turngym.agents.base import Agent, RandomAgent, available_agents, make_agent, register_agent, register_lazy

register_lazy("neural", "turngym.agents.neural:make_neural_agent")

__all__ = ["Agent", "RandomAgent", "available_agents", "make_agent", "register_agent", "register_lazy"]
