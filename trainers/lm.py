"""Reinforcement learning for `hf:` policies: PPO-clip or REINFORCE over turns, on the reply
tokens (`mode=generate`) or on the choice among proposed actions (`mode=score`).

In generate mode a language model plays an env as a chat (`turngym.agents.hf.HFAgent`); every
turn it samples a reply and records the prompt's token ids, the reply's token ids and each reply
token's log-prob. In score mode (`turngym.agents.hf_score.HFScoreAgent`, GLAM) it scores each of
the env's proposed actions by its likelihood as the reply and samples one from the softmax of the
scores; it records the prompt, every candidate's tokens, the chosen index and its log-prob.
Top to bottom, one update:

1. `collect`: `groups` training tasks, each from a fresh env seed, played G = `group_size` times
   with that same env seed and G different agent seeds (so a group differs only in what the model
   sampled, which group-relative estimators need); with `ray`, the same rollouts on Ray workers.
2. `estimate(config.algo, Rollouts(...))` gives one advantage A per turn. The learned credit of
   prm, spa and oprl is fitted on the same turns first, and the estimators that read values (gae,
   evpo, spa) get a small text critic's, fitted to their returns afterwards (trainers/lm_credit.py:
   AgentPRM's PRM and SPA's progress estimator are small text networks, OPRL's implicit PRM a LoRA
   copy of the policy). `make_samples` turns each turn into a `Sample` (generate: the sequence
   prompt + reply, every reply token carrying the turn's A) or a `Choice` (score: the prompt, the
   candidates, the choice and A; turns with a single candidate have nothing to learn and are left out).
3. `optimize`: `epochs` passes over the turns in shuffled minibatches of `minibatch_size` turns,
   one clipped gradient step each, on the loss of `loss_terms`. Only the policy's choices enter the
   loss (reply tokens, or the chosen candidate): the prompt (system message, observations, earlier
   turns) is context.
4. checkpoint (atomic), metrics row (JSONL and TensorBoard), progress bar.

Generate mode. The policy is the model at the agent's sampling temperature T, pi(y_t) =
softmax(z_t / T)[y_t] with z_t the logits, the very distribution whose log-probs the agent
recorded; so the first minibatch's ratios are 1 up to float noise. For reply token t of a turn
with advantage A:

    rho_t = exp(log pi_theta(y_t) - log pi_old(y_t))                     pi_old: recorded when sampled
    PPO:        l_t = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A)
    REINFORCE:  l_t = -A log pi_theta(y_t)
    entropy:    H_t = -sum_v pi_theta(v) log pi_theta(v)                 over the whole vocabulary
    KL (k3):    k_t = r_t - log r_t - 1,  r_t = pi_ref(y_t) / pi_theta(y_t)
    loss = mean_t l_t - c_H mean_t H_t + c_KL mean_t k_t

k3 (Schulman's estimator) is >= 0 per token and unbiased for KL(pi_theta || pi_ref) as y_t is drawn
from pi_theta. The means run over every reply token of the minibatch (a token-level mean: each
token weighs the same, so long replies are not diluted as a per-sequence mean would dilute them).
With `prompt_grad=False` the prompt runs without gradients and the reply on its keys and values:
the same log-probs, the gradient truncated at the prompt, as in score mode.

Score mode. A turn offers candidates c_1..c_N; s_theta(c) is the model's log-likelihood of c's
tokens after the prompt (summed, or averaged with `score_reduce=mean`), recomputed with gradients
(one forward over the prompt, one over all candidates reading its key/value cache; with
`prompt_grad=False` the prompt's pass runs without gradients, so they reach the weights only
through the candidates' tokens and the prompt's last one: a truncated gradient, the values and
ratios unchanged), and the policy is pi_theta(c) = softmax(s_theta / T)(c). For a turn that chose
c* with advantage A:

    rho = exp(log pi_theta(c*) - log pi_old(c*))
    l = -min(rho A, clip(rho, 1 - eps, 1 + eps) A)   (REINFORCE: -A log pi_theta(c*))
    H = -sum_c pi_theta(c) log pi_theta(c)           exact, over the candidates
    KL = sum_c pi_theta(c) log(pi_theta(c) / pi_ref(c))   exact, over the candidates
    loss = mean_turns (l - c_H H + c_KL KL)

The reference is a frozen copy of the starting model, or with LoRA the same model with its
adapters switched off (no second copy in memory).

After each step the agent samples from the updated weights: it holds the very model object being
trained. The final model goes to `OUT/model` in a form `hf:OUT/model` loads (with LoRA, the
adapters merged into the base; the adapters alone also go to `OUT/adapter`); a score-mode policy
plays as `make_agent("hf:OUT/model", env, mode="score")`.
"""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import Progress

