"""The trace explorer: a small Starlette app over ``TraceStore``, server-rendered with Jinja2.

A thin shell: every page is one ``TraceStore`` call and a template, as module-level endpoints that
read the store from ``app.state``; a ``TraceStoreError`` becomes an error page (or JSON under
``/api/``) in one exception handler; the token (``web.auth.TokenGate``) and the security headers are
middleware; the stylesheet is ``StaticFiles``. No JavaScript at all (filters, sorting and paging are
links and GET forms, folding is ``<details>``, running traces refresh with ``<meta
http-equiv="refresh">``), no asset from the network; the Content-Security-Policy allows only our
own origin. Every value from the database is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...query.export import DEFAULT_MAX_LINES, SpanSelection, export_lines
from ...query.report import MIN_HISTORY_DAYS_FOR_RANGE, month_line, svg_chart
from ...query.trace_store import JUDGED, SORTS, STATUSES, TraceDetail, TraceStore, TraceStoreError
from ..auth import TOKEN_COOKIE, TokenGate
from . import feedback, views
from .feedback import Feedback, csrf_token, set_csrf_cookie

__all__ = ["TOKEN_COOKIE", "Feedback", "create_app"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
#: How often an open page of a running trace reloads itself, and a list showing one, in seconds.
REFRESH_S = 3
LIST_REFRESH_S = 10
PAGE_SIZE = 50
#: Spans a trace page shows at most (more are paged: ``?offset=``); the page says how many are hidden.
TRACE_PAGE_SPANS = 500
#: Spans the JSON API returns per request by default, and at most (``?offset=&limit=``).
API_SPANS = 1000
API_SPANS_MAX = 5000
#: Ids of a span's ``child_spans`` column shown (page) or returned (API) at most; the count is given.
CHILD_IDS_SHOWN = 100


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(type(value).__name__)


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, default=_json_default, ensure_ascii=False)
    return Response(body, status_code=status, media_type="application/json")


class SecurityHeaders:
    """ASGI middleware: the security headers (CSP, nosniff, no referrer, no framing) on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, with_headers)


class NotFound(TraceStoreError):
    """No such trace or session (or not visible to this role)."""

    status = 404


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("otel_pg_exporter.web.explorer", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=views.money,
        duration=views.duration,
        tokens_line=views.tokens_line,
        pretty=views.pretty,
        abbrev=lambda value: f"{str(value)[:8]}…{str(value)[-4:]}",
        when=lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "",
    )
    return env


def _since(window: str) -> datetime | None:
    delta = views.WINDOWS.get(window, views.WINDOWS[views.DEFAULT_WINDOW])[1]
    if delta is None:
        return None
    return datetime.now(timezone.utc).replace(tzinfo=None) - delta


# -- helpers the endpoints share -------------------------------------------------------------------


