"""Agent spec strings: options written after `?`, and packaged models resolved by short name."""

from pathlib import Path

import gymnasium as gym
import pytest

import turngym  # noqa: F401
from turngym.agents import make_agent
from turngym.agents.base import split_spec
from turngym.agents.models import MODELS, models_dir, resolve


def test_split_spec_reads_yaml_values():
    assert split_spec("hf:m?mode=score&temperature=0&reduce=mean") == (
        "hf:m", {"mode": "score", "temperature": 0, "reduce": "mean"})
    assert split_spec("neural:runs/p.pt") == ("neural:runs/p.pt", {})
    assert split_spec("x?a=[1, 2]&b=") == ("x", {"a": [1, 2], "b": ""})


@pytest.mark.parametrize("spec", ["hf:m?mode", "hf:m?=1", "hf:m?a=1&&b=2", "hf:m?not-a-name=1"])
def test_split_spec_rejects_malformed_options(spec):
    with pytest.raises(ValueError, match="key=value"):
        split_spec(spec)


def test_spec_options_reach_the_factory_and_are_checked():
    env = gym.make("turngym/Craft-v0")
    with pytest.raises(ValueError, match="takes no option colour"):
        make_agent("random?colour=red", env)
    with pytest.raises(ValueError, match="unknown mode"):
        make_agent("hf:some/folder?mode=dream", env)


def test_resolve_leaves_paths_alone_and_finds_packaged_models():
    assert resolve("runs/model") == "runs/model"
    folder = Path(resolve("smollm2"))  # converted by `make install`; converts now otherwise
    assert folder == models_dir() / MODELS["smollm2"].folder
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
