"""The `turngym` command line: list envs, play one yourself, run agents, run the demo."""

from __future__ import annotations

import importlib
import inspect
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import click
import gymnasium as gym
import typer
import yaml
from PIL import Image
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

import turngym
from turngym.apps.demo import TRAIN_STEPS
from turngym.console import progress_bar
from turngym.registry import command_groups
from turngym.results import results_table
from turngym.trajectory import atomic_write_json


class RootGroup(TyperGroup):
    """`turngym`: the commands below plus the groups that families register
    (`turngym.registry.register_commands`), each imported only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *sorted(set(command_groups()) - set(self.commands))]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in command_groups():
            module, _, attr = command_groups()[name].partition(":")
            group = typer.main.get_group(getattr(importlib.import_module(module), attr))
            group.name = name
            self.add_command(group)
        return super().get_command(ctx, name)


app = typer.Typer(cls=RootGroup, add_completion=False, no_args_is_help=True,
                  help="Multi-turn agent environments: list them, play them, run agents on them.")
serve_app = typer.Typer(no_args_is_help=True, help="Serve an environment over HTTP.")
app.add_typer(serve_app, name="serve")
console = Console()

KwargsOption = Annotated[list[str] | None, typer.Option(
    "--kw", "-k", help="Env kwarg as key=value (repeatable), e.g. -k task=iron_pickaxe -k image=false")]


AgentOption = Annotated[list[str] | None, typer.Option(
    "--agent-option", "-o", help="Agent option as key=value (repeatable), e.g. -o max_context=2048")]


def parse_kwargs(pairs: list[str] | None, hint: str = "--kw") -> dict[str, Any]:
    """`["task=iron_pickaxe", "size=48"]` -> {"task": "iron_pickaxe", "size": 48} (YAML values)."""
    kwargs = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint=hint)
        kwargs[key] = yaml_value(value) if value else ""
    return kwargs


def yaml_value(text: str) -> Any:
    """YAML's value of `text`, with exponents such as 1e-4 read as numbers (YAML 1.1 wants 1.0e-4)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)
    return value


