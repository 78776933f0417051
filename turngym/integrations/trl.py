"""Play any turngym env inside TRL's `GRPOTrainer` (trl 1.16): whole episodes, scored by the env.

    from trl import GRPOConfig, GRPOTrainer
    from turngym.integrations.trl import env_reward, make_dataset, make_rollout_func

    craft = {"task": "wood_pickaxe", "action_mode": "skills", "image": False}
    train = make_dataset("turngym/Craft-v0", "train", 64, **craft)
    trainer = GRPOTrainer(model, reward_funcs=env_reward, train_dataset=train,
                          rollout_func=make_rollout_func(max_new_tokens=64),
                          args=GRPOConfig(num_generations=8, max_completion_length=1024, ...))
    trainer.train()

The dataset's prompts are the first turn of frozen tasks, as the `hf:` agents see it (the system
prompt and first user message of `turngym.agents.lm`). Each prompt carries its task: the system
message has a `turngym` key (never shown to the model) holding the env id, env kwargs, task id
and reset seed, also given as columns, so every rollout of a prompt replays its task from the
same reset (two tasks may well open with the same observation). The rollout function plays
each prompt's episode to its end with the trainer's model, turn by turn, all episodes of a batch
in one `generate` call per turn: the reply is parsed with `turngym.agents.lm.parse_action`, the env
steps, and its next observation goes back as the user message the `hf:` agents would send (with
the same feedback on an invalid action). The whole episode becomes one GRPO sample: the prompt,
then a completion that interleaves the model's replies with the chat-template tokens of the env's
messages; `env_mask` marks the reply tokens, so only they enter the loss. The reward is the
episode's return (the env's score under its default sparse reward), which `env_reward` hands to
GRPO. An episode longer than `max_completion_length` tokens is cut there and returns what it
earned so far (0 under a sparse reward); `env_finished` tells which were cut.

Why `rollout_func` and not trl's `environment_factory`: the latter exposes an env's methods as
tools in the tokenizer's tool-calling format, which only tool-tuned chat templates parse, while
turngym's language agents speak the `Thought: ... / Action: ...` format that any chat model can
follow (`agents/lm.py`); the rollout function keeps that protocol and the exact token stream the
trainer scores. It generates with transformers (not vLLM) on the trainer's own model.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym

from turngym.agents.lm import Message, parse_action, system_prompt, user_message
from turngym.integrations import require
from turngym.registry import describe

if TYPE_CHECKING:
    from datasets import Dataset
    from trl import GRPOTrainer

__all__ = ["EnvRollout", "Task", "env_reward", "first_prompt", "make_dataset", "make_rollout_func"]


@dataclass(frozen=True)
class Task:
    """What a prompt replays: `gym.make(env_id, **json.loads(env_kwargs))`, reset with `seed` on `task_id`."""

    env_id: str
    env_kwargs: str  # JSON with sorted keys, so that equal kwargs compare equal
    task_id: str
    seed: int

    KEY: ClassVar[str] = "turngym"  # the system message's key that carries the task (templates read role, content)

    @classmethod
    def of(cls, prompt: Sequence[dict[str, Any]]) -> Task:
        """The task a prompt of `make_dataset` carries; ValueError for any other prompt."""
        carried = prompt[0].get(cls.KEY) if prompt and isinstance(prompt[0], dict) else None
        if not carried:
            raise ValueError("the trainer sent a prompt that carries no turngym task: build the dataset with "
                             "make_dataset (and keep the `turngym` key of its prompts' system message)")
        return cls(**json.loads(carried))

    def carried(self) -> str:
        """The task as the prompt carries it (JSON)."""
        return json.dumps({"env_id": self.env_id, "env_kwargs": self.env_kwargs, "task_id": self.task_id,
                           "seed": self.seed})


def first_prompt(env_id: str, obs: dict[str, Any], info: dict[str, Any]) -> list[Message]:
    """The first turn of an episode as the `hf:` agents send it: system prompt and first user message."""
    try:
        description = describe(env_id)
    except KeyError:  # a plain Gymnasium id, registered without turngym's description
        description = ""
    return [{"role": "system", "content": system_prompt(description, obs, info)},
            {"role": "user", "content": user_message(int(info.get("turn", 0)), str(obs.get("text", "")),
                                                     list(info.get("actions") or []), None)}]


def make_dataset(env_id: str, split: str | Sequence[str] = "train", n: int | None = None, *, seed: int = 0,
                 **env_kwargs: Any) -> Dataset:
    """A `datasets.Dataset` of the first `n` tasks (all when None) of `split` of
    `gym.make(env_id, **env_kwargs)`, or of the task ids `split` lists (a curriculum's, say):
    columns `prompt` (the first turn, conversational, carrying its task: see the module
    docstring), `env_id`, `env_kwargs` (JSON), `task_id` and `seed` (`seed` + the task's index:
    its reset seed)."""
    datasets = require("datasets", "datasets")
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1 (or None for the whole split), got {n}")
    kwargs = json.dumps(env_kwargs, sort_keys=True)
    env = gym.make(env_id, **env_kwargs)
    rows: list[dict[str, Any]] = []
    try:
        splits = getattr(env.unwrapped, "splits", {})
        if isinstance(split, str) and split not in splits:
            raise ValueError(f"{env_id} has no split {split!r}: use one of {sorted(splits)}, or a list of task ids")
        tasks = splits[split] if isinstance(split, str) else [str(task) for task in split]
        if n is not None and n > len(tasks):
            raise ValueError(f"{env_id} has {len(tasks)} tasks in {split if isinstance(split, str) else 'the list'}, "
                             f"fewer than n={n}: ask for fewer")
        for index in range(len(tasks) if n is None else n):
            obs, info = env.reset(seed=seed + index, options={"task_id": tasks[index]})
            task = Task(env_id, kwargs, str(info["task_id"]), seed + index)
            system, user = first_prompt(env_id, obs, info)
            rows.append({"prompt": [{**system, Task.KEY: task.carried()}, user], "env_id": env_id,
                         "env_kwargs": kwargs, "task_id": task.task_id, "seed": task.seed})
    finally:
        env.close()
    return datasets.Dataset.from_list(rows)


def make_rollout_func(max_new_tokens: int = 256) -> EnvRollout:
    """The `rollout_func` for `GRPOTrainer` that plays the tasks of `make_dataset` prompts; each
    reply has at most `max_new_tokens` tokens. Sampling follows the trainer's GRPOConfig
    (temperature, top_p, ...)."""
    return EnvRollout(max_new_tokens=max_new_tokens)


def env_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: each rollout's return in its env (`env_return`, reported by the rollout function)."""
    if "env_return" not in kwargs:
        raise ValueError("env_reward scores the episodes of turngym's rollout function: pass "
                         "rollout_func=make_rollout_func() to GRPOTrainer")
    return [float(r) for r in kwargs["env_return"]]


@dataclass
class Episode:
    """One rollout: its env, its token stream so far and what the env paid."""

    env: gym.Env
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # the completion: replies and env messages
    mask: list[int] = field(default_factory=list)  # 1 on reply tokens, 0 on env-message tokens
    env_return: float = 0.0
    turns: int = 0
    actions: list[str] = field(default_factory=list)  # the admissible actions the last message listed
    done: bool = False  # no more turns: the env ended the episode, or the token budget did
    finished: bool = False  # the env ended it (terminated or truncated)
    info: dict[str, Any] = field(default_factory=dict)


class EnvRollout:
    """A `rollout_func` for trl's GRPOTrainer (see the module docstring); `close()` closes its envs.

    Envs are made once per (env id, kwargs) and reused across batches, one per concurrent rollout.
    """

    def __init__(self, max_new_tokens: int = 256) -> None:
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
        self.max_new_tokens = max_new_tokens
        self.envs: dict[tuple[str, str], list[gym.Env]] = {}

    def __call__(self, prompts: list[Any], trainer: GRPOTrainer) -> dict[str, Any]:
        """Play one episode per prompt; returns the token streams and what trl forwards to rewards."""
        tasks = [Task.of(prompt) for prompt in prompts]
        torch = require("torch", "torch")
        trl_utils = require("trl.models.utils", "trl")
        if getattr(trainer, "use_vllm", False):
            raise ValueError("turngym's rollout function generates with the trainer's own model: set use_vllm=False")
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        episodes = self._start(prompts, tasks, tokenizer)
        suffix = EnvMessages(tokenizer)
        generation = copy.deepcopy(trainer.generation_config)
        stop = set(trainer.eos_token_ids)
        context = getattr(trainer.model.config.get_text_config(), "max_position_embeddings", None) or 10**9
        limit = trainer.max_completion_length or context  # completion tokens of an episode
        device, args = trainer.accelerator.device, trainer.args
        unwrap = trl_utils.unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
            generation_kwargs=trainer.generation_kwargs,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        with unwrap as unwrapped, torch.no_grad():
            while active := [e for e in episodes if not e.done]:
                rooms = [min(self.max_new_tokens, limit - len(e.ids), context - len(e.prompt_ids) - len(e.ids))
                         for e in active]
                if min(rooms) < 1:
                    raise ValueError(f"a prompt of {len(active[rooms.index(min(rooms))].prompt_ids)} tokens leaves "
                                     "no room to reply within the model's context: use a model with a longer one")
                sequences = [e.prompt_ids + e.ids for e in active]
                width = max(map(len, sequences))
                pad = tokenizer.pad_token_id
                input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=device)
                attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
                generation.max_new_tokens = max(rooms)
                out = unwrapped.generate(input_ids=input_ids, attention_mask=attention, generation_config=generation)
                for episode, row, room in zip(active, out[:, width:].tolist(), rooms, strict=True):
                    self._turn(episode, reply_ids(row[:room], stop), tokenizer, suffix, limit)
        return {"prompt_ids": [e.prompt_ids for e in episodes], "completion_ids": [e.ids for e in episodes],
                "logprobs": None, "env_mask": [e.mask for e in episodes],
                "env_return": [e.env_return for e in episodes],
                "env_score": [e.info.get("score") if e.finished else None for e in episodes],
                "env_success": [e.info.get("success") if e.finished else None for e in episodes],
                "env_turns": [e.turns for e in episodes], "env_finished": [e.finished for e in episodes]}

    def _start(self, prompts: list[Any], tasks: list[Task], tokenizer: Any) -> list[Episode]:
        """Reset an env per prompt on its task, after checking the prompt is still that task's first turn."""
        taken: Counter[tuple[str, str]] = Counter()
        episodes = []
        for prompt, task in zip(prompts, tasks, strict=True):
            key = (task.env_id, task.env_kwargs)
            pool = self.envs.setdefault(key, [])
            if taken[key] == len(pool):
                pool.append(gym.make(task.env_id, **json.loads(task.env_kwargs)))
            env = pool[taken[key]]
            taken[key] += 1
            obs, info = env.reset(seed=task.seed, options={"task_id": task.task_id})
            if first_prompt(task.env_id, obs, info) != [{"role": m["role"], "content": m["content"]} for m in prompt]:
                raise ValueError(f"the prompt of task {task.task_id} no longer matches its first turn in "
                                 f"{task.env_id}: rebuild the dataset with make_dataset")
            ids = tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in prompt],
                                                add_generation_prompt=True, tokenize=True, return_dict=False)
            episodes.append(Episode(env, list(ids), actions=list(info.get("actions") or [])))
        return episodes

    def _turn(self, episode: Episode, reply: list[int], tokenizer: Any, suffix: EnvMessages, limit: int) -> None:
        """Append a reply, act on it, and append the env's answer (or end the episode)."""
        episode.ids += reply
        episode.mask += [1] * len(reply)
        action, error = parse_action(tokenizer.decode(reply, skip_special_tokens=True), episode.actions)
        # An empty action is invalid in every env: the turn is lost, as for the hf: agents.
        obs, reward, terminated, truncated, info = episode.env.step(action if action is not None else "")
        episode.env_return += float(reward)
        episode.turns += 1
        episode.info = info
        if terminated or truncated:
            episode.done = episode.finished = True
            return
        episode.actions = list(info.get("actions") or [])
        message = user_message(int(info.get("turn", episode.turns)), str(obs.get("text", "")), episode.actions,
                               feedback(action, error, info))
        tail = suffix.ids(message, closed=bool(reply) and reply[-1] == tokenizer.eos_token_id)
        if len(episode.ids) + len(tail) >= limit:  # no room left for a reply after this message
            episode.done = True
            return
        episode.ids += tail
        episode.mask += [0] * len(tail)

    def close(self) -> None:
        """Close every env this rollout function made."""
        for pool in self.envs.values():
            for env in pool:
                env.close()
        self.envs.clear()


