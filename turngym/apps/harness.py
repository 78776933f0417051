"""`turngym eval`: play a suite with agents, one file per episode, resumable, in parallel.

A run folder holds `run.json` (the suite and agents), one JSONL file per finished episode at
`episodes/<agent>/<entry>/<index>.jsonl` with its PNG images in `images/` beside it, and
`results.json` (see `turngym.results`). Each episode is written atomically as it finishes, so a
rerun of the same command skips what is done and plays the rest. An exception raised by the env or
the agent ends only its episode, which is recorded with the error (its turns so far kept); a worker
process that dies takes no other episode with it: the episodes it had in flight are replayed one at
a time, and the one that kills its worker again is recorded as crashed.

Episodes run in this process (`workers=1`), in K local worker processes, or as tasks on a Ray
cluster. Each episode's seed and task come from the suite alone, and agents are reset from the
episode seed, so the results do not depend on how the work is spread.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym

from turngym.suites import Entry, Suite
from turngym.trajectory import Trajectory, atomic_write_bytes, atomic_write_json, save_images, trajectory_record

FORMAT = 1
Record = tuple[dict[str, Any], dict[str, bytes]]  # an episode as JSON, and its PNG files by name


@dataclass(frozen=True)
class Job:
    """One episode: an agent on task `index` of an entry's split."""

    agent: str
    entry: Entry
    index: int

    @property
    def seed(self) -> int:
        return self.entry.seed + self.index

    def path(self, run_dir: Path) -> Path:
        return run_dir / "episodes" / slug(self.agent) / self.entry.name / f"{self.index:04d}.jsonl"


