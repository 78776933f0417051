"""The neural policy (agents/neural.py) and behaviour cloning (trainers/bc.py), on real envs."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import turngym
from turngym.agents import make_agent
from turngym.agents.neural import Batch, NeuralPolicy, PolicyConfig, bag, new_policy, proposer, unbatch, with_context
from turngym.apps.cli import app
from turngym.apps.harness import evaluate
from turngym.results import entry_row
from turngym.trainers.bc import clone, collect, demonstrations, smoothed_cross_entropy

CRAFT = "turngym/Craft-v0"


def first_turn(env_id: str, **kwargs):
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=3)
    return env, obs, info


def test_candidates_come_from_the_env_with_templates_filled():
    env, obs, info = first_turn("turngym/WebShop-v0")
    proposed = proposer(env)(obs, info)
    assert proposed[0] == f"search[{info['instruction'].lower()}]"
    assert all("<" not in a for a in proposed)
    env, obs, info = first_turn("turngym/HopVQA-v0")
    proposed = proposer("turngym/HopVQA-v0")(obs, info)
    assert "answer[0]" in proposed and "answer[99]" in proposed and "zoom[0, 0, 0.5, 0.5]" in proposed
    for action in proposed[:6]:  # every proposal is a well-formed action of the env
        assert env.step(action)[4]["valid"], action
    env, obs, info = first_turn(CRAFT, action_mode="skills")
    assert proposer(env)(obs, info) == info["actions"]  # Craft's actions are complete already


def test_forward_masks_candidates_and_handles_turns_without_any():
    env, obs, info = first_turn(CRAFT)
    policy = new_policy(seed=1)
    step = policy.act([obs, obs, obs], [info, {"actions": ["search[<query>]"]}, info], proposer(env))
    assert step.actions[1] == "" and int(step.index[1]) == -1 and float(step.logprob[1]) == 0.0
    assert step.actions[0] in info["actions"] and step.value.shape == (3,)
    batch = policy.encode([obs, obs], [info["actions"], info["actions"][:2]])
    logits, values = policy(batch)
    assert logits.shape == (2, len(info["actions"])) and torch.isinf(logits[1, 2:]).all()
    probs = torch.softmax(logits, -1)
    assert torch.allclose(probs.sum(-1), torch.ones(2)) and values.shape == (2,)
    # The score of a candidate depends on the observation, not only on the candidate.
    other, _ = policy(policy.encode([{"text": "Task: something else entirely"}], [info["actions"]]))
    assert not torch.allclose(other[0], logits[0])


def test_ngram_bags_are_stable_and_see_word_order():
    assert bag("tree: 4 east", 1 << 15, 3, 64) == bag("Tree: 4 East", 1 << 15, 3, 64)
    assert set(bag("cow 4 east, tree 2 north", 1 << 15, 3, 64)) != set(bag("cow 2 north, tree 4 east", 1 << 15, 3, 64))


def test_same_seed_same_weights_and_same_sampled_episode():
    a, b = new_policy(seed=5), new_policy(seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    env = gym.make(CRAFT, max_turns=15)
    runs = [turngym.rollout(env, make_agent("neural", env, seed=2), seed=4, record_images=False)
            for _ in range(2)]
    assert [t.action for t in runs[0].turns] == [t.action for t in runs[1].turns]
    assert len({t.action for t in runs[0].turns}) > 1  # sampling, not a constant


def test_save_load_round_trip_and_clear_errors(tmp_path):
    env, obs, info = first_turn(CRAFT)
    policy = new_policy(PolicyConfig(dim=32, heads=2), seed=3)
    path = policy.save(tmp_path / "p.pt", note="x")
    loaded, meta = NeuralPolicy.load(path)
    batch = policy.encode([obs], [info["actions"]])
    assert torch.allclose(policy(batch)[0], loaded(batch)[0]) and meta == {"note": "x"}
    agent = make_agent(f"neural:{path}", env)
    assert agent.act(obs, info) in info["actions"]
    with pytest.raises(ValueError, match="no neural policy"):
        make_agent(f"neural:{tmp_path / 'missing.pt'}", env)
    with pytest.raises(ValueError, match="unknown neural option"):
        make_agent("neural", env, width=3)
    with pytest.raises(ValueError, match="takes no option temperature"):
        make_agent("random", env, temperature=0.5)


@pytest.mark.parametrize(("env_id", "kwargs"), [
    (CRAFT, {}), (CRAFT, {"action_mode": "skills"}), ("turngym/WebShop-v0", {}),
    ("turngym/HopVQA-v0", {"size": 256}), ("turngym/LongDocVQA-v0", {})])
def test_neural_agent_plays_every_family_and_records_its_choices(env_id, kwargs, tmp_path):
    env = gym.make(env_id, max_turns=6, **kwargs)
    image = "image" in env.observation_space.spaces
    agent = make_agent("neural", env, image=image)
    traj = turngym.rollout(env, agent, seed=1)
    assert len(traj) >= 1
    for turn in traj.turns:
        assert len(turn.logprobs) == 1 and turn.logprobs[0] <= 0.0
        assert np.isfinite(turn.extras["value"]) and turn.extras["entropy"] >= 0.0
    back = turngym.read_jsonl(turngym.write_jsonl(tmp_path / "t.jsonl", [traj]))[0]
    assert back.turns[0].logprobs == traj.turns[0].logprobs and back.reset_info["actions"] == traj.reset_info["actions"]


def test_batched_acting_over_a_vector_env():
    envs = gym.make_vec(CRAFT, num_envs=4, vectorization_mode="sync", max_turns=8)
    policy, propose = new_policy(seed=0), proposer(envs)
    obs, info = envs.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    ended = []
    for _ in range(10):  # past the end of the episodes, whose last info nests score_parts
        observations, infos = unbatch(obs, info, 4)
        step = policy.act(observations, infos, propose, generator=generator)
        assert all(a in i["actions"] for a, i in zip(step.actions, infos, strict=True) if i.get("actions"))
        obs, _, terminated, truncated, info = envs.step(step.actions)
        ended += [i for i, done in zip(unbatch(obs, info, 4)[1], terminated | truncated, strict=True) if done]
    envs.close()
    assert ended and all(isinstance(i["score_parts"], dict) and "success" in i for i in ended)


def test_demonstrations_label_every_expert_turn_including_the_first():
    trajs = collect(CRAFT, 3, env_kwargs={"task": "wood_pickaxe"}, noise=0.3)
    samples = demonstrations(trajs, proposer(CRAFT))
    assert len(samples) == sum(len(t) for t in trajs)  # the oracle only takes admissible actions
    executed = [turn.action for t in trajs for turn in t.turns]
    labels = [s.candidates[s.index] for s in samples]
    assert labels != executed  # noise ran other actions, the labels stay the expert's
    assert samples[0].candidates == proposer(CRAFT)({"text": ""}, trajs[0].reset_info)


@pytest.mark.parametrize("image", [False, True])
def test_turns_encoded_apart_and_joined_are_the_batch_encoded_together(image):
    """What `clone` relies on to encode each demonstration once rather than every epoch."""
    samples = demonstrations(collect(CRAFT, 2, env_kwargs={"task": "wood_pickaxe", "image": image}, images=image),
                             proposer(CRAFT))
    policy = new_policy(PolicyConfig(image=image), seed=0)
    observations, candidates = [s.obs for s in samples], [s.candidates for s in samples]
    together = policy.encode(observations, candidates)
    joined = Batch.join([policy.encode([o], [c]) for o, c in zip(observations, candidates, strict=True)])
    for name in ("lines", "actions"):
        assert torch.equal(getattr(joined, name).ids, getattr(together, name).ids)
        assert torch.equal(getattr(joined, name).offsets, getattr(together, name).offsets)
    for name in ("line_owner", "line_number", "overlap", "owner", "slot") + (("images",) if image else ()):
        assert torch.equal(getattr(joined, name), getattr(together, name)), name
    assert joined.images is None if not image else joined.images.shape[0] == len(samples)
    assert (joined.counts, joined.candidates) == (together.counts, together.candidates)
    assert torch.equal(policy(joined)[0], policy(together)[0])


def test_behaviour_cloning_from_100_oracle_episodes_makes_a_wood_pickaxe(tmp_path):
    """Issue 6's bar, >= 80% of the 100 test seeds, from half its 200 oracle episodes (1,413 expert
    turns; about 40 s of cloning on one core). bench/agents.py prints the issue's own 200-episode
    run, with timings."""
    kwargs = {"task": "wood_pickaxe"}
    samples = demonstrations(collect(CRAFT, 100, env_kwargs=kwargs, seed=10_000), proposer(CRAFT))
    policy = new_policy(seed=0)
    history = clone(policy, samples, epochs=10)
    assert history[-1]["loss"] < history[0]["loss"] / 3 and history[-1]["accuracy"] > 0.8
    path = policy.save(tmp_path / "bc.pt")
    cloned = entry_row(evaluate(CRAFT, [f"neural:{path}"], 100, env_kwargs=kwargs), f"neural:{path}")
    assert cloned["success_rate"] >= 0.8, cloned
    # Flailing for 200 turns makes a pickaxe now and then (an untrained policy: a third to half the time);
    # the clone does it far more often and in a fraction of the turns.
    untrained = new_policy(seed=0).save(tmp_path / "untrained.pt")
    floor = entry_row(evaluate(CRAFT, [f"neural:{untrained}"], 10, env_kwargs=kwargs), f"neural:{untrained}")
    assert floor["success_rate"] < 0.7 and cloned["mean_turns"] < floor["mean_turns"] / 2


def test_cli_bc_saves_a_policy_and_its_record(tmp_path):
    result = CliRunner().invoke(app, ["bc", CRAFT, "-k", "task=wood_pickaxe", "--episodes", "4", "--epochs", "1",
                                      "--eval", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bc.json").read_text())
    assert record["test"]["episodes"] == 2 and record["demonstrations"] > 0 and (tmp_path / "policy.pt").is_file()
    assert record["demonstrations"] <= record["expert_turns"]
    assert f"cloned {record['demonstrations']} of {record['expert_turns']} expert turns" in result.output


def webshop_turns(obs_mode: str = "text_rich"):
    """A results page and the target's item page of a WebShop training task, with their proposals."""
    env = gym.make("turngym/WebShop-v0", obs_mode=obs_mode)
    obs, info = env.reset(options={"split": "train", "index": 4})
    propose = proposer(env)
    results, _, _, _, results_info = env.step(propose(obs, info)[0])
    state = env.unwrapped.state_dict()
    target = state["goal"]["asin"] if state["goal"]["asin"] in state["results"][:10] else state["results"][0]
    item, _, _, _, item_info = env.step(f"click[{target}]")
    return env, (results, results_info), (item, item_info), target


