"""Reward functions written as Python source, after Auto MC-Reward (Li et al. 2023).

A person or a language model writes

    def reward(prev_state, action, state, info):
        return dense                 # or: return sparse, dense
                                     # or: return sparse, dense, {"approach": a, "lava": l, ...}

over the env's documented `env.unwrapped.state_dict()` (`prev_state` before the action, `state`
after it, `action` the string the agent sent, `info` the step's info). `CodeReward(env, source)`
adds it to the env's reward, clipped as in the paper:

    sparse' = sign(sparse) in {-1, 0, 1}            (0 when the function returns a lone float)
    dense'  = min(max(dense, -0.1), 0.1)
    r'_t    = r_env,t + sparse' + dense'

so key events count fully, small progress signals stay small, and no reward function can drown
the task's own outcome reward. A third value, a dict of named terms (finite numbers), reports what
the reward is made of: it changes nothing in the reward, and `info["code_reward"]["terms"]`, the
checker's stats and the training analysis (`turngym.rewards.analysis`) count how often each fired.

Before use the source is checked (`check_reward_source`): it parses; it defines `reward` with
exactly the parameters (prev_state, action, state, info); it passes the sandbox rules; and
on recorded transitions (`record_transitions`) it runs without error, within the time limit, and
returns finite numbers, pairs or (sparse, dense, terms) triples. `CodeReward` runs the checks that
need no data when it is built and raises ValueError naming the problems.

The code runs in the sandbox of `turngym.rewards.sandbox` (a whitelist of builtins, `import math`
only, no classes, `try/finally` or catch-all `except`) with a limit on the CPU time of every call
(50 ms by default), also in force while the module body runs; state and info are passed as copies so
the function cannot change the env. The wrappers run the module body again for every episode (and
every env of a vector env), so module-level objects the code keeps carry nothing from one to the
next.
"""

from __future__ import annotations

import ast
import copy
import inspect
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from turngym.rewards.sandbox import FILENAME, RewardTimeout, load, run_limited, sandbox_problems

PARAMS = ("prev_state", "action", "state", "info")
SIGNATURE = "reward(prev_state, action, state, info)"
DEFAULT_TIME_LIMIT = 0.05  # CPU seconds per call
LOAD_TIME_LIMIT = 1.0  # CPU seconds for the module body (definitions, constant tables)
SPARSE_VALUES = (-1.0, 0.0, 1.0)
DENSE_BOUND = 0.1
MAX_TIMEOUTS = 3  # the checker stops calling a function after this many timeouts
MAX_PROBLEMS = 5  # distinct runtime errors the checker reports


class RewardCodeError(Exception):
    """A reward function failed on one call: the message is one line saying why and where;
    `timeout` tells a call that ran past its time limit from one that raised or returned junk."""

    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class Transition(NamedTuple):
    """One recorded step: the state before, the action, the state after and the step's info."""

    prev_state: dict[str, Any]
    action: str
    state: dict[str, Any]
    info: dict[str, Any]


@dataclass
class Report:
    """What `check_reward_source` found: `ok` when there are no `problems` (each one sentence
    naming the fix); `stats` on the calls (firing rates, clipping, time); `notes` on things that
    are allowed but worth a look (a reward that never fires, a dense part that is mostly clipped)."""

    ok: bool
    problems: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- clipping ---------------------------------------------------------------------------------

class Value(NamedTuple):
    """What one call of reward() amounts to: sparse, dense and its named terms ({} when none)."""

    sparse: float
    dense: float
    terms: dict[str, float]


