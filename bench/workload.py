"""The benchmark workload: a realistic GenAI trace of four spans, made by a real TracerProvider.

root workflow span → two ``chat`` LLM spans (model, provider, usage, ~``payload`` bytes of input and
output message JSON each) → one tool span. ``conventions`` picks how the LLM spans are spelled:
``otel`` (gen_ai.* JSON messages), ``oi`` (OpenInference flattened), ``tl`` (Traceloop legacy),
cycled over the traces.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

SPANS_PER_TRACE = 4
CONVENTIONS = ("otel", "oi", "tl")


def _text(payload: int, seed: int) -> str:
    base = f"Question {seed}: what is the weather like in Paris, and should I take an umbrella? "
    return (base * (payload // len(base) + 1))[:payload]


def llm_attributes(convention: str, payload: int, seed: int) -> dict[str, Any]:
    question, answer = _text(payload, seed), _text(payload, seed + 1)
    if convention == "oi":
        return {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.system": "openai",
            "llm.provider": "openai",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": question,
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": answer,
            "llm.token_count.prompt": 120,
            "llm.token_count.completion": 40,
            "llm.token_count.total": 160,
        }
    if convention == "tl":
        return {
            "llm.request.type": "chat",
            "gen_ai.system": "OpenAI",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": question,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": answer,
            "gen_ai.usage.prompt_tokens": 120,
            "gen_ai.usage.completion_tokens": 40,
            "llm.usage.total_tokens": 160,
        }
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 40,
        "gen_ai.usage.cache_read.input_tokens": 64,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": question}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        ),
        "server.address": "api.openai.com",
    }


def make_trace(tracer: Tracer, index: int, payload: int, conventions: Sequence[str]) -> None:
    """One four-span GenAI trace."""
    convention = conventions[index % len(conventions)]
    with tracer.start_as_current_span(
        "support workflow", attributes={"gen_ai.workflow.name": "support", "user.id": f"user-{index % 50}"}
    ):
        for call in range(2):
            with tracer.start_as_current_span(
                "chat gpt-4o-mini", attributes=llm_attributes(convention, payload, index + call)
            ):
                pass
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.arguments": '{"city": "Paris"}',
                "gen_ai.tool.call.result": "rainy",
            },
        ):
            pass


def prebuilt_spans(
    traces: int, payload: int = 500, conventions: Sequence[str] = ("otel",)
) -> list[ReadableSpan]:
    """Finished ``ReadableSpan``s of ``traces`` traces, in the order the SDK ends them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(traces):
        make_trace(tracer, i, payload, conventions)
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def prebuilt_spans_and_logs(traces: int, payload: int = 500) -> tuple[list[ReadableSpan], list[Any]]:
    """Traces whose LLM span carries no content; the content is in log records, as the OTel contrib
    instrumentations emit it by default (system + user message, one choice), made by a real
    LoggerProvider inside the real span."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    log_memory = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_memory))
    tracer, logger = provider.get_tracer("bench"), logger_provider.get_logger("bench")
    for i in range(traces):
        with (
            tracer.start_as_current_span(f"agent {i % 7}"),
            tracer.start_as_current_span(
                "chat gpt-4o-mini",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.usage.input_tokens": 120,
                    "gen_ai.usage.output_tokens": 40,
                },
            ),
        ):
            logger.emit(event_name="gen_ai.system.message", body={"content": "You are a weather bot."})
            logger.emit(event_name="gen_ai.user.message", body={"content": _text(payload, i)})
            logger.emit(
                event_name="gen_ai.choice",
                body={
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": _text(payload, i + 1)},
                },
            )
    spans, records = list(memory.get_finished_spans()), list(log_memory.get_finished_logs())
    provider.shutdown()
    logger_provider.shutdown()
    return spans, records