from turngym.console import progress_bar
from turngym.rewards.estimators import Rollouts, estimate
from turngym.rollout import rollout
from turngym.trainers.config import LMTrainConfig
from turngym.trainers.runlog import Metrics, load_checkpoint, read_metrics, save_checkpoint, write_config
from turngym.trajectory import Trajectory


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no GPU is visible: use device='auto' or 'cpu'")
    return device


# --- the policy -------------------------------------------------------------------------------

@dataclass
class Policy:
    """The model being trained, the agent that samples from it, and the KL reference."""

    agent: Any  # turngym.agents.hf.HFAgent (HFScoreAgent in score mode); its `model.model` is `model`
    model: torch.nn.Module  # the checkpoint's model, or with LoRA the peft model wrapping it
    reference: torch.nn.Module | None  # a frozen copy; None with LoRA (adapters off) or without KL
    lora: bool
    temperature: float
    device: torch.device
    mode: str = "generate"  # or "score"
    reduce: str = "sum"  # score mode: a candidate's score is the sum or the mean of its token log-likelihoods
    prompt_grad: bool = True  # False truncates the gradient at the prompt's keys and values (both modes)

    @property
    def pad_id(self) -> int:
        return int(self.agent.model.pad_id)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def make_policy(config: LMTrainConfig, env: gym.Env) -> Policy:
    """Load `config.model` into an HFAgent for `env`, wrap it with LoRA adapters if asked, and make
    the KL reference. The model stays in eval mode while it trains: dropout stays off, so the
    log-probs recomputed for the loss are those the agent sampled with."""
    from turngym.agents.hf import HFAgent  # torch and transformers load only when an hf: policy trains
    from turngym.agents.hf_score import HFScoreAgent

    if config.mode == "score":
        agent: Any = HFScoreAgent(env, config.model, temperature=config.temperature, max_context=config.max_context,
                                  reduce=config.score_reduce, dtype=config.dtype)
    else:
        agent = HFAgent(env, config.model, temperature=config.temperature, top_p=config.top_p,
                        max_new_tokens=config.max_new_tokens, max_context=config.max_context, images=False,
                        dtype=config.dtype)
    if agent.model.vision:
        raise ValueError(f"{config.model} is a vision-language checkpoint: the LM trainer takes text-only "
                         "checkpoints for now")
    device = pick_device(config.device)
    model = agent.model.model.to(device).eval()
    agent.model.device = device
    reference = None
    if config.lora:
        model = add_lora(model, config)
        agent.model.model = model  # the agent samples from the adapted model
    elif config.kl_coef > 0:
        reference = copy.deepcopy(model).requires_grad_(False).eval()
    return Policy(agent, model, reference, config.lora, config.temperature, device, config.mode, config.score_reduce,
                  config.prompt_grad)


def add_lora(model: torch.nn.Module, config: LMTrainConfig) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters (W + (alpha / r) B A, B = 0 at first, so the policy starts as
    the base model); only the adapters train."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    # GPT-2 stores its linear layers transposed (Conv1D); peft must be told, or it warns and guesses.
    transposed = any(isinstance(m, Conv1D) for m in model.modules())
    targets = config.lora_targets if config.lora_targets == "all-linear" else \
        [name.strip() for name in config.lora_targets.split(",")]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, fan_in_fan_out=transposed, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(config.seed)  # the adapters' random init depends on the run's seed only
        # peft asks transformers a deprecated question; the answer is right, the FutureWarning is noise.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return get_peft_model(model, lora).eval()


# --- rollouts ---------------------------------------------------------------------------------

def make_env(config: LMTrainConfig) -> tuple[gym.Env, dict[str, Any] | None]:
    """The training env (with the run's reward code, if any) and the options of its every reset
    (`config.task` resolved for the env)."""
    kwargs, options = config.env_setup()
    return config.make_env(kwargs), options


def budget_left(config: LMTrainConfig, update: int, env_steps: int) -> bool:
    """Whether a run that has done `update` updates and `env_steps` env steps goes on."""
    return ((config.updates is None or update < config.updates)
            and (config.steps is None or env_steps < config.steps))


def budget_done(config: LMTrainConfig, update: int, env_steps: int) -> tuple[int, int]:
    """(progress, total) of the progress bar: env steps when the budget has them, else updates."""
    return (min(env_steps, config.steps), config.steps) if config.steps else (update, config.updates)


