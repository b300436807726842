"""Every GenAI convention this exporter understands, as data.

The lists follow the cross-ecosystem reference (``genai-attributes.md``): for each column, the span
attributes the ecosystems emit, in precedence order (first non-empty wins). Supporting a new
convention means adding names here, not a branch in ``mapping``.

Tags in comments: OTel = OpenTelemetry GenAI semconv, OI = OpenInference, TL = OpenLLMetry/Traceloop,
OL = OpenLIT, LF = Langfuse, PAI/LFire = Pydantic AI / Logfire, AZ = Azure SDK.

Over 500 lines on purpose: it is one table (no logic), and keeping every convention's names side by
side is what makes the precedence between them reviewable.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# span_type: the normalized vocabulary and how each convention's kind maps onto it
# --------------------------------------------------------------------------------------------------

#: The final vocabulary of ``spans.span_type`` (all fit VARCHAR(50)).
SPAN_TYPES: tuple[str, ...] = (
    "llm",
    "embedding",
    "retrieval",
    "rerank",
    "tool",
    "agent",
    "agent_create",
    "workflow",
    "task",
    "guardrail",
    "evaluator",
    "prompt",
    "memory",
    "decision",
    "mcp",
    "http",
    "db",
    "other",
)
#: Model-call span types: the only ones whose tokens and cost add up into trace totals.
MODEL_CALL_TYPES: frozenset[str] = frozenset({"llm", "embedding"})
#: Span types whose usage repeats their children's (agent runs, workflows): kept in metadata only.
ROLLUP_TYPES: frozenset[str] = frozenset({"agent", "agent_create", "workflow", "task"})

#: (attribute, {value: span_type}) in precedence order. Values are matched case-insensitively.
#: ``"*root"`` means "workflow if the span is a trace root, else task" (OI / LF chains).
SPAN_KIND_SOURCES: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "langfuse.observation.type",
        {  # LF explicit
            "generation": "llm",
            "embedding": "embedding",
            "retriever": "retrieval",
            "tool": "tool",
            "agent": "agent",
            "chain": "*root",
            "guardrail": "guardrail",
            "evaluator": "evaluator",
            "span": "other",
            "event": "other",
        },
    ),
    (
        "openinference.span.kind",
        {  # OI
            "llm": "llm",
            "embedding": "embedding",
            "retriever": "retrieval",
            "reranker": "rerank",
            "tool": "tool",
            "agent": "agent",
            "chain": "*root",
            "guardrail": "guardrail",
            "evaluator": "evaluator",
            "prompt": "prompt",
            "decision": "decision",
            "unknown": "other",
        },
    ),
    (
        "traceloop.span.kind",
        {  # TL SDK decorators; checked before gen_ai.operation.name, see below
            "workflow": "workflow",
            "task": "task",
            "agent": "agent",
            "tool": "tool",
            "unknown": "other",
        },
    ),
    (
        "gen_ai.operation.name",
        {  # OTel (+ custom values seen in TL)
            "chat": "llm",
            "text_completion": "llm",
            "generate_content": "llm",
            "completion": "llm",
            "generate": "llm",
            "embeddings": "embedding",
            "retrieval": "retrieval",
            "execute_tool": "tool",
            "invoke_agent": "agent",
            "plan": "agent",
            "create_agent": "agent_create",
            "invoke_workflow": "workflow",
            "execute_task": "task",
            "search_memory": "memory",
            "create_memory": "memory",
            "update_memory": "memory",
            "upsert_memory": "memory",
            "delete_memory": "memory",
            "create_memory_store": "memory",
            "delete_memory_store": "memory",
            "llm_request": "llm",
            "vector_db_retrieve": "retrieval",
            "guardrail.run": "guardrail",
            "guard": "guardrail",
        },
    ),
    (
        "llm.request.type",
        {  # TL legacy
            "chat": "llm",
            "completion": "llm",
            "embedding": "embedding",
            "rerank": "rerank",
        },
    ),
)
# Note: TL's LangChain handler puts gen_ai.operation.name=invoke_agent on every workflow span, so
# traceloop.span.kind (workflow/task) is consulted before gen_ai.operation.name (reference §4).

#: Heuristics when no kind attribute matched: (attribute name, or prefix ending in ".", span_type).
#: GenAI hints come first; then a trace root is a "workflow"; then the infrastructure hints.
GENAI_TYPE_HINTS: tuple[tuple[str, str], ...] = (
    ("gen_ai.tool.name", "tool"),
    ("gen_ai.tool.call.id", "tool"),
    ("tool.name", "tool"),
    ("embedding.model_name", "embedding"),
    ("reranker.", "rerank"),
    ("retrieval.documents.", "retrieval"),
    ("gen_ai.data_source.id", "retrieval"),
    ("gen_ai.memory.", "memory"),
    ("decision.", "decision"),
    ("mcp.method.name", "mcp"),
    ("gen_ai.request.model", "llm"),
    ("gen_ai.response.model", "llm"),
    ("llm.model_name", "llm"),
    ("gen_ai.agent.name", "agent"),
)
INFRA_TYPE_HINTS: tuple[tuple[str, str], ...] = (
    ("db.system.name", "db"),
    ("db.system", "db"),
    ("http.request.method", "http"),
    ("http.method", "http"),
)

# --------------------------------------------------------------------------------------------------
# model and provider
# --------------------------------------------------------------------------------------------------

#: spans.model: the response model first (what was billed), then the requested one.
MODEL_ATTRS: tuple[str, ...] = (
    "langfuse.observation.model.name",  # LF
    "gen_ai.response.model",  # OTel
    "gen_ai.request.model",  # OTel
    "llm.response.model_name",  # OI
    "llm.model_name",  # OI
    "llm.request.model_name",  # OI
    "embedding.model_name",  # OI
    "reranker.model_name",  # OI
    "decision.model_name",  # OI
    "model",  # misc
)
REQUEST_MODEL_ATTRS: tuple[str, ...] = ("gen_ai.request.model", "llm.request.model_name")
#: JSON attributes whose ``model`` key is a last-resort model name (OI invocation parameters).
MODEL_IN_JSON_ATTRS: tuple[str, ...] = ("llm.invocation_parameters", "embedding.invocation_parameters")

#: spans.provider, in precedence order. gen_ai.provider.name is trusted as the model vendor only on
#: model-call spans (TL LangChain sets it to "langchain" on workflow spans; reference §0.7).
PROVIDER_ATTRS: tuple[str, ...] = (
    "gen_ai.provider.name",  # OTel >= 1.37
    "llm.provider",  # OI hosting provider, combined with llm.system via OI_PROVIDER_COMBOS
    "gen_ai.system",  # OTel 1.26-1.36, TL legacy, AZ
    "llm.system",  # OI: API family
    "decision.provider",  # OI
    "decision.system",  # OI
    "gen_ai.request.provider",  # OL
)
#: OpenInference hosting provider (llm.provider) + API family (llm.system) → canonical provider,
#: as OpenInference's own OTel conversion does it. "*" matches any family.
OI_PROVIDER_COMBOS: dict[tuple[str, str], str] = {
    ("azure", "openai"): "azure.ai.openai",
    ("azure", "*"): "azure.ai.inference",
    ("aws", "*"): "aws.bedrock",
    ("google", "vertexai"): "gcp.vertex_ai",
    ("google", "*"): "gcp.gen_ai",
}
#: Provider values that name a framework, not a model vendor.
NON_VENDOR_PROVIDERS: frozenset[str] = frozenset({"langchain", "langgraph", "llamaindex", "crewai"})

#: Spelling → canonical provider (OTel gen_ai.provider.name well-known values).
PROVIDER_ALIASES: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "az.ai.openai": "azure.ai.openai",
    "azure.ai.openai": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure.ai.inference": "azure.ai.inference",
    "azure": "azure.ai.openai",
    "aws": "aws.bedrock",
    "aws.bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "gcp.gen_ai": "gcp.gen_ai",
    "gcp.gemini": "gcp.gemini",
    "gemini": "gcp.gemini",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "google": "gcp.gen_ai",
    "mistral_ai": "mistral_ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "x_ai": "x_ai",
    "xai": "x_ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "perplexity": "perplexity",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "moonshot_ai": "moonshot_ai",
    "ollama": "ollama",
    "togetherai": "together_ai",
    "together": "together_ai",
    "huggingface": "huggingface",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "replicate": "replicate",
    "alephalpha": "aleph_alpha",
}

# --------------------------------------------------------------------------------------------------
# tokens (reference §2.7): cache_read/cache_write are subsets of input, reasoning of output
# --------------------------------------------------------------------------------------------------

TOKEN_ATTRS: dict[str, tuple[str, ...]] = {
    "input": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "decision.token_count.input",
    ),
    "output": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "decision.token_count.output",
    ),
    "total": (
        "gen_ai.usage.total_tokens",
        "llm.usage.total_tokens",
        "llm.token_count.total",
        "gen_ai.client.token.usage",
    ),
    "cache_read": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.prompt_tokens_details.cached_tokens",
        "gen_ai.usage.details.cache_read_tokens",
        "llm.token_count.prompt_details.cache_input",
    ),
    "cache_write": (
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.prompt_tokens_details.cache_creation_tokens",
        "gen_ai.usage.details.cache_write_tokens",
    ),
    "reasoning": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "gen_ai.usage.completion_tokens_details.reasoning_tokens",
        "gen_ai.usage.details.reasoning_tokens",
    ),
    "audio_input": (
        "gen_ai.usage.audio.input_tokens",
        "llm.token_count.prompt_details.audio",
        "gen_ai.usage.details.input_audio_tokens",
    ),
    "audio_output": (
        "gen_ai.usage.audio.output_tokens",
        "llm.token_count.completion_details.audio",
        "gen_ai.usage.completion_tokens_details.audio_tokens",
        "gen_ai.usage.details.output_audio_tokens",
    ),
    "text_input": ("gen_ai.usage.text.input_tokens",),
    "image_input": ("gen_ai.usage.image.input_tokens",),
    "video_input": ("gen_ai.usage.video.input_tokens",),
    "text_output": ("gen_ai.usage.text.output_tokens",),
}
#: Langfuse's usage JSON keys → our keys (Langfuse subtracts cache from input; we add it back).
LANGFUSE_USAGE_ATTR = "langfuse.observation.usage_details"

# --------------------------------------------------------------------------------------------------
# cost a span reports itself (USD); computing from prices is pricing's job
# --------------------------------------------------------------------------------------------------

LANGFUSE_COST_ATTR = "langfuse.observation.cost_details"  # JSON {"total": x, ...}
COST_ATTRS: tuple[str, ...] = ("gen_ai.usage.cost", "llm.cost.total", "operation.cost")
PROPOSED_COST_ATTR = "gen_ai.usage.cost.amount"  # OTel proposal, with .currency
PROPOSED_COST_CURRENCY_ATTR = "gen_ai.usage.cost.currency"

# --------------------------------------------------------------------------------------------------
# content: inputs / outputs
# --------------------------------------------------------------------------------------------------

#: JSON message lists (OTel parts schema and relatives), in precedence order.
INPUT_JSON_ATTRS: tuple[str, ...] = (
    "langfuse.observation.input",
    "langfuse.trace.input",
    "gen_ai.input.messages",
)
OUTPUT_JSON_ATTRS: tuple[str, ...] = (
    "langfuse.observation.output",
    "langfuse.trace.output",
    "gen_ai.output.messages",
)
SYSTEM_INSTRUCTIONS_ATTR = "gen_ai.system_instructions"
#: Flattened, indexed message forms (prefix of ``<prefix><i>.<field>`` keys), in precedence order.
INPUT_FLAT_PREFIXES: tuple[str, ...] = (
    "llm.input_messages.",  # OI chat
    "llm.prompts.",  # OI completions
    "gen_ai.prompt.",  # TL legacy
)
OUTPUT_FLAT_PREFIXES: tuple[str, ...] = (
    "llm.output_messages.",
    "llm.choices.",
    "gen_ai.completion.",
)
#: Single-value content, after the message forms: (attribute, mime attribute or "").
INPUT_VALUE_ATTRS: tuple[tuple[str, str], ...] = (
    ("input.value", "input.mime_type"),  # OI
    ("traceloop.entity.input", ""),  # TL decorators
    ("gen_ai.tool.call.arguments", ""),  # OTel tool spans
    ("tool_arguments", ""),  # PAI v2
    ("pydantic_ai.all_messages", ""),  # PAI agent run
    ("request_data", ""),  # LFire
    ("gen_ai.prompt", ""),  # OL plain text / OTel 1.26
    ("gen_ai.retrieval.query.text", ""),
    ("gen_ai.memory.query.text", ""),
    ("reranker.query", ""),
)
OUTPUT_VALUE_ATTRS: tuple[tuple[str, str], ...] = (
    ("output.value", "output.mime_type"),
    ("traceloop.entity.output", ""),
    ("gen_ai.tool.call.result", ""),
    ("tool_response", ""),
    ("final_result", ""),
    ("response_data", ""),
    ("gen_ai.completion", ""),
    ("gen_ai.retrieval.documents", ""),
)
#: Flattened document lists (retrieval outputs).
OUTPUT_DOCUMENT_PREFIXES: tuple[str, ...] = (
    "retrieval.documents.",
    "reranker.output_documents.",
)
TOOL_DEFINITION_ATTRS: tuple[str, ...] = ("gen_ai.tool.definitions",)
TOOL_DEFINITION_PREFIXES: tuple[str, ...] = ("llm.tools.",)

#: Span events carrying content: event name → (side, attribute holding the content).
CONTENT_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gen_ai.content.prompt": ("input", ("gen_ai.prompt", "gen_ai.input.messages")),  # OTel 1.26, OL
    "gen_ai.content.completion": ("output", ("gen_ai.completion", "gen_ai.output.messages")),
    "gen_ai.system.message": ("input", ("gen_ai.event.content",)),  # AZ span events
    "gen_ai.user.message": ("input", ("gen_ai.event.content",)),
    "gen_ai.assistant.message": ("input", ("gen_ai.event.content",)),
    "gen_ai.tool.message": ("input", ("gen_ai.event.content",)),
    "gen_ai.choice": ("output", ("gen_ai.event.content",)),
}
OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"

# --------------------------------------------------------------------------------------------------
# log records (PostgresLogExporter): content, evaluations and exceptions emitted through the Logs API
# --------------------------------------------------------------------------------------------------

#: Where a log record's event name is when ``LogRecord.event_name`` is unset (older emitters).
LOG_EVENT_NAME_ATTRS: tuple[str, ...] = ("event.name",)
#: One message per record, in the body (OTel 1.28-1.36 contrib default mode, TL use_attributes=False):
#: event name → (side, role added when the body has none).
LOG_MESSAGE_EVENTS: dict[str, tuple[str, str | None]] = {
    "gen_ai.system.message": ("input", "system"),
    "gen_ai.user.message": ("input", "user"),
    "gen_ai.assistant.message": ("input", "assistant"),
    "gen_ai.tool.message": ("input", "tool"),
    "gen_ai.choice": ("output", None),
}
#: Message lists in the record's attributes (or body): event name → ((side, attribute), ...).
#: ``system`` lands in ``inputs.system``, like ``gen_ai.system_instructions`` on a span.
LOG_LIST_EVENTS: dict[str, tuple[tuple[str, str], ...]] = {
    OPERATION_DETAILS_EVENT: (
        ("input", "gen_ai.input.messages"),
        ("output", "gen_ai.output.messages"),
        ("system", "gen_ai.system_instructions"),
    ),
    "gen_ai.content.prompt": (("input", "gen_ai.prompt"), ("input", "gen_ai.input.messages")),
    "gen_ai.content.completion": (("output", "gen_ai.completion"), ("output", "gen_ai.output.messages")),
}
#: A record with any of these attributes is an exception (semconv exceptions-in-logs; the event name
#: varies: ``exception``, ``gen_ai.client.operation.exception``, a logging ``logger.exception``...).
LOG_EXCEPTION_ATTRS: tuple[str, ...] = ("exception.type", "exception.stacktrace")
#: Rank of a query taken from a logged user message: after every span-provided source (0-4).
LOG_QUERY_RANK = 5

# --------------------------------------------------------------------------------------------------
# status and errors
# --------------------------------------------------------------------------------------------------

#: Exception types that mean "cancelled", not "failed".
CANCELLATION_TYPES: frozenset[str] = frozenset(
    {
        "asyncio.CancelledError",
        "asyncio.exceptions.CancelledError",
        "CancelledError",
        "concurrent.futures._base.CancelledError",
        "concurrent.futures.CancelledError",
        "KeyboardInterrupt",
        "GeneratorExit",
        "trio.Cancelled",
        "anyio.get_cancelled_exc_class",
    }
)
ERROR_MESSAGE_ATTRS: tuple[str, ...] = (
    "langfuse.observation.status_message",
    "gen_ai.framework.error.message",
)
#: spans.error_type, normalized to the qualified class name by ``derive.error_type_name``. Spellings seen:
#: OTel ``error.type`` = ``openai.RateLimitError`` (module + qualname, as the demo's agent sets it);
#: openai-v2 instrumentation ``error.type`` = ``<class 'openai.RateLimitError'>``; the SDK's
#: ``record_exception`` event ``exception.type`` = ``RateLimitError`` (qualname only; the traceback's
#: last line names the module); non-class values (``timeout``, ``429``) are kept as sent.
ERROR_TYPE_ATTRS: tuple[str, ...] = (
    "error.type",
    "gen_ai.framework.error.type",
    "gen_ai.framework.error.class",
)
LANGFUSE_LEVEL_ATTR = "langfuse.observation.level"  # ERROR marks a failed observation
TASK_STATUS_ATTR = "gen_ai.task.status"  # TL custom: success / failure

# --------------------------------------------------------------------------------------------------
# API limits, retries, timeout, evaluation
# --------------------------------------------------------------------------------------------------

RETRY_COUNT_ATTRS: tuple[str, ...] = ("http.request.resend_count",)
RATE_LIMIT_HEADER_PREFIXES: tuple[str, ...] = (
    "http.response.header.x-ratelimit-",
    "http.response.header.anthropic-ratelimit-",
    "http.response.header.retry-after",
)
API_LIMIT_ATTRS: tuple[str, ...] = (
    "openai.request.service_tier",
    "openai.response.service_tier",
    "gen_ai.openai.request.service_tier",
    "gen_ai.openai.response.service_tier",
    "gen_ai.request.max_tokens",
    "gen_ai.request.choice.count",
)
RATE_LIMIT_ERROR_TYPES: frozenset[str] = frozenset({"429", "rate_limited", "ratelimiterror"})
TIMEOUT_JSON_ATTRS: tuple[str, ...] = ("llm.invocation_parameters", "langfuse.observation.model.parameters")
TIMEOUT_ATTRS: tuple[str, ...] = ("gen_ai.request.timeout", "timeout")

EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_EVENT_FIELDS: dict[str, str] = {
    "gen_ai.evaluation.name": "name",
    "gen_ai.evaluation.score.value": "score",
    "gen_ai.evaluation.score.label": "label",
    "gen_ai.evaluation.explanation": "explanation",
    "gen_ai.response.id": "response_id",
    "error.type": "error_type",
    # ours, on the events annotate_current_span() adds (the OTel event has no field for them)
    "otel_pg.annotation.annotator_kind": "annotator_kind",
    "otel_pg.annotation.annotator": "annotator",
    "otel_pg.annotation.identifier": "identifier",
    "otel_pg.annotation.target": "scope",
    "otel_pg.annotation.correction": "correction",
    "otel_pg.annotation.metadata": "metadata",
}
#: OpenInference's annotations on spans (``<prefix><i>.evaluation.name`` / ``<prefix><i>.annotation.name``
#: and ``score``, ``label``, ``explanation``, ``annotator_kind``, ``identifier``, ``metadata``): prefix
#: → what the judgement is about (the span itself, its trace, its session).
ANNOTATION_FLAT_PREFIXES: dict[str, str] = {
    "evaluations.": "span",
    "annotations.": "span",
    "trace.evaluations.": "trace",
    "trace.annotations.": "trace",
    "session.evaluations.": "session",
    "session.annotations.": "session",
}
EVALUATION_FLAT_PREFIXES: tuple[str, ...] = tuple(ANNOTATION_FLAT_PREFIXES)
#: Where each ecosystem puts a judgement's fields inside one item of ``evaluation.results``: OI nests
#: them under ``evaluation`` or ``annotation``; the OTel event's fields are the item itself.
ANNOTATION_ITEM_KEYS: tuple[str, ...] = ("evaluation", "annotation")
#: The annotator kind of a judgement that names none: OTel's evaluation event comes from an
#: evaluator (an LLM judge, as a rule); OpenInference's annotations name theirs, else they are code.
ANNOTATOR_KIND_DEFAULTS: dict[str, str] = {"event": "llm", "openinference": "code", "logs": "llm"}
#: Every flattened family, for a one-pass filter before reassembly.
FLAT_PREFIXES: tuple[str, ...] = (
    *INPUT_FLAT_PREFIXES,
    *OUTPUT_FLAT_PREFIXES,
    *OUTPUT_DOCUMENT_PREFIXES,
    *TOOL_DEFINITION_PREFIXES,
    *EVALUATION_FLAT_PREFIXES,
)
#: Attributes that carry message content (dropped from metadata when content capture is off).
CONTENT_ATTRIBUTES: frozenset[str] = frozenset(
    {
        *INPUT_JSON_ATTRS,
        *OUTPUT_JSON_ATTRS,
        SYSTEM_INSTRUCTIONS_ATTR,
        *TOOL_DEFINITION_ATTRS,
        *(name for name, _ in INPUT_VALUE_ATTRS),
        *(name for name, _ in OUTPUT_VALUE_ATTRS),
        "llm.invocation_parameters",
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)
EVALUATION_SCALAR_PREFIXES: tuple[str, ...] = ("gen_ai.eval.", "gen_ai.agent.evaluation")

# --------------------------------------------------------------------------------------------------
# traces
# --------------------------------------------------------------------------------------------------

#: traces.workflow_id candidates: (attribute, only-on-root?). Then root span name, then service.name.
WORKFLOW_ATTRS: tuple[tuple[str, bool], ...] = (
    ("langfuse.trace.name", False),
    ("gen_ai.workflow.name", False),
    ("traceloop.workflow.name", False),
    ("gen_ai.agent.name", True),
)
#: traces.execution_id: explicit ids users may set (documented); else the trace id in hex.
EXECUTION_ID_ATTRS: tuple[str, ...] = ("otel_pg.execution_id", "execution.id", "workflow.execution.id")
#: traces.user_id candidates, in precedence order (reference §3).
USER_ATTRS: tuple[str, ...] = (
    "langfuse.user.id",
    "user.id",
    "enduser.id",
    "enduser.pseudo.id",
    "traceloop.association.properties.user_id",
    "langfuse.observation.metadata.langfuse_user_id",
    "langfuse.trace.metadata.langfuse_user_id",
    "ai.telemetry.metadata.userId",
    "gen_ai.user",
    "llm.user",
    "gen_ai.request.user",
)
SESSION_ATTRS: tuple[str, ...] = (
    "langfuse.session.id",
    "session.id",
    "gen_ai.conversation.id",
    "traceloop.association.properties.session_id",
    "ai.telemetry.metadata.sessionId",
    "mcp.session.id",
)
TAG_ATTRS: tuple[str, ...] = ("tag.tags", "langfuse.trace.tags")
ENVIRONMENT_ATTRS: tuple[str, ...] = (
    "langfuse.environment",
    "deployment.environment.name",
    "deployment.environment",
)
RELEASE_ATTRS: tuple[str, ...] = ("langfuse.release", "langfuse.version", "service.version")
#: Resource attributes every span row keeps in ``metadata.resource`` (which service wrote it); the
#: whole resource is kept once per trace and service, in ``traces.metadata.resources``.
SPAN_RESOURCE_KEYS: tuple[str, ...] = ("service.name", "service.namespace", "service.version")
#: traces.metadata keys a span (or, failing that, its resource) names: (key, precedence list).
TRACE_METADATA_ATTRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("session_id", SESSION_ATTRS),
    ("environment", ENVIRONMENT_ATTRS),
    ("release", RELEASE_ATTRS),
)

# --------------------------------------------------------------------------------------------------
# coding agents that export log events and no spans (Claude Code, OpenAI Codex CLI, Gemini CLI), as
# their telemetry documentation names them; read by pipeline.coding_agents, which turns their records
# into the GenAI spans these tables describe (a trace per prompt, a model call per request, a tool
# call per tool result), so pricing, privacy and the writer treat them like any other span.
# Spelling traps: Claude Code puts the full name in the body and the short one in event.name
# ("api_request"), sends many numbers as strings, and counts input without the cache; Codex and
# Gemini CLI put the full name in event.name; Codex's usage is on codex.sse_event of kind
# response.completed only, and it has no prompt id; Gemini's thoughts are output billed apart from
# output_token_count, and its tool_token_count is extra prompt input.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodingAgent:
    """Where one coding agent puts each field in its log events. ``tokens``: attribute → our
    token kind as the agent counts it; ``input_adds`` / ``output_adds``: kinds the agent's input
    (output) count leaves out and ours includes (Claude Code's input excludes the cache, as the
    Anthropic API does; Gemini's output excludes the thoughts it bills as output)."""

    workflow: str
    provider: str
    session: tuple[str, ...]
    prompt: tuple[str, ...]
    sequence: tuple[str, ...]
    model: tuple[str, ...]
    tokens: dict[str, str]
    input_adds: tuple[str, ...] = ()
    output_adds: tuple[str, ...] = ()
    cost: tuple[str, ...] = ()
    duration_ms: tuple[str, ...] = ("duration_ms",)
    user: tuple[str, ...] = ("user.email", "user.account_uuid", "user.account_id", "user.id")
    organization: tuple[str, ...] = ("organization.id",)
    tool_name: tuple[str, ...] = ("tool_name",)
    tool_call_id: tuple[str, ...] = ("tool_use_id", "call_id")
    success: tuple[str, ...] = ("success",)
    error: tuple[str, ...] = ("error", "error.message")
    error_type: tuple[str, ...] = ("error_type",)
    status_code: tuple[str, ...] = ("status_code", "http.response.status_code")
    #: content, kept only when the agent was told to export it (and then scrubbed like any)
    prompt_text: tuple[str, ...] = ("prompt",)
    response_text: tuple[str, ...] = ()
    tool_input: tuple[str, ...] = ()
    tool_output: tuple[str, ...] = ()
    #: an event that is a model call only when this attribute has this value (Codex's SSE events)
    call_when: tuple[str, str] | None = None


CODING_AGENTS: dict[str, CodingAgent] = {
    "claude_code": CodingAgent(
        workflow="claude-code",
        provider="anthropic",
        session=("session.id",),
        prompt=("prompt.id",),
        sequence=("event.sequence",),
        model=("model",),
        tokens={
            "input_tokens": "input",
            "output_tokens": "output",
            "cache_read_tokens": "cache_read",
            "cache_creation_tokens": "cache_write",
        },
        input_adds=("cache_read", "cache_write"),
        cost=("cost_usd",),
        tool_input=("tool_parameters", "tool_input"),
    ),
    "codex": CodingAgent(
        workflow="codex",
        provider="openai",
        session=("conversation.id",),
        prompt=(),  # none: a trace per conversation
        sequence=(),
        model=("model", "slug"),
        tokens={
            "input_token_count": "input",
            "output_token_count": "output",
            "cached_token_count": "cache_read",
            "cache_write_token_count": "cache_write",
            "reasoning_token_count": "reasoning",
        },
        tool_input=("arguments",),
        tool_output=("output",),
        call_when=("event.kind", "response.completed"),
    ),
    "gemini_cli": CodingAgent(
        workflow="gemini-cli",
        provider="gcp.gemini",
        session=("session.id",),
        prompt=("prompt_id",),
        sequence=(),
        model=("model",),
        tokens={
            "input_token_count": "input",
            "output_token_count": "output",
            "cached_content_token_count": "cache_read",
            "thoughts_token_count": "reasoning",
            "tool_token_count": "tool_use_prompt",
        },
        input_adds=("tool_use_prompt",),
        output_adds=("reasoning",),
        tool_name=("function_name",),
        tool_call_id=("call_id",),
        response_text=("response_text",),
        tool_input=("function_args",),
    ),
}

#: Their events: full event name → (agent, what it is). A Claude Code record names itself in its
#: body (``claude_code.api_request``) and its ``event.name`` attribute without the prefix
#: (``api_request``); Codex and Gemini CLI put the full name in ``event.name``.
CODING_AGENT_EVENTS: dict[str, tuple[str, str]] = {
    "claude_code.user_prompt": ("claude_code", "prompt"),
    "claude_code.api_request": ("claude_code", "model_call"),
    "claude_code.api_error": ("claude_code", "model_error"),
    "claude_code.tool_result": ("claude_code", "tool"),
    "claude_code.tool_decision": ("claude_code", "decision"),
    "codex.conversation_starts": ("codex", "prompt"),
    "codex.user_prompt": ("codex", "turn"),
    "codex.sse_event": ("codex", "model_call"),
    "codex.api_request": ("codex", "request"),
    "codex.tool_result": ("codex", "tool"),
    "codex.tool_decision": ("codex", "decision"),
    "gemini_cli.user_prompt": ("gemini_cli", "prompt"),
    "gemini_cli.api_response": ("gemini_cli", "model_call"),
    "gemini_cli.api_error": ("gemini_cli", "model_error"),
    "gemini_cli.tool_call": ("gemini_cli", "tool"),
}
#: Attributes of theirs never kept as they are (content: the columns take it, by the content rules).
CODING_AGENT_CONTENT_ATTRS: frozenset[str] = frozenset(
    name
    for agent in CODING_AGENTS.values()
    for name in (*agent.prompt_text, *agent.response_text, *agent.tool_input, *agent.tool_output)
)
