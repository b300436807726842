"""How long to wait before trying again, and how to say so once: shared by span delivery, replay
and forwarding. What is worth retrying at all is ``failures.classify``."""

from __future__ import annotations

import logging
import random
import threading

logger = logging.getLogger("otel_pg_exporter")

#: Which failures are retried, split, spooled or set aside: ``failures.SQLSTATE_FAILURES`` (one
#: table, by SQLSTATE, read through ``failures.classify``).
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0
#: Shortest wait for a pooled connection per attempt (a quarter of the export timeout otherwise).
ATTEMPT_MIN_S = 0.5


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.05–0.1 s, doubling, at most ``BACKOFF_MAX_S``."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)


class StateLog:
    """Logs a state change once ("database lost", "recovered"), never once per batch."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._state = "ok"
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def set(self, state: str, message: str = "") -> None:
        with self._lock:
            if state == self._state:
                return
            previous, self._state = self._state, state
        if state == "ok":
            logger.warning("otel-pg-exporter: writing to %s again (was: %s)", self._target, previous)
        else:
            logger.error("otel-pg-exporter: %s (%s): %s", state, self._target, message)
