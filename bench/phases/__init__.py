"""One module per group of benchmark phases, and ``PHASES``: every phase in the order a full run
takes them (what it runs, what it prints). Adding a phase is a module and a row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Row, Run
from . import e2e, gateway, growth, logs, memory, read_side, retention, soak, spooling, writer


@dataclass(frozen=True)
class Phase:
    """``run`` returns results by key (most phases one key, named like the phase); ``render`` turns
    the whole results dict into printed rows (empty when its keys are absent)."""

    name: str
    run: Callable[[Run], dict[str, Any]]
    render: Callable[[dict[str, Any]], list[Row]]


def _both(*renderers: Callable[[dict[str, Any]], list[Row]]) -> Callable[[dict[str, Any]], list[Row]]:
    return lambda r: [row for render in renderers for row in render(r)]


PHASES: tuple[Phase, ...] = (
    Phase("e2e", e2e.run, e2e.render_e2e),
    Phase("gateway", gateway.run_gateway, gateway.render_gateway),
    Phase("burst", gateway.run_burst, gateway.render_burst),
    Phase("soak", soak.run, soak.render_soak),
    Phase("spooling", spooling.run, spooling.render_spooling),
    Phase("writer", writer.run, _both(writer.render_writer, writer.render_scrub)),
    Phase("memory", memory.run, memory.render_memory),
    Phase("profile", writer.run_profile, lambda r: []),  # printed under the table
    Phase("growth", growth.run, growth.render_growth),
    Phase("doctor", read_side.run_doctor, read_side.render_doctor),
    Phase("explorer", read_side.run_explorer, read_side.render_explorer),
    Phase("logs", logs.run, logs.render_logs),
    Phase("retention", retention.run, retention.render_retention),
)
