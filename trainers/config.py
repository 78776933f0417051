"""Trainer configs: one dataclass per trainer over one shared base, one name per knob.

`TrainConfig` holds what every trainer reads (env, task, estimator, loss, budget, batch shape,
optimizer, logging). `NeuralTrainConfig` (trainers/ppo.py, `neural` policies) and `LMTrainConfig`
(trainers/lm.py, `hf:` policies) add their own knobs and give their own defaults, since a language
model's learning rate is not a small network's. `turngym train` builds one option per field of
either class (`knobs()`), and `make_config` turns the options it was given (over a `--config`
file's values) into the config of the trainer that the policy selects, so every default comes
from the trainer. Each run writes its resolved config to `OUT/config.json`, which
`--config` reads back.
"""

from __future__ import annotations

import importlib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from turngym.envs.base import VectorBackend, resolve_task
from turngym.registry import env_class
from turngym.rewards.code import CodeReward
from turngym.rewards.estimators import ESTIMATORS, NEEDS
from turngym.trainers.curriculum import METRICS as CURRICULUM_METRICS
from turngym.trainers.curriculum import SIGNALS as CURRICULUM_SIGNALS


def field_meta(help: str, aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config field's metadata: its help text and extra command-line names for `turngym train`."""
    return {"help": help, "aliases": aliases}


def knob(help: str, default: Any = MISSING) -> Any:
    """A config field (immutable default) with its help text."""
    return field(default=default, metadata=field_meta(help))


@dataclass(kw_only=True)
class TrainConfig(ABC):
    """What every trainer reads. A subclass gives the fields without a default here their values
    (keyword-only fields, so a subclass may order its defaults freely)."""

    policies: ClassVar[tuple[str, ...]] = ()  # the policy spec kinds (before the ':') it trains
    trainer: ClassVar[str] = ""  # "module:function", called as function(config, progress=...)
    about: ClassVar[str] = ""  # the trainer in a few words, for --help
    losses: ClassVar[tuple[str, ...]] = ("ppo", "reinforce")  # the values of `loss` it trains with

    env_id: str = knob("a registered env id, e.g. turngym/Craft-v0")
    policy: str = knob("the policy to train, which picks the trainer: neural (a fresh small network, the "
                       "default), neural:PATH (continue a saved one) or hf:PATH (a local language model)")
    task: str | None = knob("the task: the env's task kwarg where it has one (Craft: wood_pickaxe, ...), else a "
                            "split name or one task id; none: the env's training tasks", None)
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata=field_meta(
        "an env kwarg as key=value (repeatable), e.g. -k max_turns=40", aliases=("--kw", "-k")))
    algo: str = knob("advantage estimator: " + ", ".join(ESTIMATORS), "grpo")
    algo_options: dict[str, Any] = field(default_factory=dict, metadata=field_meta(
        "an estimator option as key=value (repeatable), e.g. gamma=0.99", aliases=("--algo-option",)))
    loss: str = knob("ppo (clipped ratio), reinforce (-A log pi, one pass over each batch) or, for hf: policies, "
                     "dpo (preference pairs mined from each update's groups, trainers/dpo.py)", "ppo")
    steps: int | None = knob("env-step budget (turns played)")
    groups: int = knob("tasks per update")
    group_size: int = knob("G: rollouts per task (same task and seed)", 8)
    lr: float = knob("learning rate")
    epochs: int = knob("passes over each update's turns")
    minibatch_size: int = knob("turns per optimizer step (loss dpo: pairs)")
    clip_eps: float = knob("PPO's ratio clip: rho in [1 - eps, 1 + eps]", 0.2)
    entropy_coef: float = knob("weight of the entropy bonus")
    max_grad_norm: float = knob("gradient norm clip")
    seed: int = knob("seeds the tasks, the rollouts and the weights", 0)
    out: str = knob("run folder: config.json, metrics.jsonl, tb/, checkpoint.pt and the trained policy",
                    "runs/train")
    resume: bool = knob("continue the run in OUT from its checkpoint", False)
    tensorboard: bool = knob("mirror the metrics to TensorBoard (OUT/tb)", True)
    prm_epochs: int = knob("algo prm: passes of the PRM fit per update", 3)
    prm_lr: float = knob("algo prm: the PRM's learning rate", 1e-3)
    prm_target: str = knob("algo prm: td (AgentPRM's TD(lambda) targets) or mc (Monte-Carlo returns)", "td")
    prm_beta: float = knob("algo prm: weight of the turn-to-turn difference term of the PRM loss", 1.0)
    credit_epochs: int = knob("algo spa and oprl: passes of the progress estimator's or implicit PRM's fit per update "
                              "(trainers/credit.py; hf: policies, trainers/lm_credit.py)", 3)
    credit_lr: float = knob("algo spa and oprl: the progress estimator's or implicit PRM's learning rate (hf: "
                            "policies: also their critic's, for gae, evpo and spa)", 3e-4)
    credit_minibatch_size: int = knob("algo spa and oprl: turns per step of their fit, in whole episodes (spa) or "
                                      "groups (oprl)", 1024)
    oprl_beta: float = knob("algo oprl: beta of the implicit PRM's DPO loss and step rewards, r_t = beta "
                            "log(pi_phi(a_t|s_t) / pi_old(a_t|s_t)); a small beta lets pi_phi drift far from the "
                            "policy, and the policy, pulled after it, loses its entropy", 1.0)
    reward_code: str | None = knob("a CodeReward function (a file of Python, as an LLM designer writes it, or its "
                                   "source), added to the env's reward", None)
    ray: str | None = knob("collect rollouts on Ray workers: local (a new instance on this machine), auto (the "
                           "running cluster) or a cluster address; same results as without (none: this process)", None)
    ray_workers: int | None = knob("Ray collection workers, each playing a share of the groups (none: one per CPU of "
                                   "the cluster, at most one per group)", None)

    def check(self) -> None:
        """Raise ValueError, in one sentence that names the fix, on a setting the trainer cannot use."""
        if self.env_id not in gym.registry:
            raise ValueError(f"unknown env {self.env_id!r}: run `turngym list` to see the ids")
        if self.policy.partition(":")[0] not in self.policies:
            raise ValueError(f"{type(self).__name__} trains {' or '.join(self.policies)} policies, not "
                             f"{self.policy!r}: use {config_class(self.policy).__name__} for it")
        if self.algo not in ESTIMATORS:
            raise ValueError(f"unknown algo {self.algo!r}: use one of {', '.join(sorted(ESTIMATORS))}")
        if self.loss not in self.losses:
            raise ValueError(f"unknown loss {self.loss!r} for {self.about}: use {' or '.join(self.losses)}")
        for name in ("groups", "group_size", "epochs", "minibatch_size", "steps", "credit_epochs",
                     "credit_minibatch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("lr", "clip_eps", "max_grad_norm", "credit_lr", "oprl_beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.prm_target not in ("td", "mc"):
            raise ValueError(f"unknown prm_target {self.prm_target!r}: use td or mc")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise ValueError(f"ray_workers must be at least 1, got {self.ray_workers}")

    def env_setup(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(gym.make kwargs, reset options) of the training env: `task` resolved for its class."""
        return resolve_task(self.env_id, self.task, self.env_kwargs)

    def make_env(self, kwargs: Mapping[str, Any]) -> gym.Env:
        """One training env: `gym.make(env_id, **kwargs)` (kwargs from `env_setup`), its reward the
        run's reward code where there is one (`CodeReward`)."""
        env = gym.make(self.env_id, **kwargs)
        return CodeReward(env, self.reward_code) if self.reward_code else env

    @abstractmethod
    def trained(self) -> tuple[str, dict[str, Any]]:
        """The agent spec of the trained policy and the gym.make kwargs of an env it plays."""


@dataclass(kw_only=True)
class NeuralTrainConfig(TrainConfig):
    """PPO (or REINFORCE) for the small `neural` policies (trainers/ppo.py)."""

    policies: ClassVar[tuple[str, ...]] = ("neural",)
    trainer: ClassVar[str] = "turngym.trainers.ppo:train"
    about: ClassVar[str] = "the neural-policy trainer (--policy neural)"

    policy: str = "neural"
    steps: int | None = 200_000
    groups: int = 8
    lr: float = 1e-3
    epochs: int = 4
    minibatch_size: int = 4096
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5
    backend: str = knob("symbolic (the env's fast vector backend), text (any env, text policy) or auto "
                        "(symbolic where the env has a backend for its kwargs)", "auto")
    net: dict[str, Any] = field(default_factory=dict, metadata=field_meta(
        "a size or switch of a fresh policy as key=value (repeatable): a PolicyConfig field of agents/neural.py for "
        "the text policy, e.g. --net image=true for a CNN over the observation's image; embed, hidden or landmarks "
        "for the symbolic one, e.g. --net landmarks=table,furnace,water (agents/landmarks.py)", aliases=("--net",)))
    vf_coef: float = knob("weight of the value loss (estimators with a critic: "
                          + ", ".join(name for name in ESTIMATORS if "values" in NEEDS[name]) + ")", 0.5)
    critic_warmup: int = knob("updates at the start that fit only the value head, the policy held: a policy cloned "
                              "without a value (turngym bc) otherwise follows a random critic's advantages first", 0)
    self_imitation: float = knob("weight of the self-imitation loss: behaviour cloning on the run's own best episodes "
                                 "so far, beside the RL loss (0: off; trainers/self_imitation.py)", 0.0)
    self_imitation_episodes: int = knob("self-imitation: the episodes kept, the best by its signal", 64)
    self_imitation_signal: str = knob("self-imitation: what ranks an episode, which is kept only above 0: success, "
                                      "progress (the score part), return or score; fewer turns break ties",
                                      "success")
    curriculum: str = knob("task curriculum: none (the run's task distribution) or eva (replay and evolve the "
                           "tasks whose groups' returns differ most, mixed with fresh draws; trainers/curriculum.py)",
                           "none")
    curriculum_metric: str = knob("eva: a task's informativeness from its group's returns: "
                                  + ", ".join(CURRICULUM_METRICS) + " (p(1-p))", "max_min")
    curriculum_signal: str = knob("eva: the graded signal the metric reads per rollout: return (the reward trained on, "
                                  "a code reward included; Craft: -k reward=progress), score (the env's final score) "
                                  "or progress (the score part); on 0/1 success max_min is 1 for any mixed group",
                                  "return")
    curriculum_sample_frac: float = knob("eva: parents sampled by informativeness each update, as a share of groups",
                                         0.25)
    curriculum_children: int = knob("eva: children evolved from each parent (an env that cannot evolve tasks "
                                    "replays the parent)", 4)
    curriculum_new_frac: float = knob("eva: share of groups that play the parents' children; the rest play fresh "
                                      "draws of the run's tasks", 0.8)
    curriculum_buffer: int = knob("eva: tasks remembered with their informativeness (the oldest dropped first)", 256)

    def check(self) -> None:
        super().check()
        if self.steps is None:
            raise ValueError("the neural-policy trainer needs an env-step budget: set steps")
        if self.critic_warmup < 0:
            raise ValueError(f"critic_warmup must be >= 0, got {self.critic_warmup}")
        if self.self_imitation < 0 or self.self_imitation_episodes < 1:
            raise ValueError("self_imitation must be >= 0 and self_imitation_episodes >= 1, got "
                             f"{self.self_imitation} and {self.self_imitation_episodes}")
        from turngym.trainers.self_imitation import IMITATION_SIGNALS

        if self.self_imitation_signal not in IMITATION_SIGNALS:
            raise ValueError(f"unknown self_imitation_signal {self.self_imitation_signal!r}: use "
                             + ", ".join(IMITATION_SIGNALS))
        if self.curriculum not in ("none", "eva"):
            raise ValueError(f"unknown curriculum {self.curriculum!r}: use none or eva")
        if self.curriculum_signal not in CURRICULUM_SIGNALS:
            raise ValueError(f"unknown curriculum_signal {self.curriculum_signal!r}: use "
                             + ", ".join(CURRICULUM_SIGNALS))
        from turngym.agents.neural import PolicyConfig
        from turngym.agents.symbolic import NET_FIELDS, SymbolicConfig

        # a fresh policy of the vector backend is a SymbolicPolicy, else the text policy
        symbolic = self.vector_backend() is not None  # (a backend that cannot play these settings fails here)
        fields = NET_FIELDS if symbolic else tuple(PolicyConfig.__dataclass_fields__)
        unknown = set(self.net) - set(fields)
        if unknown:
            raise ValueError(f"unknown net option(s) {sorted(unknown)} for the {'symbolic' if symbolic else 'text'} "
                             f"policy: use {', '.join(fields)}")
        if self.net and self.policy != "neural":
            raise ValueError("net sizes a fresh policy; a saved one (--policy neural:PATH) keeps its own")
        if symbolic:
            SymbolicConfig.for_craft(**self.net)  # unknown landmark materials fail before any work

    def vector_backend(self) -> VectorBackend | None:
        """The env's fast vector backend when this run uses it (backend symbolic or auto), else None."""
        if self.backend not in ("auto", "symbolic", "text"):
            raise ValueError(f"unknown backend {self.backend!r}: use auto, symbolic or text")
        kwargs, options = self.env_setup()
        backend = getattr(env_class(self.env_id), "vector_backend", None)
        # a backend plays the env its kwargs make; tasks picked at reset are the single envs' business
        usable = backend is not None and backend.plays(kwargs) and options is None
        if self.backend == "symbolic" and not usable:
            raise ValueError(f"{self.env_id} has no vector backend for kwargs {self.env_kwargs}: "
                             "use backend text")
        # reward code runs on either backend: VectorCodeReward on the vector one, CodeReward on single envs
        if self.backend == "text" or (self.backend == "auto" and not usable):
            return None
        return backend

    def trained(self) -> tuple[str, dict[str, Any]]:
        kwargs = self.env_setup()[0]
        backend = self.vector_backend()
        return f"neural:{Path(self.out) / 'policy.pt'}", {**kwargs, **(backend.single if backend else {})}


# what the LM trainer gives estimators (trainers/lm_credit.py): a PRM, the step rewards of SPA's progress
# estimator or OPRL's implicit PRM, and a critic's values
LM_PROVIDES = frozenset({"prm", "step_rewards", "values"})


@dataclass(kw_only=True)
class LMTrainConfig(TrainConfig):
    """PPO (or REINFORCE) for `hf:` language models (trainers/lm.py), on their reply tokens or, in
    score mode, on their choice among the env's proposed actions; or DPO on pairs of their own
    episodes (`loss="dpo"`, trainers/dpo.py)."""

    policies: ClassVar[tuple[str, ...]] = ("hf",)
    trainer: ClassVar[str] = "turngym.trainers.lm:train_lm"
    about: ClassVar[str] = "the language-model trainer (--policy hf:PATH)"
    losses: ClassVar[tuple[str, ...]] = ("ppo", "reinforce", "dpo")

    steps: int | None = None
    groups: int = 4
    lr: float = 1e-5
    epochs: int = 1
    minibatch_size: int = 16
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    updates: int | None = knob("update budget; the run stops at whichever of steps and updates comes first "
                               "(neither given: 100 updates)", None)
    mode: str = knob("generate (token-level PPO on replies) or score (the policy is the distribution over proposed "
                     "actions)", "generate")
    score_reduce: str = knob("score mode: a candidate's logit is the sum (sum) or the per-token mean (mean) of its "
                             "tokens' log-likelihoods", "sum")
    prompt_grad: bool = knob("backpropagate through the prompt's keys and values too (the exact gradient) or only "
                             "through the reply's tokens (score mode: the candidates' tokens) and the prompt's last "
                             "one (a truncated gradient, several times faster on long prompts)", True)
    weight_decay: float = knob("AdamW's weight decay", 0.0)
    micro_batch_size: int | None = knob("turns per forward pass, gradients accumulating over a minibatch "
                                        "(none: the whole minibatch)", None)
    kl_coef: float = knob("weight of the k3 KL to the starting model (0: no reference model)", 0.0)
    lora: bool = knob("train LoRA adapters instead of every weight", False)
    lora_rank: int = knob("LoRA rank r", 8)
    lora_alpha: float = knob("LoRA alpha (the adapters scale by alpha / r)", 16.0)
    lora_dropout: float = knob("LoRA dropout (> 0 makes the recomputed log-probs differ from the sampled ones)",
                               0.0)
    lora_targets: str = knob("the layers LoRA adapts: all-linear (peft's every linear layer but the head) or "
                             "module names separated by commas", "all-linear")
    temperature: float = knob("sampling temperature of the rollouts (and of the policy the loss sees)", 1.0)
    top_p: float = knob("nucleus sampling mass of the rollouts", 1.0)
    max_new_tokens: int = knob("reply length cap in tokens", 128)
    max_context: int | None = knob("prompt token budget (none: the model's, at most 8192)", None)
    device: str = knob("auto (cuda when there is a GPU, else cpu), cpu or cuda[:N]", "auto")
    dtype: str = knob("the base weights' type: auto (the checkpoint's), float32, or with lora bfloat16 or float16 "
                      "(bfloat16: 2-3x faster on CPUs with AMX or AVX512-BF16; the adapters stay float32)", "auto")
    save_every: int = knob("checkpoint every N updates (and after the last)", 1)
    dpo_beta: float = knob("loss dpo: beta, the weight of the implicit KL to the starting model; the loss is "
                           "-log sigmoid(beta x the chosen minus the rejected episode's log-ratio to it)", 0.1)
    dpo_pairs: str = knob("loss dpo: what ranks a group's episodes into (chosen, rejected) pairs: score (the env's "
                          "score), flr (the follow-up likelihood of rewards/flr.py, for envs without a score) or "
                          "random (a control that knows nothing: what DPO's steps do by themselves)", "score")
    dpo_nll_coef: float = knob("loss dpo: RPO's alpha, the weight of the chosen episodes' negative log-likelihood "
                               "per reply token (or choice) added to the DPO loss (0: plain DPO)", 0.0)
    dpo_pairs_per_group: int | None = knob("loss dpo: keep a group's pairs of widest key gap only (1: its best "
                                           "episode against its worst; none: every pair of unequal keys)", None)
    flr_model: str | None = knob("dpo_pairs flr: the language model that scores the follow-ups, a local path or "
                                 "name as after hf: (none: the policy's starting model)", None)
    flr_followups: str = knob("dpo_pairs flr: the follow-up set (see rewards/flr.py)", "general")
    flr_unanswered: str = knob("dpo_pairs flr: an episode that ended without a final response (it ran out of "
                               "turns before a purchase or an answer): skip (no key: FLR judges responses, so it "
                               "joins no pair) or judge (FLR of its last turn, whatever that was)", "skip")

    def __post_init__(self) -> None:
        if self.steps is None and self.updates is None:
            self.updates = 100  # the default budget; a steps budget alone is not capped by it

    @property
    def model(self) -> str:
        """The checkpoint folder (or local Hugging Face cache name) of `hf:PATH`."""
        return self.policy.removeprefix("hf:")

    def check(self) -> None:
        super().check()
        if NEEDS[self.algo] - LM_PROVIDES:
            usable = sorted(name for name in ESTIMATORS if not NEEDS[name] - LM_PROVIDES)
            raise ValueError(f"estimator {self.algo!r} needs {' and '.join(sorted(NEEDS[self.algo]))}, which the "
                             f"language-model trainer does not provide: use one of {', '.join(usable)}")
        for name in ("updates", "micro_batch_size", "max_new_tokens", "save_every", "lora_rank"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 to train (greedy replies have no log-probs), "
                             f"got {self.temperature}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.mode not in ("generate", "score"):
            raise ValueError(f"unknown mode {self.mode!r}: use generate or score")
        if self.score_reduce not in ("sum", "mean"):
            raise ValueError(f"unknown score_reduce {self.score_reduce!r}: use sum or mean")
        from turngym.agents.models import DTYPES  # the agents' list; imported here, where a run starts

        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: use {', '.join(DTYPES)}")
        if self.dtype in ("bfloat16", "float16") and not self.lora:
            raise ValueError(f"dtype {self.dtype} trains only LoRA adapters (updates to 16-bit weights round away): "
                             "add lora=True or use dtype float32")
        if self.loss == "dpo":
            self.check_dpo()

    def check_dpo(self) -> None:
        """What `loss="dpo"` (trainers/dpo.py) needs besides the checks above."""
        if self.dpo_pairs not in ("score", "flr", "random"):
            raise ValueError(f"unknown dpo_pairs {self.dpo_pairs!r}: use score, flr or random")
        if self.flr_unanswered not in ("skip", "judge"):
            raise ValueError(f"unknown flr_unanswered {self.flr_unanswered!r}: use skip or judge")
        if not self.dpo_beta > 0:
            raise ValueError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        if self.dpo_nll_coef < 0:
            raise ValueError(f"dpo_nll_coef must be >= 0, got {self.dpo_nll_coef}")
        if self.dpo_pairs_per_group is not None and self.dpo_pairs_per_group < 1:
            raise ValueError(f"dpo_pairs_per_group must be at least 1, got {self.dpo_pairs_per_group}")
        if self.group_size < 2:
            raise ValueError("loss dpo pairs episodes within a group of one task: set group_size to 2 or more")
        if self.kl_coef or self.entropy_coef:
            raise ValueError("loss dpo keeps the policy near the reference through dpo_beta and has no KL or entropy "
                             "term: set kl_coef and entropy_coef to 0")

    def trained(self) -> tuple[str, dict[str, Any]]:
        spec = f"hf:{Path(self.out) / 'model'}"
        if self.mode == "score":  # the trained policy is the choice among proposals: evaluate it so
            spec += f"?mode=score&reduce={self.score_reduce}&temperature={self.temperature}"
        return spec, self.env_setup()[0]


CONFIGS: tuple[type[TrainConfig], ...] = (NeuralTrainConfig, LMTrainConfig)
DEFAULT_POLICY = "neural"


def config_class(policy: str | None) -> type[TrainConfig]:
    """The config class of the trainer that trains `policy` (None: a fresh neural policy)."""
    kind = (policy or DEFAULT_POLICY).partition(":")[0]
    for cls in CONFIGS:
        if kind in cls.policies:
            return cls
    raise ValueError(f"no trainer takes policy {policy!r}: use " + " or ".join(c.about for c in CONFIGS))


def make_config(values: Mapping[str, Any], kind: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """The config of the trainer that `values["policy"]` selects (one of `kind`), each value
    converted to its field's type (`convert`); names not given keep that trainer's defaults, and a
    name of another trainer's config is an error that says whose it is."""
    target = config_class(values.get("policy"))
    if not issubclass(target, kind):
        raise ValueError(f"this command plays {' or '.join(kind.policies)} policies, not {values['policy']!r}: "
                         f"give --policy {kind.policies[0]}")
    own = {f.name for f in fields(target)}
    for name in values:
        if name not in own:
            owners = [c for c in CONFIGS if name in {f.name for f in fields(c)}]
            if not owners:
                raise ValueError(f"unknown train option {name!r}: `turngym train --help` lists them")
            raise ValueError(f"{name} is an option of {owners[0].about}, not of {target.about}: drop it, or "
                             "choose the policy it belongs to")
    hints = typing.get_type_hints(target)
    return target(**{name: convert(name, value, hints[name]) for name, value in values.items()})


def field_type(hint: Any) -> tuple[type, bool]:
    """(int, float, str, bool or dict; whether None is allowed) of a config field's type hint."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint, optional  # dict[str, Any] -> dict


def convert(name: str, value: Any, hint: Any) -> Any:
    """`value` as a field of type `hint` (int, float, str, bool or dict, maybe `| None`). Text
    becomes a number where a number is due, since YAML reads 1e-5 (no dot) as a string."""
    kind, optional = field_type(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} needs a value ({kind.__name__})")
    if kind in (int, float) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} takes a number, got {value!r}") from None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{name} takes {kind.__name__} values, got {value!r}")
    return dict(value) if kind is dict else value


@dataclass(frozen=True)
class Knob:
    """One `turngym train` option: a field of one or more trainer configs."""

    name: str
    kind: type  # int, float, str, bool or dict
    help: str
    aliases: tuple[str, ...]  # command-line names besides --name
    defaults: dict[type[TrainConfig], Any]  # per config class that has the field and a default for it

    @property
    def owners(self) -> list[type[TrainConfig]]:
        return [c for c in CONFIGS if self.name in c.__dataclass_fields__]


def knobs() -> list[Knob]:
    """Every field of every trainer config, the shared ones first, each with the type, help and
    aliases of the class that declares it and every trainer's default."""
    out = []
    for name in dict.fromkeys(f.name for cls in (TrainConfig, *CONFIGS) for f in fields(cls)):
        owner = next(c for c in (TrainConfig, *CONFIGS) if name in c.__dataclass_fields__)
        declared = owner.__dataclass_fields__[name]
        defaults = {}
        for cls in CONFIGS:
            f = cls.__dataclass_fields__.get(name)
            if f is not None and f.default is not MISSING:
                defaults[cls] = f.default
            elif f is not None and f.default_factory is not MISSING:
                defaults[cls] = f.default_factory()
        kind = field_type(typing.get_type_hints(owner)[name])[0]
        out.append(Knob(name, kind, declared.metadata["help"], declared.metadata["aliases"], defaults))
    return out


def defaults(cls: type[TrainConfig]) -> dict[str, Any]:
    """The trainer config class's defaults, by field (fields without one left out)."""
    return {k.name: k.defaults[cls] for k in knobs() if cls in k.defaults}


def train(config: TrainConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run the trainer `config` belongs to; returns its metric rows."""
    module, _, function = config.trainer.partition(":")
    return getattr(importlib.import_module(module), function)(config, progress=progress)