def update_generator(seed: int, update: int) -> torch.Generator:
    """The torch stream of update `update` (minibatch order, the PRM fit's): a resumed run draws the same."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, update]).generate_state(1)[0]))


def update_seeds(seed: int, update: int, groups: int, group_size: int) -> tuple[list[int], list[list[int]]]:
    """The env seed of each group and the agent seed of each rollout of update `update`: a function
    of (seed, update) only, so a resumed run draws what the uninterrupted one would."""
    rng = np.random.default_rng([seed, update])
    env_seeds = rng.integers(2**31, size=groups)
    agent_seeds = rng.integers(2**31, size=(groups, group_size))
    return [int(s) for s in env_seeds], [[int(s) for s in row] for row in agent_seeds]


def collect(env: gym.Env, agent: Any, config: LMTrainConfig, update: int, options: dict[str, Any] | None = None,
            progress: Progress | None = None, job: Any = None) -> tuple[list[Trajectory], list[int]]:
    """`config.groups` tasks x `config.group_size` rollouts, each reset with `options` (see
    `make_env`); returns the trajectories and group ids."""
    env_seeds, agent_seeds = update_seeds(config.seed, update, config.groups, config.group_size)
    trajectories = play_groups(env, agent, env_seeds, agent_seeds, update, options,
                               (lambda: progress.advance(job)) if progress is not None else None)
    return trajectories, [g for g, seeds in enumerate(agent_seeds) for _ in seeds]


def play_groups(env: gym.Env, agent: Any, env_seeds: Sequence[int], agent_seeds: Sequence[Sequence[int]],
                update: int, options: dict[str, Any] | None = None,
                advance: Callable[[], Any] | None = None) -> list[Trajectory]:
    """Group g: one rollout per agent seed of `agent_seeds[g]`, all from env seed `env_seeds[g]`.
    A rollout depends on its two seeds and the weights only, so groups may be played anywhere
    (trainers/distributed.py's Ray workers) and joined in order."""
    trajectories = []
    for env_seed, seeds in zip(env_seeds, agent_seeds, strict=True):
        for agent_seed in seeds:
            traj = rollout(env, agent, seed=env_seed, options=options, agent_seed=agent_seed, record_images=False)
            traj.meta.update(agent_seed=agent_seed, update=update)
            trajectories.append(traj)
            if advance is not None:
                advance()
    return trajectories


# --- samples and batches ----------------------------------------------------------------------

@dataclass
class Sample:
    """One turn as the loss sees it: the sequence prompt + reply, where the reply starts, the reply
    tokens' recorded log-probs, the turn's advantage and (with KL) the reference's log-probs."""

    ids: list[int]
    prompt_len: int
    logprobs: list[float]
    advantage: float
    ref_logprobs: list[float] | None = None

    @property
    def reply_len(self) -> int:
        return len(self.ids) - self.prompt_len

    @property
    def units(self) -> int:
        """What the loss's means count: the reply's tokens."""
        return self.reply_len

    @property
    def length(self) -> int:
        """The tokens a forward pass over this turn pads to."""
        return len(self.ids)


def turn_samples(trajectories: Sequence[Trajectory], advantages: Sequence[np.ndarray]) -> list[Sample]:
    """One Sample per turn; every reply token of a turn gets that turn's advantage."""
    samples = []
    for traj, turn_advantages in zip(trajectories, advantages, strict=True):
        for turn, a in zip(traj.turns, turn_advantages, strict=True):
            if not turn.prompt_ids or not turn.completion_ids or turn.logprobs is None:
                raise ValueError(f"a turn of {traj.task_id} has no token record: the LM trainer needs trajectories "
                                 "played by an hf: agent")
            samples.append(Sample(list(turn.prompt_ids) + list(turn.completion_ids), len(turn.prompt_ids),
                                  list(turn.logprobs), float(a)))
    return samples


@dataclass
class Batch:
    """Samples left-padded to one length L, so that every reply ends at position L - 1.

    With C the longest reply, the model keeps only the logits of the last C + 1 positions
    (`logits_to_keep`); position L - C - 1 + j predicts token `targets[:, j]`, j < C, and `mask`
    marks the reply tokens among the targets (a shorter reply's first targets are its prompt's tail).
    """

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L): 0 at each sample's first real token, as when it was sampled
    targets: torch.Tensor  # (B, C)
    mask: torch.Tensor  # (B, C) bool: reply tokens, the only ones that enter the loss
    old_logprobs: torch.Tensor  # (B, C): recorded log pi_old, 0 off the mask
    ref_logprobs: torch.Tensor | None  # (B, C)
    advantages: torch.Tensor  # (B, 1)

    @property
    def tokens(self) -> int:
        return int(self.mask.sum())


