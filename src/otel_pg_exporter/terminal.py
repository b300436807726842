"""Text for a terminal: trace content (model names, workflow ids, queries) is untrusted, and an
escape sequence or a newline in it could recolour, move the cursor or forge a line of a command's
output (an ``OK`` line of the doctor). Pure."""

from __future__ import annotations

import re
from typing import Any

#: C0 controls (newline and tab included: a value never spans lines), DEL, C1 controls, and the
#: Unicode line separators and bidirectional overrides that reorder what follows them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(value: Any) -> str:
    """``value`` as text with every control character shown as an escape (``\\x1b``, ``\\n``)."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)
