"""The seed's tables, column by column, in the seed's order: data shared by the installer's contract
check, the doctor, and the row encoder."""

from __future__ import annotations

#: Columns per table, by name, in the order ``database-setup.md`` defines them.
SEED_COLUMNS: dict[str, tuple[str, ...]] = {
    "profiles": ("id", "settings"),
    "traces": (
        "trace_id",
        "workflow_id",
        "execution_id",
        "user_id",
        "query",
        "started_at",
        "completed_at",
        "total_duration_ms",
        "status",
        "error",
        "total_cost",
        "total_tokens",
        "metadata",
    ),
    "spans": (
        "span_id",
        "trace_id",
        "parent_span_id",
        "span_type",
        "name",
        "status",
        "started_at",
        "completed_at",
        "duration_ms",
        "inputs",
        "outputs",
        "tokens",
        "cost",
        "model",
        "provider",
        "error",
        "error_type",
        "error_stack",
        "api_limits",
        "retry_count",
        "timeout",
        "evaluation",
        "metadata",
        "child_spans",
    ),
}
