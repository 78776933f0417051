"""The sandbox reward code runs in (`turngym.rewards.code`): a static check of the source, a
whitelist of builtins, and a time limit on every call.

The sandbox keeps the honest mistakes of a language model away from the env, not a determined
attacker: the code runs with a whitelist of builtins (no `open`, `eval`, `getattr`, `type`, ...),
`import math` is its only import, names starting with `__` (`__import__`, `__builtins__`),
attributes starting with `_` (`__class__`, `__subclasses__`, ...) and frame and format
attributes (`gi_frame`, `f_back`, `format`) are refused when it is checked,
as are classes (whose `__del__` would run outside the time limit), `try/finally` and catch-all
`except` (which could outlive the time limit), and `range` is capped at 10^6 numbers. Every
call has a time limit, also in force while the module body first runs. Work done inside one C
call (`2 ** 10**9`, `math.factorial(10**7)`) cannot be interrupted: run untrusted code in a
separate process.

The time limit counts the CPU time the call uses, not the wall clock, and Python's cyclic garbage
collector is paused while the code runs: a collection of a trainer's whole heap takes 40-80 ms, and
a process that waits for a core under load loses as long. Counted against a 50 ms limit, either
made an honest call time out now and then, which gave that step no reward and made a run depend on
timing (two runs of the same seed differed). An infinite loop still burns CPU and is stopped. On
the main thread `signal.setitimer(ITIMER_VIRTUAL)` arms SIGVTALRM, whose handler raises inside
the running code at the next bytecode: no cost per line, so a reward costs the same as plain
Python. Signal handlers only run on the main thread, so on other threads (a vector env's worker
thread, a server) a `sys.settrace` tracer checks the thread's CPU clock on every line of the reward
code instead (slower, but it works anywhere). The timeout exception derives from BaseException,
and catch-all handlers and `finally` are refused, so reward code cannot swallow it.
"""

from __future__ import annotations

import ast
import builtins
import gc
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import CodeType
from typing import Any

MAX_RANGE = 1_000_000  # a longer range() would let sum(range(...)) run uninterruptibly in C
FILENAME = "<reward.py>"  # frames with this file name are the reward code's

# Builtins reward code may name but does not get, with what to do instead.
FORBIDDEN_NAMES = {
    "open": "reward code cannot read or write files",
    "eval": "reward code cannot run code from strings",
    "exec": "reward code cannot run code from strings",
    "compile": "reward code cannot run code from strings",
    "getattr": "read attributes directly, e.g. x.name",
    "setattr": "reward code cannot set attributes",
    "delattr": "reward code cannot delete attributes",
    "hasattr": "test dict keys with `key in d` instead",
    "globals": "keep values in ordinary variables",
    "locals": "keep values in ordinary variables",
    "vars": "keep values in ordinary variables",
    "type": "use isinstance(x, int) instead",
    "object": "use dicts and functions instead",
    "super": "use dicts and functions instead",
    "input": "reward code cannot read input",
    "breakpoint": "reward code cannot stop in a debugger",
    "help": "reward code cannot call help",
    "exit": "return a value instead",
    "quit": "return a value instead",
    "memoryview": "use lists and strings instead",
    "BaseException": "catch specific exceptions such as KeyError",
}
TRY_NODES = (ast.Try, *((ast.TryStar,) if hasattr(ast, "TryStar") else ()))
# Attributes that reach frames, code objects or arbitrary attributes through format strings.
FORBIDDEN_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next", "co_code",
    "mro", "format", "format_map",
})


class RewardTimeout(BaseException):
    """Raised inside reward code that runs past its time limit (BaseException: `except Exception`
    in the reward code does not catch it)."""



# --- the rules --------------------------------------------------------------------------------

def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if name == "math" and level == 0:
        return math
    raise ImportError(f"reward code can import only math, not {name!r}")


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise ValueError(f"range of {len(numbers)} numbers in reward code: keep it under {MAX_RANGE}")
    return numbers


def _print(*args: Any, **kwargs: Any) -> None:
    """print() in reward code does nothing: the function runs every turn of every episode."""