def slug(spec: str) -> str:
    """An agent spec as a folder name: `neural:runs/a/policy.pt` -> `neural_runs_a_policy.pt`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_") or "agent"


# ---- one episode (in whichever process plays it) -----------------------------------------------
_CACHE: OrderedDict[str, tuple[gym.Env, Any]] = OrderedDict()  # env and agent, reused across episodes
_CACHE_SIZE = 4


def play(job: Job, agent_options: dict[str, Any], images: bool = True) -> Record:
    """Play one episode and return it as a JSON record with its images (none with `images=False`);
    never raises for what the env or agent does (the error is recorded in `meta["error"]`)."""
    from turngym.rollout import rollout

    start = time.perf_counter()
    key = _key(job, agent_options)
    traj, task_type = None, ""
    try:
        env, agent = _cached(key, job, agent_options)
    except Exception as exc:  # the env or agent cannot be built: the episode's error, not the run's
        traj = Trajectory(env_id=job.entry.env_id, task_id="", seed=job.seed)
        traj.meta["error"] = {"type": type(exc).__name__, "message": str(exc), "turn": 0, "traceback": ""}
    else:
        traj = rollout(env, agent, seed=job.seed, options={"split": job.entry.split, "index": job.index},
                       record_images=images, catch=True)
        task_type = str(getattr(env.unwrapped, "task_type", "")) if traj.task_id else ""
        if "error" in traj.meta:  # the env or agent may be broken now: build fresh ones next time
            _evict(key)
    traj.meta.update(agent=job.agent, entry=job.entry.name, index=job.index, split=job.entry.split,
                     env_kwargs=job.entry.kwargs, task_type=task_type, error=traj.meta.get("error"),
                     seconds=round(time.perf_counter() - start, 3))
    return trajectory_record(traj, "images")


def _key(job: Job, agent_options: dict[str, Any]) -> str:
    return json.dumps([job.agent, job.entry.env_id, job.entry.kwargs, agent_options], sort_keys=True, default=str)


OUT_OF_DATE = r".*The environment \S+ is out of date"  # gymnasium.make's warning for a superseded version


def _cached(key: str, job: Job, agent_options: dict[str, Any]) -> tuple[gym.Env, Any]:
    from turngym.agents import make_agent

    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    with warnings.catch_warnings():
        # a suite pins its env versions on purpose (core-v0 plays HopVQA-v0): Gymnasium's notice that
        # a newer version exists is for code that names an id itself, and `turngym run` still shows it
        warnings.filterwarnings("ignore", message=OUT_OF_DATE, category=DeprecationWarning)
        env = gym.make(job.entry.env_id, **job.entry.kwargs)
    try:
        pair = _CACHE[key] = (env, make_agent(job.agent, env, **agent_options))
    except BaseException:
        env.close()
        raise
    while len(_CACHE) > _CACHE_SIZE:
        _evict(next(iter(_CACHE)))
    return pair


def _evict(key: str) -> None:
    env, _ = _CACHE.pop(key, (None, None))
    if env is not None:
        with suppress(Exception):
            env.close()


def _close_all() -> None:
    """Close the envs this process played in (workers=1), Chromium included."""
    while _CACHE:
        _evict(next(iter(_CACHE)))


def crash_record(job: Job, message: str) -> Record:
    """The record of an episode whose worker died (or whose Ray task failed) before it returned."""
    traj = Trajectory(env_id=job.entry.env_id, task_id="", seed=job.seed)
    traj.meta.update(agent=job.agent, entry=job.entry.name, index=job.index, split=job.entry.split,
                     env_kwargs=job.entry.kwargs, task_type="", seconds=0.0,
                     error={"type": "WorkerCrashed", "message": message, "turn": 0, "traceback": ""})
    return trajectory_record(traj, "images")


# ---- the run -------------------------------------------------------------------------------------
def plan(suite: Suite, agents: list[str]) -> tuple[list[Job], list[tuple[str, str]]]:
    """Every episode of every agent, and the (agent, entry) pairs skipped because the agent does
    not exist for that env (a plugin family without an `oracle`, say); an entry that names its agents is
    played by those alone. An agent that exists for none of the suite's envs is a mistake, not a
    skip: ValueError."""
    from turngym.agents.base import available_agents
    from turngym.registry import env_class

    try:
        offered = {entry.name: available_agents(env_class(entry.env_id)) for entry in suite.entries}
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    jobs, skipped = [], []
    for agent in agents:
        name = agent.partition(":")[0]
        if not any(name in names for names in offered.values()):
            known = sorted(set().union(*offered.values()))
            where = suite.entries[0].env_id if len(suite.entries) == 1 else f"suite {suite.name}"
            raise ValueError(f"no agent {name!r} for {where}: use one of {', '.join(known)}")
        for entry in suite.entries:
            if entry.agents and agent not in entry.agents:
                continue  # the entry says who plays it: not a skip worth reporting
            if name in offered[entry.name]:
                jobs += [Job(agent, entry, i) for i in entry.indices]
            else:
                skipped.append((agent, entry.name))
    return jobs, skipped


def prepare(run_dir: Path, suite: Suite, agents: list[str], agent_options: dict[str, Any] | None = None) -> None:
    """Write run.json, or check that the run already in `run_dir` is of the same suite (then the
    agents accumulate, so evaluating one more agent into a run folder adds it) and that an agent
    already there is played with the options its episodes were played with (a rerun resumes them)."""
    path = run_dir / "run.json"
    entries = [e.as_dict() for e in suite.entries]
    options = json.loads(json.dumps(agent_options or {}, sort_keys=True, default=str))
    played: dict[str, Any] = {}
    new_agents = list(agents)
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("suite", {}).get("name") != suite.name or old.get("entries") != json.loads(json.dumps(entries)):
            raise ValueError(f"{run_dir} holds a run of another suite or other entries: use another --out")
        played = old.get("agent_options", {})  # (runs written before it was recorded: nothing to check)
        for agent in agents:
            if agent in played and played[agent] != options:
                raise ValueError(f"{run_dir} holds {agent}'s episodes played with agent options {played[agent]}, "
                                 f"not {options}: use another --out, or the same options to resume")
        agents = [*old["agents"], *(a for a in agents if a not in old["agents"])]
    folders: dict[str, str] = {}
    for agent in agents:
        other = folders.setdefault(slug(agent), agent)
        if other != agent:
            raise ValueError(f"agents {other!r} and {agent!r} would share the folder episodes/{slug(agent)}: "
                             "evaluate them into different --out folders")
    record = {"format": FORMAT, "suite": suite.as_dict(), "agents": agents, "entries": entries,
              "agent_options": {**{a: options for a in new_agents}, **played}}
    atomic_write_json(path, record, indent=2)


def run_eval(suite: Suite, agents: list[str], out: str | Path, *, workers: int = 1, ray_address: str | None = None,
             agent_options: dict[str, Any] | None = None, retry_errors: bool = False, images: bool = True,
             on_episode: Callable[[Job, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Play every episode of `suite` with each agent not yet in `out`, then write and return the
    results (`turngym.results.aggregate`). `on_episode(job, record)` is called as each one is saved;
    `images=False` keeps the observations' images out of the episode files (a faster, lighter run)."""
    from turngym.results import aggregate

    run_dir = Path(out)
    jobs, skipped = plan(suite, agents)
    prepare(run_dir, suite, agents, agent_options)
    todo = [job for job in jobs if not _finished(job.path(run_dir), retry_errors)]
    options = dict(agent_options or {})
    if ray_address is not None:
        stream = _run_ray(todo, options, images, ray_address)
    elif workers > 1 and len(todo) > 1:
        stream = _run_pool(todo, options, images, workers)
    else:
        stream = ((job, play(job, options, images)) for job in todo)
    try:
        for job, (record, images) in stream:
            path = job.path(run_dir)
            save_images(images, path.parent / "images")
            atomic_write_bytes(path, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            if on_episode is not None:
                on_episode(job, record)
    finally:
        _close_all()
    results = aggregate(run_dir, run_metrics)
    results["skipped"] = [{"agent": a, "entry": e} for a, e in skipped]
    atomic_write_json(run_dir / "results.json", results, indent=2)
    return results


def run_metrics(env_id: str, kwargs: dict[str, Any], score_parts: list[dict[str, Any]]) -> dict[str, float]:
    """The env family's measures of a set of episodes (`TurnEnv.run_metrics`: LongDocVQA's F1)."""
    from turngym.registry import env_class

    measure = getattr(env_class(env_id), "run_metrics", None)
    return dict(measure(score_parts, kwargs)) if measure is not None else {}


def pending(suite: Suite, agents: list[str], out: str | Path, retry_errors: bool = False) -> int:
    """How many episodes a `run_eval` with these arguments would play."""
    jobs, _ = plan(suite, agents)
    return sum(not _finished(job.path(Path(out)), retry_errors) for job in jobs)


def _finished(path: Path, retry_errors: bool) -> bool:
    if not path.exists():
        return False
    if not retry_errors:
        return True
    return json.loads(path.read_text())["meta"].get("error") is None


def share_cores(threads: int) -> None:
    """A pool worker's share of the cores for torch and BLAS (unless the user set one), set before
    the worker imports torch, which reads it then. Without it every worker starts a thread per core:
    on 2 cores, two workers playing SmolLM2's Craft turns managed 0.37 turns/s together, against
    1.2 with one thread each."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def _run_pool(jobs: list[Job], options: dict[str, Any], images: bool, workers: int
              ) -> Iterator[tuple[Job, Record]]:
    """Episodes in `workers` processes. When a worker dies, the pool is replaced and the episodes
    it had in flight are replayed alone, so only the one that kills its worker is lost."""
    queue, suspects = list(jobs), []
    context = get_context("spawn")  # a clean interpreter: no threads or locks inherited from this one
    cores = os.cpu_count() or 1
    while queue:
        with ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=context, initializer=share_cores,
                                 initargs=(max(1, cores // workers),)) as pool:
            futures = {pool.submit(play, job, options, images): job for job in queue}
            queue = []
            try:
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = futures.pop(future)
                        try:
                            yield job, future.result()
                        except BrokenProcessPool:
                            suspects.append(job)
            finally:  # stopped early (Ctrl-C): leave the queued episodes for the rerun
                for future in futures:
                    future.cancel()
        while suspects:  # one at a time: a second death convicts the episode
            with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=share_cores,
                                     initargs=(cores,)) as alone:
                while suspects:
                    job = suspects.pop(0)
                    try:
                        yield job, alone.submit(play, job, options, images).result()
                    except BrokenProcessPool:
                        yield job, crash_record(job, "the worker process died while playing this episode")
                        break


def _run_ray(jobs: list[Job], options: dict[str, Any], images: bool, address: str
             ) -> Iterator[tuple[Job, Record]]:
    """Episodes as Ray tasks (one CPU each) on the cluster at `address` ("auto": the running one;
    "local": a new instance on this machine). A task whose worker dies is recorded as crashed."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: install it with `pip install ray`") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    remote = ray.remote(num_cpus=1, max_retries=0)(play)
    refs = {remote.remote(job, options, images): job for job in jobs}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(done[0])
        try:
            yield job, ray.get(done[0])
        except ray.exceptions.RayError as exc:
            yield job, crash_record(job, f"the Ray task failed: {str(exc).splitlines()[0]}")