def split_terms(value: Any) -> Value:
    """The raw (sparse, dense, terms) of a return value: a number is (0, value, {}), a pair (s, d)
    is (s, d, {}), a triple (s, d, terms) names the terms in a dict of finite numbers. ValueError,
    in one sentence, on anything else or on a value that is not finite."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (2, 3) or (len(value) == 3 and not isinstance(value[2], dict)):
            raise ValueError(f"reward() returned a {type(value).__name__} of {len(value)} items: "
                             "return a float (dense), a pair (sparse, dense) or (sparse, dense, {name: term})")
        sparse, dense = _number(value[0], "sparse"), _number(value[1], "dense")
        return Value(sparse, dense, _terms(value[2]) if len(value) == 3 else {})
    return Value(0.0, _number(value, "value"), {})


def _terms(terms: dict[Any, Any]) -> dict[str, float]:
    bad = [k for k in terms if not isinstance(k, str)]
    if bad:
        raise ValueError(f"reward() returned terms with the key {bad[0]!r}: name each term with a string")
    return {name: v if type(v) is float and v - v == 0.0 else _number(v, f"term {name!r}")  # finite floats first
            for name, v in terms.items()}


def split_reward(value: Any) -> tuple[float, float]:
    """The raw (sparse, dense) of a return value (`split_terms` without the terms)."""
    return split_terms(value)[:2]


def clip_reward(value: Any) -> tuple[float, float]:
    """(sparse', dense') from what reward() returned, clipped as in Auto MC-Reward:
    sparse' = sign(sparse) in {-1, 0, 1} (0 for a lone float), dense' = min(max(dense, -0.1), 0.1).
    ValueError on a value that is not a finite number or pair of finite numbers."""
    sparse, dense = split_reward(value)
    return _sign(sparse), min(max(dense, -DENSE_BOUND), DENSE_BOUND)


def _sign(x: float) -> float:
    """sign(x) in {-1.0, 0.0, 1.0} for a finite x, as float(np.sign(x)) without NumPy's call overhead."""
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0


def _number(value: Any, what: str) -> float:
    if type(value) is float and value - value == 0.0:  # a finite float: the usual case, checked fast
        return value
    if not isinstance(value, (int, float)):  # bool is an int: True counts as 1
        raise ValueError(f"reward() returned {type(value).__name__} as its {what}: "
                         "return a float (dense) or a pair of floats (sparse, dense), maybe with a dict of terms")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"reward() returned a {what} of {value!r}: return finite numbers (guard divisions "
                         "and logs)")
    return number


# --- static checks ----------------------------------------------------------------------------

def signature_problems(tree: ast.Module) -> list[str]:
    """Whether the module defines `reward(prev_state, action, state, info)` at its top level."""
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "reward"]
    if not defs:
        return [f"the source defines no top-level function `reward`: write `def {SIGNATURE}:`"]
    args = defs[-1].args
    names = [a.arg for a in [*args.posonlyargs, *args.args]]
    extra = [f"*{args.vararg.arg}"] if args.vararg else []
    extra += [a.arg for a in args.kwonlyargs] + ([f"**{args.kwarg.arg}"] if args.kwarg else [])
    if tuple(names) != PARAMS or extra:
        return [f"reward() must take ({', '.join(PARAMS)}); yours takes ({', '.join(names + extra)})"]
    return []


def static_problems(source: str) -> list[str]:
    """The problems found without running anything: parsing, the sandbox rules, the signature."""
    if not isinstance(source, str):
        return [f"the reward source must be a string of Python code, got {type(source).__name__}"]
    try:
        tree = ast.parse(source, filename=FILENAME)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        return [f"{where}the source does not parse ({exc.msg}): fix the Python syntax"]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [f"the source does not parse ({type(exc).__name__}: {_short(exc)}): fix the Python syntax"]
    return sandbox_problems(tree) + signature_problems(tree)


# --- loading and calling ----------------------------------------------------------------------

def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."


ATOMS = frozenset((str, int, float, bool, type(None)))


def _copy(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, scalars) that shares nothing mutable with `value`
    (exact type tests keep it about 3x faster than copy.deepcopy on a Craft state)."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in ATOMS else _copy(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in ATOMS else _copy(v) for v in value]
    if kind in ATOMS:
        return value
    if kind is tuple:
        return tuple(_copy(v) for v in value)
    return copy.deepcopy(value)