def reply_ids(row: list[int], stop: set[int]) -> list[int]:
    """A generated row up to and including its first stop token (the rest is padding)."""
    for i, token in enumerate(row):
        if token in stop:
            return row[:i + 1]
    return row


def feedback(action: str | None, error: str | None, info: dict[str, Any]) -> str | None:
    """What the `hf:` agents (`LMAgent`) tell the model about its previous turn when it went wrong."""
    if action is None:
        return (f"Your previous reply was not used ({error}), so the turn was lost. End every reply with one line "
                "`Action: <one admissible action>`.")
    if info.get("valid", True):
        return None
    return f"Your previous action `{action}` was invalid: {info.get('error') or 'the env rejected it'}"


class EnvMessages:
    """The tokens the chat template puts between a reply and the next generation: the end of the
    assistant turn, the user message, the assistant turn's opener. Found as trl does for tool
    results: the template of a probe chat with and without the message, cut after the reply's end
    token, so that the sampled reply tokens stay exactly as sampled."""

    PROBE = ({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"})

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        head = self._template(list(self.PROBE), add_generation_prompt=False)
        ends = [i for i, token in enumerate(head) if token == self.eos]
        if not ends:
            raise ValueError("the chat template does not end an assistant turn with the tokenizer's eos token "
                             f"{tokenizer.eos_token!r}: set eos_token to the template's end-of-turn token")
        self.head = head[:ends[-1] + 1]

    def _template(self, messages: list[Message], *, add_generation_prompt: bool) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                       tokenize=True, return_dict=False))

    def ids(self, message: str, *, closed: bool) -> list[int]:
        """The tokens after a reply; `closed`: the reply ended with the eos token (else it is added)."""
        full = self._template([*self.PROBE, {"role": "user", "content": message}], add_generation_prompt=True)
        if full[:len(self.head)] != self.head:
            raise ValueError("the chat template renders earlier turns differently once a turn follows: "
                             "multi-turn training needs a prefix-preserving template")
        return ([] if closed else [self.eos]) + full[len(self.head):]