def collate(samples: Sequence[Sample], pad_id: int, device: torch.device) -> Batch:
    length = max(len(s.ids) for s in samples)
    reply = max(s.reply_len for s in samples)
    input_ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(samples), length), dtype=torch.long)
    mask = torch.zeros((len(samples), reply), dtype=torch.bool)
    old = torch.zeros((len(samples), reply))
    ref = torch.zeros((len(samples), reply)) if all(s.ref_logprobs is not None for s in samples) else None
    for b, s in enumerate(samples):
        input_ids[b, length - len(s.ids):] = torch.tensor(s.ids)
        attention[b, length - len(s.ids):] = 1
        mask[b, reply - s.reply_len:] = True
        old[b, reply - s.reply_len:] = torch.tensor(s.logprobs)
        if ref is not None:
            ref[b, reply - s.reply_len:] = torch.tensor(s.ref_logprobs)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    advantages = torch.tensor([[s.advantage] for s in samples])
    return Batch(input_ids.to(device), attention.to(device), positions.to(device),
                 input_ids[:, length - reply:].to(device), mask.to(device), old.to(device),
                 None if ref is None else ref.to(device), advantages.to(device))


def token_logprobs(model: torch.nn.Module, batch: Batch, temperature: float,
                   entropy_grad: bool = True, prompt_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(y_t), H_t) for every target of `batch`, (B, C) each, under softmax(z / T).

    Only the last C + 1 positions go through the output layer: a prompt's logits are never
    computed, which saves memory (vocabulary x prompt length) and keeps the prompt out of the loss.
    `entropy_grad=False` returns H_t for the logs only, outside the graph (another B x C x V
    tensor that backward need not keep). `prompt_grad=False` runs the positions before the last
    C + 1 without gradients and the last C + 1 on their keys and values: the same values, with the
    gradient truncated at the prompt (as score mode's), which spares the backward pass over it."""
    reply = batch.targets.shape[1]
    split = batch.input_ids.shape[1] - reply - 1
    if prompt_grad or split < 1 or not torch.is_grad_enabled():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, logits_to_keep=reply + 1, use_cache=False)
    else:
        from transformers import DynamicCache

        cache = DynamicCache()  # no config: full layers, as agents/hf_score.py's prompt caches
        with torch.no_grad():
            model(input_ids=batch.input_ids[:, :split], attention_mask=batch.attention_mask[:, :split],
                  position_ids=batch.position_ids[:, :split], cache=cache, use_cache=True, logits_to_keep=1)
        out = model(input_ids=batch.input_ids[:, split:], attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids[:, split:], cache=cache, use_cache=True)
    logits = out.logits[:, -reply - 1:-1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch.targets[..., None])[..., 0]
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def sequence_logp(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's sum of log-probs over its masked-in (reply) positions, (B, C) -> (B,). Off-mask
    positions (prompt tail, padding) are selected away, never multiplied by 0 (a NaN would pass)."""
    return torch.where(mask, logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum(1)


def turn_logpi(model: torch.nn.Module, part: Sequence[Sample] | Sequence[Choice], policy: Policy) -> torch.Tensor:
    """log pi(a_t | prompt_t) of each turn of `part` under `model`, shape (len(part),): the reply's
    summed token log-probs (generate mode) or the chosen candidate's log-softmax (score mode)."""
    if policy.mode == "score":
        logpis = choice_logpi(model, part, policy)
        return torch.stack([logpi[choice.chosen] for choice, logpi in zip(part, logpis, strict=True)])
    batch = collate(part, policy.pad_id, policy.device)
    logp, _ = token_logprobs(model, batch, policy.temperature, entropy_grad=False, prompt_grad=policy.prompt_grad)
    return sequence_logp(logp, batch.mask)


@contextlib.contextmanager
def reference_model(policy: Policy) -> Iterator[torch.nn.Module]:
    """The KL reference: the frozen copy, or with LoRA the base model (adapters off meanwhile)."""
    if policy.lora:
        with policy.model.disable_adapter():
            yield policy.model
        return
    if policy.reference is None:
        raise ValueError("this policy has no reference model: set kl_coef > 0 (or use LoRA)")
    yield policy.reference


@torch.no_grad()
def reference_logprobs(policy: Policy, batch: Batch) -> torch.Tensor:
    """log pi_ref(y_t) for every target of `batch`."""
    with reference_model(policy) as model:
        return token_logprobs(model, batch, policy.temperature)[0]


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def add_reference(policy: Policy, samples: Sequence[Sample] | Sequence[Choice], batch_size: int) -> None:
    """Fill each sample's `ref_logprobs` (score mode: each choice's `ref_logpi`), once per update:
    the reference does not change."""
    if policy.mode == "score":
        add_choice_reference(policy, samples, batch_size)
        return
    for part in chunks(samples, batch_size):
        batch = collate(part, policy.pad_id, policy.device)
        ref = reference_logprobs(policy, batch).cpu()
        for b, s in enumerate(part):
            s.ref_logprobs = ref[b, ref.shape[1] - s.reply_len:].tolist()


# --- score mode: choices among proposed actions ---------------------------------------------

@dataclass
class Choice:
    """One score-mode turn as the loss sees it: the prompt, every candidate's tokens, the chosen
    one with its recorded log pi_old, the turn's advantage and (with KL) log pi_ref over the
    candidates."""

    prompt_ids: list[int]
    candidate_ids: list[list[int]]
    chosen: int
    logprob: float
    advantage: float
    ref_logpi: list[float] | None = None

    @property
    def units(self) -> int:
        """What the loss's means count: one decision per turn."""
        return 1

    @property
    def length(self) -> int:
        """The tokens a forward pass over this turn pads to (its prompt; candidates are packed)."""
        return len(self.prompt_ids)


def turn_choices(trajectories: Sequence[Trajectory], advantages: Sequence[np.ndarray]) -> list[Choice]:
    """One Choice per turn that had a choice to make, from what HFScoreAgent recorded. A turn with a
    single candidate (WebShop's first, one proposed search) has pi = 1 whatever the weights: it adds
    nothing to the loss's gradient, only the cost of a forward pass, so it is left out."""
    choices = []
    for traj, turn_advantages in zip(trajectories, advantages, strict=True):
        for turn, a in zip(traj.turns, turn_advantages, strict=True):
            if turn.extras.get("mode") != "score" or not turn.prompt_ids or not turn.logprobs:
                raise ValueError(f"a turn of {traj.task_id} has no candidate record: score mode needs trajectories "
                                 "played by an hf: agent with mode=score")
            if len(turn.extras["candidate_ids"]) < 2:
                continue
            choices.append(Choice(list(turn.prompt_ids), [list(c) for c in turn.extras["candidate_ids"]],
                                  int(turn.extras["choice"]), float(turn.logprobs[0]), float(a)))
    return choices


def make_samples(policy: Policy, trajectories: Sequence[Trajectory],
                 advantages: Sequence[np.ndarray]) -> list[Sample] | list[Choice]:
    """The turns as the loss of the policy's mode sees them."""
    return turn_choices(trajectories, advantages) if policy.mode == "score" else turn_samples(trajectories, advantages)


def choice_logpi(model: torch.nn.Module, choices: Sequence[Choice], policy: Policy) -> list[torch.Tensor]:
    """log pi(c) over each turn's candidates under `model`: one forward over the turns' prompts
    (left-padded), one over all their candidates (reading the prompts' key/value cache). Without
    `policy.prompt_grad` the prompt pass runs without gradients (the values are the same)."""
    from turngym.agents.hf_score import candidate_scores, detached_prompt_cache, policy_logprobs, prompt_cache

    ids = [c.prompt_ids for c in choices]
    lead = None
    if policy.prompt_grad or not torch.is_grad_enabled() or min(map(len, ids)) < 2:
        prompts = prompt_cache(model, ids, policy.pad_id, policy.device)
    else:
        prompts, lead = detached_prompt_cache(model, ids, policy.pad_id, policy.device)
    scores = candidate_scores(model, prompts, [c.candidate_ids for c in choices], policy.pad_id, policy.reduce,
                              lead)
    return [policy_logprobs(s, policy.temperature) for s in scores]


@torch.no_grad()
def add_choice_reference(policy: Policy, choices: Sequence[Choice], batch_size: int) -> None:
    """Fill each choice's `ref_logpi`: log pi_ref over its candidates."""
    with reference_model(policy) as model:
        for part in chunks(choices, batch_size):
            for choice, logpi in zip(part, choice_logpi(model, part, policy), strict=True):
                choice.ref_logpi = logpi.tolist()


@dataclass
class ChoiceBatch:
    """The per-turn figures `loss_terms` reads, shaped (B, 1): one decision per turn."""

    mask: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: None = None  # the KL is exact here, passed to loss_terms as `kl`


def choice_terms(policy: Policy, choices: Sequence[Choice], config: LMTrainConfig) -> dict[str, torch.Tensor]:
    """`loss_terms` of score-mode turns: log pi_theta(c*), the exact entropy over the candidates and
    (with reference log-probs) the exact KL, each (B, 1)."""
    logp, entropy, kl = [], [], []
    for choice, logpi in zip(choices, choice_logpi(policy.model, choices, policy), strict=True):
        pi = logpi.exp()
        logp.append(logpi[choice.chosen])
        entropy.append(-(pi * logpi).sum())
        if choice.ref_logpi is not None:
            kl.append((pi * (logpi - torch.tensor(choice.ref_logpi, device=logpi.device))).sum())
    column = {"device": policy.device, "dtype": torch.float32}
    batch = ChoiceBatch(torch.ones((len(choices), 1), dtype=torch.bool, device=policy.device),
                        torch.tensor([[c.logprob] for c in choices], **column),
                        torch.tensor([[c.advantage] for c in choices], **column))
    return loss_terms(torch.stack(logp)[:, None], torch.stack(entropy)[:, None], batch, loss=config.loss,
                      clip_eps=config.clip_eps, entropy_coef=config.entropy_coef, kl_coef=config.kl_coef,
                      kl=torch.stack(kl)[:, None] if kl else None)


# --- the loss ---------------------------------------------------------------------------------

def loss_terms(logp: torch.Tensor, entropy: torch.Tensor, batch: Batch | ChoiceBatch, *, loss: str = "ppo",
               clip_eps: float = 0.2, entropy_coef: float = 0.0, kl_coef: float = 0.0,
               kl: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Sums over the reply tokens of `batch` (divide by the minibatch's token count for the means of
    the module docstring; sums let micro-batches add up to one minibatch):

        loss = sum_t [l_t - c_H H_t + c_KL k_t],  l_t the PPO-clip or REINFORCE term, k_t the k3 KL,

    and the sums of l_t (`pg_loss`), H_t (`entropy`), k_t (`kl`, with reference log-probs), the
    clipped tokens (`clip_frac`: |rho_t - 1| > eps) and (rho_t - 1) - log rho_t (`approx_kl`, the k3
    distance from the sampling policy) for the logs. Off-mask positions hold padding or a prompt's
    tail; they are selected away with `where`, never multiplied by 0 (which would let a NaN through).
    An exact `kl` (score mode's, per turn) replaces the k3 estimate."""
    mask, zero = batch.mask, torch.zeros((), device=logp.device)
    log_ratio = torch.where(mask, logp - batch.old_logprobs, zero)
    ratio = log_ratio.exp()
    advantage = batch.advantages.to(logp.dtype)
    if loss == "ppo":
        pg = -torch.minimum(ratio * advantage, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantage)
    else:
        pg = -advantage * logp
    total = pg - entropy_coef * entropy if entropy_coef else pg
    terms = {}
    if kl is None and batch.ref_logprobs is not None:
        delta = torch.where(mask, batch.ref_logprobs - logp, zero)  # log r_t
        kl = delta.exp() - delta - 1
    if kl is not None:
        total = total + kl_coef * kl
        terms["kl"] = kl[mask].sum()
    terms.update(loss=total[mask].sum(), pg_loss=pg[mask].sum(), entropy=entropy[mask].sum(),
                 clip_frac=((ratio - 1).abs() > clip_eps)[mask].sum().float(),
                 approx_kl=((ratio - 1) - log_ratio)[mask].sum())
    return terms


def part_terms(policy: Policy, part: Sequence[Sample] | Sequence[Choice],
               config: LMTrainConfig) -> dict[str, torch.Tensor]:
    """The loss terms (sums) of one micro-batch, with gradients, in the policy's mode."""
    if policy.mode == "score":
        return choice_terms(policy, part, config)
    batch = collate(part, policy.pad_id, policy.device)
    logp, entropy = token_logprobs(policy.model, batch, policy.temperature, config.entropy_coef > 0,
                                   policy.prompt_grad)
    return loss_terms(logp, entropy, batch, loss=config.loss, clip_eps=config.clip_eps,
                      entropy_coef=config.entropy_coef, kl_coef=config.kl_coef)


def optimize(policy: Policy, optimizer: torch.optim.Optimizer, samples: list[Sample] | list[Choice],
             config: LMTrainConfig, update: int) -> dict[str, float]:
    """`config.epochs` passes of shuffled minibatches, one clipped gradient step each; returns the
    means of the loss terms (per reply token, or per turn in score mode; over every step) and the
    mean gradient norm before clipping."""
    if not samples:  # e.g. score mode where no turn had two candidates: nothing to learn from
        return {}
    generator = update_generator(config.seed, update)
    micro = config.micro_batch_size or config.minibatch_size
    sums: dict[str, float] = {}
    tokens, norms = 0, []
    params = policy.parameters()
    for _ in range(config.epochs):
        order = torch.randperm(len(samples), generator=generator).tolist()
        for minibatch in chunks([samples[k] for k in order], config.minibatch_size):
            count = sum(s.units for s in minibatch)
            optimizer.zero_grad(set_to_none=True)
            # by length: a micro-batch pads its turns to its longest, and the gradient is their sum anyway
            for part in chunks(sorted(minibatch, key=lambda s: s.length), micro):
                terms = part_terms(policy, part, config)
                (terms["loss"] / count).backward()
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)))
            optimizer.step()
            tokens += count
    stats = {key: value / tokens for key, value in sums.items()}
    stats["grad_norm"] = float(np.mean(norms))
    return stats