def make_env(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    if env_id not in turngym.list_envs():
        raise typer.BadParameter(f"unknown env {env_id!r}: run `turngym list` to see the ids", param_hint="ENV_ID")
    try:
        return gym.make(env_id, **kwargs)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--kw") from None


@app.command("list")
def list_command() -> None:
    """List the registered env ids with one-line descriptions."""
    table = Table("env id", "description")
    for env_id in turngym.list_envs():
        table.add_row(env_id, turngym.describe(env_id))
    console.print(table)


@app.command()
def play(env_id: Annotated[str, typer.Argument(help="e.g. turngym/Craft-v0")],
         seed: Annotated[int, typer.Option(help="reset seed")] = 0,
         task: Annotated[str | None, typer.Option(help="task id (e.g. wood_pickaxe or wood_pickaxe:123)")] = None,
         kw: KwargsOption = None,
         images: Annotated[Path | None, typer.Option(help="folder for the image of each turn")] = None) -> None:
    """Play an env yourself in the terminal: type an action, or the number of a listed one."""
    env = make_env(env_id, parse_kwargs(kw))
    obs, info = env.reset(seed=seed, options={"task_id": task} if task else None)
    folder = images or Path(tempfile.mkdtemp(prefix="turngym-play-"))
    total = 0.0
    while True:
        console.rule(f"{env_id}  task {info['task_id']}  turn {info['turn']}")
        console.print(obs["text"], markup=False, highlight=False)
        if "image" in obs:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"turn_{info['turn']:04d}.png"
            Image.fromarray(obs["image"]).save(path)
            console.print(f"image: {path}")
        actions = info["actions"]
        console.print("actions: " + "  ".join(f"[{i}] {a}" for i, a in enumerate(actions)), markup=False)
        try:
            typed = input("action (or quit)> ").strip()
        except EOFError:
            typed = "quit"
        if typed.lower() in ("quit", "exit", "q"):
            console.print("bye")
            return
        action = actions[int(typed)] if typed.isdigit() and int(typed) < len(actions) else typed
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if not info["valid"]:
            console.print(f"invalid: {info['error']}", markup=False)
        if terminated or truncated:
            console.print(obs["text"], markup=False, highlight=False)
            console.print(f"episode over ({'terminated' if terminated else 'out of turns'}): "
                          f"success={info['success']} score={info['score']:.2f} return={total:.2f}")
            return


@app.command()
def run(env_id: Annotated[str, typer.Argument(help="e.g. turngym/Craft-v0")],
        agent: Annotated[list[str], typer.Option("--agent", "-a", help="agent spec (repeatable): random, oracle, ...")],
        episodes: Annotated[int, typer.Option("--episodes", "-n", min=1)] = 10,
        split: Annotated[str, typer.Option(help="train, dev or test")] = "test",
        seed: Annotated[int, typer.Option(help="episode i is reset with seed + i")] = 0,
        kw: KwargsOption = None,
        out: Annotated[Path | None, typer.Option(help="run folder for the episodes and results.json (then "
                                                      "`turngym report OUT`); default: none kept")] = None,
        workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="local worker processes")] = 1,
        temperature: Annotated[float | None, typer.Option(help="sampling temperature (hf:, openai:)")] = None,
        top_p: Annotated[float | None, typer.Option(help="nucleus sampling mass (hf:, openai:)")] = None,
        max_new_tokens: Annotated[int | None, typer.Option(help="reply length cap (hf:, openai:)")] = None,
        agent_option: AgentOption = None) -> None:
    """Run agents on the first N tasks of an env's split and print success rate, score and turns
    (`turngym eval` on one env, kept only with --out)."""
    from turngym.apps.harness import evaluate

    kwargs = parse_kwargs(kw)
    sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
    options = {k: v for k, v in sampling.items() if v is not None} | parse_kwargs(agent_option, "--agent-option")
    make_env(env_id, kwargs).close()  # fail fast, with a clear message, on a bad id or kwargs
    try:
        with progress_bar(console=console, transient=True) as progress:
            bar = progress.add_task(f"{', '.join(agent)} on {env_id}", total=episodes * len(agent))
            results = evaluate(env_id, agent, episodes, split=split, seed=seed, env_kwargs=kwargs,
                               agent_options=options, out=out, workers=workers,
                               on_episode=lambda job, record: progress.advance(bar))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(results_table(results, title=f"{env_id} {kwargs or ''}, {split} split"))
    _report_skipped(results)
    if out is not None:
        console.print(f"episodes and results.json in {out}; HTML report: turngym report {out}")


def _report_skipped(results: dict[str, Any]) -> None:
    for skip in results["skipped"]:
        console.print(f"skipped {skip['entry']} for {skip['agent']}: no such agent for that env")


