"""turngym envs inside TRL's GRPOTrainer (turngym/integrations/trl.py), on a tiny chat model built here.

The training test runs two real GRPO steps on Craft and replays every rollout in a fresh env from
the reply tokens alone (the ones `env_mask` keeps): the replayed returns must equal the rewards
the trainer used, and the weights must have moved. The tasks start right after `place_table`
(wood in hand, a table south): the tiny model, taught Craft's primitive actions, then makes the
pickaxe in about three episodes of four, so GRPO groups mix successes and failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from conftest import tiny_checkpoint

import turngym  # noqa: F401  (registers the envs)
from turngym.agents.lm import parse_action
from turngym.integrations.trl import Task, env_reward, first_prompt, make_dataset, make_rollout_func

pytest.importorskip("trl")
pytest.importorskip("datasets")
torch = pytest.importorskip("torch")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests build their model: nothing may download
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in trl 1.16, knowingly
CRAFT = "turngym/Craft-v0"
KWARGS = {"task": "wood_pickaxe", "image": False, "max_turns": 2}


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny Mistral-style chat model of `turngym.agents.tiny`, on one torch thread (identical runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield str(tiny_checkpoint(tmp_path_factory, "tiny"))
    torch.set_num_threads(threads)


def test_dataset_prompts_are_the_first_turns_of_frozen_tasks() -> None:
    kwargs = {"task": "wood_pickaxe", "action_mode": "skills", "image": False}
    data = make_dataset(CRAFT, "test", 3, seed=7, **kwargs)
    assert data.column_names == ["prompt", "env_id", "env_kwargs", "task_id", "seed"]
    env = gym.make(CRAFT, **kwargs)
    assert data["task_id"] == list(env.unwrapped.splits["test"][:3]) and data["seed"] == [7, 8, 9]
    for row in data:
        assert json.loads(row["env_kwargs"]) == kwargs and row["env_id"] == CRAFT
        obs, info = env.reset(seed=row["seed"], options={"task_id": row["task_id"]})
        system, user = row["prompt"]
        assert [{"role": m["role"], "content": m["content"]} for m in (system, user)] == first_prompt(CRAFT, obs, info)
        assert "Make a wood pickaxe" in system["content"] and user["turngym"] is None
        assert Task.of(row["prompt"]) == Task(CRAFT, row["env_kwargs"], row["task_id"], row["seed"])
    with pytest.raises(ValueError, match="no split 'nope'"):
        make_dataset(CRAFT, "nope", 1, **kwargs)
    with pytest.raises(ValueError, match="has 100 tasks in test, fewer than n=101"):
        make_dataset(CRAFT, "test", 101, **kwargs)


def replay(env: gym.Env, seed: int, task_id: str, replies: list[str]) -> tuple[float, bool]:
    """The return of `task_id` replayed from a reset with `seed` with the actions of `replies`, and
    whether the env ended the episode."""
    _, info = env.reset(seed=seed, options={"task_id": task_id})
    total, done = 0.0, False
    for reply in replies:
        assert not done
        action, _ = parse_action(reply, list(info["actions"]))
        _, reward, terminated, truncated, info = env.step(action if action is not None else "")
        total += reward
        done = terminated or truncated
    return total, done


def segments(ids: list[int], mask: list[int]) -> list[tuple[int, list[int]]]:
    """The runs of equal mask values: (1, reply tokens) or (0, env-message tokens)."""
    runs: list[tuple[int, list[int]]] = []
    for token, kept in zip(ids, mask, strict=True):
        if runs and runs[-1][0] == kept:
            runs[-1][1].append(token)
        else:
            runs.append((kept, [token]))
    return runs


# trl 1.16 still uses the gradient_checkpointing names that transformers 5 renamed.
@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_two_grpo_steps_on_craft_reward_the_env_outcome(lm: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tasks = [f"wood_pickaxe:{i}+start=place_table" for i in range(4)]
    data = make_dataset(CRAFT, tasks, **KWARGS)
    rollout = make_rollout_func(max_new_tokens=32)
    outputs: list[dict[str, Any]] = []  # what each rollout call returned
    scored: list[dict[str, Any]] = []  # what the reward function saw and gave

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        outputs.append(rollout(prompts, trainer))
        return outputs[-1]

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        given = env_reward(completions, **kwargs)
        scored.append({"task_id": kwargs["task_id"], "seed": kwargs["seed"], "reward": given})
        return given

    tokenizer = AutoTokenizer.from_pretrained(lm)
    model = AutoModelForCausalLM.from_pretrained(lm)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
                      max_steps=2, max_completion_length=1000, learning_rate=1e-3, bf16=False, use_cpu=True,
                      report_to=[], save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                          rollout_func=rollout_func)
    trainer.train()
    rollout.close()

    assert len(outputs) == len(scored) == 2
    env = gym.make(CRAFT, **KWARGS)
    rewards, lengths = [], set()
    for out, seen in zip(outputs, scored, strict=True):
        assert seen["reward"] == out["env_return"] and len(seen["reward"]) == 8
        for i, (ids, mask) in enumerate(zip(out["completion_ids"], out["env_mask"], strict=True)):
            runs = segments(ids, mask)
            replies = [tokenizer.decode(tokens, skip_special_tokens=True) for kept, tokens in runs if kept]
            assert len(replies) == out["env_turns"][i] and runs[0][0] == 1 and runs[-1][0] == 1
            for kept, tokens in runs:  # every env message: the next turn's observation, as the hf: agents send it
                if not kept:
                    assert "Turn 1. Observation:\nTask: Make a wood pickaxe." in tokenizer.decode(tokens)
            total, finished = replay(env, seen["seed"][i], seen["task_id"][i], replies)
            assert total == seen["reward"][i] and finished == out["env_finished"][i]
            rewards.append(total)
            lengths.add(len(runs))
    assert 0 < sum(rewards) < len(rewards) and lengths >= {1, 3}  # successes, failures, one- and two-turn episodes
    assert any(not torch.equal(before[name], p.detach()) for name, p in model.named_parameters())


def test_env_reward_and_rollout_explain_misuse() -> None:
    with pytest.raises(ValueError, match="make_rollout_func"):
        env_reward(["a completion"], prompts=["a prompt"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        make_rollout_func(0)
    with pytest.raises(ValueError, match="carries no turngym task: build the dataset with make_dataset"):
        make_rollout_func()([[{"role": "user", "content": "hi"}]], None)


def test_the_module_imports_without_trl_and_names_the_install() -> None:
    code = """
import sys
sys.modules["datasets"] = sys.modules["trl"] = None  # as if not installed
import turngym.integrations.trl as t
try:
    t.make_dataset("turngym/Craft-v0", "test", 1)
except ImportError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install -e '.[lm]'" in done.stdout and "make install" in done.stdout

