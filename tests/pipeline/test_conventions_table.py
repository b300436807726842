"""The conventions table, column by column, with no database: real SDK spans → ``map_span``.

One case per convention and column (what each ecosystem really emits, with the value the column must
hold), then every name of every precedence list on its own (a name the mapping stopped reading fails
its own case), then the precedence between names of different conventions on one span.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.trace import Status, StatusCode

from otel_pg_exporter.pipeline import conventions as cv
from otel_pg_exporter.pipeline.encoding import encode_span
from otel_pg_exporter.pipeline.mapping import map_span
from otel_pg_exporter.pipeline.model import Limits, SpanRecord
from otel_pg_exporter.schema.tables import SPAN_METADATA_KEYS, VARCHAR_WIDTHS
from tests.helpers.support import Capture, messages


def mapped(
    attributes: dict[str, Any], *, root: bool = False, name: str = "span", **options: Any
) -> SpanRecord:
    """The record of one span made by a real ``TracerProvider`` (a child of a root unless ``root``),
    with ``events`` ((name, attributes) pairs), a ``status`` and ``resource`` attributes if given."""
    capture = Capture(**options.pop("resource", {}))
    status = options.pop("status", None)
    with contextlib.ExitStack() as stack:
        if not root:
            stack.enter_context(capture.tracer.start_as_current_span("root"))
        span = stack.enter_context(capture.tracer.start_as_current_span(name, attributes=attributes))
        for event_name, event_attrs in options.pop("events", ()):
            span.add_event(event_name, event_attrs)
        if status is not None:
            span.set_status(status)
    finished = {s.name: s for s in capture.take()}
    return map_span(finished[name])


def column(record: SpanRecord, path: str) -> Any:
    """``tokens.input``, ``hints.workflow`` (its value), ``hints.metadata.session_id``, …"""
    value: Any = record
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list):
            value = value[int(part)]
        else:
            value = getattr(value, part)
    if path in ("hints.workflow", "hints.user") and value is not None:
        return value[1]  # (rank, value, source)
    if path == "hints.query" and value is not None:
        return value[2]  # (rank, start, value, source)
    return value


@dataclass(frozen=True)
class Case:
    convention: str
    column: str
    attributes: dict[str, Any]
    expected: Any
    root: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.convention}:{self.column}"


OTEL_OUTPUT = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Rainy."}]}])

#: One case per convention and column: what the ecosystem emits, what the column holds.
CASES: tuple[Case, ...] = (
    # OpenTelemetry GenAI semantic conventions (current)
    Case("otel", "span_type", {"gen_ai.operation.name": "chat"}, "llm"),
    Case("otel", "span_type", {"gen_ai.operation.name": "embeddings"}, "embedding"),
    Case("otel", "span_type", {"gen_ai.operation.name": "execute_tool"}, "tool"),
    Case("otel", "span_type", {"gen_ai.operation.name": "invoke_agent"}, "agent"),
    Case("otel", "span_type", {"gen_ai.operation.name": "invoke_workflow"}, "workflow"),
    Case(
        "otel",
        "model",
        {"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"},
        "gpt-4o-2024-08-06",
    ),
    Case("otel", "provider", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}, "openai"),
    Case("otel", "tokens.input", {"gen_ai.usage.input_tokens": 1200}, 1200),
    Case("otel", "tokens.output", {"gen_ai.usage.output_tokens": 300}, 300),
    Case("otel", "tokens.cache_read", {"gen_ai.usage.cache_read.input_tokens": 1000}, 1000),
    Case("otel", "tokens.reasoning", {"gen_ai.usage.reasoning.output_tokens": 120}, 120),
    Case("otel", "cost", {"gen_ai.operation.name": "chat", "gen_ai.usage.cost": 0.0125}, 0.0125),
    Case("otel", "inputs.messages.0.role", {"gen_ai.input.messages": messages(("user", "Weather?"))}, "user"),
    Case("otel", "outputs.messages.0.role", {"gen_ai.output.messages": OTEL_OUTPUT}, "assistant"),
    Case("otel", "retry_count", {"http.request.resend_count": 2}, 2),
    Case("otel", "hints.workflow", {"gen_ai.workflow.name": "support-bot"}, "support-bot", root=True),
    Case("otel", "hints.metadata.session_id", {"gen_ai.conversation.id": "conv-1"}, "conv-1"),
    Case(
        "otel",
        "error_type",
        {"error.type": "timeout"},
        "timeout",
        options={"status": Status(StatusCode.ERROR)},
    ),
    Case("otel", "status", {}, "failed", options={"status": Status(StatusCode.ERROR, "boom")}),
    # OpenTelemetry GenAI, deprecated names (1.26–1.36) still sent by many instrumentations
    Case(
        "otel-deprecated",
        "provider",
        {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic"},
        "anthropic",
    ),
    Case("otel-deprecated", "tokens.input", {"gen_ai.usage.prompt_tokens": 11}, 11),
    Case("otel-deprecated", "tokens.output", {"gen_ai.usage.completion_tokens": 7}, 7),
    Case("otel-deprecated", "hints.user", {"gen_ai.user": "u-9"}, "u-9"),
    # OpenInference (Arize Phoenix)
    Case("openinference", "span_type", {"openinference.span.kind": "LLM"}, "llm"),
    Case("openinference", "span_type", {"openinference.span.kind": "RETRIEVER"}, "retrieval"),
    Case("openinference", "span_type", {"openinference.span.kind": "CHAIN"}, "task"),
    Case("openinference", "span_type", {"openinference.span.kind": "CHAIN"}, "workflow", root=True),
    Case("openinference", "model", {"llm.model_name": "claude-3-5-sonnet"}, "claude-3-5-sonnet"),
    Case(
        "openinference",
        "provider",
        {"openinference.span.kind": "LLM", "llm.provider": "azure", "llm.system": "openai"},
        "azure.ai.openai",
    ),
    Case("openinference", "tokens.input", {"llm.token_count.prompt": 42}, 42),
    Case("openinference", "tokens.output", {"llm.token_count.completion": 8}, 8),
    Case("openinference", "tokens.cache_read", {"llm.token_count.prompt_details.cache_read": 30}, 30),
    Case("openinference", "cost", {"openinference.span.kind": "LLM", "llm.cost.total": 0.5}, 0.5),
    Case(
        "openinference",
        "inputs.messages.0.role",
        {"llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "hi"},
        "user",
    ),
    Case("openinference", "hints.metadata.session_id", {"session.id": "s-1"}, "s-1"),
    Case("openinference", "hints.user", {"user.id": "alice"}, "alice"),
    # Traceloop / OpenLLMetry
    Case(
        "traceloop",
        "span_type",
        {"traceloop.span.kind": "workflow", "gen_ai.operation.name": "invoke_agent"},
        "workflow",
    ),
    Case("traceloop", "span_type", {"llm.request.type": "chat"}, "llm"),
    Case("traceloop", "tokens.total", {"llm.usage.total_tokens": 99}, 99),
    Case("traceloop", "hints.workflow", {"traceloop.workflow.name": "etl"}, "etl", root=True),
    Case("traceloop", "hints.user", {"traceloop.association.properties.user_id": "bob"}, "bob"),
    Case(
        "traceloop",
        "hints.metadata.session_id",
        {"traceloop.association.properties.session_id": "tl-s"},
        "tl-s",
    ),
    # OpenLIT
    Case(
        "openlit",
        "provider",
        {"gen_ai.operation.name": "chat", "gen_ai.request.provider": "mistral"},
        "mistral_ai",
    ),
    Case("openlit", "tokens.total", {"gen_ai.client.token.usage": 33}, 33),
    # Langfuse
    Case("langfuse", "span_type", {"langfuse.observation.type": "generation"}, "llm"),
    Case(
        "langfuse",
        "model",
        {"langfuse.observation.model.name": "gpt-4o-mini", "gen_ai.request.model": "gpt-4o"},
        "gpt-4o-mini",
    ),
    Case(
        "langfuse",
        "cost",
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.cost_details": json.dumps({"total": 0.25}),
        },
        0.25,
    ),
    Case("langfuse", "hints.workflow", {"langfuse.trace.name": "chatbot"}, "chatbot"),
    Case("langfuse", "hints.user", {"langfuse.user.id": "lf-user"}, "lf-user"),
    Case("langfuse", "hints.metadata.session_id", {"langfuse.session.id": "lf-s"}, "lf-s"),
    Case("langfuse", "hints.metadata.environment", {"langfuse.environment": "staging"}, "staging"),
    # Pydantic AI / Logfire: an agent run repeats its children's usage, kept out of the sums
    Case(
        "pydantic-ai",
        "tokens",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 50},
        {},
    ),
    Case(
        "pydantic-ai",
        "metadata.rollup_tokens.input",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 50},
        50,
    ),
    Case("pydantic-ai", "span_type", {"gen_ai.agent.name": "support"}, "agent"),
    # Azure SDK: provider spelling
    Case(
        "azure",
        "provider",
        {"gen_ai.operation.name": "chat", "gen_ai.system": "az.ai.inference"},
        "azure.ai.inference",
    ),
    # infrastructure spans next to GenAI ones
    Case("infra", "span_type", {"db.system.name": "postgresql"}, "db"),
    Case("infra", "span_type", {"http.request.method": "POST"}, "http"),
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_convention_fills_its_column(case: Case) -> None:
    record = mapped(case.attributes, root=case.root, **dict(case.options))
    value = column(record, case.column)
    if isinstance(case.expected, float):
        assert value is not None and float(value) == pytest.approx(case.expected)
    else:
        assert value == case.expected


def _every(table: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    return [(key, name) for key, names in table.items() for name in names]


@pytest.mark.parametrize(("key", "name"), _every(cv.TOKEN_ATTRS), ids=lambda v: v)
def test_every_token_attribute_is_read(key: str, name: str) -> None:
    assert mapped({"gen_ai.operation.name": "chat", name: 17}).tokens.get(key) == 17


@pytest.mark.parametrize("name", cv.MODEL_ATTRS)
def test_every_model_attribute_is_read(name: str) -> None:
    assert mapped({"gen_ai.operation.name": "chat", name: "m-1"}).model == "m-1"


@pytest.mark.parametrize("name", [n for n in cv.PROVIDER_ATTRS if n != "llm.provider"])
def test_every_provider_attribute_is_read(name: str) -> None:
    assert mapped({"gen_ai.operation.name": "chat", name: "anthropic"}).provider == "anthropic"


@pytest.mark.parametrize("name", cv.COST_ATTRS)
def test_every_cost_attribute_is_read(name: str) -> None:
    assert mapped({"gen_ai.operation.name": "chat", name: 0.75}).cost == pytest.approx(0.75)


@pytest.mark.parametrize("name", cv.USER_ATTRS)
def test_every_user_attribute_is_read(name: str) -> None:
    user = mapped({name: "someone"}).hints.user
    assert user is not None and user[1] == "someone" and user[2] == name


@pytest.mark.parametrize("name", cv.SESSION_ATTRS)
def test_every_session_attribute_is_read(name: str) -> None:
    assert mapped({name: "sess"}).hints.metadata.get("session_id") == "sess"


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [(attr, value, kind) for attr, kinds in cv.SPAN_KIND_SOURCES for value, kind in kinds.items()],
    ids=lambda v: str(v),
)
def test_every_kind_value_maps_into_the_vocabulary(source: str, value: str, expected: str) -> None:
    span_type = mapped({source: value.upper()}).span_type  # matched case-insensitively
    assert span_type == ("task" if expected == "*root" else expected)
    assert span_type in cv.SPAN_TYPES and len(span_type) <= VARCHAR_WIDTHS["span_type"]


def test_precedence_across_conventions_on_one_span() -> None:
    record = mapped(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 10,  # OTel first …
            "llm.token_count.prompt": 99,  # … over OpenInference
            "gen_ai.provider.name": "openai",
            "gen_ai.system": "anthropic",
            "langfuse.user.id": "first",
            "user.id": "second",
        }
    )
    assert record.tokens["input"] == 10 and record.provider == "openai"
    assert record.hints.user is not None and record.hints.user[1] == "first"
    # the values a column holds as they were are not repeated in metadata.attributes
    assert "gen_ai.usage.input_tokens" not in record.metadata.get("attributes", {})


def test_a_framework_name_is_not_a_model_vendor() -> None:
    """Traceloop's LangChain handler sets gen_ai.provider.name=langchain on workflow spans."""
    record = mapped({"traceloop.span.kind": "workflow", "gen_ai.provider.name": "langchain"})
    assert record.provider is None or record.provider not in cv.NON_VENDOR_PROVIDERS