@app.command("eval")
def eval_command(
        env_id: Annotated[str | None, typer.Argument(help="one env (or give --suite)")] = None,
        suite: Annotated[str | None, typer.Option(help="a suite in assets/suites (core-v1) or a suite YAML")] = None,
        agent: Annotated[list[str] | None, typer.Option("--agent", "-a", help="agent spec (repeatable)")] = None,
        episodes: Annotated[int | None, typer.Option("--episodes", "-n", min=1,
                                                     help="episodes per entry (default: the whole split / suite)")
                            ] = None,
        split: Annotated[str, typer.Option(help="the split to play, with ENV_ID")] = "test",
        seed: Annotated[int, typer.Option(help="with ENV_ID: task i is reset with seed + i")] = 0,
        workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="local worker processes")] = 1,
        ray: Annotated[str | None, typer.Option(help="run episodes as Ray tasks: auto, local or ADDRESS")] = None,
        out: Annotated[Path | None, typer.Option(help="run folder (default runs/eval/<suite or env>); "
                                                      "rerunning resumes")] = None,
        retry_errors: Annotated[bool, typer.Option(help="replay episodes that ended in an error")] = False,
        kw: KwargsOption = None, agent_option: AgentOption = None) -> None:
    """Evaluate agents on a benchmark suite or an env's split: one file per episode, resumable, parallel."""
    from turngym.apps.harness import env_suite, pending, run_eval
    from turngym.suites import load_suite

    if (env_id is None) == (suite is None):
        raise typer.BadParameter("give an ENV_ID or --suite NAME (one of them)")
    if not agent:
        raise typer.BadParameter("give at least one --agent, e.g. -a random -a oracle", param_hint="--agent")
    try:
        if suite is not None:  # --episodes: a quick look, the first episodes of every entry
            chosen = load_suite(suite).head(episodes)
        else:
            kwargs = parse_kwargs(kw)
            make_env(env_id, kwargs).close()
            chosen = env_suite(env_id, kwargs, episodes, split, seed)
        folder = out or Path("runs/eval") / chosen.name
        todo = pending(chosen, agent, folder, retry_errors)
        with progress_bar(console=console, transient=True) as progress:
            bar = progress.add_task(f"{chosen.name}: {len(agent)} agent(s), {todo} episodes to play", total=todo)
            results = run_eval(chosen, agent, folder, workers=workers, ray_address=ray, retry_errors=retry_errors,
                               agent_options=parse_kwargs(agent_option, "--agent-option"),
                               on_episode=lambda job, record: progress.advance(bar))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(results_table(results))
    _report_skipped(results)
    console.print(f"results in {folder / 'results.json'}; HTML report: turngym report {folder}")


@app.command()
def bc(env_id: Annotated[str, typer.Argument(help="e.g. turngym/Craft-v0")],
       out: Annotated[Path, typer.Option(help="folder for policy.pt and bc.json")] = Path("runs/bc"),
       episodes: Annotated[int, typer.Option(help="expert episodes on training tasks", min=1)] = 200,
       epochs: Annotated[int, typer.Option(min=1)] = 10,
       noise: Annotated[float, typer.Option(help="rate of random actions while collecting (DART)", min=0, max=1)] = 0.0,
       expert: Annotated[str, typer.Option(help="agent spec of the expert")] = "oracle",
       label_smoothing: Annotated[float, typer.Option(
           help="label mass spread over each turn's candidates: a clone of a rule keeps some entropy for RL",
           min=0, max=0.99)] = 0.0,
       evaluate: Annotated[int, typer.Option("--eval", help="test tasks to evaluate on (0: skip)", min=0)] = 100,
       seed: Annotated[int, typer.Option(help="seeds the expert episodes, the weights and the shuffling")] = 0,
       net: Annotated[list[str] | None, typer.Option(
           help="key=value: a size or switch of the policy (repeatable), as `turngym train --net`; with "
                "`-k symbolic=true` on Craft the clone is the symbolic policy (e.g. --net landmarks=table,water)",
           show_default=False)] = None,
       kw: KwargsOption = None) -> None:
    """Behavior-clone a neural policy from expert episodes, save it, and evaluate it on the test split.

    On Craft made with `-k symbolic=true` the clone is the symbolic policy that `turngym train` trains on the fast
    vector env (pass the same task there with `--policy neural:OUT/policy.pt` to go on with RL)."""
    from turngym.agents.neural import PolicyConfig, new_policy, proposer
    from turngym.trainers.bc import clone, clone_symbolic, collect, collect_symbolic, demonstrations

    kwargs, sizes = parse_kwargs(kw), parse_kwargs(net, "--net")
    symbolic = "view" in make_env(env_id, kwargs).observation_space.spaces
    with progress_bar(console=console, transient=True) as progress:
        if symbolic:
            from turngym.agents.symbolic import NET_FIELDS, SymbolicConfig, new_symbolic_policy

            if set(sizes) - set(NET_FIELDS):
                raise typer.BadParameter(f"the symbolic policy's --net fields are {', '.join(NET_FIELDS)}",
                                         param_hint="--net")
            try:
                policy = new_symbolic_policy(SymbolicConfig.for_craft(kwargs.get("view", 9), **sizes), seed)
                data = collect_symbolic(env_id, episodes, env_kwargs=kwargs, expert=expert, seed=10_000 + seed,
                                        noise=noise, landmarks=policy.config.landmarks, progress=progress)
            except ValueError as exc:  # an unknown landmark material, an action mode the policy cannot play
                raise typer.BadParameter(str(exc)) from None
            history = clone_symbolic(policy, data, epochs=epochs, seed=seed, label_smoothing=label_smoothing,
                                     progress=progress)
            samples = turns = len(data["label"])
        else:
            trajs = collect(env_id, episodes, env_kwargs=kwargs, expert=expert, seed=10_000 + seed, noise=noise,
                            progress=progress)
            examples = demonstrations(trajs, proposer(env_id))
            policy = new_policy(PolicyConfig(**sizes), seed)
            history = clone(policy, examples, epochs=epochs, seed=seed, label_smoothing=label_smoothing,
                            progress=progress)
            samples, turns = len(examples), sum(len(t.turns) for t in trajs)
    path = policy.save(out / "policy.pt", env_id=env_id, env_kwargs=kwargs, episodes=episodes, noise=noise,
                       label_smoothing=label_smoothing, history=history)
    record: dict[str, Any] = {"env_id": env_id, "env_kwargs": kwargs, "episodes": episodes, "demonstrations":
                              samples, "expert_turns": turns, "noise": noise, "label_smoothing": label_smoothing,
                              "history": history}
    console.print(f"cloned {samples} of {turns} expert turns: accuracy {history[-1]['accuracy']:.1%}; "
                  f"policy in {path}")
    if samples < 0.8 * turns:  # the others chose an action the policy's proposals do not hold
        console.print(f"[yellow]{turns - samples} expert turns ({1 - samples / turns:.0%}) took actions "
                      f"outside the env's proposals and were left out: the clone learns from the rest only[/]")
    if evaluate:
        record["test"] = _evaluate_into(out, env_id, kwargs, f"neural:{path}", evaluate,
                                        title=f"{env_id} {kwargs or ''}: test split")
    atomic_write_json(out / "bc.json", record, indent=2)