def test_candidates_read_the_lines_of_the_ids_they_name():
    env, (results, info), _, target = webshop_turns()
    proposed = proposer(env)(results, info)
    read = with_context(results["text"], proposed, 2)
    product = env.unwrapped.catalog.product(env.unwrapped.catalog.asin_to_id(target))
    mine = read[proposed.index(f"click[{target}]")]
    assert mine.startswith(f"click[{target}] [button] {product['Title']}") and "$" in mine  # title, then price
    assert sum(product["Title"] in r for r in read) == 1  # the next product's lines are its own
    for action, with_lines in zip(proposed, read, strict=True):  # a word reads its line's mark, no more
        if "[B0" not in action:
            assert with_lines in (action, f"{action} [button]")
    assert with_context(results["text"], proposed, 0) == proposed
    env, _, _, _ = webshop_turns()
    option = next(f"click[{v}]" for v in env.unwrapped.state_dict()["goal"]["goal_options"].values())
    after, _, _, _, info = env.step(option)
    marked = dict(zip(proposer(env)(after, info), with_context(after["text"], proposer(env)(after, info), 2),
                      strict=True))
    assert marked[option] == f"{option} [clicked button]"  # an option already chosen says so
    assert marked["click[Buy Now]"] == "click[Buy Now] [button]"


