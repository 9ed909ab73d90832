"""A local OpenAI-compatible chat-completions server for the judge tests (never the real network).

It answers POST /v1/chat/completions like the real endpoint (bearer key, model check, `choices`,
`usage`), with a verdict chosen by `decide(prompt_text) -> reply content`, and misbehaves on purpose:
`faults(prompt_text, attempt) -> None | "429" | "500" | "timeout" | "garbage_body"` picks a failure for
the attempt-th request (0-based) carrying that prompt text. Counts requests and the most in flight, and
keeps every prompt text it received (`received`).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time

KEY = "test-key"
MODEL = "judge-model"


def responses_of(prompt_text: str) -> tuple[str, str]:
    """The two responses shown to the judge (the templates label them "... A:" and "... B:")."""
    match = re.search(r"\n(?:Summary|Reply) A:\n(.*?)\n\n(?:Summary|Reply) B:\n(.*?)\n\n", prompt_text, re.S)
    assert match, prompt_text
    return match.group(1), match.group(2)


def prefers_good(prompt_text: str) -> str:
    """Deterministic verdict: the response containing GOOD wins (A on a tie)."""
    a, b = responses_of(prompt_text)
    letter = "B" if "GOOD" in b and "GOOD" not in a else "A"
    return f"Comparison: response {letter} is better.\nPreferred: {letter}"


class ChatServer:
    def __init__(self, decide=prefers_good, faults=None, slow_s: float = 1.0, model: str = MODEL):
        self.model = model
        self.decide, self.faults, self.slow_s = decide, faults or (lambda text, attempt: None), slow_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: dict[str, int] = {}
        self.received: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _done(self):
                # A request stops being in flight before its reply goes out: once the client has the
                # reply it may send its next request before this thread would run a `finally`.
                if getattr(self, "in_flight", False):
                    self.in_flight = False
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, body: bytes, headers: dict | None = None):
                self._done()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def _error(self, status: int, message: str, headers=None):
                self._send(status, json.dumps({"error": {"message": message}}).encode(), headers)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self.in_flight = True
                try:
                    self._answer(body)
                finally:
                    self._done()

            def _answer(self, body):
                if self.path != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._error(401, "Incorrect API key provided")
                if body.get("model") != server.model:
                    return self._error(404, f"The model `{body.get('model')}` does not exist")
                text = body["messages"][-1]["content"]
                with server._lock:
                    server.received.append(text)
                    attempt = server.attempts.get(text, 0)
                    server.attempts[text] = attempt + 1
                fault = server.faults(text, attempt)
                if fault == "429":
                    return self._error(429, "Rate limit reached", {"Retry-After": "0"})
                if fault == "500":
                    return self._error(500, "The server had an error")
                if fault == "garbage_body":
                    return self._send(200, b"<html>bad gateway</html>")
                if fault == "timeout":
                    time.sleep(server.slow_s)
                reply = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": server.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": server.decide(text)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(text.split()),
                        "completion_tokens": 7,
                        "total_tokens": len(text.split()) + 7,
                    },
                }
                self._send(200, json.dumps(reply).encode())

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