def _train_config(values: dict[str, Any], kind: Any = None) -> Any:
    """The trainer config of `values` (field names of trainers/config.py; `kind`: a config class the
    command needs), checked, and its env made once, so a wrong option, id or kwarg fails now with a
    clear message rather than mid-run."""
    from turngym.trainers.config import TrainConfig, make_config

    try:
        config = make_config(values, kind or TrainConfig)
        config.check()
        kwargs = config.env_setup()[0]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    make_env(config.env_id, kwargs).close()
    return config


def _train_parameters() -> list[inspect.Parameter]:
    """`turngym train`'s parameters: ENV_ID, --config, --eval and one option per field of the
    trainer configs (trainers/config.py), in one help panel per trainer with each trainer's
    default. Every such option defaults to None, so only the options given reach the config."""
    from turngym.trainers.config import CONFIGS, knobs

    def shown(value: Any) -> str:
        return "none" if value is None else str(value)

    params = [
        inspect.Parameter("env_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
            str | None, typer.Argument(help="e.g. turngym/Craft-v0 (or env_id in --config)", show_default=False)]),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Path | None, typer.Option(help="a YAML file of train options (a run's config.json works too); the "
                                           "options on the command line override it")]),
        inspect.Parameter("evaluate", inspect.Parameter.KEYWORD_ONLY, default=100, annotation=Annotated[
            int, typer.Option("--eval", min=0, help="test tasks to evaluate the trained policy on (0: skip)")]),
        inspect.Parameter("reward_set", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            list[str] | None, typer.Option(help="NAME=VALUE: set a top-level constant of the --reward-code "
                                                "program (e.g. LAVA_TERM=false); repeatable", show_default=False)])]
    for knob in knobs():
        if knob.name == "env_id":
            continue
        owners = knob.owners
        defaults = {c.policies[0]: shown(v) for c, v in knob.defaults.items() if v != {}}
        note = ""  # (rich would read [brackets] as markup)
        if len(set(defaults.values())) == 1:
            note = f" (default {defaults.popitem()[1]})"
        elif len(defaults) > 1:  # each trainer's own
            note = " (" + ", ".join(f"{kind}: {value}" for kind, value in defaults.items()) + ")"
        option = typer.Option(*knob.aliases, help=knob.help + note, show_default=False,
                              rich_help_panel="All trainers" if len(owners) == len(CONFIGS) else
                              f"Only {owners[0].about}")
        kind = list[str] if knob.kind is dict else knob.kind  # dict fields: repeatable key=value options
        params.append(inspect.Parameter(knob.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[kind | None, option]))
    return params