# --- checkpoints and the final model ----------------------------------------------------------

def trainable_state(policy: Policy) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the model: the adapters with LoRA, else every weight."""
    if policy.lora:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(policy.model)
    return policy.model.state_dict()


def load_trainable_state(policy: Policy, state: dict[str, torch.Tensor]) -> None:
    if policy.lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(policy.model, state)
    else:
        policy.model.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """Every global generator, so that code outside this module that draws from one (a model's
    sampling fallback, say) also continues exactly after a resume."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# What the checkpoint depends on (alpha scales the saved adapters; a DPO run and a policy-gradient run
# keep different state and curves).
RESUME_KEYS = ("env_id", "policy", "mode", "loss", "lora", "lora_rank", "lora_alpha", "lora_targets")


def check_resumable(config: LMTrainConfig, saved: dict[str, Any], out: Path) -> None:
    changed = [k for k in RESUME_KEYS if saved.get(k) != getattr(config, k)]
    if changed:
        raise ValueError(f"the checkpoint in {out} was made with other {', '.join(changed)} "
                         f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}): resume with those settings, "
                         "or train into another out folder")


def save_model(policy: Policy, folder: Path) -> Path:
    """Write the policy where `hf:FOLDER` loads it (weights, config, generation config, tokenizer
    and chat template), replacing any earlier one only once the new one is complete. With LoRA the
    adapters also go to FOLDER's sibling `adapter/`, and the model is saved with them merged in
    (this ends training with that model: merging rewrites its weights in place). 16-bit base weights
    are merged in float32: a LoRA update is often below a bfloat16 weight's rounding step."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = policy.model
    if policy.lora:
        model.save_pretrained(folder.with_name("adapter"))
        model = model.to(torch.float32).merge_and_unload()
        policy.agent.model.model = model
    model.save_pretrained(tmp)
    policy.agent.model.tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


# --- the loop ---------------------------------------------------------------------------------

def episode_stats(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """What a metrics row says of an update's rollouts: their count, mean reward, success, score,
    turns, invalid-action rate, the share that ran out of turns and, where every episode's score
    parts have one, progress (Craft's share of the goal's recipe path: what moves long before
    success does)."""
    stats = {"episodes": len(trajectories), "reward": float(np.mean([t.total_reward for t in trajectories])),
             "success": float(np.mean([t.success for t in trajectories])),
             "score": float(np.mean([t.score for t in trajectories])),
             "turns": float(np.mean([len(t) for t in trajectories])),
             "invalid": float(np.mean([not turn.info.get("valid", True) for t in trajectories for turn in t.turns])),
             "truncated": float(np.mean([t.truncated for t in trajectories]))}
    if trajectories and all("progress" in t.score_parts for t in trajectories):
        stats["progress"] = float(np.mean([t.score_parts["progress"] for t in trajectories]))
    return stats


def scored_tokens(samples: Sequence[Sample] | Sequence[Choice]) -> int:
    """Tokens the loss scores: reply tokens, or in score mode every candidate's tokens."""
    return sum(s.reply_len if isinstance(s, Sample) else sum(map(len, s.candidate_ids)) for s in samples)