def test_overlap_features_single_out_the_option_the_instruction_names():
    env, _, (item, info), _ = webshop_turns()
    proposed = proposer(env)(item, info)
    goal = env.unwrapped.state_dict()["goal"]
    wanted = {f"click[{value}]" for value in goal["goal_options"].values()} & set(proposed)
    assert wanted, "the training task should ask for an option its product offers"
    batch = new_policy().encode([item], [proposed])
    share = batch.overlap[:, 1]  # the share of the candidate's words found in the instruction (line 1)
    others = [float(share[k]) for k, a in enumerate(proposed) if a not in wanted]
    for action in wanted:
        assert share[proposed.index(action)] == 1.0
    assert np.mean(others) < 0.5 and others.count(1.0) <= 1
    assert torch.all(batch.overlap[:, 4:] <= share.max())  # of the line's words: a few each


def test_policies_saved_before_candidate_features_load_unchanged(tmp_path):
    env, (results, info), _, _ = webshop_turns()
    old = new_policy(PolicyConfig(context=0, attend=False, overlap_lines=0, slots=0), seed=2)
    path = old.save(tmp_path / "old.pt")
    saved = torch.load(path, weights_only=True)
    for key in ("context", "attend", "overlap_lines", "slots"):  # a file from before these switches
        del saved["config"][key]
    torch.save(saved, path)
    loaded, _ = NeuralPolicy.load(path)
    batch = loaded.encode([results], [proposer(env)(results, info)])
    assert torch.equal(loaded(batch)[0], old(batch)[0])


