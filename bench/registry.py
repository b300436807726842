"""The benchmark's figures of merit in one place: the targets each figure is judged against and the
verdict, the sizes of a full run and of a smoke run, and what a phase is given (``Run``) and prints
(``Row``). The phases themselves are listed in ``bench.phases.PHASES``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: One printed line: what was measured, the figure, the verdict.
Row = tuple[str, str, str]

#: figure → (comparison, target)
TARGETS: dict[str, tuple[str, float]] = {
    "e2e_ratio": (">=", 0.6),
    "writer_vs_naive": (">=", 10.0),
    "writer_vs_copy": (">=", 0.5),
    "export_p99_ms": ("<=", 150.0),
    "peak_rss_mib": ("<=", 200.0),
    "growth_1m_vs_empty": (">=", 0.8),
    "spooling_ratio": (">=", 0.25),
    "app_cpu_vs_otlp": ("<=", 1.0),
    "pg_cpu_vs_floor": ("<=", 1.5),
    "doctor_seconds": ("<=", 2.0),
    "explorer_seconds": ("<=", 0.5),
}

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "e2e_traces": 5000,
        "writer_traces": 5000,
        "memory_spans": 100_000,
        "growth": (0, 100_000, 1_000_000),
        "growth_traces": 2500,
        "profile_traces": 2500,
        "retention": (1_000_000, 200_000, 1000),
        "log_traces": 3000,
        "spooling_spans": 20_000,
        "doctor_spans": 1_000_000,
        "explorer_spans": 1_000_000,
        # Collector-sized requests: (spans = traces per request, requests, big bodies, MiB each)
        "burst": (20_000, 3, 6, 15),
        # the soak: requests per sender (8 senders, 3 gateways), spans per request
        "soak": (30, 8192),
    },
    "smoke": {
        "e2e_traces": 50,
        "writer_traces": 50,
        "memory_spans": 400,
        "growth": (0, 1000),
        "growth_traces": 50,
        "profile_traces": 50,
        "retention": (4000, 800, 100),
        "log_traces": 40,
        "spooling_spans": 500,
        "doctor_spans": 1000,
        "explorer_spans": 1000,
        "burst": (300, 2, 2, 1),
        "soak": (1, 256),
    },
}


def verdict(name: str, value: float) -> str:
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    return f"{'met' if ok else 'MISSED'} ({op} {target:g})"


@dataclass(frozen=True)
class Run:
    """What a phase is given: the throwaway database, the sizes, the workload's shape."""

    dsn: str
    size: dict[str, Any]
    payload: int
    conventions: tuple[str, ...]