class RewardProgram:
    """A reward source that passed the static checks, loaded into the sandbox.

    `program(prev_state, action, state, info)` returns the clipped (sparse', dense'); `raw(...)`
    the unclipped pair; `evaluate(...)` the unclipped `Value` with its terms and `clipped(...)`
    the clipped one (terms as returned). All raise RewardCodeError, with a one-line reason that names the line,
    when the code raises, runs past `time_limit` seconds or returns something other than finite
    numbers. ValueError at construction lists the static problems, or why the module body failed.
    """

    def __init__(self, source: str, time_limit: float = DEFAULT_TIME_LIMIT) -> None:
        if not isinstance(time_limit, (int, float)) or isinstance(time_limit, bool) or not time_limit > 0:
            raise ValueError(f"time_limit must be a number of seconds > 0, got {time_limit!r}")
        problems = static_problems(source)
        if problems:
            raise ValueError("the reward source fails its checks: " + "; ".join(problems))
        self.source, self.time_limit = source, float(time_limit)
        self.lines = source.splitlines()
        try:
            self.code = compile(source, FILENAME, "exec")
            self.namespace = load(self.code, max(LOAD_TIME_LIMIT, self.time_limit))
        except SyntaxError as exc:
            raise ValueError(f"line {exc.lineno}: the source does not compile ({exc.msg}): fix the Python "
                             "syntax") from None
        except RewardTimeout as exc:
            raise ValueError(f"the module body ran past {max(LOAD_TIME_LIMIT, self.time_limit):g} s"
                             f"{self._where(exc)}: keep work inside reward()") from None
        except Exception as exc:
            raise ValueError(f"the module body raised {type(exc).__name__}: {_short(exc)}{self._where(exc)}: "
                             "fix the code outside reward()") from None
        fn = self.namespace.get("reward")
        if not inspect.isfunction(fn) or tuple(inspect.signature(fn).parameters) != PARAMS:
            raise ValueError(f"after running the source, `reward` is not the function {SIGNATURE}: do not rebind "
                             "the name reward")
        self.fn = fn

    def fresh(self) -> RewardProgram:
        """This program with its module body run again: whatever the code keeps in module-level
        objects (a set of visited tiles, a counter) starts anew. The wrappers take one per episode,
        and one per env of a vector env, so nothing kept there leaks from one into another."""
        program = copy.copy(self)
        program.namespace = load(self.code, max(LOAD_TIME_LIMIT, self.time_limit))
        program.fn = program.namespace["reward"]
        return program

    def _where(self, exc: BaseException | None) -> str:
        """` at line N (`code`)` for the innermost frame of the reward code in a traceback."""
        tb, line = exc.__traceback__ if exc is not None else None, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == FILENAME:
                line = tb.tb_lineno
            tb = tb.tb_next
        if line is None:
            return ""
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return f" at line {line}" + (f" (`{text[:80]}`)" if text else "")

    def raw(self, prev_state: dict[str, Any], action: str, state: dict[str, Any],
            info: dict[str, Any]) -> tuple[float, float]:
        """The unclipped (sparse, dense) of one call; the arguments are used as given (copy them first)."""
        return self.evaluate(prev_state, action, state, info)[:2]

    def evaluate(self, prev_state: dict[str, Any], action: str, state: dict[str, Any],
                 info: dict[str, Any]) -> Value:
        """The unclipped Value of one call; the arguments are used as given (copy them first)."""
        try:
            value = run_limited(self.fn, (prev_state, action, state, info), self.time_limit)
        except RewardTimeout as exc:
            raise RewardCodeError(f"reward() ran past its {self.time_limit * 1000:g} ms time limit{self._where(exc)}: "
                                  "make it faster (avoid loops that may not end or scan much data)",
                                  timeout=True) from None
        except Exception as exc:
            hint = " (use .get(key, default) for keys that may be missing)" if isinstance(exc, KeyError) else ""
            raise RewardCodeError(f"reward() raised {type(exc).__name__}: {_short(exc)}{self._where(exc)}: fix it so "
                                  f"it runs on every transition{hint}") from None
        try:
            return split_terms(value)
        except ValueError as exc:
            raise RewardCodeError(str(exc)) from None

    def clipped(self, prev_state: dict[str, Any], action: str, state: dict[str, Any],
                info: dict[str, Any]) -> Value:
        """The Value of one call with sparse and dense clipped (the terms as the code returned them)."""
        sparse, dense, terms = self.evaluate(prev_state, action, state, info)
        return Value(_sign(sparse), min(max(dense, -DENSE_BOUND), DENSE_BOUND), terms)

    def __call__(self, prev_state: dict[str, Any], action: str, state: dict[str, Any],
                 info: dict[str, Any]) -> tuple[float, float]:
        return self.clipped(prev_state, action, state, info)[:2]


# --- the checker ------------------------------------------------------------------------------

def _flatten(data: Iterable[Any]) -> list[Transition]:
    """Transitions from a flat sequence of (prev_state, action, state, info) or from episodes of them."""
    out: list[Transition] = []
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) == 4 and isinstance(item[0], dict):
            out.append(Transition(*item))
        elif isinstance(item, (tuple, list)):
            out.extend(_flatten(item))
        else:
            raise ValueError(f"expected (prev_state, action, state, info) transitions, got {type(item).__name__}: "
                             "record them with record_transitions(env, agent)")
    return out