def candidate_stats(samples: Sequence[Sample] | Sequence[Choice]) -> dict[str, float]:
    """Score mode's candidates per turn (nothing in generate mode)."""
    if not samples or isinstance(samples[0], Sample):
        return {}
    return {"candidates": float(np.mean([len(s.candidate_ids) for s in samples]))}


def train_lm(config: LMTrainConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Train `config.model` on `config.env_id`; returns every metric row of the run (a resumed run's
    earlier rows included). Writes OUT/config.json, OUT/metrics.jsonl, OUT/tb/, OUT/checkpoint.pt
    and OUT/model/."""
    if config.loss == "dpo":  # preference pairs instead of advantages; dpo.py imports this module, hence here
        from turngym.trainers.dpo import train_dpo
        return train_dpo(config, progress=progress)
    config.check()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    env, options = make_env(config)
    policy = make_policy(config, env)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    from turngym.trainers.lm_credit import make_credit, make_critic, turn_batch  # it imports this module

    credit, critic = make_credit(config, policy), make_critic(config)
    metrics = Metrics(out, tensorboard=config.tensorboard)
    update, env_steps = 0, 0
    checkpoint = out / "checkpoint.pt"
    if config.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        check_resumable(config, state["config"], out)
        load_trainable_state(policy, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        for model in (credit, critic):
            if model is not None:
                model.load_state_dict(state[model.name])
        update, env_steps = int(state["update"]), int(state["env_steps"])
    metrics.truncate(update)  # a fresh run (update 0) starts a fresh curve
    write_config(out, config)
    episodes_per_update = config.groups * config.group_size

    remote = None
    try:
        if config.ray is not None:  # the same rollouts, played on Ray workers
            from turngym.trainers.distributed import LMRayCollector

            remote = LMRayCollector(config, policy)
        with progress_bar(disable=not progress) as bar:
            completed, total = budget_done(config, update, env_steps)
            job = bar.add_task("training", total=total, completed=completed)
            episodes_job = bar.add_task("episodes", total=episodes_per_update)
            while budget_left(config, update, env_steps):
                update += 1
                started = time.perf_counter()
                bar.reset(episodes_job, total=episodes_per_update)
                if remote is not None:
                    trajectories, groups = remote(update)
                    bar.update(episodes_job, completed=episodes_per_update)
                else:
                    trajectories, groups = collect(env, policy.agent, config, update, options, bar, episodes_job)
                collected = time.perf_counter()
                generator = update_generator(config.seed, update)
                credit_stats, learned = credit.update(trajectories, groups, generator) if credit else ({}, {})
                values = None
                if critic is not None:
                    batch = turn_batch(trajectories, groups)
                    values = critic.values(batch)
                advantages = estimate(config.algo, Rollouts(trajectories, groups, values=values, **learned),
                                      **config.algo_options)
                if critic is not None:
                    credit_stats.update(critic.fit(batch, advantages.returns, generator, values))
                samples = make_samples(policy, trajectories, advantages.advantages)
                if config.kl_coef > 0:
                    add_reference(policy, samples, config.micro_batch_size or config.minibatch_size)
                stats = optimize(policy, optimizer, samples, config, update)
                turns = sum(len(t) for t in trajectories)
                env_steps += turns
                row = {"update": update, "env_steps": env_steps, **episode_stats(trajectories),
                       "tokens": scored_tokens(samples), **candidate_stats(samples),
                       "adv_abs": float(np.mean([abs(s.advantage) for s in samples])) if samples else 0.0,
                       **stats, **credit_stats, **{f"algo_{k}": v for k, v in advantages.stats.items()},
                       "rollout_s": collected - started, "learn_s": time.perf_counter() - collected,
                       "time_s": time.perf_counter() - started}
                # The row first: a crash before the checkpoint leaves a row that a resume cuts again.
                metrics.log(row)
                if update % config.save_every == 0 or not budget_left(config, update, env_steps):
                    save_checkpoint(checkpoint, {"update": update, "env_steps": env_steps,
                                                 "model": trainable_state(policy), "optimizer": optimizer.state_dict(),
                                                 **{m.name: m.state_dict() for m in (credit, critic) if m},
                                                 "rng": rng_state(), "config": asdict(config)})
                bar.update(job, completed=budget_done(config, update, env_steps)[0],
                           description=f"training (reward {row['reward']:.2f})")
        save_model(policy, out / "model")
        for model in (credit, critic):  # beside the model, as the neural trainer keeps them beside policy.pt
            if model is not None:
                model.save(out, env_id=config.env_id, task=config.task, algo=config.algo, updates=update,
                           env_steps=env_steps)
    finally:
        metrics.close()
        env.close()
        if remote is not None:
            remote.close()
    return read_metrics(out)
