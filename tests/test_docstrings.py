"""Every registered env class documents itself in one fixed shape, Gymnasium's.

The reward-design loop sends the class docstring to a language model (rewards/design_prompts.py),
so every family must say the same things under the same headings: a model that learned where the
rewards are described in one family finds them in the next.
"""

from __future__ import annotations

import inspect
import re

import pytest

import turngym
from turngym.registry import env_class

SECTIONS = ("Description", "Action Space", "Observation Space", "Rewards", "Starting State", "Episode End",
            "Arguments", "Version History")
HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
ENTRY = re.compile(r"^- `(\w+)`", re.MULTILINE)  # one argument per entry: "- `name`: what it does (default ...)"


def split(text: str, marker: re.Pattern[str], keep_match: bool = False) -> dict[str, str]:
    """The text after each match of `marker` up to the next, keyed by the match's group 1."""
    matches = list(marker.finditer(text))
    starts = [m.start() for m in matches] + [len(text)]
    return {m.group(1).strip(): text[m.start() if keep_match else m.end():end].strip()
            for m, end in zip(matches, starts[1:], strict=True)}


def sections(doc: str) -> dict[str, str]:
    """The docstring's `## Heading` sections, in order, with their text."""
    return split(doc, HEADING)


def arguments(text: str) -> dict[str, str]:
    """The Arguments section's entries, by argument name."""
    return split(text, ENTRY, keep_match=True)


def doc_problems(cls: type) -> list[str]:
    """What the class docstring of `cls` lacks, one line each (empty when it has the shape)."""
    doc = inspect.getdoc(cls) if cls.__doc__ else ""
    found = sections(doc or "")
    if tuple(found) != SECTIONS:
        return [f"sections are {list(found)}, expected {list(SECTIONS)} in this order"]
    problems = [f"section {name!r} is empty" for name, text in found.items() if not text]
    documented = arguments(found["Arguments"])
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # [0] is self
    for name in (p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)):
        if name not in documented:
            problems.append(f"constructor argument {name!r} is not listed in Arguments as - `{name}`: ...")
        elif "default" not in documented[name]:
            problems.append(f"Arguments does not give the default of {name!r}")
    return problems


@pytest.mark.parametrize("env_id", turngym.list_envs())
def test_env_class_docstring_has_the_sections_and_every_argument(env_id: str) -> None:
    cls = env_class(env_id)
    assert doc_problems(cls) == [], f"{cls.__qualname__} ({env_id})"


class Documented:
    """Summary.

    ## Description
    Text.

    ## Action Space
    Text.

    ## Observation Space
    Text.

    ## Rewards
    Text.

    ## Starting State
    Text.

    ## Episode End
    Text.

    ## Arguments
    - `size`: the side (default 3).

    ## Version History
    - v0: the first version.
    """

    def __init__(self, size: int = 3) -> None: ...


def variant(doc: str, init: str = "def __init__(self, size: int = 3) -> None: ...") -> type:
    """A class with docstring `doc` and the constructor `init`."""
    namespace: dict[str, object] = {}
    exec(f"class Variant:\n    {init}", namespace)
    cls = namespace["Variant"]
    cls.__doc__ = doc
    return cls


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.replace("    ## Starting State\n    Text.\n\n", ""), "expected ['Description'"),
    (lambda d: d.replace("## Rewards\n    Text.", "## Rewards\n"), "section 'Rewards' is empty"),
    (lambda d: d.replace(" (default 3)", ""), "Arguments does not give the default of 'size'"),
    (lambda d: d.replace("## Episode End", "## Ending"), "expected ['Description'"),
])
def test_the_check_fails_on_a_missing_section_or_argument_default(change, problem) -> None:
    assert doc_problems(Documented) == []
    [found] = doc_problems(variant(change(Documented.__doc__)))
    assert problem in found


def test_the_check_fails_on_an_undocumented_argument_or_no_docstring() -> None:
    undocumented = variant(Documented.__doc__, "def __init__(self, size=3, depth=1, **rest) -> None: ...")
    assert doc_problems(undocumented) == ["constructor argument 'depth' is not listed in Arguments as - `depth`: ..."]
    assert doc_problems(variant(None)) != []
