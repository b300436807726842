"""The trace explorer: a small Starlette app over ``TraceStore``, server-rendered with Jinja2.

A thin shell: every page is one ``TraceStore`` call and a template. No JavaScript at all (filters,
sorting and paging are links and GET forms, folding is ``<details>``, running traces refresh with
``<meta http-equiv="refresh">``), no asset from the network; the Content-Security-Policy allows
only our own origin. Every value from the database is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...query.report import MIN_HISTORY_DAYS_FOR_RANGE, month_line, svg_chart
from ...query.trace_store import SORTS, STATUSES, TraceDetail, TraceStore, TraceStoreError
from . import views

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
TOKEN_COOKIE = "otel_pg_ui_token"
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


class _Guard:
    """Security headers on every response; with a token, nothing without it (header, cookie, or
    ``?token=`` once, which sets the cookie). The token is compared in constant time and never
    echoed."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + list(SECURITY_HEADERS)
            await send(message)

        if self.token is not None:
            request = Request(scope)
            given = request.cookies.get(TOKEN_COOKIE) or ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:]
            from_query = request.query_params.get("token")
            if from_query is not None and hmac.compare_digest(from_query.encode(), self.token.encode()):
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response: Response = RedirectResponse(target, status_code=303)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                await response(scope, receive, with_headers)
                return
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                await Response("token required", status_code=401, media_type="text/plain")(
                    scope, receive, with_headers
                )
                return
        await self.app(scope, receive, with_headers)


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


