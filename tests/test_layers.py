"""The import direction of DESIGN.md, checked on the source: applications (turngym/apps, turngym/serve,
turngym/integrations) -> trainers -> rewards -> agents -> envs -> core (the modules directly in
turngym/). A module may import its own layer and the ones below it, never one above, not even
inside a function: a lazy import still ties the lower layer to the upper one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

LAYERS = ("core", "envs", "agents", "rewards", "trainers", "apps")
FOLDERS = {"envs": "envs", "agents": "agents", "rewards": "rewards", "trainers": "trainers"}
APPS = ("apps", "serve", "integrations")  # subpackages of turngym/ that are applications
# The package facade: `import turngym` registers the built-in envs (DESIGN.md), so it may name the
# envs package, whose __init__ holds only the registrations (entry-point strings, nothing imported).
FACADE_ALLOWED = {"turngym.envs"}


def layer_of_module(name: str) -> str | None:
    """The layer of an imported `turngym...` module name (None: not turngym's, or data)."""
    parts = name.split(".")
    if parts[0] != "turngym":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] == "assets":
        return None  # data, readable from every layer
    if parts[1] in FOLDERS:
        return parts[1]
    return "apps" if parts[1] in APPS or parts[1] == "__main__" else "core"


def source_files() -> list[tuple[Path, str, str]]:
    """(file, its module name, its layer) for every module of the package."""
    files = []
    for folder, layer in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            files.append((path, ".".join(["turngym", folder, *rel.parts]).removesuffix(".__init__"), layer))
    for path in sorted((ROOT / "turngym").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        files.append((path, name, layer_of_module(name) or "core"))
    return files


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module name) of every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from turngym import apps` names a module in the alias, not the `from` part
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names
                      if name == "turngym" and layer_of_module(f"{name}.{alias.name}") != "core"]
    return found


def test_the_layers_cover_the_package():
    files = source_files()
    assert {layer for _, _, layer in files} == set(LAYERS)
    core = {name for _, name, layer in files if layer == "core"}
    assert {"turngym.trajectory", "turngym.registry", "turngym.rollout", "turngym.results",
            "turngym.console"} <= core


@pytest.mark.parametrize("path, module, layer", source_files(), ids=lambda v: str(v) if isinstance(v, str) else None)
def test_no_import_points_up(path: Path, module: str, layer: str):
    rank = LAYERS.index(layer)
    upward = []
    for line, name in imports(path, module):
        target = layer_of_module(name)
        if target is None or LAYERS.index(target) <= rank:
            continue
        if module == "turngym" and name in FACADE_ALLOWED:
            continue
        upward.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({target} is above {layer})")
    assert not upward, "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test above must be able to fail: a lazy import of a trainer inside an env function."""
    path = tmp_path / "env.py"
    path.write_text("def f():\n    from turngym.trainers.ppo import train\n    from . import rules\n")
    found = imports(path, "turngym.envs.craft.env")
    assert (2, "turngym.trainers.ppo") in found and (3, "turngym.envs.craft") in found
    assert layer_of_module("turngym.trainers.ppo") == "trainers" and layer_of_module("turngym.serve.client") == "apps"
