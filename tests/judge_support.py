"""A tiny OpenAI-compatible judge for tests: a real HTTP server (stdlib ``http.server``) on 127.0.0.1.

``ScriptedJudge(answer)`` answers every ``POST .../chat/completions`` with ``answer(prompt)`` as the chat completion's
content; ``failures`` is a list of ``(status, headers, seconds to wait first)`` served, in order, before the real
answers (status None: wait, then answer normally — a slow reply for timeout tests). Every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedJudge:
    def __init__(self, answer=lambda prompt: "ok", failures=()):
        self.answer = answer
        self.failures = list(failures)
        self.requests: list[dict] = []  # {"path", "headers", "body"} per request, in arrival order
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with judge._lock:
                    judge.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = judge.failures.pop(0) if judge.failures else None
                if step is not None:
                    status, headers, wait = step
                    time.sleep(wait)
                    if status is not None:
                        self._send(status, {"error": {"message": f"scripted {status}"}}, headers)
                        return
                prompt = body["messages"][-1]["content"]
                reply = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": judge.answer(prompt)}}]}
                self._send(200, reply)

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def prompts(self) -> list[str]:
        return [r["body"]["messages"][-1]["content"] for r in self.requests]

    def __enter__(self) -> "ScriptedJudge":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A loopback URL where nothing listens (a port bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
