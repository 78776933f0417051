"""Lazy loading: importing turngym, making one family's env and its agents load no other family's
heavy dependencies. Each check runs in a fresh interpreter, because the test process has long
imported everything; none measures time (bench/ does)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from turngym.agents import register_family

HEAVY = ("pymupdf", "fitz", "playwright", "torch", "transformers")  # PyMuPDF imports as both names
PRELUDE = f"""
import json, sys
HEAVY = {HEAVY!r}
def loaded(prefixes=HEAVY):
    return sorted(m for m in sys.modules if m in prefixes or m.startswith(tuple(p + "." for p in prefixes)))
"""


def run_fresh(code: str, *, cwd: Path | None = None) -> dict:
    """Run `code` (which prints one JSON object last) in a new interpreter and return that object."""
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_turngym_loads_no_heavy_dependency_and_no_upper_layer():
    out = run_fresh("""
        import turngym
        layers = ("turngym.agents", "turngym.rewards", "turngym.trainers", "turngym.apps", "turngym.serve")
        print(json.dumps({"heavy": loaded(), "layers": loaded(layers)}))
    """)
    assert out == {"heavy": [], "layers": []}


def test_craft_env_and_its_oracle_load_only_craft():
    out = run_fresh("""
        import turngym, gymnasium as gym
        env = gym.make("turngym/Craft-v0")
        after_make = loaded()
        from turngym.agents import make_agent
        agent = make_agent("oracle", env)
        obs, info = env.reset(seed=0)
        agent.reset(obs, info)
        env.step(agent.act(obs, info))
        families = ("turngym.agents.webshop", "turngym.agents.longdoc", "turngym.agents.hopvqa")
        print(json.dumps({"after_make": after_make, "after_oracle": loaded(), "agent": type(agent).__module__,
                          "other_families": [m for m in families if m in sys.modules]}))
    """)
    assert out == {"after_make": [], "after_oracle": [], "agent": "turngym.agents.craft", "other_families": []}


def test_each_family_lists_its_own_agents_and_loads_them_on_demand():
    # `available_agents` of a class (what the harness asks before making an env) loads the family's
    # agents; LongDoc's heuristic works, and PyMuPDF shows up once LongDoc is in use, which shows
    # that `loaded` (and so the checks above) would see it.
    out = run_fresh("""
        import turngym, gymnasium as gym
        from turngym.agents import available_agents, make_agent
        from turngym.registry import env_class
        names = {i: available_agents(env_class(i)) for i in turngym.list_envs()}
        agent = make_agent("heuristic", gym.make("turngym/LongDocVQA-v0"))
        print(json.dumps({"names": names, "pymupdf": "pymupdf" in loaded(), "agent": type(agent).__module__}))
    """)
    generic = {"hf", "neural", "openai", "random"}
    assert {i: set(n) - generic for i, n in out["names"].items()} == {
        "turngym/Craft-v0": {"heuristic", "oracle"},
        "turngym/HopVQA-v0": {"heuristic", "oracle"},
        "turngym/HopVQA-v1": {"heuristic", "oracle"},
        "turngym/LongDocVQA-v0": {"heuristic", "oracle"},
        "turngym/WebShop-v0": {"heuristic", "oracle"},
        "turngym/WebShopBrowser-v0": {"heuristic", "oracle"},  # inherited from WebShopEnv through the MRO
    }
    assert all(generic <= set(n) for n in out["names"].values())
    assert out["pymupdf"] and out["agent"] == "turngym.agents.longdoc"


def test_a_user_agent_registered_before_the_family_loads_still_wins():
    out = run_fresh("""
        import turngym, gymnasium as gym
        from turngym.agents import Agent, make_agent, register_agent
        from turngym.envs.craft import CraftEnv

        @register_agent("oracle", CraftEnv)
        class MyOracle(Agent):
            def __init__(self, env, argument=""):
                pass

            def act(self, obs, info):
                return "noop"

        print(json.dumps({"agent": type(make_agent("oracle", gym.make("turngym/Craft-v0"))).__name__}))
    """)
    assert out == {"agent": "MyOracle"}


def test_a_plugin_family_registers_by_path(tmp_path):
    # A family outside turngym: its agent module loads only once an env of its class is asked
    # about, under the class's public (re-exported) path; a broken module raises each time it is
    # asked, rather than leaving the family without agents and a misleading "no agent" error.
    pkg = tmp_path / "plugfam"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from plugfam.env import PlugEnv\n")
    (pkg / "env.py").write_text(textwrap.dedent("""
        from turngym.envs.base import TurnEnv
        class PlugEnv(TurnEnv):
            pass
        class BrokenEnv(TurnEnv):
            pass
    """))
    (pkg / "agents.py").write_text(textwrap.dedent("""
        from turngym.agents import RandomAgent, register_agent
        from plugfam import PlugEnv
        register_agent("plug", PlugEnv)(RandomAgent)
    """))
    (pkg / "broken.py").write_text("raise ImportError('broken on purpose')\n")
    out = run_fresh("""
        from turngym.agents import available_agents, register_family
        register_family("plugfam:PlugEnv", "plugfam.agents")
        register_family("plugfam.env:BrokenEnv", "plugfam.broken")
        from plugfam.env import BrokenEnv, PlugEnv
        class Sub(PlugEnv):
            pass
        errors = []
        for _ in range(2):
            try:
                available_agents(BrokenEnv)
            except ImportError as exc:
                errors.append(str(exc))
        print(json.dumps({"before": "plugfam.agents" in sys.modules, "sub": "plug" in available_agents(Sub),
                          "errors": errors}))
    """, cwd=tmp_path)
    assert out == {"before": False, "sub": True, "errors": ["broken on purpose"] * 2}


def test_register_family_names_the_expected_form():
    with pytest.raises(ValueError, match="must read 'module:Class'"):
        register_family("turngym.envs.craft.CraftEnv", "turngym.agents.craft")
