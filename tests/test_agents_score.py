"""Scoring mode of `hf:` agents (agents/hf_score.py) on tiny checkpoints built here, and on SmolLM2.

Everything is real: the tiny GPT-2 and Mistral-style models are built locally (random weights:
their candidate distributions are spread, which the sampling tests want), and the scores are
checked against plain forward passes of the same models.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import gymnasium as gym
import pytest
import torch
from conftest import mixed_window_checkpoint, tiny_checkpoint

from turngym.agents import make_agent
from turngym.agents.models import MODELS, models_dir
from turngym.rollout import rollout

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests build their models: nothing may download
SKILLS = {"task": "wood_pickaxe", "action_mode": "skills"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, str]:
    """A tiny Mistral-style model (RoPE, sliding-window attention), a tiny GPT-2 (learned absolute
    positions) and a tiny Qwen2 with a windowed and a full-attention layer, random weights."""
    return {**{arch: str(tiny_checkpoint(tmp_path_factory, arch, arch=arch, train_steps=0))
               for arch in ("mistral", "gpt2")},
            "qwen2-mixed": str(mixed_window_checkpoint(tmp_path_factory, "qwen2-mixed"))}  # windowed + full layers


def craft(max_turns: int = 4, **kwargs: Any) -> gym.Env:
    return gym.make("turngym/Craft-v0", max_turns=max_turns, **{**SKILLS, **kwargs})


@torch.no_grad()
def plain_scores(model: torch.nn.Module, prompt: list[int], candidates: list[list[int]]) -> list[float]:
    """sum_k log p(t_k | prompt, t_<k) of each candidate by one plain forward over prompt + candidate."""
    out = []
    for c in candidates:
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + c])).logits[0].float(), -1)
        out.append(sum(float(logp[len(prompt) - 1 + k, token]) for k, token in enumerate(c)))
    return out


# --- the computation --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["mistral", "gpt2", "qwen2-mixed"])
def test_cached_scores_equal_a_plain_forward(models: dict[str, str], arch: str) -> None:
    """The agent's scores (the prompt's cache reused across turns, cropped to the common prefix,
    then copied along the batch of right-padded candidates) equal a plain forward of prompt +
    candidate; so do the trainer's (several turns' prompts left-padded into one batch)."""
    from turngym.agents.hf_score import candidate_scores, prompt_cache

    env = craft(max_turns=5)
    agent = make_agent(f"hf:{models[arch]}", env, mode="score")
    traj = rollout(env, agent, seed=0)
    model = agent.model.model
    assert len(traj) == 5 and all(t.info["valid"] for t in traj.turns)
    assert traj.turns[0].extras["usage"]["cached_tokens"] == 0
    assert all(t.extras["usage"]["cached_tokens"] > 0 for t in traj.turns[1:])  # the prefix was reused
    for turn in traj.turns:
        plain = plain_scores(model, turn.prompt_ids, turn.extras["candidate_ids"])
        assert torch.allclose(torch.tensor(turn.extras["scores"]), torch.tensor(plain), atol=1e-4, rtol=0)
    # The trainer's batch: the turns' prompts (their shared head computed once), and prompts of
    # different lengths with nothing shared (each turn's without its first 9k tokens), left-padded.
    candidates = [t.extras["candidate_ids"] for t in traj.turns]
    for prompts in ([t.prompt_ids for t in traj.turns], [t.prompt_ids[9 * k:] for k, t in enumerate(traj.turns)]):
        with torch.no_grad():
            batched = candidate_scores(model, prompt_cache(model, prompts, agent.model.pad_id, agent.model.device),
                                       candidates, agent.model.pad_id)
        for prompt, group, scores in zip(prompts, candidates, batched, strict=True):
            assert torch.allclose(scores, torch.tensor(plain_scores(model, prompt, group)), atol=1e-4, rtol=0)


def test_the_shared_prompt_head_gives_the_same_gradients(models: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Computing the head all prompts share once and reading it from every row is exact for the
    gradients too: the same as every row recomputing its whole prompt."""
    import turngym.agents.hf_score as hf_score

    env = craft(max_turns=4)
    agent = make_agent(f"hf:{models['gpt2']}", env, mode="score")
    traj = rollout(env, agent, seed=1)
    model, pad = agent.model.model, agent.model.pad_id
    prompts, candidates = [t.prompt_ids for t in traj.turns], [t.extras["candidate_ids"] for t in traj.turns]
    assert hf_score._shared_head(prompts) > 10

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        scores = hf_score.candidate_scores(model, hf_score.prompt_cache(model, prompts, pad, agent.model.device),
                                           candidates, pad)
        sum(torch.log_softmax(s, -1)[0] for s in scores).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    shared = gradients()
    monkeypatch.setattr(hf_score, "_shared_head", lambda prompts: 0)
    plain = gradients()
    assert len(shared) == len(plain) > 0
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(shared, plain, strict=True))


