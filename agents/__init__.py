"""Agents: policies that map (observation, info) to an action string.

    from turngym.agents import make_agent
    agent = make_agent("oracle", env)

Importing this package imports no env family. Each family's agents live in a module here that
registers them (`register_agent`); the table below names that module for the family's env class,
and `make_agent` / `available_agents` import it the first time an env of that family asks (see
`turngym.agents.base`). So making a Craft env and its oracle never loads PyMuPDF (LongDoc) or
Playwright (the WebShop browser), and agents built on torch or transformers (`neural:`, `hf:`)
load only when used. A plugin family registers its agents the same way, or with `register_agent`
directly in a module it imports itself.
"""

from turngym.agents import lm  # noqa: F401  (registers `hf` and `openai`, light until one is made)
from turngym.agents.base import (
    Agent,
    RandomAgent,
    available_agents,
    make_agent,
    register_agent,
    register_family,
    register_lazy,
)

register_family("turngym.envs.craft:CraftEnv", "turngym.agents.craft")
register_family("turngym.envs.webshop:WebShopEnv", "turngym.agents.webshop")  # and WebShopBrowserEnv, a subclass
register_family("turngym.envs.longdoc:LongDocEnv", "turngym.agents.longdoc")
register_family("turngym.envs.hopvqa:HopVQAEnv", "turngym.agents.hopvqa")
register_lazy("neural", "turngym.agents.neural:make_neural_agent")

__all__ = [
    "Agent",
    "RandomAgent",
    "available_agents",
    "make_agent",
    "register_agent",
    "register_family",
    "register_lazy",
]
