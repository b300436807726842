"""The spool's record format: batches ↔ bytes. Pure (reads a file object it is given).

Record (little endian): ``b"OPGS" | u32 payload length | u32 crc32(payload) | u32 span count``, then
the payload, zlib-compressed JSON ``{"v": 2, "spans": [...], "logs": [...], "error": ...}`` (log
fragments; the count covers both; ``error`` on quarantined records). A torn or corrupted record
fails its length or CRC check; ``iter_records`` reports it, searches for the next magic and goes on.
"""

from __future__ import annotations

import json
import logging
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, BinaryIO

from ..pipeline.encoding import ROW_COLUMNS, row_json
from ..pipeline.log_fragments import LogFragment
from ..pipeline.model import EncodedSpan, TraceHints

logger = logging.getLogger("otel_pg_exporter")

MAGIC = b"OPGS"
HEADER = struct.Struct("<4sIII")
FORMAT_VERSION = 2
#: Formats this version reads: 1 stored each column apart, 2 stores the row as one JSON text.
READABLE_VERSIONS = frozenset({1, 2})
#: Upper bound for one record's payload: anything larger in a header is corruption.
MAX_RECORD_BYTES = 1 << 30


# -- EncodedSpan <-> JSON -------------------------------------------------------------------------

#: EncodedSpan fields that are JSON-ready as they are; the rest are converted below.
_CONVERTED = frozenset({"span_id", "trace_id", "parent_span_id", "started_at", "hints"})
_SCALAR_FIELDS = tuple(f.name for f in fields(EncodedSpan) if f.name not in _CONVERTED)


def _span_to_json(s: EncodedSpan) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(s, f) for f in _SCALAR_FIELDS}
    out["span_id"] = str(s.span_id)
    out["trace_id"] = str(s.trace_id)
    out["parent_span_id"] = str(s.parent_span_id) if s.parent_span_id else None
    out["started_at"] = s.started_at.isoformat() if s.started_at else None
    h = s.hints
    out["hints"] = {
        "trace_id": str(h.trace_id),
        "trace_hex": h.trace_hex,
        "is_root": h.is_root,
        "start_ns": h.start_ns,
        "workflow": h.workflow,
        "user": h.user,
        "query": h.query,
        "execution_id": h.execution_id,
        "metadata": h.metadata,
    }
    return out


def _span_from_json(d: dict[str, Any]) -> EncodedSpan:
    h = d["hints"]
    hints = TraceHints(
        trace_id=uuid.UUID(h["trace_id"]),
        trace_hex=h["trace_hex"],
        is_root=h["is_root"],
        start_ns=h["start_ns"],
        workflow=tuple(h["workflow"]),  # type: ignore[arg-type]
        user=tuple(h["user"]) if h["user"] else None,  # type: ignore[arg-type]
        query=tuple(h["query"]) if h["query"] else None,  # type: ignore[arg-type]
        execution_id=h["execution_id"],
        metadata=h["metadata"],
    )
    if "row" not in d:  # format 1: one field per column (JSON columns as text)
        d = {**d, "row": row_json({c: d[c] for c in ROW_COLUMNS})}
    kwargs = {f: d[f] for f in _SCALAR_FIELDS if f in d}  # fields added later have defaults
    return EncodedSpan(
        span_id=uuid.UUID(d["span_id"]),
        trace_id=uuid.UUID(d["trace_id"]),
        parent_span_id=uuid.UUID(d["parent_span_id"]) if d["parent_span_id"] else None,
        started_at=datetime.fromisoformat(d["started_at"]) if d["started_at"] else None,
        hints=hints,
        **kwargs,
    )


def _fragment_to_json(f: LogFragment) -> dict[str, Any]:
    out = {x.name: getattr(f, x.name) for x in fields(LogFragment)}
    out["span_id"], out["trace_id"] = str(f.span_id), str(f.trace_id)
    return out


def _fragment_from_json(d: dict[str, Any]) -> LogFragment:
    return LogFragment(**{**d, "span_id": uuid.UUID(d["span_id"]), "trace_id": uuid.UUID(d["trace_id"])})


SpoolItem = EncodedSpan | LogFragment


def encode_batch(items: Sequence[SpoolItem], error: str | None = None) -> bytes:
    """One spool record (header + payload) for a batch of spans, or of log fragments; ``error``:
    why the database refused it (quarantine records)."""
    doc: dict[str, Any] = {"v": FORMAT_VERSION}
    if error:
        doc["error"] = error
    spans = [_span_to_json(i) for i in items if isinstance(i, EncodedSpan)]
    logs = [_fragment_to_json(i) for i in items if isinstance(i, LogFragment)]
    if spans:
        doc["spans"] = spans
    if logs:
        doc["logs"] = logs
    payload = zlib.compress(
        json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        level=1,
    )
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), len(items)) + payload


def decode_payload(payload: bytes) -> list[SpoolItem]:
    return decode_record(payload)[0]


def decode_record(payload: bytes) -> tuple[list[SpoolItem], str | None]:
    """A record's items and the error it was set aside for (None in the spool proper)."""
    doc = json.loads(zlib.decompress(payload))
    if doc.get("v") not in READABLE_VERSIONS:
        raise ValueError(f"unknown spool format version {doc.get('v')!r}")
    items: list[SpoolItem] = [_span_from_json(d) for d in doc.get("spans", ())]
    items += [_fragment_from_json(d) for d in doc.get("logs", ())]
    error = doc.get("error")
    return items, error if isinstance(error, str) else None


@dataclass
class Record:
    """One intact record read back from a segment."""

    offset: int
    span_count: int
    payload: bytes


def iter_records(
    f: BinaryIO, name: str = "", skipped: Callable[[int], None] | None = None
) -> Iterator[Record]:
    """Intact records of a segment; torn or corrupted ones are logged and skipped, and ``skipped``
    hears how many spans each held (from its header, when the header itself is intact)."""
    data = f.read()
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, length, crc, count = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        if magic == MAGIC and length <= MAX_RECORD_BYTES and start + length <= len(data):
            payload = data[start : start + length]
            if zlib.crc32(payload) == crc:
                yield Record(pos, count, payload)
                pos = start + length
                continue
        nxt = data.find(MAGIC, pos + 1)
        what = "torn record at end" if nxt < 0 and start + length > len(data) else "corrupted record"
        logger.warning("otel-pg-exporter: spool %s: skipped %s at byte %d", name, what, pos)
        if skipped is not None and magic == MAGIC:
            skipped(count)
        if nxt < 0:
            return
        pos = nxt
    if pos < len(data):
        logger.warning("otel-pg-exporter: spool %s: skipped torn record at end (byte %d)", name, pos)