def env_suite(env_id: str, kwargs: dict[str, Any], episodes: int | None = None, split: str = "test",
              seed: int = 0) -> Suite:
    """The suite of one env's split (`turngym run`, `turngym eval ENV_ID`): its first `episodes`
    tasks (default: all), checked against the split's size."""
    from turngym.registry import describe
    from turngym.suites import single_env_suite

    describe(env_id)  # a clear error for an unknown id
    with gym.make(env_id, **kwargs) as env:
        tasks = env.unwrapped.splits.get(split)
        if tasks is None:
            raise ValueError(f"{env_id} has no split {split!r}: use one of {sorted(env.unwrapped.splits)}")
    count = len(tasks) if episodes is None else episodes
    if count > len(tasks):
        raise ValueError(f"split {split!r} of {env_id} has {len(tasks)} tasks; asked for {count} episodes")
    return single_env_suite(env_id, kwargs, count, split, seed)


def evaluate(env_id: str, agents: list[str], episodes: int | None = None, *, split: str = "test", seed: int = 0,
             env_kwargs: dict[str, Any] | None = None, agent_options: dict[str, Any] | None = None,
             out: str | Path | None = None, workers: int = 1, images: bool | None = None,
             on_episode: Callable[[Job, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Agents on the first `episodes` tasks of one env's split, through `run_eval`: into the run
    folder `out` (then `turngym report out` shows it; images kept unless `images=False`), or into
    a temporary folder deleted afterwards (images off unless asked for). Returns the results;
    `results.entry_row(results, agent)` picks one agent's row."""
    suite = env_suite(env_id, dict(env_kwargs or {}), episodes, split, seed)
    options = dict(agent_options or {})
    keep = images if images is not None else out is not None
    try:
        for agent in agents:  # a bad spec or option fails here, in one sentence, not as N failed episodes
            job = Job(agent, suite.entries[0], 0)
            _cached(_key(job, options), job, options)  # the in-process run (workers=1) reuses what it built
        with tempfile.TemporaryDirectory(prefix="turngym-run-") as tmp:
            return run_eval(suite, agents, tmp if out is None else out, workers=workers, agent_options=options,
                            images=keep, on_episode=on_episode)
    finally:
        _close_all()