def check_reward_source(source: str, transitions: Iterable[Any], *,
                        time_limit: float = DEFAULT_TIME_LIMIT) -> Report:
    """Check reward source before use: it parses, defines reward(prev_state, action, state, info),
    keeps the sandbox rules, and on every recorded transition (a flat list of transitions or a
    list of episodes of them) runs without error within `time_limit` seconds and returns finite
    numbers. Never raises on bad source: everything wrong is in the Report's `problems`."""
    problems = static_problems(source)
    if problems:
        return Report(False, problems)
    data = _flatten(transitions)
    try:
        program = RewardProgram(source, time_limit)
    except ValueError as exc:
        return Report(False, [str(exc)])
    if not data:
        return Report(False, ["there are no transitions to run reward() on: pass some from "
                              "record_transitions(env, agent)"])
    errors: dict[str, list[int]] = {}  # message -> the transitions it happened on
    raws: list[Value] = []
    times: list[float] = []
    timeouts = 0
    for i, (prev, action, state, info) in enumerate(data):
        start = time.perf_counter()
        try:
            raws.append(program.evaluate(_copy(prev), action, _copy(state), _copy(info)))
        except RewardCodeError as exc:
            errors.setdefault(str(exc), []).append(i)
            timeouts += exc.timeout
            if timeouts >= MAX_TIMEOUTS:
                break
        times.append(time.perf_counter() - start)
    for message, where in list(errors.items())[:MAX_PROBLEMS]:
        share = (f"on {len(where)} of {len(data)} transitions" if timeouts < MAX_TIMEOUTS
                 else f"the checker stopped after {MAX_TIMEOUTS} timeouts")
        problems.append(f"{message} [{share}; first on transition {where[0]}, action {data[where[0]].action!r}]")
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"... and {len(errors) - MAX_PROBLEMS} more kinds of error: fix the ones above first")
    stats = _stats(raws, times, len(data), sum(len(w) for w in errors.values()), timeouts)
    return Report(not problems, problems, stats, _notes(stats) if raws else [])


def _stats(raws: list[Value], times: list[float], n: int, errors: int, timeouts: int) -> dict[str, Any]:
    sparse = np.array([v.sparse for v in raws], dtype=np.float64)
    dense = np.array([v.dense for v in raws], dtype=np.float64)
    names = dict.fromkeys(name for v in raws for name in v.terms)
    clipped_s, clipped_d = np.sign(sparse), np.clip(dense, -DENSE_BOUND, DENSE_BOUND)
    calls = max(len(raws), 1)
    return {
        "transitions": n, "calls": len(raws), "errors": errors, "timeouts": timeouts,
        "sparse_positive": int((clipped_s > 0).sum()), "sparse_negative": int((clipped_s < 0).sum()),
        "sparse_fired_rate": float((clipped_s != 0).sum() / calls),
        "dense_fired_rate": float((clipped_d != 0).sum() / calls),
        "mean_sparse": float(clipped_s.mean()) if raws else 0.0,
        "mean_dense": float(clipped_d.mean()) if raws else 0.0,
        "sparse_rounded_rate": float((~np.isin(sparse, SPARSE_VALUES)).sum() / calls),
        "dense_clipped_rate": float((np.abs(dense) > DENSE_BOUND).sum() / calls),
        "ms_mean": float(np.mean(times) * 1000) if times else 0.0,
        "ms_max": float(np.max(times) * 1000) if times else 0.0,
        # per named term: the share of calls where it was not 0
        "term_fired_rate": {name: sum(v.terms.get(name, 0.0) != 0 for v in raws) / calls for name in names},
    }


def _notes(stats: dict[str, Any]) -> list[str]:
    notes = []
    if stats["sparse_fired_rate"] == 0 and stats["dense_fired_rate"] == 0:
        notes.append("reward() returned 0 on every recorded transition: it gives no signal on them")
    if stats["dense_clipped_rate"] > 0.25:
        notes.append(f"the dense part was clipped to [-0.1, 0.1] on {stats['dense_clipped_rate']:.0%} of calls: "
                     "scale it down so its differences survive")
    if stats["sparse_rounded_rate"] > 0:
        notes.append(f"the sparse part was not in {{-1, 0, 1}} on {stats['sparse_rounded_rate']:.0%} of calls and "
                     "was replaced by its sign")
    return notes


