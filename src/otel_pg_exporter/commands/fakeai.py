"""A tiny OpenAI-compatible chat completions server on 127.0.0.1 (no network, no keys).

Used by the demo and the tests. It answers like the real API, with realistic ``usage`` blocks
(cached and reasoning tokens included); a request that offers tools and has no tool result yet gets
a ``get_weather`` tool call; a user message containing ``"overloaded"`` gets HTTP 429.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 12},
}


def _reply(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    messages = request.get("messages") or []
    last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    if "overloaded" in str(last_user):
        return 429, {
            "error": {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        }
    wants_tool = bool(request.get("tools")) and not any(m.get("role") == "tool" for m in messages)
    if wants_tool:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": "It is rainy in Paris, 12°C: take an umbrella."}
        finish = "stop"
    return 200, {
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.get("model", "gpt-4o-mini") + "-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": USAGE,
    }


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(request)  # type: ignore[attr-defined]
        status, body = _reply(request)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class FakeOpenAI:
    """Context manager: ``with FakeOpenAI() as srv: OpenAI(base_url=srv.base_url, api_key="test")``."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # a client that connects and resets before accept() would leave a blocking accept() waiting
        # forever (and shutdown() with it); non-blocking, socketserver just tries again
        self.server.socket.setblocking(False)
        self.server.requests = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.server.requests  # type: ignore[attr-defined,no-any-return]

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
