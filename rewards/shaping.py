"""Potential-based reward shaping (Ng, Harada and Russell 1999), with designed or learned potentials.

A potential Phi(s) turns a sparse reward into a dense one without changing which policies are
optimal: each step's reward r_t becomes

    r'_t = r_t + gamma * Phi(s_{t+1}) - Phi(s_t),    Phi(s_{t+1}) = 0 if the episode terminated at t+1.

The added terms telescope. For an episode that terminates after T turns,

    sum_{t<T} gamma^t r'_t = sum_{t<T} gamma^t r_t + gamma^T * 0 - Phi(s_0)
                           = sum_{t<T} gamma^t r_t - Phi(s_0),

so every policy's return moves by the same constant -Phi(s_0) of the start state. A truncated
episode (the turn budget ran out) did not reach a terminal state, so Phi(s_T) is kept and the sum
is sum_t gamma^t r_t + gamma^T Phi(s_T) - Phi(s_0): the potential stands in for the return still to
come, which is what a critic bootstrapping from the truncated state would add as well.

`PotentialShaping` takes any potential: a function of what the agent sees, `potential(obs, info)`,
or with `state=True` a function of the env's privileged `env.unwrapped.state_dict()` (for designed
potentials such as Craft's tech-tree progress; the agent still sees only `obs`). `PRMShaping` uses
a learned process reward model: Phi(s) = max_a M(s, a) over the env's candidate actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

Potential = Callable[..., float]  # potential(obs, info), or potential(state_dict) with state=True


class PotentialShaping(gym.Wrapper):
    """Adds gamma * Phi(s') - Phi(s) to each step's reward (Phi(s') = 0 when the episode terminates).

    Args:
        env: a turngym env (any gymnasium env whose `step` returns the usual 5-tuple).
        potential: `potential(obs, info) -> float` of the observation and info returned by
            reset/step; with `state=True`, `potential(state) -> float` of
            `env.unwrapped.state_dict()` taken right after reset/step.
        gamma: the discount of the shaping term; use the discount the learner uses (1.0 for
            undiscounted returns) for the policy-invariance guarantee to hold.
        state: read the env's state instead of the observation (privileged; designed potentials).

    `info` gains `env_reward` (r), `shaping` (gamma * Phi(s') - Phi(s)) and `potential` (Phi of
    the state just returned, 0 after termination); `reset` computes Phi(s_0) and reports it as
    `info["potential"]`. The current potential is also `self.phi`.
    """

    def __init__(self, env: gym.Env, potential: Potential, gamma: float = 1.0, *, state: bool = False) -> None:
        super().__init__(env)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1]; got {gamma}")
        if state and not callable(getattr(env.unwrapped, "state_dict", None)):
            raise ValueError("state=True reads env.unwrapped.state_dict(), which this env does not have")
        self.potential, self.gamma, self.state = potential, float(gamma), bool(state)
        self.phi = 0.0

    def _phi(self, obs: dict[str, Any], info: dict[str, Any]) -> float:
        if self.state:
            return float(self.potential(self.env.unwrapped.state_dict()))
        return float(self.potential(obs, info))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.phi = self._phi(obs, info)
        return obs, {**info, "potential": self.phi}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi_next = 0.0 if terminated else self._phi(obs, info)
        shaping = self.gamma * phi_next - self.phi
        self.phi = phi_next
        info = {**info, "env_reward": float(reward), "shaping": shaping, "potential": phi_next}
        return obs, float(reward) + shaping, terminated, truncated, info


class PRMShaping(PotentialShaping):
    """Potential shaping with a process reward model: Phi(s) = max_{a in A(s)} M(s, a).

    A(s) is the env's candidate actions (`turngym.agents.neural.proposer(env)(obs, info)`;
    Craft: `info["actions"]`), and Phi(s) = 0 where there are none. Note that a turngym env lists
    no actions once an episode is over, so a truncated final state gets Phi(s_T) = 0 here too.

    `prm` is a `turngym.rewards.prm.ProcessRewardModel`, or a bare PRM network (a SymbolicPolicy
    or NeuralPolicy), which is wrapped in one for `env`.
    """

    def __init__(self, env: gym.Env, prm: Any, gamma: float = 1.0) -> None:
        from turngym.rewards.prm import ProcessRewardModel

        self.prm = prm if isinstance(prm, ProcessRewardModel) else ProcessRewardModel(prm, env)
        super().__init__(env, self.prm.value, gamma)
