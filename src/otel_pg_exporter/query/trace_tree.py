"""A stored trace as a tree: ``SpanNode`` (one span, its children once placed), ``TraceDetail``
(a trace and a window of its spans), and the ordering that builds them from rows (``tree_order``:
iterative, a parent that is missing or part of a cycle makes its span a root). Pure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass
class SpanNode:
    """One stored span, with its children (in start order) once placed in a tree."""

    span_id: uuid.UUID
    trace_id: uuid.UUID
    parent_span_id: uuid.UUID | None
    name: str
    span_type: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    model: str | None
    provider: str | None
    tokens: dict[str, Any]
    cost: Decimal | None
    cost_status: str | None
    error: str | None
    error_type: str | None
    error_stack: str | None
    inputs: Any
    outputs: Any
    evaluation: Any
    api_limits: Any
    retry_count: int | None
    timeout: int | None
    metadata: dict[str, Any]
    child_spans: list[str]
    children: list[SpanNode] = field(default_factory=list)
    depth: int = 0

    @property
    def placeholder(self) -> bool:
        """A ``pending`` row standing in for a parent that has not arrived (yet)."""
        return self.status == "pending"

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def annotations(self) -> list[Any]:
        """The span's judgements, as ``spans_annotated`` merges them into ``evaluation``."""
        found = self.evaluation.get("annotations") if isinstance(self.evaluation, dict) else None
        return found if isinstance(found, list) else []

    def walk(self) -> Iterator[SpanNode]:
        """This span and its descendants, depth first (iteratively: a deep tree is no recursion)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


@dataclass(frozen=True)
class TraceDetail:
    """A trace row and its spans as a tree (roots in start order; spans whose parent is missing are
    roots too, and so is the earliest span of a parent cycle).

    With a window (``get_trace(..., offset=, limit=)``) ``roots`` and ``spans`` hold the window's
    spans only (a span whose parent is outside the window is a root of it); ``total_spans`` counts
    them all, ``offset`` is where the window starts in depth-first order."""

    trace: dict[str, Any]
    roots: list[SpanNode]
    total_spans: int = -1
    offset: int = 0

    @property
    def spans(self) -> list[SpanNode]:
        """Every span (of the window), depth first, children in start order."""
        return [node for root in self.roots for node in root.walk()]

    @property
    def hidden(self) -> int:
        """Spans of the trace outside the window."""
        return max(0, self.total_spans - len(self.spans)) if self.total_spans >= 0 else 0

    def span(self, span_id: uuid.UUID | str) -> SpanNode | None:
        wanted = str(span_id)
        return next((s for s in self.spans if str(s.span_id) == wanted), None)


def span_node(row: dict[str, Any]) -> SpanNode:
    meta = row.get("metadata") or {}
    cost_info = meta.get("cost") if isinstance(meta, dict) else None
    return SpanNode(
        span_id=row["span_id"],
        trace_id=row["trace_id"],
        parent_span_id=row["parent_span_id"],
        name=row["name"],
        span_type=row["span_type"],
        status=row["status"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        duration_ms=row["duration_ms"],
        model=row["model"],
        provider=row["provider"],
        tokens=row["tokens"] or {},
        cost=row["cost"],
        cost_status=cost_info.get("status") if isinstance(cost_info, dict) else None,
        error=row["error"],
        error_type=row["error_type"],
        error_stack=row["error_stack"],
        inputs=row["inputs"],
        outputs=row["outputs"],
        evaluation=row["evaluation"],
        api_limits=row["api_limits"],
        retry_count=row["retry_count"],
        timeout=row["timeout"],
        metadata=meta if isinstance(meta, dict) else {},
        child_spans=list(row["child_spans"] or []),
    )


StartKey = tuple[int, datetime, str]


def start_key(span_id: Any, started_at: datetime | None) -> StartKey:
    return (0 if started_at is None else 1, started_at or datetime.min, str(span_id))


def tree_order(links: dict[Any, tuple[Any, StartKey]]) -> list[tuple[Any, int, Any]]:
    """Span id → (parent id, start key) → ``(span id, depth, parent in the tree)`` depth first,
    children in start order. A span whose parent is missing is a root (parent None), and so is the
    earliest span of a parent cycle (its link into the cycle is cut), so no span is left out.
    Iterative: a chain thousands of spans deep costs no recursion."""
    children: dict[Any, list[Any]] = {}
    roots: list[Any] = []
    for span_id, (parent, _) in links.items():
        if parent is not None and parent != span_id and parent in links:
            children.setdefault(parent, []).append(span_id)
        else:
            roots.append(span_id)
    order: list[tuple[Any, int, Any]] = []
    seen: set[Any] = set()

    def by_start(ids: list[Any]) -> list[Any]:
        return sorted(ids, key=lambda i: links[i][1])

    def place(root: Any) -> None:
        stack: list[tuple[Any, int, Any]] = [(root, 0, None)]
        while stack:
            span_id, depth, parent = stack.pop()
            if span_id in seen:
                continue
            seen.add(span_id)
            order.append((span_id, depth, parent))
            kids = by_start(children.get(span_id, []))
            stack.extend((kid, depth + 1, span_id) for kid in reversed(kids))

    for root in by_start(roots):
        place(root)
    if len(seen) < len(links):  # parent cycles: nothing above them is a root
        for span_id in by_start([i for i in links if i not in seen]):
            if span_id not in seen:
                place(span_id)
    return order


def nest(nodes: dict[Any, SpanNode], order: list[tuple[Any, int, Any]]) -> list[SpanNode]:
    """Link ``nodes`` as ``order`` says (a parent outside ``nodes`` makes a root); the roots."""
    roots: list[SpanNode] = []
    for span_id, depth, parent in order:
        node = nodes.get(span_id)
        if node is None:
            continue
        node.depth = depth
        above = nodes.get(parent) if parent is not None else None
        (above.children if above is not None else roots).append(node)
    return roots


def build_tree(rows: list[dict[str, Any]]) -> list[SpanNode]:
    """Spans → roots with children in start order, from ``parent_span_id`` (never the stored
    ``child_spans``, which may lag); see ``tree_order`` for missing parents and cycles."""
    nodes = {r["span_id"]: span_node(r) for r in rows}
    links = {i: (n.parent_span_id, start_key(i, n.started_at)) for i, n in nodes.items()}
    return nest(nodes, tree_order(links))