def record_transitions(env: gym.Env, agent: Any = "random", episodes: int = 2, seed: int = 0, *,
                       options: dict[str, Any] | None = None) -> list[Transition]:
    """Play `episodes` episodes (reset seeds seed, seed+1, ...) with `agent` (an Agent or a spec
    such as "random", "heuristic", "oracle") and record state_dict() before and after every step."""
    if isinstance(agent, str):
        from turngym.agents import make_agent

        agent = make_agent(agent, env)
    base = env.unwrapped
    out: list[Transition] = []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode, options=options)
        params = inspect.signature(agent.reset).parameters
        if "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            agent.reset(obs, info, seed=seed + episode)
        else:
            agent.reset(obs, info)
        prev, done = _copy(base.state_dict()), False
        while not done:
            action = agent.act(obs, info)
            obs, _, terminated, truncated, info = env.step(action)
            state = _copy(base.state_dict())
            out.append(Transition(prev, action, state, _copy(info)))
            prev, done = state, terminated or truncated
    return out


# --- the wrapper ------------------------------------------------------------------------------

class CodeReward(gym.Wrapper):
    """Adds a checked reward function, written as Python source, to any turngym env's reward.

    Each step calls `reward(prev_state, action, state, info)` on copies of
    `env.unwrapped.state_dict()` before and after the step and the step's info, and returns
    r' = r_env + sign(sparse) + clip(dense, -0.1, 0.1) (a lone float is the dense part; see the
    module docstring). `info["code_reward"] = {"sparse": sparse', "dense": dense'}`, plus
    `"terms": {...}` when the code names its terms. When the
    function raises, runs past `time_limit` seconds or returns a bad value, that call gives 0, the
    env keeps going and `info["code_reward_error"]` says why in one line. ValueError at
    construction when the source fails the checks that need no data (`static_problems`).
    """

    def __init__(self, env: gym.Env, source: str, *, time_limit: float = DEFAULT_TIME_LIMIT) -> None:
        super().__init__(env)
        self.program = RewardProgram(source, time_limit)
        self.source = source
        self._state: dict[str, Any] | None = None
        self._episode = self.program  # this episode's run of the program (`RewardProgram.fresh`)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._state = _copy(self.env.unwrapped.state_dict())
        self._episode = self.program.fresh()
        return obs, info

    def step(self, action: str):
        if self._state is None:
            raise RuntimeError("CodeReward.step() before reset(): call reset() first")
        obs, reward, terminated, truncated, info = self.env.step(action)
        state = _copy(self.env.unwrapped.state_dict())
        prev, self._state = self._state, state
        info = dict(info)
        try:  # prev is this wrapper's own copy, used once: only state and info need fresh copies
            sparse, dense, terms = self._episode.clipped(prev, action if isinstance(action, str) else str(action),
                                                         _copy(state), _copy(info))
        except RewardCodeError as exc:
            sparse, dense, terms = 0.0, 0.0, {}
            info["code_reward_error"] = str(exc)
        info["code_reward"] = {"sparse": sparse, "dense": dense, **({"terms": terms} if terms else {})}
        return obs, float(reward) + sparse + dense, terminated, truncated, info


def with_constants(source: str, **values: bool | int | float | str) -> str:
    """`source` with top-level constants set to new values, e.g. `with_constants(src, LAVA_TERM=False)`:
    a variant of a reward program without a copy of it. Each name must be assigned once at the top
    level (`NAME = ...`); ValueError names the ones that are not."""
    tree = ast.parse(source)
    spans = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in values:
                    spans.setdefault(target.id, []).append(node.value)
    wrong = [name for name in values if len(spans.get(name, ())) != 1]
    if wrong:
        raise ValueError(f"the reward source does not assign {', '.join(wrong)} exactly once at its top level: "
                         "name constants that the program defines as NAME = value")
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    # splice from the end, so the earlier offsets stay valid (offsets are in UTF-8 bytes per line)
    for name, (node,) in sorted(spans.items(), key=lambda item: (item[1][0].lineno, item[1][0].col_offset),
                                reverse=True):
        begin = starts[node.lineno - 1] + len(lines[node.lineno - 1].encode()[:node.col_offset].decode())
        end = starts[node.end_lineno - 1] + len(lines[node.end_lineno - 1].encode()[:node.end_col_offset].decode())
        source = source[:begin] + repr(values[name]) + source[end:]
    return source