def _store(request: Request) -> TraceStore:
    return request.app.state.store


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page. With --allow-annotations its forms get this browser's CSRF token (set as a cookie
    when new) and ``here`` (where to come back to after a judgement)."""
    state = request.app.state
    csrf, new = csrf_token(request) if state.feedback is not None else ("", False)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    html = state.templates.get_template(template).render(
        title=state.title, feedback_on=state.feedback is not None, csrf=csrf, here=here, **context
    )
    response = HTMLResponse(html, status_code=status)
    if new:
        set_csrf_cookie(response, csrf)
    return response


def _failure(request: Request, exc: Exception) -> Response:
    """The one exception handler: a bad request 400, a timeout 504, an unreachable database 503,
    nothing found 404; JSON under ``/api/``, an error page elsewhere."""
    status = exc.status if isinstance(exc, TraceStoreError) else 400
    if request.url.path.startswith("/api/"):
        return _json({"error": str(exc)}, status)
    return _page(request, "error.html", status=status, message=str(exc))


def _number(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name) or default)
    except ValueError:
        raise TraceStoreError(f"{name} must be a number") from None


def _decimal(request: Request, name: str) -> float | None:
    text = request.query_params.get(name) or ""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TraceStoreError(f"{name} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise TraceStoreError(f"{name} must be a finite number")
    return value


#: The list's "Judged" filter: value → (text, the ``list_traces`` arguments it means).
JUDGED_FILTERS: dict[str, tuple[str, dict[str, Any]]] = {"": ("any", {}), **JUDGED}


def _list_args(request: Request) -> dict[str, Any]:
    q = request.query_params
    judged = JUDGED_FILTERS.get(q.get("judged") or "", JUDGED_FILTERS[""])[1]
    return {
        "annotation": q.get("annotation") or None,
        "min_score": _decimal(request, "min_score"),
        "max_score": _decimal(request, "max_score"),
        **judged,
        "since": _since(q.get("window") or views.DEFAULT_WINDOW),
        "workflow": q.get("workflow") or None,
        "user_id": q.get("user") or None,
        "status": q.get("status") or None,
        "model": q.get("model") or None,
        "query": q.get("q") or None,
        "sort": q.get("sort") or "started_at",
        "cursor": q.get("cursor") or None,
        "limit": _number(request, "limit", PAGE_SIZE),
    }


def _load_trace(request: Request, default: int, most: int) -> TraceDetail:
    """The trace of the path, a window of its spans (``?offset=&limit=``, bounded)."""
    offset = max(0, _number(request, "offset", 0))
    limit = max(1, min(_number(request, "limit", default), most))
    detail = _store(request).get_trace(request.path_params["trace_id"], offset=offset, limit=limit)
    if detail is None:
        raise NotFound("no such trace (or not visible to you)")
    return detail


# -- pages ---------------------------------------------------------------------------------------------


def traces(request: Request) -> Response:
    result = _store(request).list_traces(**_list_args(request))
    keep = {k: v for k, v in request.query_params.items() if k != "cursor" and v}

    def link(cursor: str | None) -> str | None:
        return None if cursor is None else "/?" + urlencode({**keep, "cursor": cursor})

    def sort_link(sort: str) -> str:
        return "/?" + urlencode({**{k: v for k, v in keep.items() if k != "sort"}, "sort": sort})

    return _page(
        request,
        "traces.html",
        page=result,
        older=link(result.older),
        newer=link(result.newer),
        params=request.query_params,
        windows=views.WINDOWS,
        window=request.query_params.get("window") or views.DEFAULT_WINDOW,
        statuses=STATUSES,
        sorts=list(SORTS),
        sort_link=sort_link,
        judged_filters=JUDGED_FILTERS,
        review_link="/review?" + urlencode(keep),
        export_link="/export.jsonl?" + urlencode(keep),
        refresh=LIST_REFRESH_S if any(t.status == "running" for t in result.traces) else None,
    )


def trace(request: Request) -> Response:
    detail = _load_trace(request, TRACE_PAGE_SPANS, TRACE_PAGE_SPANS)
    spans = detail.spans
    keep = {k: v for k, v in request.query_params.items() if k not in ("offset", "span") and v}

    def span_page(offset: int) -> str:
        return "?" + urlencode({**keep, "offset": offset})

    shown_to = detail.offset + len(spans)
    selected = _selected(detail, request.query_params.get("span"))
    running = detail.trace["status"] == "running" or any(s.running for s in spans)
    return _page(
        request,
        "trace.html",
        no_usage=_no_usage(detail.trace),
        trace=detail.trace,
        spans=spans,
        bars=views.waterfall(detail),
        selected=selected,
        **views.selected_span(selected),
        refresh=REFRESH_S if running else None,
        total_spans=detail.total_spans,
        child_ids_shown=CHILD_IDS_SHOWN,
        hidden=detail.hidden,
        shown_from=detail.offset + 1 if spans else 0,
        shown_to=shown_to,
        earlier=span_page(max(0, detail.offset - TRACE_PAGE_SPANS)) if detail.offset > 0 else None,
        later=span_page(shown_to) if shown_to < detail.total_spans else None,
    )


def _no_usage(trace: dict[str, Any]) -> bool:
    """The trace's model calls reported no usage: nothing to price (not "$0")."""
    return not trace.get("total_cost") and not (trace.get("total_tokens") or {}).get("total")


def _selected(detail: TraceDetail, wanted: str | None) -> Any:
    """The span a page opens on: the one asked for, else the deepest failed one, else the root."""
    selected = detail.span(wanted) if wanted else None
    if selected is None and detail.spans:
        failed = [s for s in detail.spans if s.status in ("failed", "cancelled")]
        selected = max(failed, key=lambda s: s.depth) if failed else detail.spans[0]
    return selected


def review(request: Request) -> Response:
    """The traces of a list filter one after another, each with its forms; a judgement (or "next")
    goes on to the next one (the list's keyset cursor, one trace per page)."""
    args = {**_list_args(request), "limit": 1}
    page = _store(request).list_traces(**args)
    keep = {k: v for k, v in request.query_params.items() if k not in ("cursor", "span") and v}
    next_link = "/review?" + urlencode({**keep, "cursor": page.older}) if page.older else None
    if not page.traces:
        return _page(request, "review.html", detail=None, next_link=None, list_link="/?" + urlencode(keep))
    detail = _store(request).get_trace(page.traces[0].trace_id, offset=0, limit=TRACE_PAGE_SPANS)
    if detail is None:
        raise NotFound("no such trace (or not visible to you)")
    selected = _selected(detail, None)
    return _page(
        request,
        "review.html",
        detail=detail,
        trace=detail.trace,
        no_usage=_no_usage(detail.trace),
        selected=selected,
        **views.selected_span(selected),
        next_link=next_link,
        after=next_link or "/?" + urlencode(keep),
        list_link="/?" + urlencode(keep),
    )


