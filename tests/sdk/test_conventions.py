"""One test per convention family of the reference: real SDK spans → exporter → stored columns."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.helpers.support import by_name, fetch_spans, fetch_trace, messages


def test_otel_genai_current_semconv(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "invoke_workflow support",
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": "support-bot",
        },
    ) as root:
        with t.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cache_write.input_tokens": 100,
                "gen_ai.usage.reasoning.output_tokens": 120,
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You are terse."}]),
                "gen_ai.input.messages": messages(("user", "Weather in Paris?")),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "Rainy."}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
                "gen_ai.response.finish_reasons": ("stop",),
                "http.request.resend_count": 2,
                "server.address": "api.openai.com",
            },
        ):
            pass
        with t.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.arguments": '{"city": "Paris"}',
                "gen_ai.tool.call.result": "rainy",
            },
        ):
            pass
    tid = root.get_span_context().trace_id
    assert exporter.export(capture.take()).name == "SUCCESS"
    rows = fetch_spans(db_dsn, tid)
    llm = rows["chat gpt-4o"]
    assert llm["span_type"] == "llm"
    assert llm["model"] == "gpt-4o-2024-08-06"
    assert llm["metadata"]["request_model"] == "gpt-4o"
    assert llm["provider"] == "openai"
    assert llm["tokens"] == {
        "input": 1200,
        "output": 300,
        "total": 1500,
        "cache_read": 1000,
        "cache_write": 100,
        "reasoning": 120,
    }
    assert llm["inputs"]["messages"][0]["parts"][0]["content"] == "Weather in Paris?"
    assert llm["inputs"]["system"] == [{"type": "text", "content": "You are terse."}]
    assert llm["outputs"]["messages"][0]["finish_reason"] == "stop"
    assert llm["retry_count"] == 2
    assert llm["metadata"]["attributes"]["server.address"] == "api.openai.com"
    assert "gen_ai.input.messages" not in llm["metadata"]["attributes"]  # content is not duplicated
    assert llm["metadata"]["resource"]["service.name"] == "test-svc"
    assert llm["metadata"]["otel"]["scope"]["name"] == "tests.support"
    tool = rows["execute_tool get_weather"]
    assert tool["span_type"] == "tool"
    assert tool["inputs"] == {"value": {"city": "Paris"}, "source": "gen_ai.tool.call.arguments"}
    assert tool["outputs"]["value"] == "rainy"
    wf = rows["invoke_workflow support"]
    assert wf["span_type"] == "workflow" and wf["parent_span_id"] is None
    assert sorted(wf["child_spans"]) == sorted(
        str(rows[n]["span_id"]) for n in ("chat gpt-4o", "execute_tool get_weather")
    )
    trace = fetch_trace(db_dsn, tid)
    assert trace["workflow_id"] == "support-bot"
    assert trace["execution_id"] == f"{tid:032x}"
    assert trace["status"] == "completed"
    assert trace["query"] == "Weather in Paris?"
    assert trace["total_tokens"] == llm["tokens"]


def test_otel_deprecated_names_and_span_events(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "chat gpt-3.5-turbo",
        attributes={
            "gen_ai.system": "az.ai.openai",
            "gen_ai.request.model": "gpt-35-turbo",
            "gen_ai.usage.prompt_tokens": 40,
            "gen_ai.usage.completion_tokens": 10,
        },
    ) as span:
        span.add_event(
            "gen_ai.content.prompt", {"gen_ai.prompt": "[{'role': 'user', 'content': 'Hi there'}]"}
        )
        span.add_event(
            "gen_ai.content.completion", {"gen_ai.completion": '[{"role": "assistant", "content": "Hello"}]'}
        )
    tid = span.get_span_context().trace_id
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat gpt-3.5-turbo"]
    assert row["span_type"] == "llm"  # model attribute present, no operation name
    assert row["provider"] == "azure.ai.openai"
    assert row["model"] == "gpt-35-turbo"
    assert row["tokens"] == {"input": 40, "output": 10, "total": 50}
    assert row["inputs"]["messages"] == [{"role": "user", "content": "Hi there"}]  # Python repr parsed
    assert row["outputs"]["messages"] == [{"role": "assistant", "content": "Hello"}]
    assert fetch_trace(db_dsn, tid)["query"] == "Hi there"


def test_openinference(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "RunnableSequence",
        attributes={
            "openinference.span.kind": "CHAIN",
            "input.value": '{"question": "What is OTel?"}',
            "input.mime_type": "application/json",
            "output.value": "A standard.",
            "session.id": "sess-1",
            "user.id": "not-a-uuid",
            "tag.tags": ("prod", "beta"),
        },
    ) as root:
        with t.start_as_current_span("Retriever", attributes={"openinference.span.kind": "CHAIN"}):
            pass
        with t.start_as_current_span(
            "ChatOpenAI",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.provider": "azure",
                "llm.system": "openai",
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "Be brief.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": "What is OTel?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "search",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"q": "otel"}',
                "llm.token_count.prompt": 50,
                "llm.token_count.completion": 7,
                "llm.token_count.total": 57,
                "llm.token_count.prompt_details.cache_read": 20,
                "llm.token_count.completion_details.reasoning": 3,
                "llm.cost.total": 0.000123,
                "llm.invocation_parameters": '{"temperature": 0, "timeout": 30}',
            },
        ):
            pass
    tid = root.get_span_context().trace_id
    exporter.export(capture.take())
    rows = fetch_spans(db_dsn, tid)
    llm = rows["ChatOpenAI"]
    assert llm["span_type"] == "llm"
    assert llm["provider"] == "azure.ai.openai"
    assert llm["model"] == "gpt-4o-mini"
    assert llm["tokens"] == {"input": 50, "output": 7, "total": 57, "cache_read": 20, "reasoning": 3}
    assert llm["cost"] == Decimal("0.000123")
    assert llm["metadata"]["cost"]["status"] == "provided"
    assert llm["timeout"] == 30_000
    assert llm["inputs"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is OTel?"},
    ]
    call = llm["outputs"]["messages"][0]["tool_calls"][0]
    assert call == {"id": "call_1", "function": {"name": "search", "arguments": '{"q": "otel"}'}}
    assert rows["RunnableSequence"]["span_type"] == "workflow"  # root CHAIN
    assert rows["Retriever"]["span_type"] == "task"  # non-root CHAIN
    trace = fetch_trace(db_dsn, tid)
    assert trace["query"] == "What is OTel?"  # root input.value beats the LLM message
    assert trace["user_id"] is None and trace["metadata"]["user"] == "not-a-uuid"
    assert trace["metadata"]["session_id"] == "sess-1"
    assert trace["metadata"]["tags"] == ["prod", "beta"]
    assert trace["total_cost"] == Decimal("0.000123")


def test_traceloop_legacy_and_sdk_entities(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with (
        t.start_as_current_span(
            "qa_pipeline.workflow",
            attributes={
                "traceloop.span.kind": "workflow",
                "gen_ai.operation.name": "invoke_agent",
                "traceloop.workflow.name": "qa_pipeline",
                "traceloop.entity.name": "qa_pipeline",
                "traceloop.entity.input": '{"args": ["What is X?"], "kwargs": {}}',
                "traceloop.entity.output": '"X is a letter."',
                "traceloop.association.properties.user_id": "u-123",
            },
        ) as root,
        t.start_as_current_span(
            "openai.chat",
            attributes={
                "llm.request.type": "chat",
                "gen_ai.system": "OpenAI",
                "gen_ai.request.model": "gpt-4",
                "gen_ai.response.model": "gpt-4-0613",
                "gen_ai.prompt.0.role": "system",
                "gen_ai.prompt.0.content": "You answer.",
                "gen_ai.prompt.1.role": "user",
                "gen_ai.prompt.1.content": "What is X?",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "X is a letter.",
                "gen_ai.completion.0.finish_reason": "stop",
                "gen_ai.usage.prompt_tokens": 15,
                "gen_ai.usage.completion_tokens": 5,
                "llm.usage.total_tokens": 20,
                "gen_ai.usage.cache_read_input_tokens": 4,
                "traceloop.workflow.name": "qa_pipeline",
            },
        ),
    ):
        pass
    tid = root.get_span_context().trace_id
    exporter.export(capture.take())
    rows = fetch_spans(db_dsn, tid)
    wf = rows["qa_pipeline.workflow"]
    assert wf["span_type"] == "workflow"  # traceloop.span.kind beats invoke_agent
    assert wf["inputs"]["value"] == {"args": ["What is X?"], "kwargs": {}}
    assert wf["outputs"]["value"] == "X is a letter."
    llm = rows["openai.chat"]
    assert llm["span_type"] == "llm" and llm["provider"] == "openai" and llm["model"] == "gpt-4-0613"
    assert llm["tokens"] == {"input": 15, "output": 5, "total": 20, "cache_read": 4}
    assert llm["inputs"]["messages"][1] == {"role": "user", "content": "What is X?"}
    assert llm["outputs"]["messages"][0]["finish_reason"] == "stop"
    trace = fetch_trace(db_dsn, tid)
    assert trace["workflow_id"] == "qa_pipeline"
    assert trace["query"] == "What is X?"
    assert trace["metadata"]["user"] == "u-123"


def test_openlit(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "chat claude-3-5-sonnet",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet",
            "gen_ai.usage.input_tokens": 30,
            "gen_ai.usage.output_tokens": 12,
            "gen_ai.client.token.usage": 42,
            "gen_ai.usage.prompt_tokens_details.cached_tokens": 10,
            "gen_ai.usage.cost": 0.00042,
            "gen_ai.input.messages": "[{'role': 'user', 'parts': [{'type': 'text', 'content': 'Hello Claude'}]}]",
            "gen_ai.application_name": "my-app",
            "gen_ai.environment": "staging",
        },
    ) as span:
        span.add_event(
            "gen_ai.evaluation.result",
            {
                "gen_ai.evaluation.name": "hallucination",
                "gen_ai.evaluation.score.value": 0.1,
                "gen_ai.evaluation.score.label": "no",
                "gen_ai.evaluation.explanation": "grounded",
            },
        )
    tid = span.get_span_context().trace_id
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat claude-3-5-sonnet"]
    assert row["provider"] == "anthropic"
    assert row["tokens"] == {"input": 30, "output": 12, "total": 42, "cache_read": 10}
    assert row["cost"] == Decimal("0.000420")
    assert row["inputs"]["messages"][0]["parts"][0]["content"] == "Hello Claude"  # repr parsed
    assert row["evaluation"] == {
        "results": [{"name": "hallucination", "score": 0.1, "label": "no", "explanation": "grounded"}]
    }
    assert row["metadata"]["attributes"]["gen_ai.application_name"] == "my-app"


def test_langfuse_attributes(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with (
        t.start_as_current_span(
            "root",
            attributes={
                "langfuse.trace.name": "lf-trace",
                "langfuse.user.id": "lf-user",
                "langfuse.session.id": "lf-s",
                "langfuse.trace.input": '{"messages": [{"role": "user", "content": "LF question"}]}',
                "langfuse.environment": "production",
            },
        ) as root,
        t.start_as_current_span(
            "my-generation",
            attributes={
                "langfuse.observation.type": "generation",
                "langfuse.observation.model.name": "mistral-large",
                "gen_ai.system": "mistralai",
                "langfuse.observation.usage_details": '{"input": 11, "output": 4}',
                "langfuse.observation.cost_details": '{"input": 0.0001, "output": 0.0002}',
                "langfuse.observation.input": '[{"role": "user", "content": "LF question"}]',
                "langfuse.observation.output": '{"role": "assistant", "content": "LF answer"}',
                "langfuse.observation.level": "ERROR",
                "langfuse.observation.status_message": "content filter",
            },
        ),
    ):
        pass
    tid = root.get_span_context().trace_id
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["my-generation"]
    assert row["span_type"] == "llm"
    assert row["model"] == "mistral-large" and row["provider"] == "mistral_ai"
    assert row["tokens"] == {"input": 11, "output": 4, "total": 15}
    assert row["cost"] == Decimal("0.000300")
    assert row["status"] == "failed" and row["error"] == "content filter"
    assert row["outputs"] == {
        "value": {"role": "assistant", "content": "LF answer"},
        "source": "langfuse.observation.output",
    }
    trace = fetch_trace(db_dsn, tid)
    assert trace["workflow_id"] == "lf-trace"
    assert trace["query"] == "LF question"
    assert trace["metadata"]["session_id"] == "lf-s"
    assert trace["metadata"]["environment"] == "production"
    assert trace["status"] == "completed"  # the root span itself did not fail


def test_pydantic_ai_rollups_do_not_double_count(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "invoke_agent support_agent",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support_agent",
            "gen_ai.aggregated_usage.input_tokens": 300,
            "gen_ai.aggregated_usage.output_tokens": 60,
            "gen_ai.usage.input_tokens": 300,
            "gen_ai.usage.output_tokens": 60,
            "operation.cost": 0.003,
            "pydantic_ai.all_messages": messages(("user", "Refund my order"), ("assistant", "Done")),
            "final_result": "Done",
        },
    ) as agent:
        for i, (inp, out, cost) in enumerate([(100, 20, 0.001), (200, 40, 0.002)]):
            with t.start_as_current_span(
                f"chat gpt-4o #{i}",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": inp,
                    "gen_ai.usage.output_tokens": out,
                    "operation.cost": cost,
                },
            ):
                pass
        with t.start_as_current_span(
            "execute_tool refund",
            attributes={
                "gen_ai.tool.name": "refund",
                "gen_ai.tool.call.id": "c1",
            },
        ):
            pass
    tid = agent.get_span_context().trace_id
    exporter.export(capture.take())
    rows = fetch_spans(db_dsn, tid)
    a = rows["invoke_agent support_agent"]
    assert a["span_type"] == "agent"
    assert a["tokens"] == {} and a["cost"] == 0
    assert a["metadata"]["rollup_tokens"] == {"input": 300, "output": 60, "total": 360}
    assert a["metadata"]["attributes"]["gen_ai.aggregated_usage.input_tokens"] == 300
    assert rows["execute_tool refund"]["span_type"] == "tool"
    trace = fetch_trace(db_dsn, tid)
    assert trace["total_tokens"] == {"input": 300, "output": 60, "total": 360}  # the two calls, once
    assert trace["total_cost"] == Decimal("0.003000")
    assert trace["workflow_id"] == "support_agent"  # root gen_ai.agent.name
    assert trace["query"] == "Refund my order"


def test_azure_sdk_span_events(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "chat",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "az.ai.inference",
            "gen_ai.request.model": "Phi-3",
            "gen_ai.usage.input_tokens": 9,
            "gen_ai.usage.output_tokens": 3,
        },
    ) as span:
        span.add_event(
            "gen_ai.system.message",
            {
                "gen_ai.system": "az.ai.inference",
                "gen_ai.event.content": '{"role": "system", "content": "sys"}',
            },
        )
        span.add_event("gen_ai.user.message", {"gen_ai.event.content": '{"content": "hi azure"}'})
        span.add_event(
            "gen_ai.choice",
            {
                "gen_ai.event.content": '{"message": {"content": "hello"}, "finish_reason": "stop", "index": 0}'
            },
        )
    tid = span.get_span_context().trace_id
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["provider"] == "azure.ai.inference"
    assert row["inputs"]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi azure"},
    ]
    assert row["outputs"]["messages"][0]["message"] == {"content": "hello"}
    assert fetch_trace(db_dsn, tid)["query"] == "hi azure"


def test_every_convention_table_maps_into_the_vocabulary() -> None:
    from otel_pg_exporter.pipeline import conventions as cv

    produced = {v for _, table in cv.SPAN_KIND_SOURCES for v in table.values()} - {"*root"}
    produced |= {kind for _, kind in cv.GENAI_TYPE_HINTS + cv.INFRA_TYPE_HINTS}
    assert produced <= set(cv.SPAN_TYPES)
    assert all(len(t) <= 50 for t in cv.SPAN_TYPES)  # VARCHAR(50)


def test_span_type_vocabulary(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    cases = {
        "emb": (
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 8,
            },
            "embedding",
        ),
        "ret": (
            {
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.id": "d1",
                "retrieval.documents.0.document.score": 0.9,
            },
            "retrieval",
        ),
        "rr": ({"openinference.span.kind": "RERANKER"}, "rerank"),
        "guard": ({"openinference.span.kind": "GUARDRAIL"}, "guardrail"),
        "eval": ({"openinference.span.kind": "EVALUATOR"}, "evaluator"),
        "mem": ({"gen_ai.operation.name": "search_memory"}, "memory"),
        "create": ({"gen_ai.operation.name": "create_agent"}, "agent_create"),
        "mcp": ({"mcp.method.name": "tools/call"}, "mcp"),
        "GET /": ({"http.request.method": "GET"}, "http"),
        "SELECT": ({"db.system.name": "postgresql"}, "db"),
        "task": ({"traceloop.span.kind": "task"}, "task"),
        "plain": ({}, "other"),
        "custom op": ({"gen_ai.operation.name": "my_custom"}, "other"),
    }
    with t.start_as_current_span("root") as root:
        for name, (attrs, _) in cases.items():
            with t.start_as_current_span(name, attributes=attrs):
                pass
    tid = root.get_span_context().trace_id
    exporter.export(capture.take())
    rows = fetch_spans(db_dsn, tid)
    assert {n: rows[n]["span_type"] for n in cases} == {n: want for n, (_, want) in cases.items()}
    assert rows["root"]["span_type"] == "workflow"
    assert rows["ret"]["outputs"]["documents"] == [{"id": "d1", "score": 0.9}]
    # embeddings are model calls: their tokens count in the trace total
    assert fetch_trace(db_dsn, tid)["total_tokens"] == {"input": 8, "total": 8}


def test_errors_and_cancellation(db_dsn, exporter, capture) -> None:
    import asyncio

    t = capture.tracer
    try:
        with t.start_as_current_span("root") as root:
            try:
                with t.start_as_current_span(
                    "chat", attributes={"gen_ai.operation.name": "chat", "error.type": "RateLimitError"}
                ):
                    raise RuntimeError("429 Too Many Requests")
            except RuntimeError:
                pass
            # Span.__exit__ records BaseException (start_as_current_span only records Exception)
            with t.start_span("cancelled"):
                raise asyncio.CancelledError()
    except asyncio.CancelledError:
        pass
    tid = root.get_span_context().trace_id
    spans = by_name(capture.take())
    exporter.export(list(spans.values()))
    rows = fetch_spans(db_dsn, tid)
    chat = rows["chat"]
    assert chat["status"] == "failed"
    assert chat["error"] == "RuntimeError: 429 Too Many Requests"
    assert chat["error_type"] == "RateLimitError"
    assert "Traceback" in chat["error_stack"] and "raise RuntimeError" in chat["error_stack"]
    assert chat["api_limits"]["rate_limited"] is True
    assert rows["cancelled"]["status"] == "cancelled"
    assert rows["cancelled"]["error_type"] == "asyncio.exceptions.CancelledError"
    # The SDK records BaseException only on the span it was raised in: the root stays UNSET.
    assert fetch_trace(db_dsn, tid)["status"] == "completed"

    try:
        with t.start_as_current_span("failing root") as failing:
            raise ValueError("bad input")
    except ValueError:
        pass
    exporter.export(capture.take())
    trace = fetch_trace(db_dsn, failing.get_span_context().trace_id)
    assert trace["status"] == "failed" and trace["error"] == "ValueError: bad input"
    assert trace["completed_at"] is not None