def test_every_metadata_key_written_is_declared() -> None:
    """``schema.tables.SPAN_METADATA_KEYS`` is the one list of what ``spans.metadata`` holds."""
    written: set[str] = set()
    for case in CASES:
        written |= set(mapped(case.attributes, root=case.root, **dict(case.options)).metadata)
    rich = mapped(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "a",
            "gen_ai.response.model": "b",
            "gen_ai.usage.cost.amount": 1.0,
            "gen_ai.usage.cost.currency": "EUR",
            "gen_ai.usage.input_tokens": "x",
        },
        events=[("custom.event", {"k": 1})],
        resource={"service.version": "1.2"},
    )
    written |= set(rich.metadata)
    assert {"otel", "attributes", "events", "resource", "request_model", "cost_not_usd"} <= written
    assert written <= set(SPAN_METADATA_KEYS), written - set(SPAN_METADATA_KEYS)


def test_encoded_rows_fit_the_seed_widths() -> None:
    record = mapped({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m" * 400}, name="n" * 400)
    row = encode_span(record, Limits()).columns()
    assert len(row["model"]) <= VARCHAR_WIDTHS["model"] and len(row["name"]) <= VARCHAR_WIDTHS["name"]
    assert "model" in json.loads(json.dumps(row["metadata"]))["sanitized"]


def test_a_cost_is_exact_to_the_cent() -> None:
    record = mapped({"gen_ai.operation.name": "chat", "gen_ai.usage.cost": 0.1 + 0.2})
    assert Decimal(encode_span(record, Limits()).columns()["cost"]) == Decimal("0.300000")


class RateLimitError(Exception):
    """Stands for ``openai.RateLimitError``: same module and name as the real one."""


RateLimitError.__module__ = "openai"


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"error.type": "openai.RateLimitError"}, "openai.RateLimitError"),  # OTel, module + qualname
        ({"error.type": "<class 'openai.RateLimitError'>"}, "openai.RateLimitError"),  # openai-v2
        ({"error.type": "timeout"}, "timeout"),  # not a class: kept as sent
        ({}, "openai.RateLimitError"),  # the SDK's record_exception: qualname, qualified from the traceback
    ],
    ids=["otel", "class-repr", "not-a-class", "record-exception"],
)
def test_one_spelling_per_error_type(attributes: dict[str, Any], expected: str) -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("root"), capture.tracer.start_as_current_span("call") as span:
        for key, value in attributes.items():
            span.set_attribute(key, value)
        try:
            raise RateLimitError("Error code: 429")
        except RateLimitError as exc:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR))
    record = map_span(next(s for s in capture.take() if s.name == "call"))
    assert record.error_type == expected
    if attributes:  # the raw value stays in the span's attributes
        assert record.metadata["attributes"]["error.type"] == attributes["error.type"]