def test_the_overlap_path_alone_picks_the_option_the_instruction_names():
    env, _, (item, info), _ = webshop_turns()
    proposed = proposer(env)(item, info)
    wanted = {f"click[{v}]" for v in env.unwrapped.state_dict()["goal"]["goal_options"].values()}
    policy = new_policy(seed=0)
    with torch.no_grad():  # the scorer silenced: only "the instruction names it" counts
        policy.scorer[-1].weight.zero_()
        policy.scorer[-1].bias.zero_()
        policy.overlap_score.weight.zero_()
        policy.overlap_score.weight[0, 1] = 10.0  # the share of its words in the instruction line
    logits, _ = policy(policy.encode([item], [proposed]))
    assert proposed[int(logits[0].argmax())] in wanted


def test_cloning_webshop_beats_a_fresh_policy_on_held_out_turns():
    env_id, kwargs = "turngym/WebShop-v0", {"obs_mode": "text_rich"}
    samples = demonstrations(collect(env_id, 120, env_kwargs=kwargs, expert="oracle:instruction"), proposer(env_id))
    train, test = samples[:-100], samples[-100:]

    def accuracy(policy):
        with torch.no_grad():
            logits, _ = policy(policy.encode([s.obs for s in test], [s.candidates for s in test]))
        return float((logits.argmax(-1) == torch.tensor([s.index for s in test])).float().mean())

    policy = new_policy(seed=0)
    before = accuracy(policy)
    clone(policy, train, epochs=10)
    assert accuracy(policy) > before + 0.2


def test_label_smoothing_spreads_mass_over_a_rows_candidates_only():
    rows = [torch.tensor([1.0, 2.0, -0.5]), torch.tensor([0.3, -1.0])]
    padded = torch.full((2, 3), float("-inf"))
    for i, row in enumerate(rows):
        padded[i, :len(row)] = row
    index = torch.tensor([0, 1])
    for smoothing in (0.0, 0.2):
        # torch's own smoothing, one row at a time: no padding to spread mass over
        expected = torch.stack([torch.nn.functional.cross_entropy(row[None], index[i:i + 1], label_smoothing=smoothing)
                                for i, row in enumerate(rows)]).mean()
        assert torch.isclose(smoothed_cross_entropy(padded, index, smoothing), expected)


def test_a_smoothed_clone_of_a_rule_keeps_its_choices_and_some_entropy():
    kwargs = {"task": "wood_pickaxe", "action_mode": "skills"}
    samples = demonstrations(collect(CRAFT, 20, env_kwargs=kwargs), proposer(CRAFT))

    def probabilities(policy):
        with torch.no_grad():
            logits, _ = policy(policy.encode([s.obs for s in samples], [s.candidates for s in samples]))
        return torch.softmax(logits, -1).gather(1, torch.tensor([s.index for s in samples])[:, None]).squeeze(1)

    sharp, smooth = new_policy(seed=0), new_policy(seed=0)
    clone(sharp, samples, epochs=30)
    history = clone(smooth, samples, epochs=30, label_smoothing=0.2)
    assert history[-1]["accuracy"] > 0.9  # still the expert's choices, greedily
    # the label's target is 0.8 plus its share of the 0.2 spread: the sharp clone goes near 1
    assert probabilities(sharp).median() > 0.97 > 0.9 > probabilities(smooth).median() > 0.7
    with pytest.raises(ValueError, match="label_smoothing"):
        clone(smooth, samples, label_smoothing=1.0)


def test_oracle_instruction_takes_only_proposed_actions_and_buys_the_target():
    env = gym.make("turngym/WebShop-v0", obs_mode="text_rich")
    agent, propose = make_agent("oracle:instruction", env), proposer(env)
    for index in range(5):
        obs, info = env.reset(options={"split": "test", "index": index})
        agent.reset(obs, info)
        done = False
        while not done:
            action = agent.act(obs, info)
            assert action in propose(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert reward == 1.0
    with pytest.raises(ValueError, match="unknown oracle variant"):
        make_agent("oracle:title", env)
