"""A fake OpenAI-compatible chat-completions endpoint on a loopback port, for tests.

It replays scripted answers in order, each a table: ``status``, optional ``headers`` and the
``body`` to send (a chat completion or an error). ``{key}`` in a body is replaced by the key the
request carried, as endpoints that quote a wrong key do. ``{"delay": s}`` answers (with
``valid``) only after ``s`` seconds, for a timeout, and ``{"drop": True}`` closes the connection
without answering. Every request is recorded (``path``, lower-case ``headers``, ``json``).
Shipped in the package so that applications can test their own use of beds-ai without a model.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ("FakeEndpoint", "chat_completion")


def chat_completion(content: str | None) -> dict[str, Any]:
    """A ``200`` answer whose assistant message is ``content``."""
    return {
        "status": 200,
        "body": {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
        },
    }


class FakeEndpoint:
    """The endpoint: ``script(...)`` the answers, read ``requests`` afterwards."""

    def __init__(self, delayed: dict[str, Any] | None = None) -> None:
        """Listen on a free loopback port; ``delayed`` answers a ``delay`` step (default: 500)."""
        self.delayed = delayed or {"status": 500, "body": {"error": {"message": "late"}}}
        self.requests: list[dict[str, Any]] = []
        self._script: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.released = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection ends; the server can be closed

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                record = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(raw),
                }
                with endpoint._lock:
                    endpoint.requests.append(record)
                    step = endpoint._script.pop(0) if endpoint._script else None
                if step is None:
                    step = {"status": 599, "body": {"error": {"message": "nothing scripted"}}}
                if step.get("drop"):
                    self.close_connection = True
                    self.connection.close()
                    return
                if "delay" in step:
                    endpoint.released.wait(step["delay"])
                    step = endpoint.delayed
                auth = record["headers"].get("authorization", "")
                text = json.dumps(step["body"]).replace("{key}", auth.removeprefix("Bearer "))
                body = text.encode()
                try:
                    self.send_response(step["status"])
                    for name, value in step.get("headers", {}).items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True  # the client gave up (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """The base URL to configure (``BEDS_AI_URL``)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, *steps: dict[str, Any]) -> None:
        """The answers of the next calls, in order."""
        with self._lock:
            self._script.extend(steps)

    @property
    def unused(self) -> int:
        """Scripted answers no call took."""
        return len(self._script)

    def close(self) -> None:
        """Release delayed answers, stop serving and close the port."""
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
