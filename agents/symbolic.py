"""A small policy over Craft's symbolic observation, for fast RL on `CraftVectorEnv`.

The text policy (agents/neural.py) reads any env's text; this one reads the arrays that
CraftVectorEnv returns (and CraftEnv with `symbolic=True`): the view as material ids, inventory,
vitals and facing. Each tile's material gets a learned vector; with the inventory (counts and
"has any" flags), vitals and facing (and, with `landmarks`, where the agent last saw each of those materials:
agents/landmarks.py) it feeds an MLP with a policy head over the primitive actions (masked to the
admissible ones) and a value head. It is ~100x cheaper per turn than reading
text, which is what sparse Craft tasks need: millions of turns on a CPU.

The same network, read as M(s, a) = the action's output instead of a softmax, is the PRM of
`turngym.rewards.prm`.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from turngym.agents.base import Agent
from turngym.agents.landmarks import LandmarkMemory, check_materials, landmark_names
from turngym.envs.craft.rules import load_rules
from turngym.trajectory import atomic_write_bytes

KIND = "craft-symbolic"  # saved with the weights, so `neural:PATH` knows which network to build
OBS_KEYS = ("view", "inventory", "vitals", "facing")
MEMORY_KEY = "landmarks"  # added to the observation by agents/landmarks.py where the config asks for it
NET_FIELDS = ("embed", "hidden", "landmarks")  # what `--net` may set; the other fields follow the env


@dataclass(frozen=True)
class SymbolicConfig:
    materials: int
    items: int
    actions: int
    view: int = 9
    embed: int = 8
    hidden: int = 128
    inventory_max: int = 9
    vitals_max: int = 9
    landmarks: tuple[str, ...] = ()  # materials whose last-seen tile the agent remembers (agents/landmarks.py)

    def __post_init__(self) -> None:  # (a list when loaded from a checkpoint, a string from --net)
        object.__setattr__(self, "landmarks", landmark_names(self.landmarks))

    @classmethod
    def for_craft(cls, view: int = 9, **sizes: Any) -> SymbolicConfig:
        rules = load_rules()
        check_materials(rules, landmark_names(sizes.get("landmarks", ())))
        return cls(len(rules.materials), len(rules.items), len(rules.actions), view,
                   inventory_max=rules.raw["world"]["inventory_max"], vitals_max=rules.raw["vitals"]["max"], **sizes)


class SymbolicPolicy(nn.Module):
    """Logits over Craft's primitive actions (-inf where masked) and a value, from symbolic obs."""

    def __init__(self, config: SymbolicConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tiles = nn.Embedding(c.materials, c.embed)
        width = c.view * c.view * c.embed + 2 * c.items + 3 + 4 + 3 * len(c.landmarks)
        self.body = nn.Sequential(nn.Linear(width, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden), nn.ReLU())
        self.policy_head = nn.Linear(c.hidden, c.actions)
        self.value_head = nn.Linear(c.hidden, 1)

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        view = self.tiles(obs["view"].long()).flatten(1)
        inv = obs["inventory"].float()
        parts = [view, inv / c.inventory_max, (inv > 0).float(), obs["vitals"].float() / c.vitals_max,
                 nn.functional.one_hot(obs["facing"].long(), 4).float()]
        if c.landmarks:
            if MEMORY_KEY not in obs:
                raise ValueError(f"this policy remembers landmarks {list(c.landmarks)}: wrap its vector env in "
                                 "agents.landmarks.Remember (the trainer and SymbolicAgent do)")
            parts.append(obs[MEMORY_KEY].float())
        return torch.cat(parts, dim=1)

    def forward(self, obs: dict[str, torch.Tensor],
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.features(obs))
        logits = self.policy_head(h)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits, self.value_head(h).squeeze(-1)

    def save(self, path: str | Path, **meta: Any) -> Path:
        buf = io.BytesIO()
        torch.save({"kind": KIND, "config": asdict(self.config), "state_dict": self.state_dict(), "meta": meta}, buf)
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> SymbolicPolicy:
        policy = cls(SymbolicConfig(**saved["config"]))
        policy.load_state_dict(saved["state_dict"])
        return policy.eval()


def obs_keys(obs: dict[str, Any]) -> tuple[str, ...]:
    """The keys a symbolic policy reads from `obs`: OBS_KEYS, and the landmarks where present."""
    return OBS_KEYS + ((MEMORY_KEY,) if MEMORY_KEY in obs else ())


def as_tensors(obs: dict[str, Any], rows: np.ndarray | slice = slice(None)) -> dict[str, torch.Tensor]:
    """The symbolic keys of a batched observation as tensors (only `rows`)."""
    return {k: torch.from_numpy(np.ascontiguousarray(np.asarray(obs[k])[rows])) for k in obs_keys(obs)}


def new_symbolic_policy(config: SymbolicConfig | None = None, seed: int = 0) -> SymbolicPolicy:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SymbolicPolicy(config or SymbolicConfig.for_craft())


class SymbolicAgent(Agent):
    """Plays turngym/Craft-v0 made with `symbolic=True` (primitive actions), sampling from the
    policy with a stream seeded from the episode seed (`sample=False`: the most likely action)."""

    def __init__(self, policy: SymbolicPolicy, env: gym.Env, *, sample: bool = True) -> None:
        if "view" not in env.observation_space.spaces:
            raise ValueError("this policy reads Craft's symbolic observation: make the env with symbolic=True "
                             "(`-k symbolic=true` on the command line)")
        self.policy, self.sample = policy.eval(), bool(sample)
        rules = load_rules()
        self.actions = rules.actions
        self.index = {a: i for i, a in enumerate(self.actions)}
        self.generator = torch.Generator().manual_seed(0)
        c = policy.config
        self.memory = LandmarkMemory(rules, c.landmarks, 1, c.view) if c.landmarks else None
        self._last: tuple[np.ndarray, int] | None = None  # the view acted on and the action, for the memory

    def reset(self, obs: dict[str, Any], info: dict[str, Any], *, seed: int | None = None) -> None:
        self.generator = torch.Generator().manual_seed(0 if seed is None else int(seed) & 0x7FFFFFFF)
        if self.memory is not None:
            self.memory.reset(np.zeros(1, np.int64), np.asarray(obs["view"])[None])
        self._last = None

    @torch.no_grad()
    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        view = np.asarray(obs["view"])[None]
        batch = {k: torch.as_tensor(np.asarray(obs[k]))[None] for k in OBS_KEYS}
        if self.memory is not None:
            row = np.zeros(1, np.int64)
            if self._last is not None:
                self.memory.step(row, self._last[0], np.array([self._last[1]]), view)
            batch[MEMORY_KEY] = torch.from_numpy(self.memory.features(row))
        mask = torch.zeros(1, len(self.actions), dtype=torch.bool)
        mask[0, [self.index[a] for a in info.get("actions", []) if a in self.index]] = True
        if not mask.any():
            self._last = (view, self.index["noop"])
            return "noop"
        logits, value = self.policy(batch, mask)
        probs = torch.softmax(logits, -1)
        k = int(torch.multinomial(probs, 1, generator=self.generator)) if self.sample else int(logits.argmax())
        self.last_record = {"logprobs": [float(torch.log(probs[0, k]))], "extras": {"value": float(value[0])}}
        self._last = (view, k)
        return self.actions[k]
