"""The explorer's one write: judgements from plain HTML forms (``POST /annotate``), off by default.

``otel-pg-ui --allow-annotations`` turns it on; without it no form is rendered and a POST is
refused (403). A form carries a CSRF token that must equal the value of a ``SameSite=Strict``,
``HttpOnly`` cookie set by the page (double submit: another site can make the browser send the
cookie, not read it into a form); an ``Origin`` header, when the browser sends one, must be this
server's. The body is bounded before it is read. After the write the browser is redirected (303) to
the page it came from, or to the next trace of a review. Judgements are written through their own
``TraceStore`` (``--annotations-dsn``: a role that may write ``otel_annotations`` and nothing else),
as the explorer's ``--annotator`` (kind ``human``), or, with ``--as-user``, as that user (kind
``user``, under RLS).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...pipeline.annotations import (
    THUMBS,
    THUMBS_NAME,
    Annotation,
    AnnotationError,
    AnnotatorKind,
    Target,
    TargetKind,
)
from ...query.trace_store import TraceStore, TraceStoreError, TraceStoreForbidden

CSRF_COOKIE = "otel_pg_csrf"
CSRF_FIELD = "csrf"
#: A feedback form's body at most (a comment of 20,000 characters, URL-encoded, fits).
MAX_FORM_BYTES = 128 * 1024
DEFAULT_NAME = "review"


class TooLarge(TraceStoreError):
    status = 413


@dataclass(frozen=True)
class Feedback:
    """How the explorer writes judgements: the store it writes through, and as whom."""

    store: TraceStore
    annotator: str = "explorer"


def csrf_token(request: Request) -> tuple[str, bool]:
    """This browser's CSRF token, and whether it is new (the response must set the cookie)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if 20 <= len(token) <= 100:
        return token, False
    return secrets.token_urlsafe(24), True


def set_csrf_cookie(response: Response, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body, bounded before and while it is read; one value per field."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise TooLarge(f"a feedback form is at most {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise TooLarge(f"a feedback form is at most {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=40)
    except (UnicodeDecodeError, ValueError):
        raise TraceStoreError("not a form") from None
    return {k: v[-1] for k, v in fields.items()}


def _same_origin(request: Request) -> bool:
    """An ``Origin`` that names another site is refused. Under our ``Referrer-Policy: no-referrer``
    browsers send ``Origin: null`` on their own forms, so "null" and no header pass (the CSRF token
    and the ``SameSite=Strict`` cookie are what stop a forged form)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _local_path(value: str) -> str:
    """Where to go after the write: a path of this server only (no open redirect)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and "\n" not in value:
        return value
    return "/"


def annotations_of(form: dict[str, str], annotator: str) -> list[Annotation]:
    """The judgements a submitted form asks for: the thumbs (when a thumbs button was pressed, with
    the comment as its explanation) and a named label / score (with the comment when no thumbs)."""
    kind = TargetKind(form.get("target_kind", ""))
    target_id = form.get("target", "")
    target = (
        Target.session(target_id)
        if kind is TargetKind.SESSION
        else Target.trace(_uuid(target_id))
        if kind is TargetKind.TRACE
        else Target.span(_uuid(target_id))
    )
    comment = form.get("comment", "").strip() or None
    out: list[Annotation] = []
    common: dict[str, Any] = {"kind": AnnotatorKind.HUMAN, "annotator": annotator, "source": "explorer"}
    thumbs = form.get("thumbs")
    if thumbs:
        if thumbs not in THUMBS:
            raise AnnotationError("thumbs must be up or down")
        out.append(
            Annotation.checked(
                target, THUMBS_NAME, label=thumbs, score=THUMBS[thumbs], explanation=comment, **common
            )
        )
    label = form.get("label", "").strip() or None
    score_text = form.get("score", "").strip()
    score = _score(score_text) if score_text else None
    if label is not None or score is not None or (comment and not thumbs):
        name = form.get("name", "").strip() or DEFAULT_NAME
        out.append(
            Annotation.checked(
                target, name, label=label, score=score, explanation=None if thumbs else comment, **common
            )
        )
    if not out:
        raise AnnotationError("nothing to write: press a thumb, or give a label, a score or a comment")
    return out


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise AnnotationError("the form's target is not an id") from None


def _score(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AnnotationError("score must be a number") from None


async def annotate(request: Request) -> Response:
    """``POST /annotate``: check the switch, the origin and the CSRF token, write, redirect."""
    feedback: Feedback | None = request.app.state.feedback
    if feedback is None:
        raise TraceStoreForbidden(
            "this explorer is read-only: start it with --allow-annotations to judge traces"
        )
    if not _same_origin(request):
        raise TraceStoreForbidden("cross-site form refused")
    form = await _form(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form.get(CSRF_FIELD, "").encode()):
        raise TraceStoreForbidden("missing or stale form token: reload the page and submit again")
    # bad input (an AnnotationError, a ValueError) is the app's 400, with its message
    for judgement in annotations_of(form, feedback.annotator):
        await run_in_threadpool(feedback.store.annotate, judgement)
    return RedirectResponse(_local_path(form.get("next", "/")), status_code=303)
