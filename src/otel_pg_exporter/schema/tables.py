"""THE definition of the seed's tables, as data: every other module derives from it.

``database-setup.md`` is the contract: columns in its order with their SQL type and width, index
names and definitions, constraints, the RLS policies of its 004. The installer's contract check, the
doctor, the row encoder (widths, JSON columns, what is scrubbed), the writer's statements (the
``jsonb_to_recordset`` record type) and the read side all read these tables; adding a column or an
index is a change here (and a migration), not a hunt through modules.

The ``metadata`` columns are JSONB bags with keys of our own: ``SPAN_METADATA_KEYS`` and
``TRACE_METADATA_KEYS`` list every key we write, with what it holds (a test checks the mapping
writes no other).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a seed table. ``sql_type``: as the seed declares it; ``record_type``: the
    type its value takes in the writer's ``jsonb_to_recordset`` (None: not written that way);
    ``width``: a VARCHAR's width; ``json``: a JSONB column; ``scrubbed``: may carry free text from
    the application (and so secrets): the scrubber passes over it."""

    name: str
    sql_type: str
    record_type: str | None = None
    width: int | None = None
    json: bool = False
    scrubbed: bool = False


def _varchar(name: str, width: int, *, scrubbed: bool = False) -> Column:
    return Column(name, f"varchar({width})", "text", width=width, scrubbed=scrubbed)


def _jsonb(name: str, *, scrubbed: bool = False) -> Column:
    return Column(name, "jsonb", "jsonb", json=True, scrubbed=scrubbed)


#: The seed's tables, column by column, in the seed's order.
TABLES: dict[str, tuple[Column, ...]] = {
    "profiles": (Column("id", "uuid"), Column("settings", "jsonb", json=True)),
    "traces": (
        Column("trace_id", "uuid"),
        _varchar("workflow_id", 255),
        _varchar("execution_id", 255),
        Column("user_id", "uuid"),
        Column("query", "text"),
        Column("started_at", "timestamp"),
        Column("completed_at", "timestamp"),
        Column("total_duration_ms", "integer"),
        _varchar("status", 50),
        Column("error", "text"),
        Column("total_cost", "numeric(10,6)"),
        Column("total_tokens", "jsonb", json=True),
        Column("metadata", "jsonb", json=True),
    ),
    "spans": (
        Column("span_id", "uuid", "uuid"),
        Column("trace_id", "uuid", "uuid"),
        Column("parent_span_id", "uuid", "uuid"),
        _varchar("span_type", 50),
        _varchar("name", 255, scrubbed=True),
        _varchar("status", 50),
        Column("started_at", "timestamp", "timestamp"),
        Column("completed_at", "timestamp", "timestamp"),
        Column("duration_ms", "integer", "int4"),
        _jsonb("inputs", scrubbed=True),
        _jsonb("outputs", scrubbed=True),
        _jsonb("tokens"),
        Column("cost", "numeric(10,6)", "numeric"),
        _varchar("model", 255),
        _varchar("provider", 100),
        Column("error", "text", "text", scrubbed=True),
        _varchar("error_type", 100),
        Column("error_stack", "text", "text", scrubbed=True),
        _jsonb("api_limits", scrubbed=True),
        Column("retry_count", "integer", "int4"),
        Column("timeout", "integer", "int4"),
        _jsonb("evaluation", scrubbed=True),
        _jsonb("metadata"),
        Column("child_spans", "text[]", "text[]"),
    ),
}

#: Column names per table, in the seed's order.
SEED_COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(c.name for c in cols) for table, cols in TABLES.items()
}
#: VARCHAR widths of ``spans`` and ``traces`` (a name used in both has the same width in both).
VARCHAR_WIDTHS: dict[str, int] = {
    c.name: c.width for table in ("traces", "spans") for c in TABLES[table] if c.width is not None
}
#: ``spans`` JSONB columns (embedded in a row as JSON values, not as strings).
SPAN_JSON_COLUMNS: frozenset[str] = frozenset(c.name for c in TABLES["spans"] if c.json)
#: ``spans`` columns that may carry free text from the application, and so secrets.
SPAN_SCRUBBED_COLUMNS: frozenset[str] = frozenset(c.name for c in TABLES["spans"] if c.scrubbed)
#: ``spans`` columns → their type in the writer's ``jsonb_to_recordset`` record, in the seed's order.
SPAN_RECORD_TYPES: dict[str, str] = {c.name: c.record_type for c in TABLES["spans"] if c.record_type}
#: The largest value of a DECIMAL(10, 6) column (``cost``, ``total_cost``).
COST_MAX_TEXT = "9999.999999"

#: The seed's indexes: name → definition (``pg_get_indexdef`` from ``USING`` on). Names and
#: definitions are the contract: a same-named index over other columns is as broken as a missing one.
INDEXES: dict[str, str] = {
    "idx_profiles_settings": "USING gin (settings)",
    "idx_traces_workflow_id": "USING btree (workflow_id)",
    "idx_traces_execution_id": "USING btree (execution_id)",
    "idx_traces_user_id": "USING btree (user_id)",
    "idx_traces_started_at": "USING btree (started_at DESC)",
    "idx_traces_status": "USING btree (status)",
    "idx_traces_workflow_started": "USING btree (workflow_id, started_at DESC)",
    "idx_traces_metadata_gin": "USING gin (metadata)",
    "idx_traces_total_tokens_gin": "USING gin (total_tokens)",
    "idx_spans_trace_id": "USING btree (trace_id)",
    "idx_spans_parent_span_id": "USING btree (parent_span_id)",
    "idx_spans_span_type": "USING btree (span_type)",
    "idx_spans_status": "USING btree (status)",
    "idx_spans_started_at": "USING btree (started_at)",
    "idx_spans_trace_started": "USING btree (trace_id, started_at)",
    "idx_spans_tokens_gin": "USING gin (tokens)",
    "idx_spans_metadata_gin": "USING gin (metadata)",
}