def train(env_id: str | None = None, *, config: Path | None = None, evaluate: int = 100,
          reward_set: list[str] | None = None, **given: Any) -> None:
    """Train a policy (PPO or REINFORCE with any advantage estimator; DPO for hf: policies) and evaluate it on the
    test split.

    --policy picks the trainer; options left out keep its defaults; OUT/config.json records the run's options.
    """
    from turngym.trainers.config import knobs
    from turngym.trainers.config import train as run_trainer
    from turngym.trainers.runlog import plot_curves

    values: dict[str, Any] = {}
    if config is not None:
        try:
            values = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise typer.BadParameter(f"cannot read {config}: {exc}", param_hint="--config") from None
        if not isinstance(values, dict):
            raise typer.BadParameter(f"{config} must hold a mapping of option: value", param_hint="--config")
    flags = {knob.name: (knob.aliases or ("--" + knob.name.replace("_", "-"),))[0] for knob in knobs()}
    for name, value in given.items():
        if isinstance(value, list):  # key=value pairs on top of the file's mapping
            values[name] = {**(values.get(name) or {}), **parse_kwargs(value, flags[name])}
        elif value is not None:
            values[name] = str(value) if isinstance(value, Path) else value
    if env_id is not None:
        values["env_id"] = env_id
    code = values.get("reward_code")
    if code and "\n" not in code and Path(code).is_file():  # a file of reward code: the config keeps its source
        values["reward_code"] = Path(code).read_text()
    if reward_set:  # a variant of the program (an ablation) without a copy of its file
        if not values.get("reward_code"):
            raise typer.BadParameter("--reward-set changes the --reward-code program: give one",
                                     param_hint="--reward-set")
        from turngym.rewards.code import with_constants

        try:
            values["reward_code"] = with_constants(values["reward_code"], **parse_kwargs(reward_set, "--reward-set"))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--reward-set") from None
    if "env_id" not in values:
        raise typer.BadParameter("give ENV_ID (or env_id in --config), e.g. turngym/Craft-v0", param_hint="ENV_ID")
    run = _train_config(values)
    try:
        rows = run_trainer(run)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out, about = Path(run.out), f"{run.env_id} {run.task or ''}".strip()
    curve = plot_curves({run.algo: ([r["env_steps"] for r in rows], [r["success"] for r in rows])},
                        out / "curve.png", title=f"{about}: {run.algo}")
    spec, kwargs = run.trained()
    console.print(f"trained {rows[-1]['env_steps']:,} env steps in {len(rows)} updates; training success "
                  f"{rows[-1]['success']:.1%}; policy {spec}; curve in {curve}")
    if evaluate:
        _evaluate_into(out, run.env_id, kwargs, spec, evaluate, title=f"{about}: test split")


train.__signature__ = inspect.Signature(_train_parameters())  # typer reads the options from here
app.command()(train)


def _evaluate_into(out: Path, env_id: str, kwargs: dict[str, Any], spec: str, episodes: int,
                   title: str) -> dict[str, Any]:
    """Evaluate a freshly trained policy as an eval run in its training folder, so that
    `turngym report OUT` shows the test episodes beside the learning curves; writes test.json and
    returns its row."""
    import shutil

    from turngym.apps.harness import pending, run_eval
    from turngym.suites import single_env_suite

    for stale in ("episodes", "run.json", "results.json"):  # the episodes of an earlier policy
        path = out / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    suite = single_env_suite(env_id, kwargs, episodes)
    with progress_bar(console=console, transient=True) as progress:
        bar = progress.add_task(f"testing {spec}", total=pending(suite, [spec], out))
        results = run_eval(suite, [spec], out, on_episode=lambda job, record: progress.advance(bar))
    atomic_write_json(out / "test.json", results["rows"][0], indent=2)
    console.print(results_table(results, title=title))
    console.print(f"test episodes in {out / 'episodes'}; HTML report with the learning curves: turngym report {out}")
    return results["rows"][0]