def create_app(store: TraceStore, *, token: str | None = None, title: str = "otel-pg-exporter") -> ASGIApp:
    """The explorer over ``store``. ``token``: required on every request when given."""
    env = _environment()
    css = resources.files("otel_pg_exporter.web.explorer").joinpath("static/app.css").read_text(encoding="utf-8")

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(title=title, **context)
        return HTMLResponse(html, status_code=status)

    def failure(request: Request, exc: Exception, status: int | None = None) -> Response:
        message = str(exc)
        if status is None:  # a timeout is 504, an unreachable database 503, a bad request 400
            status = exc.status if isinstance(exc, TraceStoreError) else 400
        if request.url.path.startswith("/api/"):
            return _json({"error": message}, status)
        return page("error.html", status=status, message=message)

    def list_args(request: Request) -> dict[str, Any]:
        q = request.query_params
        window = q.get("window") or views.DEFAULT_WINDOW
        try:
            limit = int(q.get("limit") or PAGE_SIZE)
        except ValueError:
            raise TraceStoreError("limit must be a number") from None
        return {
            "since": _since(window),
            "workflow": q.get("workflow") or None,
            "user_id": q.get("user") or None,
            "status": q.get("status") or None,
            "model": q.get("model") or None,
            "query": q.get("q") or None,
            "sort": q.get("sort") or "started_at",
            "cursor": q.get("cursor") or None,
            "limit": limit,
        }

    def traces(request: Request) -> Response:
        try:
            result = store.list_traces(**list_args(request))
        except TraceStoreError as exc:
            return failure(request, exc)
        keep = {k: v for k, v in request.query_params.items() if k != "cursor" and v}

        def link(cursor: str | None) -> str | None:
            return None if cursor is None else "/?" + urlencode({**keep, "cursor": cursor})

        def sort_link(sort: str) -> str:
            return "/?" + urlencode({**{k: v for k, v in keep.items() if k != "sort"}, "sort": sort})

        return page(
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
            refresh=LIST_REFRESH_S if any(t.status == "running" for t in result.traces) else None,
        )

    def window(request: Request, default: int, most: int) -> tuple[int, int]:
        """``?offset=&limit=`` of a trace's spans, bounded."""
        q = request.query_params
        try:
            offset = int(q.get("offset") or 0)
            limit = int(q.get("limit") or default)
        except ValueError:
            raise TraceStoreError("offset and limit must be numbers") from None
        return max(0, offset), max(1, min(limit, most))

    def load_trace(request: Request, default: int, most: int) -> TraceDetail | Response:
        """The trace of the path (a window of its spans), or the error response (page or JSON)."""
        try:
            offset, limit = window(request, default, most)
            detail = store.get_trace(request.path_params["trace_id"], offset=offset, limit=limit)
        except TraceStoreError as exc:
            return failure(request, exc)
        if detail is None:
            return failure(request, TraceStoreError("no such trace (or not visible to you)"), 404)
        return detail

    def trace(request: Request) -> Response:
        detail = load_trace(request, TRACE_PAGE_SPANS, TRACE_PAGE_SPANS)
        if isinstance(detail, Response):
            return detail
        spans = detail.spans
        keep = {k: v for k, v in request.query_params.items() if k not in ("offset", "span") and v}

        def span_page(offset: int) -> str:
            return "?" + urlencode({**keep, "offset": offset})

        shown_to = detail.offset + len(spans)
        wanted = request.query_params.get("span")
        selected = detail.span(wanted) if wanted else None
        if selected is None and spans:  # the deepest failed span (where the error happened), else the root
            failed = [s for s in spans if s.status in ("failed", "cancelled")]
            selected = max(failed, key=lambda s: s.depth) if failed else spans[0]
        running = detail.trace["status"] == "running" or any(s.running for s in spans)
        return page(
            "trace.html",
            trace=detail.trace,
            spans=spans,
            bars=views.waterfall(detail),
            selected=selected,
            inputs=views.conversation(selected.inputs, "user") if selected else [],
            outputs=views.conversation(selected.outputs, "assistant") if selected else [],
            system=views.system_prompt(selected.inputs) if selected else None,
            input_value=views.plain_value(selected.inputs) if selected else None,
            output_value=views.plain_value(selected.outputs) if selected else None,
            token_rows=views.token_rows(selected.tokens) if selected else [],
            refresh=REFRESH_S if running else None,
            total_spans=detail.total_spans,
            child_ids_shown=CHILD_IDS_SHOWN,
            hidden=detail.hidden,
            shown_from=detail.offset + 1 if spans else 0,
            shown_to=shown_to,
            earlier=span_page(max(0, detail.offset - TRACE_PAGE_SPANS)) if detail.offset > 0 else None,
            later=span_page(shown_to) if shown_to < detail.total_spans else None,
        )

    def sessions(request: Request) -> Response:
        window = request.query_params.get("window") or "7d"
        try:
            found = store.sessions(since=_since(window) or datetime(1970, 1, 1))
        except TraceStoreError as exc:
            return failure(request, exc)
        return page("sessions.html", sessions=found, windows=views.WINDOWS, window=window)

    def session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            turns = store.session(session_id)
        except TraceStoreError as exc:
            return failure(request, exc)
        if not turns:
            return failure(request, TraceStoreError("no such session (or not visible to you)"), 404)
        replay = [
            (
                turn,
                views.plain_value(turn.answer)
                or "\n".join(m.text for m in views.conversation(turn.answer, "assistant")),
            )
            for turn in turns
        ]
        return page("session.html", session_id=session_id, replay=replay)

    def costs(request: Request) -> Response:
        try:
            days = int(request.query_params.get("days") or 30)
            horizon = int(request.query_params.get("horizon") or 14)
            report = store.cost_report(days=max(1, min(days, 366)), horizon=max(1, min(horizon, 90)))
        except (TraceStoreError, ValueError) as exc:
            return failure(request, exc)
        return page(
            "costs.html",
            report=report,
            chart=Markup(svg_chart(report)),
            month_line=month_line(report, "$"),
            short_history=report.get("history_days", MIN_HISTORY_DAYS_FOR_RANGE) < MIN_HISTORY_DAYS_FOR_RANGE,
        )

    def api_traces(request: Request) -> Response:
        try:
            result = store.list_traces(**list_args(request))
        except TraceStoreError as exc:
            return failure(request, exc)
        return _json({"traces": result.traces, "older": result.older, "newer": result.newer})

    def api_trace(request: Request) -> Response:
        """The trace and a page of its spans, flat, depth first (each with ``depth`` and
        ``parent_span_id``; ``children`` are ids): bounded whatever the trace's size or depth."""
        detail = load_trace(request, API_SPANS, API_SPANS_MAX)
        if isinstance(detail, Response):
            return detail
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

    def stylesheet(request: Request) -> Response:
        return Response(css, media_type="text/css", headers={"cache-control": "max-age=300"})

    def favicon(request: Request) -> Response:
        return Response(status_code=204)

    def healthz(request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/", traces),
            Route("/traces/{trace_id}", trace),
            Route("/sessions", sessions),
            Route("/sessions/{session_id:path}", session),
            Route("/costs", costs),
            Route("/api/traces", api_traces),
            Route("/api/traces/{trace_id}", api_trace),
            Route("/static/app.css", stylesheet),
            Route("/favicon.ico", favicon),
            Route("/healthz", healthz),
        ]
    )
    return _Guard(app, token)
