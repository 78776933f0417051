"""What every benchmark script reports latencies with (kept in turngym.apps.benchmark, which `turngym bench` uses)."""

from turngym.apps.benchmark import p50_p95_ms

__all__ = ["p50_p95_ms"]