@app.command("train-prm")
def train_prm(env_id: Annotated[str, typer.Argument(help="e.g. turngym/Craft-v0")],
              task: Annotated[str | None, typer.Option(help="the env's task kwarg where it has one (Craft: "
                                                            "stone_pickaxe, ...), else a split or task id")] = None,
              policy: Annotated[str, typer.Option(help="the policy whose rollouts the PRM scores: neural[:PATH]")
                                ] = "neural",
              updates: Annotated[int, typer.Option(help="rounds of rollouts + fitting", min=1)] = 10,
              target: Annotated[str, typer.Option(help="td (AgentPRM's TD(lambda)) or mc (Monte-Carlo)")] = "td",
              out: Annotated[Path, typer.Option(help="folder for prm.pt and metrics")] = Path("runs/prm"),
              groups: Annotated[int, typer.Option(min=1)] = 8,
              group_size: Annotated[int, typer.Option(min=1)] = 8,
              seed: Annotated[int, typer.Option()] = 0,
              kw: KwargsOption = None) -> None:
    """Fit a process reward model M(s, a) to a policy's rollouts (AgentPRM's TD targets or Monte-Carlo)."""
    from turngym.trainers.config import NeuralTrainConfig
    from turngym.trainers.train_prm import train_prm as fit

    config = _train_config({"env_id": env_id, "task": task, "algo": "prm", "policy": policy, "out": str(out),
                            "seed": seed, "env_kwargs": parse_kwargs(kw), "groups": groups, "group_size": group_size,
                            "prm_target": target}, NeuralTrainConfig)
    try:
        rows = fit(config, updates=updates)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"PRM fit on {rows[-1]['env_steps']:,} env steps (explained variance {rows[-1]['prm_ev']:.2f}); "
                  f"saved {out / 'prm.pt'}")


@app.command("reward-design")
def reward_design(env_id: Annotated[str, typer.Argument(help="e.g. turngym/Craft-v0")],
                  agent: Annotated[str, typer.Option("--agent", "-a", help="hf:PATH or openai:MODEL@BASE_URL")],
                  task: Annotated[str | None, typer.Option(help="the env's task kwarg where it has one (Craft: "
                                                                "stone_pickaxe, ...), else a split or task id")] = None,
                  iterations: Annotated[int, typer.Option(min=1, help="reward-function versions")] = 3,
                  out: Annotated[Path, typer.Option(help="folder for every version; a rerun resumes")
                                 ] = Path("runs/reward-design"),
                  episodes: Annotated[int, typer.Option(min=1, help="evaluation episodes per version")] = 20,
                  train_steps: Annotated[int, typer.Option(help="PPO steps per version (0: evaluate the "
                                                                "random agent instead)", min=0)] = 20_000,
                  seed: Annotated[int, typer.Option()] = 0,
                  kw: KwargsOption = None, agent_option: AgentOption = None) -> None:
    """Design a reward function with a language model: designer -> checker -> training -> analysis -> revision."""
    from turngym.apps.reward_design import design_command
    from turngym.trainers.ppo import code_reward_trainer

    kwargs = parse_kwargs(kw)
    trainer = code_reward_trainer(env_id, task, kwargs, train_steps, seed=seed, episodes=episodes) \
        if train_steps else None
    try:
        design_command(env_id, task, agent, iterations=iterations, out=out, episodes=episodes, seed=seed,
                       env_kwargs=kwargs, agent_options=parse_kwargs(agent_option, "--agent-option"),
                       console=console, train=trainer)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder written by `turngym run --out`, eval, "
                                                        "train --eval or demo")],
           compare: Annotated[list[Path] | None, typer.Option(help="more run folders to show side by side "
                                                                    "(repeatable)")] = None,
           out: Annotated[Path | None, typer.Option(help="report folder (default RUN_DIR/report; required with "
                                                         "--compare)")] = None) -> None:
    """Write a static HTML report (tables, plots, an episode viewer) and a Markdown summary of eval runs."""
    from turngym.apps.report import write_report

    runs = [run_dir, *(compare or [])]
    for folder in runs:
        if not (folder / "run.json").exists():
            raise typer.BadParameter(f"{folder} is not a run folder (no run.json): give a folder written by "
                                     "`turngym run --out`, `turngym eval`, `turngym train --eval` or `turngym demo`")
    if len(runs) > 1 and out is None:
        raise typer.BadParameter("with --compare, say where the report goes with --out", param_hint="--out")
    try:
        html, markdown = write_report(runs, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"HTML report: {html.resolve()}\nMarkdown summary: {markdown.resolve()}")