def sessions(request: Request) -> Response:
    window = request.query_params.get("window") or "7d"
    found = _store(request).sessions(since=_since(window) or datetime(1970, 1, 1))
    return _page(request, "sessions.html", sessions=found, windows=views.WINDOWS, window=window)


def session(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    turns = _store(request).session(session_id)
    if not turns:
        raise NotFound("no such session (or not visible to you)")
    replay = [
        (
            turn,
            views.plain_value(turn.answer)
            or "\n".join(m.text for m in views.conversation(turn.answer, "assistant")),
        )
        for turn in turns
    ]
    return _page(request, "session.html", session_id=session_id, replay=replay)


def costs(request: Request) -> Response:
    days = _number(request, "days", 30)
    horizon = _number(request, "horizon", 14)
    report = _store(request).cost_report(days=max(1, min(days, 366)), horizon=max(1, min(horizon, 90)))
    return _page(
        request,
        "costs.html",
        report=report,
        chart=Markup(svg_chart(report)),
        month_line=month_line(report, "$"),
        short_history=report.get("history_days", MIN_HISTORY_DAYS_FOR_RANGE) < MIN_HISTORY_DAYS_FOR_RANGE,
    )


# -- JSON API ------------------------------------------------------------------------------------------


def api_traces(request: Request) -> Response:
    result = _store(request).list_traces(**_list_args(request))
    return _json({"traces": result.traces, "older": result.older, "newer": result.newer})


def api_trace(request: Request) -> Response:
    """The trace and a page of its spans, flat, depth first (each with ``depth`` and
    ``parent_span_id``; ``children`` are ids): bounded whatever the trace's size or depth."""
    detail = _load_trace(request, API_SPANS, API_SPANS_MAX)
    skip = ("children", "child_spans")
    spans = [
        {
            **{f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.name not in skip},
            "children": [str(c.span_id) for c in node.children],  # in this page
            "child_spans": node.child_spans[:CHILD_IDS_SHOWN],
            "child_spans_total": len(node.child_spans),
        }
        for node in detail.spans
    ]
    after = detail.offset + len(spans)
    return _json(
        {
            "trace": detail.trace,
            "spans": spans,
            "offset": detail.offset,
            "total_spans": detail.total_spans,
            "next_offset": after if after < detail.total_spans else None,
        }
    )


#: Lines one download holds at most.
EXPORT_MAX_LINES = 100_000


def export(request: Request) -> Response:
    """``/export.jsonl``: the list's filter as JSONL (``?spans=root|llm|judged|all``), a download."""
    args = {k: v for k, v in _list_args(request).items() if k not in ("cursor", "limit")}
    spans = request.query_params.get("spans") or SpanSelection.ROOT.value
    if spans not in {s.value for s in SpanSelection}:
        raise TraceStoreError("spans must be one of " + ", ".join(s.value for s in SpanSelection))
    most = max(1, min(_number(request, "max_lines", DEFAULT_MAX_LINES), EXPORT_MAX_LINES))
    _store(request).list_traces(**args, limit=1)  # a bad filter is a 400 now, not a cut-off download
    return StreamingResponse(
        export_lines(_store(request), spans=spans, max_lines=most, **args),
        media_type="application/x-ndjson",
        headers={"content-disposition": 'attachment; filename="traces.jsonl"'},
    )


def favicon(request: Request) -> Response:
    return Response(status_code=204)


def healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


ROUTES = [
    Route("/", traces),
    Route("/traces/{trace_id}", trace),
    Route("/sessions", sessions),
    Route("/sessions/{session_id:path}", session),
    Route("/costs", costs),
    Route("/review", review),
    Route("/export.jsonl", export),
    Route("/annotate", feedback.annotate, methods=["POST"]),
    Route("/api/traces", api_traces),
    Route("/api/traces/{trace_id}", api_trace),
    Mount("/static", StaticFiles(packages=[("otel_pg_exporter.web.explorer", "static")]), name="static"),
    Route("/favicon.ico", favicon),
    Route("/healthz", healthz),
]


def create_app(
    store: TraceStore,
    *,
    token: str | None = None,
    title: str = "otel-pg-exporter",
    annotations: Feedback | None = None,
) -> Starlette:
    """The explorer over ``store``. ``token``: required on every request when given.
    ``annotations``: the feedback forms and ``POST /annotate`` (read-only without)."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SecurityHeaders), Middleware(TokenGate, token=token)],
        exception_handlers={TraceStoreError: _failure, ValueError: _failure},
    )
    app.state.store = store
    app.state.title = title
    app.state.feedback = annotations
    app.state.templates = _environment()
    return app
