"""The benchmark's one table: every phase (what it runs, what it prints), the targets each figure is
judged against, and the sizes of a full run and of a smoke run. Adding a phase is a row here."""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass(frozen=True)
class Phase:
    """``run`` returns results by key (most phases one key, named like the phase); ``render`` turns
    the whole results dict into printed rows (empty when its keys are absent)."""

    name: str
    run: Callable[[Run], dict[str, Any]]
    render: Callable[[dict[str, Any]], list[Row]]


def phases() -> tuple[Phase, ...]:
    """Every phase, in the order a full run takes them (imported here: the phases import this module)."""
    from .phases import e2e, gateway, growth, logs, memory, read_side, retention, spooling, writer

    def only(*renderers: Callable[[dict[str, Any]], list[Row]]) -> Callable[[dict[str, Any]], list[Row]]:
        return lambda r: [row for render in renderers for row in render(r)]

    return (
        Phase("e2e", e2e.run, e2e.render_e2e),
        Phase("gateway", gateway.run_gateway, gateway.render_gateway),
        Phase("burst", gateway.run_burst, gateway.render_burst),
        Phase("spooling", spooling.run, spooling.render_spooling),
        Phase("writer", writer.run, only(writer.render_writer, writer.render_scrub)),
        Phase("memory", memory.run, memory.render_memory),
        Phase("profile", writer.run_profile, lambda r: []),  # printed under the table
        Phase("growth", growth.run, growth.render_growth),
        Phase("doctor", read_side.run_doctor, read_side.render_doctor),
        Phase("explorer", read_side.run_explorer, read_side.render_explorer),
        Phase("logs", logs.run, logs.render_logs),
        Phase("retention", retention.run, retention.render_retention),
    )
