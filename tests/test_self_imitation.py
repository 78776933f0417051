"""Self-imitation (trainers/self_imitation.py): which episodes the buffer keeps, and that its loss
moves the policy towards them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from turngym.trainers.collect import Collected, collect_groups
from turngym.trainers.config import NeuralTrainConfig
from turngym.trainers.ppo import build, ppo_update, train
from turngym.trainers.self_imitation import SelfImitation
from turngym.trajectory import Trajectory, Turn

CRAFT = "turngym/Craft-v0"


class Flat:
    """An actor whose inputs are a plain array of turn ids (what `take` and `evaluate` need)."""

    @staticmethod
    def take(inputs, order=None):
        flat = np.concatenate([np.asarray(chunk) for chunk in inputs])
        return flat if order is None else flat[order]


def batch(episodes):
    """A Collected of episodes given as (success, progress, turns); turn k of the batch has input k."""
    trajs, turns, at = [], [], 0
    for success, progress, n in episodes:
        trajs.append(Trajectory(env_id=CRAFT, task_id="t", seed=0, turns=[Turn("", "do", 0.0)] * n, success=success,
                                score_parts={"progress": progress}))
        turns.append(list(range(at, at + n)))
        at += n
    return Collected(trajs, [0] * len(trajs), turns, np.arange(at), torch.arange(at), torch.zeros(at),
                     torch.zeros(at), [0.0] * len(trajs))


def test_the_buffer_keeps_the_best_episodes_shortest_then_newest_first():
    buffer = SelfImitation(Flat(), episodes=3, signal="progress")
    buffer.add(batch([(False, 0.0, 2), (False, 0.5, 3), (True, 1.0, 4)]))  # progress 0 is never kept
    assert [k.rank[:2] for k in buffer.kept] == [(1.0, -4), (0.5, -3)]
    assert buffer.kept[0].inputs.tolist() == [5, 6, 7, 8] and buffer.kept[0].index.tolist() == [5, 6, 7, 8]
    buffer.add(batch([(True, 1.0, 6), (True, 1.0, 2), (False, 0.25, 1)]))
    # three kept: the two-turn success first, then the four- and six-turn ones; 0.5 and 0.25 dropped
    assert [k.rank[:2] for k in buffer.kept] == [(1.0, -2), (1.0, -4), (1.0, -6)]
    assert buffer.kept[0].inputs.tolist() == [6, 7]
    buffer.add(batch([(True, 1.0, 4)]))  # a tie in signal and turns: the newer episode wins
    assert [k.rank[:2] for k in buffer.kept] == [(1.0, -2), (1.0, -4), (1.0, -4)]
    assert buffer.kept[1].rank[2] > buffer.kept[2].rank[2]
    assert buffer.stats() == {"si_episodes": 3, "si_turns": 10, "si_signal": 1.0, "si_episode_turns": 10 / 3}
    restored = SelfImitation(Flat(), episodes=3, signal="progress")
    restored.load_state_dict(buffer.state_dict())
    assert [k.rank for k in restored.kept] == [k.rank for k in buffer.kept] and restored.serial == buffer.serial


def test_the_success_signal_keeps_successes_only():
    buffer = SelfImitation(Flat(), episodes=4, signal="success")
    buffer.add(batch([(False, 0.9, 3), (True, 1.0, 5), (False, 0.5, 2)]))
    assert [k.rank[:2] for k in buffer.kept] == [(1.0, -5)]
    with pytest.raises(ValueError, match="unknown self-imitation signal"):
        SelfImitation(Flat(), episodes=4, signal="reward")


def test_the_loss_raises_the_likelihood_of_the_kept_episodes():
    """With zero advantages and no entropy bonus the update's only gradient is the cloning loss on
    the kept turns, and their log-likelihood under the policy rises."""
    config = NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", algo="grpo", groups=2, group_size=4,
                               entropy_coef=0.0, self_imitation=1.0, self_imitation_signal="progress",
                               env_kwargs={"max_turns": 40}, out="unused")
    policy, actor, _ = build(config)
    col = collect_groups(actor, [3, 4], 4, CRAFT, torch.Generator().manual_seed(0))
    buffer = SelfImitation(actor, episodes=4, signal="progress")
    buffer.add(col)
    assert 1 <= len(buffer.kept) <= 4 and all(k.rank[0] > 0 for k in buffer.kept)
    inputs, index = actor.take([k.inputs for k in buffer.kept]), torch.cat([k.index for k in buffer.kept])
    rows = np.arange(len(index))

    def likelihood():
        with torch.no_grad():
            return float(actor.evaluate(inputs, rows, index)[0].mean())

    before = likelihood()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    stats = ppo_update(config, policy, optimizer, actor, col, torch.zeros(len(col.index)), None, generator,
                       imitation=buffer)
    assert stats["pg_loss"] == 0.0 and stats["si_loss"] > 0
    assert likelihood() > before + 0.05


def test_a_run_with_self_imitation_logs_its_buffer(tmp_path):
    rows = train(NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", algo="grpo", groups=2, group_size=4,
                                   steps=600, self_imitation=0.5, self_imitation_episodes=3,
                                   self_imitation_signal="progress", env_kwargs={"max_turns": 60},
                                   out=str(tmp_path), tensorboard=False), progress=False)
    assert rows[-1]["si_episodes"] == 3 and rows[-1]["si_signal"] > 0 and np.isfinite(rows[-1]["si_loss"])
    with pytest.raises(ValueError, match="self_imitation must be >= 0"):
        NeuralTrainConfig(env_id=CRAFT, self_imitation=-1.0).check()
    with pytest.raises(ValueError, match="unknown self_imitation_signal"):
        NeuralTrainConfig(env_id=CRAFT, self_imitation_signal="reward").check()


def test_the_text_policy_imitates_its_kept_turns_too(tmp_path):
    rows = train(NeuralTrainConfig(env_id=CRAFT, task="wood_pickaxe", algo="grpo", backend="text", groups=2,
                                   group_size=4, steps=240, self_imitation=0.5, self_imitation_signal="progress",
                                   env_kwargs={"max_turns": 30, "image": False}, out=str(tmp_path), seed=1,
                                   net={"dim": 16, "layers": 1, "buckets": 1024}, tensorboard=False), progress=False)
    assert rows[-1]["si_episodes"] > 0, [r["si_episodes"] for r in rows]
    losses = [r["si_loss"] for r in rows if "si_loss" in r]
    assert losses and all(np.isfinite(x) and x > 0 for x in losses)
