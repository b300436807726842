"""Fork safety: objects that own threads, locks or connections re-create them in a forked child."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any


def _call_if_alive(method: weakref.WeakMethod[Any]) -> None:
    bound = method()
    if bound is not None:
        bound()


def on_fork_in_child(method: Callable[[], None]) -> None:
    """Call ``method`` (a bound method) in every forked child, for as long as its object lives (a
    weak reference: registering does not keep the object alive)."""
    if hasattr(os, "register_at_fork"):
        ref = weakref.WeakMethod(method)  # type: ignore[arg-type]
        os.register_at_fork(after_in_child=lambda: _call_if_alive(ref))