@app.command("bench")
def bench_command(
        env: Annotated[list[str] | None, typer.Option("--env", "-e", help="env id (repeatable; default: all)")] = None,
        seconds: Annotated[float, typer.Option(help="measured seconds per env configuration", min=0.01)] = 3.0,
        json_path: Annotated[Path | None, typer.Option("--json", help="also write the rows as JSON")] = None) -> None:
    """Measure every env family with a random agent: steps/s, step p50/p95, reset time, peak RSS."""
    from turngym.apps.benchmark import bench_table, run_bench

    try:
        rows = run_bench(env or None, seconds, progress=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(bench_table(rows))
    if json_path is not None:
        atomic_write_json(json_path, rows, indent=2)
        console.print(f"rows in {json_path}")


@app.command()
def demo(out: Annotated[Path, typer.Option(help="report folder")] = Path("runs/demo"),
         episodes: Annotated[int | None, typer.Option(help="episodes per task (default: the whole test split)")] = None,
         train_steps: Annotated[int | None, typer.Option(
             help=f"env steps of each training run (default {TRAIN_STEPS:,}; more than a finished run has extends it)",
             min=1)] = None,
         ) -> None:
    """Play the demo suite with the built-in agents, train on sparse Craft, and write the report."""
    from turngym.apps.demo import run_demo

    markdown, html = run_demo(out, console, episodes, train_steps)
    console.print(f"\nReport: {html.resolve()} (open it in a browser)\nMarkdown summary: {markdown.resolve()}")


@serve_app.command("env")
def serve_env(port: Annotated[int, typer.Option(help="port on the host")] = 8002,
              host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
              max_sessions: Annotated[int, typer.Option(help="sessions open at once", min=1)] = 256,
              idle_timeout: Annotated[float, typer.Option(help="seconds before an idle session is closed", min=0.1)
                                      ] = 600.0) -> None:
    """Serve every registered env over HTTP for trainers elsewhere (client: turngym.serve.RemoteEnv)."""
    from turngym.serve.env_server import serve

    console.print(f"turngym envs on http://{host}:{port} (API docs at /docs); Ctrl-C stops")
    serve(host=host, port=port, max_sessions=max_sessions, idle_timeout=idle_timeout)


@serve_app.command("webshop")
def serve_webshop(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8000,
                  catalog: Annotated[str, typer.Option(help="small, medium, full or a catalog file")] = "small",
                  host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1") -> None:
    """Serve the WebShop store as real HTML pages; open / in a browser to start a session."""
    from turngym.envs.webshop.commands import serve

    serve(port, catalog, host)


@serve_app.command("lm")
def serve_lm(path: Annotated[str, typer.Argument(help="checkpoint folder, or a model name in the local HF cache")],
             port: Annotated[int, typer.Option(help="port on the host")] = 8001,
             host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
             name: Annotated[str | None, typer.Option(help="model name to report (default: the folder name)")] = None
             ) -> None:
    """Serve a local Hugging Face checkpoint as an OpenAI-compatible chat-completions endpoint (streaming too)."""
    from turngym.serve.lm_server import serve

    try:
        serve(path, host, port, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="PATH") from None