@pytest.mark.parametrize("arch", ["mistral", "gpt2"])
def test_a_detached_prompt_gives_the_same_scores_and_a_truncated_gradient(models: dict[str, str], arch: str) -> None:
    """`detached_prompt_cache` + `lead` (the trainer's `prompt_grad=False`): the same scores as a plain
    forward; gradients reach only what the candidates' tokens and the prompts' last token touch. The
    final norm acts on nothing else, so its gradient is exactly the full one; the first layer's is
    not (its prompt activations no longer pass gradients back)."""
    from turngym.agents.hf_score import candidate_scores, detached_prompt_cache, prompt_cache

    env = craft(max_turns=3)
    agent = make_agent(f"hf:{models[arch]}", env, mode="score")
    traj = rollout(env, agent, seed=2)
    model, pad, device = agent.model.model, agent.model.pad_id, agent.model.device
    prompts, candidates = [t.prompt_ids for t in traj.turns], [t.extras["candidate_ids"] for t in traj.turns]
    norm = model.transformer.ln_f.weight if arch == "gpt2" else model.model.norm.weight
    first = next(p for name, p in model.named_parameters() if ".0." in name and name.endswith("weight"))

    def run(detached: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        model.zero_grad()
        if detached:
            cache, lead = detached_prompt_cache(model, prompts, pad, device)
        else:
            cache, lead = prompt_cache(model, prompts, pad, device), None
        scores = candidate_scores(model, cache, candidates, pad, "mean", lead)
        sum(torch.log_softmax(s, -1)[0] for s in scores).backward()
        return [s.detach() for s in scores], norm.grad.clone(), first.grad.clone()

    full, truncated = run(False), run(True)
    for a, b, prompt, group in zip(full[0], truncated[0], prompts, candidates, strict=True):
        plain = torch.tensor(plain_scores(model, prompt, group)) / torch.tensor([len(c) for c in group])
        assert torch.allclose(a, plain, atol=1e-4, rtol=0) and torch.allclose(b, plain, atol=1e-4, rtol=0)
    assert torch.allclose(full[1], truncated[1], atol=1e-6, rtol=1e-4) and truncated[1].abs().sum() > 0
    assert truncated[2].abs().sum() > 0 and not torch.allclose(full[2], truncated[2], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("arch", ["mistral", "gpt2"])
def test_a_prompt_reuses_the_previous_prompts_cache_exactly(models: dict[str, str], arch: str) -> None:
    """`extend_prompt` after a prompt it extends, one it leaves early (crop), the same prompt again,
    and one with nothing in common: the same cache and scores as a fresh forward pass, also where
    the crop reaches back past the Mistral model's 32-token attention window."""
    from turngym.agents.hf_score import candidate_scores, extend_prompt, prompt_cache

    env = craft()
    agent = make_agent(f"hf:{models[arch]}", env, mode="score")
    model, pad, device = agent.model.model, agent.model.pad_id, agent.model.device
    ids = torch.randint(10, len(agent.model.tokenizer), (400,), generator=torch.Generator().manual_seed(0)).tolist()
    candidates = [[ids[5], ids[6], agent.end_of_turn], [ids[7], agent.end_of_turn]]
    prompts = [ids[:300], ids[:340], ids[:200] + ids[350:390], ids[:200] + ids[350:390], ids[300:360]]
    reused = [300, 200, 239, 0]
    previous = None
    with torch.no_grad():
        for k, prompt in enumerate(prompts):
            cache = extend_prompt(model, prompt, previous, pad, device)
            fresh = prompt_cache(model, [prompt], pad, device)
            assert k == 0 or cache.reused == reused[k - 1]
            assert torch.allclose(cache.next_logprobs, fresh.next_logprobs, atol=1e-4)
            for (key, value), (key2, value2) in zip(cache.keys_values, fresh.keys_values, strict=True):
                assert key.shape == key2.shape and torch.allclose(key, key2, atol=1e-4)
                assert torch.allclose(value, value2, atol=1e-4)
            assert torch.allclose(candidate_scores(model, cache, [candidates], pad)[0],
                                  candidate_scores(model, fresh, [candidates], pad)[0], atol=1e-4)
            previous = (prompt, cache)


def test_mean_reduce_divides_each_score_by_its_length(models: dict[str, str]) -> None:
    env = craft()
    obs, info = env.reset(seed=1)
    records = {}
    for reduce in ("sum", "mean"):
        agent = make_agent(f"hf:{models['gpt2']}", env, mode="score", reduce=reduce)
        agent.reset(obs, info, seed=1)
        agent.act(obs, info)
        records[reduce] = agent.last_record["extras"]
    lengths = torch.tensor([float(len(c)) for c in records["sum"]["candidate_ids"]])
    assert records["sum"]["candidate_ids"] == records["mean"]["candidate_ids"] and len(set(lengths.tolist())) > 1
    total, mean = torch.tensor(records["sum"]["scores"]), torch.tensor(records["mean"]["scores"])
    assert torch.allclose(mean * lengths, total, atol=1e-5)
    assert not torch.allclose(torch.softmax(total, 0), torch.softmax(mean, 0), atol=1e-3)


# --- the policy -------------------------------------------------------------------------------

def test_the_record_is_the_softmax_of_the_scores(models: dict[str, str]) -> None:
    """pi = softmax(s / T) sums to 1; the recorded log-prob is log pi(chosen), the entropy is pi's;
    the completion is the chosen candidate's tokens, and the action is that candidate."""
    env = craft(max_turns=3)
    agent = make_agent(f"hf:{models['mistral']}", env, mode="score", temperature=0.7)
    traj = rollout(env, agent, seed=2)
    for turn in traj.turns:
        extras = turn.extras
        logpi = torch.log_softmax(torch.tensor(extras["scores"], dtype=torch.float64) / 0.7, 0)
        k = extras["choice"]
        assert math.isclose(float(logpi.exp().sum()), 1.0, abs_tol=1e-9)
        assert math.isclose(turn.logprobs[0], float(logpi[k]), abs_tol=1e-6)
        assert math.isclose(extras["entropy"], float(-(logpi.exp() * logpi).sum()), abs_tol=1e-6)
        assert 0 < extras["entropy"] <= math.log(len(extras["candidates"])) + 1e-9
        assert turn.action == extras["candidates"][k] and turn.completion_ids == extras["candidate_ids"][k]
        assert all(c[-1] == agent.end_of_turn for c in extras["candidate_ids"]) and turn.info["valid"]
    tokenizer = agent.model.tokenizer
    assert tokenizer.decode(traj.turns[0].prompt_ids).endswith("<|im_start|>assistant\nAction:")
    assert tokenizer.decode(agent.end_of_turn) == "<|im_end|>"


def test_same_seed_same_actions_and_temperature_zero_is_argmax(models: dict[str, str]) -> None:
    env = craft(max_turns=6)

    def play(seed: int, **options: Any) -> list[tuple[str, list[float]]]:
        traj = rollout(env, make_agent(f"hf:{models['gpt2']}", env, mode="score", **options), seed=seed,
                       options={"split": "test", "index": 0}, agent_seed=seed)
        return [(t.action, t.extras["scores"]) for t in traj.turns]

    first = play(3)
    assert play(3) == first
    assert any(play(seed) != first for seed in (4, 5))  # another episode seed samples other actions
    greedy = rollout(env, make_agent(f"hf:{models['gpt2']}", env, mode="score", temperature=0), seed=3)
    for turn in greedy.turns:
        scores = turn.extras["scores"]
        assert turn.extras["choice"] == max(range(len(scores)), key=scores.__getitem__)


@pytest.mark.parametrize(("env_id", "kwargs"), [("turngym/Craft-v0", SKILLS), ("turngym/Craft-v0", {}),
                                                 ("turngym/WebShop-v0", {}), ("turngym/HopVQA-v0", {}),
                                                 ("turngym/LongDocVQA-v0", {})])
def test_every_action_is_a_valid_proposal(models: dict[str, str], env_id: str, kwargs: dict[str, Any]) -> None:
    env = gym.make(env_id, max_turns=3, **kwargs)
    traj = rollout(env, make_agent(f"hf:{models['mistral']}", env, mode="score"), seed=0, record_images=False)
    assert len(traj) > 0 and all(t.info["valid"] for t in traj.turns)
    for turn in traj.turns:
        assert turn.action in turn.extras["candidates"]
        assert len(set(turn.extras["candidates"])) == len(turn.extras["candidates"])


def test_max_candidates_keeps_the_first_proposals(models: dict[str, str]) -> None:
    from turngym.agents.neural import proposer

    env = craft(max_turns=1)
    obs, info = env.reset(seed=0)
    agent = make_agent(f"hf:{models['gpt2']}", env, mode="score", max_candidates=3)
    agent.reset(obs, info, seed=0)
    agent.act(obs, info)
    assert agent.last_record["extras"]["candidates"] == proposer(env)(obs, info)[:3]


def test_bad_options_fail_in_one_clear_sentence(models: dict[str, str]) -> None:
    env = craft()
    spec = f"hf:{models['gpt2']}"
    with pytest.raises(ValueError, match="reduce must be sum or mean"):
        make_agent(spec, env, mode="score", reduce="max")
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        make_agent(spec, env, mode="score", temperature=-1)
    with pytest.raises(ValueError, match="max_candidates must be a whole number >= 1"):
        make_agent(spec, env, mode="score", max_candidates=0)
    with pytest.raises(ValueError, match="max_context must be"):
        make_agent(spec, env, mode="score", max_context=10)
    with pytest.raises(ValueError, match=r"unknown option\(s\) beam_width for mode=score: use temperature, "
                                         r"max_context, reduce, max_candidates"):
        make_agent(spec, env, mode="score", beam_width=4)
    for mode in ("score", "generate"):
        with pytest.raises(ValueError, match="unknown dtype 'int8': use auto, float32, bfloat16, float16"):
            make_agent(spec, env, mode=mode, dtype="int8")


@pytest.mark.parametrize("arch", ["mistral", "gpt2"])
def test_bfloat16_weights_score_as_float32_does_to_rounding(models: dict[str, str], arch: str) -> None:
    """`dtype=bfloat16` loads the weights in bfloat16 (2-3x faster on CPUs with AMX); the scores
    (computed in float32 from the logits on) stay within bfloat16's rounding of float32's, so the
    two agents' policies over the candidates are close."""
    env = craft(max_turns=5)
    fast = make_agent(f"hf:{models[arch]}?dtype=bfloat16", env, mode="score")
    exact = make_agent(f"hf:{models[arch]}", env, mode="score")
    assert {p.dtype for p in fast.model.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in exact.model.model.parameters()} == {torch.float32}
    traj = rollout(env, fast, seed=3)
    assert len(traj) == 5 and all(t.info["valid"] for t in traj.turns)
    for turn in traj.turns:
        plain = torch.tensor(plain_scores(exact.model.model, turn.prompt_ids, turn.extras["candidate_ids"]))
        scores = torch.tensor(turn.extras["scores"])
        assert not torch.equal(scores, plain)  # bfloat16 really ran
        assert torch.allclose(scores, plain, atol=0.1, rtol=0.02)
        gap = torch.log_softmax(scores, -1) - torch.log_softmax(plain, -1)
        assert float(gap.abs().max()) < 0.1


# --- a real model -----------------------------------------------------------------------------

def smollm2_available() -> bool:
    spec = MODELS["smollm2"]
    return (models_dir() / spec.folder / "config.json").exists() or importlib.util.find_spec(spec.package) is not None


@pytest.mark.skipif(not smollm2_available(), reason="SmolLM2 is not installed (make install)")
def test_smollm2_plays_craft_skills_with_valid_actions(one_thread: None) -> None:
    """SmolLM2-135M-Instruct in score mode: every action of a few Craft skills-mode turns is valid,
    and each prompt after the first reuses the previous one's cache."""
    env = craft(max_turns=3)
    traj = rollout(env, make_agent("hf:smollm2", env, mode="score"), seed=0, record_images=False)
    assert len(traj) == 3 and all(t.info["valid"] for t in traj.turns)
    assert all(t.extras["usage"]["cached_tokens"] > 0 for t in traj.turns[1:])
    assert all(math.isfinite(s) and s < 0 for t in traj.turns for s in t.extras["scores"])