class _Copies(Sequence[dict[str, Any]]):
    """States read one env at a time (a vector env without `state_dicts()`): each read is a new copy."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return _copy(self.states[i])


class VectorCodeReward(gym.vector.VectorWrapper):
    """CodeReward for a vector env whose worlds expose `state_dict(i)` (Craft's `CraftVectorEnv`).

    Each step scores every env that played a transition (not the ones the step reset: Gymnasium's
    next-step autoreset) with `reward(prev_state, action, state, info)`, keeping each env's last
    state instead of reading it twice. It adds sign(sparse) + clip(dense, -0.1, 0.1), as CodeReward
    does, so env i gets exactly the reward of `CodeReward(single env)` played with the same seed and
    actions, as long as the code reads states and actions only: `info` here is env i's per-env
    scalars of the vector info (valid, success, score, ...), not the single env's full info.
    `action_names[a]` is the string the code sees for action id a (default: str(a)).
    `info["code_reward"]` holds `sparse`, `dense` (arrays) and `terms` (name -> array, 0 where a term
    was not returned); `info["code_reward_error"]` (strings, "" where none) when some call failed,
    which then gives 0. Attribute reads the wrapper does not answer go to the wrapped env.
    """

    def __init__(self, env: gym.vector.VectorEnv, source: str, *, time_limit: float = DEFAULT_TIME_LIMIT,
                 action_names: Sequence[str] | None = None) -> None:
        super().__init__(env)
        if not callable(getattr(env, "state_dict", None)):
            raise ValueError(f"{type(env).__name__} has no state_dict(i): wrap each single env with CodeReward "
                             "instead (e.g. in a SyncVectorEnv)")
        if env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) != AutoresetMode.NEXT_STEP:
            raise ValueError("VectorCodeReward needs next_step autoreset (same_step hides the final state): make "
                             "the vector env with autoreset_mode='next_step'")
        self.program = RewardProgram(source, time_limit)
        self.source = source
        self.action_names = list(action_names) if action_names is not None else None
        self._states: Sequence[dict[str, Any]] | None = None
        self._resets = np.zeros(self.num_envs, bool)  # envs whose next step is a reset
        self._episodes = [self.program] * self.num_envs  # each env's run of the program this episode

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._states = self._read()
        self._resets[:] = False
        self._episodes = [self.program.fresh() for _ in range(self.num_envs)]
        return obs, info

    def _read(self) -> Sequence[dict[str, Any]]:
        """Every env's state as it is now, as a sequence whose every read is a new copy (the code
        may change what it gets; each state is read twice: as this step's state, next step's prev)."""
        batch = getattr(self.env, "state_dicts", None)
        if callable(batch):
            return batch()
        return _Copies([self.env.state_dict(i) for i in range(self.num_envs)])

    def step(self, actions: Any):
        if self._states is None:
            raise RuntimeError("VectorCodeReward.step() before reset(): call reset() first")
        obs, reward, terminated, truncated, info = self.env.step(actions)
        n = self.num_envs
        sparse, dense = [0.0] * n, [0.0] * n  # (lists: cheaper to fill one by one than arrays)
        terms: dict[str, list[float]] = {}
        errors: dict[int, str] = {}
        # per-env info: the 1-d arrays of the vector info (success, score: only where an episode ended)
        columns = [(k, v.tolist(), None if info.get(f"_{k}") is None else info[f"_{k}"].tolist())
                   for k, v in info.items()
                   if not k.startswith("_") and isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == n]
        prevs, states = self._states, self._read()
        self._states = states
        ids = np.asarray(actions).reshape(n).tolist()
        names = self.action_names
        for i in np.flatnonzero(self._resets).tolist():  # a new episode: a new run of the program
            self._episodes[i] = self.program.fresh()
        for i in np.flatnonzero(~self._resets).tolist():  # a reset step has no transition to score
            env_info = {k: v[i] for k, v, mask in columns if mask is None or mask[i]}
            action = names[ids[i]] if names is not None else str(ids[i])
            try:
                sparse[i], dense[i], named = self._episodes[i].clipped(prevs[i], action, states[i], env_info)
            except RewardCodeError as exc:
                errors[i] = str(exc)
                continue
            for name, value in named.items():
                column = terms.get(name)
                if column is None:
                    column = terms[name] = [0.0] * n
                column[i] = value
        self._resets = np.asarray(terminated | truncated, bool).copy()
        info = dict(info)
        clipped = {"sparse": np.array(sparse), "dense": np.array(dense),
                   "terms": {name: np.array(column) for name, column in terms.items()}}
        info["code_reward"] = clipped
        if errors:
            info["code_reward_error"] = np.array([errors.get(i, "") for i in range(n)], dtype=object)
        return (obs, np.asarray(reward, np.float64) + clipped["sparse"] + clipped["dense"], terminated, truncated,
                info)