SAFE_BUILTINS: dict[str, Any] = {name: getattr(builtins, name) for name in (
    "abs", "all", "any", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "frozenset", "int",
    "isinstance", "iter", "len", "list", "map", "max", "min", "next", "ord", "pow", "repr", "reversed", "round",
    "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "ArithmeticError", "Exception", "IndexError", "KeyError", "LookupError", "StopIteration", "TypeError",
    "ValueError", "ZeroDivisionError",
)}
SAFE_BUILTINS.update({"__import__": _import, "range": _range, "print": _print})


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the source binds itself (assignments, parameters, definitions, imports)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def sandbox_problems(tree: ast.Module) -> list[str]:
    """What in a parsed source breaks the sandbox rules, one sentence each, naming the fix."""
    problems: list[str] = []
    bound = _bound_names(tree)

    def add(node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", None)
        text = f"line {line}: {message}" if line else message
        if text not in problems:
            problems.append(text)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name != "math":
                    add(node, f"`import {alias.name}` is not allowed: math is the only module reward code can "
                              "import")
        elif isinstance(node, ast.ImportFrom):
            if node.module != "math" or node.level:
                add(node, f"`from {'.' * node.level}{node.module or ''} import ...` is not allowed: math is the "
                          "only module reward code can import")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__"):
                add(node, f"the name `{node.id}` is not allowed: reward code cannot use names starting with __")
            elif isinstance(node.ctx, ast.Load) and node.id in FORBIDDEN_NAMES and node.id not in bound:
                add(node, f"`{node.id}` is not available in reward code: {FORBIDDEN_NAMES[node.id]}")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                add(node, f"the attribute `.{node.attr}` is not allowed: reward code cannot use attributes "
                          "starting with _")
            elif node.attr in FORBIDDEN_ATTRIBUTES:
                hint = "use an f-string instead" if node.attr.startswith("format") else "read the state dicts instead"
                add(node, f"the attribute `.{node.attr}` is not allowed: {hint}")
        elif isinstance(node, ast.MatchClass):  # `case dict(__class__=c)` reads an attribute too
            for attr in node.kwd_attrs:
                if attr.startswith("_") or attr in FORBIDDEN_ATTRIBUTES:
                    add(node, f"the pattern attribute `{attr}=` is not allowed: match on dict keys instead")
        elif isinstance(node, ast.ClassDef):
            add(node, f"class `{node.name}` is not allowed: use functions and dicts in reward code")
        elif isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            add(node, "async code is not allowed: write reward as a plain def")
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("__"):
            add(node, f"the function name `{node.name}` is not allowed: use names that do not start with __")
        elif isinstance(node, TRY_NODES) and node.finalbody:
            add(node, "try/finally is not allowed in reward code: use try/except with specific exceptions")
        elif isinstance(node, ast.ExceptHandler) and _catches_everything(node.type):
            add(node, "a catch-all `except` is not allowed: catch specific exceptions such as KeyError")
        elif isinstance(node, ast.With):
            add(node, "`with` is not allowed in reward code: there is nothing to open or close")
    return problems


def _catches_everything(handler_type: ast.expr | None) -> bool:
    if handler_type is None:
        return True
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any(isinstance(n, ast.Name) and n.id == "BaseException" for n in names)


# --- the time limit ---------------------------------------------------------------------------

def run_limited(fn: Callable[..., Any], args: Sequence[Any], limit: float) -> Any:
    """`fn(*args)`, interrupted by RewardTimeout after `limit` seconds of CPU time, the cyclic
    garbage collector paused meanwhile (see the module docstring)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            return _run_alarm(fn, args, limit)
        return _run_traced(fn, args, limit)
    finally:
        if collecting:
            gc.enable()


def _run_alarm(fn: Callable[..., Any], args: Sequence[Any], limit: float) -> Any:
    running = [True]

    def expire(signum: int, frame: Any) -> None:
        if not running[0]:
            return  # a late alarm once the code has returned: nothing to interrupt
        signal.setitimer(signal.ITIMER_VIRTUAL, 0.001)  # keep interrupting until the code has let go
        # raise only inside the reward code: raised in the clean-up below, the timeout would skip
        # disarming the timer and restoring the handler, and a later alarm would end the process
        if frame is not None and frame.f_code.co_filename == FILENAME:
            raise RewardTimeout

    start = time.process_time()
    previous = signal.signal(signal.SIGVTALRM, expire)
    try:
        outer = signal.setitimer(signal.ITIMER_VIRTUAL, limit)
        try:
            return fn(*args)
        finally:
            running[0] = False
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    finally:
        signal.signal(signal.SIGVTALRM, previous)
        if outer[0] > 0:  # someone else's timer was running: give back what is left of it
            signal.setitimer(signal.ITIMER_VIRTUAL, max(outer[0] - (time.process_time() - start), 1e-6), outer[1])


def _run_traced(fn: Callable[..., Any], args: Sequence[Any], limit: float) -> Any:
    deadline = time.thread_time() + limit

    def line(frame: Any, event: str, arg: Any) -> Any:
        if time.thread_time() > deadline:
            raise RewardTimeout
        return line

    def call(frame: Any, event: str, arg: Any) -> Any:
        return line if frame.f_code.co_filename == FILENAME else None

    previous = sys.gettrace()
    sys.settrace(call)
    try:
        return fn(*args)
    finally:
        sys.settrace(previous)


# --- restricted exec --------------------------------------------------------------------------

def load(source: str | CodeType, limit: float) -> dict[str, Any]:
    """The namespace left by running `source`'s module body (text, or the code `compile(source,
    FILENAME, "exec")` made of it) with the whitelisted builtins, within `limit` seconds. Run
    `sandbox_problems` on it first: this only executes. SyntaxError when it does not compile,
    RewardTimeout past the limit, else whatever the body raises."""
    namespace: dict[str, Any] = {"__builtins__": SAFE_BUILTINS, "__name__": "reward_code", "math": math}
    code = source if isinstance(source, CodeType) else compile(source, FILENAME, "exec")
    run_limited(exec, (code, namespace), limit)
    return namespace
