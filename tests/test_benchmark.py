"""`turngym.apps.benchmark`: sane rows per configuration, error rows instead of a dead table."""

from __future__ import annotations

import json
import os

import pytest
from rich.console import Console

from turngym.apps.benchmark import CONFIGS, METRICS, bench_table, p50_p95_ms, run_bench


class _DieWhenUnpickled:
    """A kwarg that kills the worker process as it unpickles its arguments: a crash no `except` sees."""

    def __reduce__(self):
        return os._exit, (3,)


def render(rows: list[dict]) -> str:
    console = Console(record=True, width=250)
    console.print(bench_table(rows))
    return console.export_text()


def test_rows_are_sane_for_each_configuration():
    rows = run_bench(["turngym/Craft-v0", "HopVQA-v0"], seconds=0.3, progress=False)  # the prefix may be left out
    expected = [(env_id, label) for env_id, _, label in CONFIGS if env_id in ("turngym/Craft-v0", "turngym/HopVQA-v0")]
    assert [(row["env_id"], row["label"]) for row in rows] == expected and len(expected) == 3
    for row in rows:
        assert row["error"] is None, row["error"]
        assert row["steps_per_s"] > 0 and 0 < row["step_p50_ms"] <= row["step_p95_ms"]
        assert row["reset_ms"] > 0 and row["setup_s"] > 0 and row["rss_mb"] > 0
        assert 1 <= row["episodes"] <= row["steps"]
    assert rows[1]["kwargs"] == {"image": False}
    json.dumps(rows)  # `turngym bench --json` writes them as they are
    assert "HopVQA-v0" in render(rows)


def test_unknown_env_id_names_turngym_list():
    with pytest.raises(ValueError, match="turngym list"):
        run_bench(["turngym/NoSuchEnv-v0"], seconds=0.1, progress=False)


def test_an_env_that_fails_or_dies_is_an_error_row():
    configs = [("turngym/Craft-v0", {"task": "no_such_task"}, "bad task"),
               ("turngym/Craft-v0", {"task": _DieWhenUnpickled()}, "dies")]
    rows = run_bench(["turngym/Craft-v0"], seconds=0.1, progress=False, configs=configs)
    assert [row["label"] for row in rows] == ["bad task", "dies"]
    assert "unknown Craft task 'no_such_task'" in rows[0]["error"]
    assert "exit code 3" in rows[1]["error"]
    assert all(row[key] is None for row in rows for key in METRICS)
    assert "no_such_task" in render(rows)


def test_percentiles_are_in_milliseconds():
    assert p50_p95_ms([0.001] * 19 + [0.101]) == pytest.approx((1.0, 6.0))
