"""What every benchmark script reports latencies with."""

from __future__ import annotations

import numpy as np


def p50_p95_ms(seconds: list[float]) -> tuple[float, float]:
    """The median and 95th percentile of durations in seconds, in milliseconds."""
    ms = np.array(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