#: The seed's constraints by table: name → kind (p primary key, u unique, f foreign key, c check).
CONSTRAINTS: dict[str, dict[str, str]] = {
    "profiles": {"profiles_pkey": "p"},
    "traces": {
        "traces_pkey": "p",
        "traces_execution_id_key": "u",
        "traces_user_id_fkey": "f",
        "valid_status": "c",
    },
    "spans": {
        "spans_pkey": "p",
        "spans_trace_id_fkey": "f",
        "spans_parent_span_id_fkey": "f",
        "valid_span_status": "c",
    },
}

#: The values the seed's ``valid_status`` CHECK allows on ``traces.status``.
TRACE_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled")

#: The seed's RLS policies (its 004), by table.
POLICIES: dict[str, tuple[str, ...]] = {
    "traces": (
        "Users can view their own traces",
        "Users can insert their own traces",
        "Users can update their own traces",
    ),
    "spans": (
        "Users can view spans from their own traces",
        "Users can insert spans to their own traces",
        "Users can update spans in their own traces",
    ),
}

#: Every top-level key we write into ``spans.metadata``, with what it holds.
SPAN_METADATA_KEYS: dict[str, str] = {
    "otel": "the OTel identity: hex ids, kind, status code and description, scope, duration_ns",
    "attributes": "the span's attributes that no column holds as they were",
    "attributes_raw": "the attributes as sent, on a span that broke the mapping (fallback row)",
    "resource": "the resource attributes a span row keeps (conventions.SPAN_RESOURCE_KEYS)",
    "events": "events not read into a column (exceptions, custom events)",
    "links": "span links (trace and span ids, attributes)",
    "provider_source": "the attribute the provider was read from",
    "request_model": "the requested model, when the response names another",
    "token_notes": "token attributes that disagreed or were not numbers",
    "cost": "how the cost was found: provided, computed (price source, version) or unpriced",
    "rollup_tokens": "an agent's or workflow's usage, kept out of the summed columns",
    "rollup_cost": "an agent's or workflow's cost, kept out of the summed columns",
    "sanitized": "every change made to fit a column (truncated, clamped, invalid text)",
    "content": "'omitted' when message content was not stored (capture off for its user)",
    "live": "true on a running row written by LiveSpanProcessor",
    "logs": "content merged from log records, by column, with each fragment's key",
    "cost_not_usd": "a reported cost in another currency (amount, currency): not converted, not stored",
    "mapping_error": "why the span got a minimal row (fallback)",
    "write_error": "why the row was stored without its payload (the database refused it as it was)",
    "dropped_columns": "the payload columns left out of such a row",
    "placeholder": "true on a pending row made for a parent that has not arrived yet",
}

#: Every top-level key we write into ``traces.metadata``, with what it holds.
TRACE_METADATA_KEYS: dict[str, str] = {
    "sources": "the attribute each trace field (workflow, query, user) was read from, with its rank",
    "model_calls": "how many model calls (llm, embedding spans) the trace's totals add up",
    "session_id": "the conversation or session the trace belongs to",
    "user": "the user id as sent, when it is not a profile's UUID",
    "resources": "the service's resource attributes (service name, version, environment)",
    "requested_execution_id": "an execution id the application asked for but another trace holds",
    "tags": "tags of the trace (tag.tags, langfuse.trace.tags)",
    "environment": "the deployment environment",
    "release": "the release or version of the application",
}


# -- our own tables ------------------------------------------------------------------------------------

#: ``otel_annotations`` (migration 009): one judgement of a span, a trace or a session. What its
#: CHECKs allow, as data: the target kinds, the annotator kinds (with what each means), the widths of
#: its bounded text columns, and how a row may have arrived (``source``).
ANNOTATIONS_TABLE = "otel_annotations"
ANNOTATION_TARGET_KINDS: tuple[str, ...] = ("span", "trace", "session")
ANNOTATOR_KINDS: dict[str, str] = {
    "human": "a reviewer",
    "user": "the application's end user (the only kind end users may write, under RLS)",
    "llm": "an LLM judge",
    "code": "a check in code",
}
ANNOTATION_WIDTHS: dict[str, int] = {
    "name": 255,
    "label": 255,
    "annotator": 255,
    "identifier": 255,
    "explanation": 20_000,
}
#: The largest ``correction`` (its JSON text, in bytes).
ANNOTATION_CORRECTION_MAX_BYTES = 262_144
ANNOTATION_SOURCES: tuple[str, ...] = ("api", "ingest", "explorer", "mcp", "sql")
#: The view that shows ``spans`` with each span's annotations merged into ``evaluation``.
SPANS_ANNOTATED_VIEW = "spans_annotated"
