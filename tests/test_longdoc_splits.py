"""LongDocVQA-v0's frozen splits, the default (generated) env end to end, and `turngym longdoc build`."""

from __future__ import annotations

import hashlib
import json

import gymnasium as gym
from typer.testing import CliRunner

from turngym import rollout
from turngym.agents import make_agent
from turngym.apps.cli import app
from turngym.envs.longdoc.dataset import TRAIN_DOCS, GeneratedSet, manifest
from turngym.envs.longdoc.generate import generate


def test_splits_are_frozen_and_disjoint():
    frozen = manifest()
    assert len(frozen["test"]) == len(frozen["dev"]) == 300 and frozen["version"] == 1
    test_docs, dev_docs = {k // 10 for k in frozen["test"]}, {k // 10 for k in frozen["dev"]}
    assert not test_docs & dev_docs and max(test_docs | dev_docs) < TRAIN_DOCS.start
    splits = GeneratedSet().splits
    assert splits["test"][0] == "gen-10" and splits["train"][:6] == [f"gen-{k}" for k in
                                                                    (1000000, 1000001, 1000002, 1000003, 1000004,
                                                                     1000010)]
    for seed, expected in frozen["fingerprints"].items():  # regenerated from scratch, not read from the cache
        doc = generate(int(seed))
        digest = hashlib.sha256(doc.pdf + json.dumps(doc.questions, sort_keys=True).encode()).hexdigest()[:16]
        assert digest == str(expected), f"generated document {seed} changed: bump the splits version"


def test_the_default_env_plays_generated_documents():
    env = gym.make("turngym/LongDocVQA-v0")
    oracle = make_agent("oracle", env)
    runs = [rollout(env, oracle, seed=i, options={"split": "test", "index": i}) for i in range(12)]
    assert all(r.success for r in runs)
    obs, info = env.reset(seed=3)  # a training question: document 100,000 and up
    assert int(info["task_id"][4:]) // 10 >= TRAIN_DOCS.start and obs["image"].shape == (1056, 816, 3)
    page = env.unwrapped.state_dict()["question"]["evidence_pages"] or [1]
    obs, *_ = env.step(f"view[{page[0]}]")
    assert obs["image"].std() > 5


def test_build_writes_a_benchmark_folder_the_env_reads(tmp_path):
    result = CliRunner().invoke(app, ["longdoc", "build", "--split", "test", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    samples = json.loads((tmp_path / "samples.json").read_text())
    documents = {k // 10 for k in manifest()["test"]}
    assert len(samples) == 300 and len(list((tmp_path / "documents").glob("*.pdf"))) == len(documents)
    env = gym.make("turngym/LongDocVQA-v0", dataset=str(tmp_path))
    generated = gym.make("turngym/LongDocVQA-v0")
    for i in (0, 150, 299):
        a = env.reset(options={"split": "test", "index": i})[0]["text"]
        b = generated.reset(options={"split": "test", "index": i})[0]["text"]
        assert a == b
