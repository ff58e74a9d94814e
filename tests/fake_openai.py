"""A local HTTP server that speaks the OpenAI wire format, for tests and benchmarks.

The real ``openai`` client talks to it over HTTP on 127.0.0.1 (no patching of our
code). It answers ``POST /v1/chat/completions`` and ``POST /v1/responses`` with JSON,
counts calls and input tokens, and can be told to fail: ``server.fail_next("500")``
(also ``"429"`` and ``"timeout"``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from convotree.tokens import count_messages, count_text


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.base_url`` for the client."""

    def __init__(self, *, delay: float = 0.0, timeout_sleep: float = 3.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.delay = delay
        self.timeout_sleep = timeout_sleep
        self._failures: deque[str] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = server.handle(self.path, body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("retry-after-ms", "1")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, *modes: str) -> None:
        """The next requests fail, one mode each: "500", "429" or "timeout"."""
        self._failures.extend(modes)

    def client(self, **kwargs: Any) -> Any:
        """A real ``openai.OpenAI`` client pointed at this server."""
        import openai

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 2.0)
        return openai.OpenAI(base_url=self.base_url, api_key="sk-test", **kwargs)

    # --- answering ----------------------------------------------------------------

    @staticmethod
    def _reply_text(prompt: str) -> str:
        """A deterministic "summary": the last words of the prompt, shortened."""
        words = prompt.split()
        return "Notes: " + " ".join(words[-40:])

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            self.calls.append({"path": path, "body": body, "failure": failure})
        if failure == "500":
            return 500, {"error": {"message": "boom", "type": "server_error", "code": None}}
        if failure == "429":
            return 429, {"error": {"message": "slow down", "type": "rate_limit_exceeded",
                                   "code": "rate_limit_exceeded"}}
        if failure == "timeout":
            time.sleep(self.timeout_sleep)
        if self.delay:
            time.sleep(self.delay)
        model = body.get("model", "gpt-4o-mini")
        if path.endswith("/chat/completions"):
            prompt_tokens = count_messages(body["messages"], model=model)
            text = self._reply_text(str(body["messages"][-1].get("content", "")))
        else:
            items = body.get("input")
            messages = ([{"role": "user", "content": items}] if isinstance(items, str)
                        else list(items or []))
            if body.get("instructions"):
                messages.insert(0, {"role": "system", "content": body["instructions"]})
            prompt_tokens = count_messages(
                [m for m in messages if "role" in m], model=model)
            text = self._reply_text(str(messages[-1].get("content", "")) if messages else "")
        completion_tokens = count_text(text, "o200k_base")
        with self._lock:
            self.input_tokens += prompt_tokens
            self.output_tokens += completion_tokens
        if path.endswith("/chat/completions"):
            return 200, {
                "id": f"chatcmpl-{len(self.calls)}", "object": "chat.completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }
        return 200, {
            "id": f"resp_{len(self.calls)}", "object": "response",
            "created_at": int(time.time()), "model": model, "status": "completed",
            "output": [{"type": "message", "id": f"msg_{len(self.calls)}",
                        "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text,
                                     "annotations": []}]}],
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        }
