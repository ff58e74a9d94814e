"""A local HTTP server that speaks the OpenAI wire format, for tests, demos and benchmarks.

Why it ships in the package: code built on ``convotree.Chat`` deserves tests that make
real HTTP requests with the real ``openai`` client, without a key or a network; the
example script uses it when ``OPENAI_API_KEY`` is not set. Standard library only;
nothing here runs at import time.

The real ``openai`` client talks to it over HTTP on 127.0.0.1 (no patching of the code
under test). It answers ``POST /v1/chat/completions`` and ``POST /v1/responses`` with JSON,
or with Server-Sent Events when the request says ``"stream": true`` (the usage chunk
of Chat Completions when ``stream_options.include_usage`` is set; the
``response.completed`` event of Responses). It records every request body in
``calls``, counts input tokens, and can be scripted:

- ``server.fail_next("500")``: the next requests fail, one mode each (``FAULTS``):
  ``"400"``, ``"429"`` (with ``retry-after-ms``, and ``retry-after`` in seconds when
  ``server.retry_after`` is set), ``"500"``; ``"timeout"`` (the answer comes after
  ``timeout_sleep`` seconds); ``"malformed"`` (a 200 whose JSON body is cut in half);
  ``"html"`` (a 200 with a proxy's HTML page); ``"cut"`` (a 200 whose body stops
  half-way: the connection is closed); ``"hang"`` (a 200 whose body stops half-way and
  the connection stays open, silent). On a streamed request ``"malformed"``, ``"cut"``
  and ``"hang"`` hit the stream before its first text delta (``Reply`` for later);
- ``POST /v1/responses/compact`` returns the user messages of the input and one
  opaque compaction item;
- server-side compaction: a Responses request with ``context_management=[{"type":
  "compaction", "compact_threshold": N}]`` whose input counts more than N tokens gets
  a compaction item first in its output (then the answer), as OpenAI's compaction
  guide describes; a request whose last input item is ``{"type":
  "compaction_trigger"}`` gets only a compaction item. Items a request sends before the
  latest compaction item it carries are not counted (the item stands for them);
  ``server.compactions`` lists the compaction ids issued;
- ``server.script(Reply(...))``: the next requests answer with that text, those tool
  calls or reasoning items, or a stream that fails after some deltas: cut (the
  connection is closed mid-body, as a dropped network does), hung (nothing more is
  sent and the connection stays open), corrupted (an event that is not JSON), ended
  early (a clean end without the final events) or failed in-band (the API's error
  event). Unscripted requests answer "Notes: <the last words of the prompt>".

Every request is recorded in ``calls`` with its path, body, fault and arrival time
(``time.monotonic()``), so a test can see the client's retries and how long it waited.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .tokens import count_messages, count_text

__all__ = ["FAULTS", "FakeOpenAI", "Reply"]

ERRORS = {
    "400": (400, "invalid_request_error", "bad request"),
    "429": (429, "rate_limit_exceeded", "slow down"),
    "500": (500, "server_error", "boom"),
}
#: Faults that hit a 200 answer's body rather than its status.
BODY_FAULTS = ("malformed", "html", "cut", "hang")
#: Every mode ``fail_next`` takes.
FAULTS = (*ERRORS, "timeout", *BODY_FAULTS)


@dataclass
class Reply:
    """What the server answers to one request.

    ``tool_calls`` are ``(call_id, name, arguments_json)`` triples; ``reasoning`` adds a
    Responses reasoning item with that encrypted content; ``cut_after`` (streams
    only) closes the connection after that many text deltas; ``fail_after`` (streams
    only) sends the API's in-stream failure after that many.
    """

    text: str | None = None
    tool_calls: tuple[tuple[str, str, str], ...] = ()
    reasoning: str | None = None
    cut_after: int | None = None
    cached_tokens: int = 0
    #: Streams only: after this many text deltas the API reports a failure inside the
    #: stream (``response.failed`` for Responses, an ``error`` payload for Chat
    #: Completions) and ends it cleanly.
    fail_after: int | None = None
    #: Responses only: no message item in the output (an answer cut off while reasoning).
    omit_message: bool = False
    hang_after: int | None = None
    malformed_after: int | None = None
    end_after: int | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes a kept-alive connection (a stream it stopped reading)
        # resets it: normal, not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.base_url`` for the client."""

    def __init__(self, *, delay: float = 0.0, timeout_sleep: float = 3.0,
                 count_usage: bool = True) -> None:
        self.calls: list[dict[str, Any]] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.delay = delay
        self.timeout_sleep = timeout_sleep
        #: False: report 0 prompt tokens instead of recounting each request (benchmarks:
        #: the recount would cost the server more than the client's work being measured).
        self.count_usage = count_usage
        #: What a 429 asks the client to wait, in milliseconds (``retry-after-ms``;
        #: None: no such header).
        self.retry_after_ms: int | None = 1
        #: What a 429 asks the client to wait, in seconds (the standard ``retry-after``
        #: header, which OpenAI sends); None: no such header. The client reads
        #: ``retry-after-ms`` first, so set that one to None to test this one.
        self.retry_after: float | None = None
        #: Ids of the compaction items this server issued, oldest first.
        self.compactions: list[str] = []
        self._failures: deque[str] = deque()
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        #: Set when the server stops: stalled answers ("timeout", "hang") end at once.
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 so a stream can be chunked, and cut in the middle of a chunk.
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
            # and delayed ACKs add ~40 ms to every keep-alive request.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    server.answer(self, self.path, body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # A short poll: ``shutdown`` waits for the loop's next look at its flag.
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, *modes: str) -> None:
        """The next requests fail, one mode each (one of ``FAULTS``, see the module)."""
        unknown = [mode for mode in modes if mode not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}: one of {', '.join(FAULTS)}")
        self._failures.extend(modes)

    def stall(self) -> None:
        """Wait ``timeout_sleep`` seconds, or less if the server stops meanwhile."""
        self._stopping.wait(self.timeout_sleep)

    def script(self, *replies: Reply) -> None:
        """The next requests (after any failures) get these replies, in order."""
        self._replies.extend(replies)

    def client(self, **kwargs: Any) -> Any:
        """A real ``openai.OpenAI`` client pointed at this server."""
        import openai

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 5.0)
        return openai.OpenAI(base_url=self.base_url, api_key="sk-test", **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """A real ``openai.AsyncOpenAI`` client pointed at this server (for AsyncChat)."""
        import openai

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 5.0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="sk-test", **kwargs)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The request bodies received, oldest first."""
        return [call["body"] for call in self.calls]

    # --- answering ----------------------------------------------------------------

    @staticmethod
    def _reply_text(prompt: str) -> str:
        """A deterministic "summary": the last words of the prompt, shortened."""
        words = prompt.split()
        return "Notes: " + " ".join(words[-40:])

    def answer(self, handler: BaseHTTPRequestHandler, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            reply = (self._replies.popleft() if self._replies and failure is None
                     else None)
            self.calls.append({"path": path, "body": body, "failure": failure,
                               "at": time.monotonic()})
        if failure in ERRORS:
            status, kind, message = ERRORS[failure]
            headers: dict[str, str] = {}
            if status == 429 and self.retry_after_ms is not None:
                headers["retry-after-ms"] = str(self.retry_after_ms)
            if status == 429 and self.retry_after is not None:
                headers["retry-after"] = f"{self.retry_after:g}"
            if status == 400:
                # OpenAI's 400s quote the value they refuse: so does this one (the end
                # of the last message), which is why an API error's text is content.
                chat = path.endswith("/chat/completions")
                _, last_text = _prompt(body, chat, "gpt-4o-mini", count=False)
                message = f"Invalid value: {' '.join(last_text.split()[-3:])!r}"
            _send_json(handler, status, {"error": {"message": message, "type": kind,
                                                   "code": kind, "param": None}}, headers)
            return
        if failure == "timeout":
            self.stall()
        if self.delay:
            time.sleep(self.delay)
        reply = reply or Reply()
        fault = failure if failure in BODY_FAULTS else None
        if fault is not None and body.get("stream") and fault != "html":
            # A streamed answer that fails before its first event.
            reply = (replace(reply, cut_after=0) if fault == "cut"
                     else replace(reply, hang_after=0) if fault == "hang"
                     else replace(reply, malformed_after=0))
            fault = None
        out = _Out(self, handler, fault)
        chat = path.endswith("/chat/completions")
        model = body.get("model", "gpt-4o-mini")
        prompt_tokens, last_text = _prompt(body, chat, model, self.count_usage)
        text = reply.text if reply.text is not None else (
            None if reply.tool_calls else self._reply_text(last_text))
        completion_tokens = count_text(text or "", "o200k_base") + sum(
            count_text(args, "o200k_base") for _, _, args in reply.tool_calls)
        with self._lock:
            self.input_tokens += prompt_tokens
            self.output_tokens += completion_tokens
            number = len(self.calls)
        usage = (prompt_tokens, completion_tokens, reply.cached_tokens)
        if chat:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                events = _chat_chunks(number, model, text, reply, usage, include_usage)
                out.stream(events, reply, chat=True)
            else:
                out.json(_chat_completion(number, model, text, reply, usage))
            return
        if path.endswith("/responses/compact"):
            out.json(_compaction(number, body, usage))
            return
        given = body.get("input")
        items: list[dict[str, Any]] = given if isinstance(given, list) else []
        triggered = bool(items) and items[-1].get("type") == "compaction_trigger"
        if any(item.get("type") == "compaction_trigger" for item in items[:-1]):
            _send_json(handler, 400, {"error": {
                "message": "compaction_trigger must be the final input item",
                "type": "invalid_request_error", "code": "invalid_value", "param": "input"}})
            return
        compact = triggered or prompt_tokens > _compact_threshold(body)
        if compact:
            with self._lock:
                self.compactions.append(f"cmp_{number}")
        response = _response(number, model, None if triggered else text, reply, usage,
                             compaction=f"cmp_{number}" if compact else None)
        if body.get("stream"):
            out.stream(_response_events(response, text), reply, chat=False,
                       response=response)
        else:
            out.json(response)


def _compact_threshold(body: dict[str, Any]) -> float:
    """The request's server-side compaction threshold (infinite without one)."""
    for entry in body.get("context_management") or ():
        if entry.get("type") == "compaction" and entry.get("compact_threshold") is not None:
            return float(entry["compact_threshold"])
    return float("inf")


def _prompt(body: dict[str, Any], chat: bool, model: str, count: bool = True
            ) -> tuple[int, str]:
    """Prompt tokens (by convotree's reference count) and the last text sent."""
    if chat:
        messages = body["messages"]
    else:
        items = body.get("input")
        if isinstance(items, list):
            # The latest compaction item stands for everything before it.
            starts = [i for i, item in enumerate(items) if item.get("type") == "compaction"]
            items = items[starts[-1]:] if starts else items
        messages = ([{"role": "user", "content": items}] if isinstance(items, str)
                    else [m for m in items or [] if "role" in m])
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": body["instructions"]})
    last = messages[-1].get("content", "") if messages else ""
    if isinstance(last, list):
        last = " ".join(str(p.get("text", "")) for p in last)
    tokens = count_messages(messages, model=model, tools=body.get("tools")) if count else 0
    return tokens, str(last or "")


def _chat_completion(number: int, model: str, text: str | None, reply: Reply,
                     usage: tuple[int, int, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in reply.tool_calls]
    return {
        "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
        "model": f"{model}-2024-07-18", "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": _chat_usage(usage),
    }


def _chat_usage(usage: tuple[int, int, int]) -> dict[str, Any]:
    prompt, completion, cached = usage
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def _words(text: str | None) -> list[str]:
    """The text in stream-sized pieces (a word and the space before it)."""
    if not text:
        return []
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def _chat_chunks(number: int, model: str, text: str | None, reply: Reply,
                 usage: tuple[int, int, int], include_usage: bool) -> list[tuple[str | None, Any]]:
    base = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": f"{model}-2024-07-18"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, Any]:
        return None, {**base, "choices": [{"index": 0, "delta": delta,
                                           "finish_reason": finish, "logprobs": None}]}

    events: list[tuple[str | None, Any]] = [chunk({"role": "assistant", "content": ""})]
    events += [(None, {**c[1], "_text": True}) for c in
               (chunk({"content": piece}) for piece in _words(text))]
    for index, (cid, name, args) in enumerate(reply.tool_calls):
        events.append(chunk({"tool_calls": [{"index": index, "id": cid, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            events.append(chunk({"tool_calls": [{"index": index,
                                                 "function": {"arguments": piece}}]}))
    events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": _chat_usage(usage)}))
    events.append((None, "[DONE]"))
    return events


def _response(number: int, model: str, text: str | None, reply: Reply,
              usage: tuple[int, int, int], compaction: str | None = None) -> dict[str, Any]:
    prompt, completion, cached = usage
    output: list[dict[str, Any]] = []
    if compaction is not None:
        output.append({"type": "compaction", "id": compaction,
                       "encrypted_content": f"ENCRYPTED-CONTEXT-{compaction}"})
    if reply.reasoning is not None:
        output.append({"type": "reasoning", "id": f"rs_{number}", "summary": [],
                       "encrypted_content": reply.reasoning})
    if text is not None and not reply.omit_message:
        output.append({"type": "message", "id": f"msg_{number}", "status": "completed",
                       "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    for cid, name, args in reply.tool_calls:
        output.append({"type": "function_call", "id": f"fc_{cid}", "call_id": cid,
                       "name": name, "arguments": args, "status": "completed"})
    return {
        "id": f"resp_{number}", "object": "response", "created_at": int(time.time()),
        "model": f"{model}-2024-07-18", "status": "completed", "output": output,
        "usage": {"input_tokens": prompt, "output_tokens": completion,
                  "total_tokens": prompt + completion,
                  "input_tokens_details": {"cached_tokens": cached},
                  "output_tokens_details": {"reasoning_tokens": 0}},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
        "incomplete_details": None, "instructions": None, "metadata": {},
        "temperature": 1.0, "top_p": 1.0,
    }


def _compaction(number: int, body: dict[str, Any], usage: tuple[int, int, int]
                ) -> dict[str, Any]:
    """What ``/responses/compact`` returns: the user messages, then one compaction item."""
    users = [{"type": "message", "role": "user", "id": f"msg_u{index}", "status": "completed",
              "content": [{"type": "input_text", "text": item["content"]}]
              if isinstance(item["content"], str) else item["content"]}
             for index, item in enumerate(body.get("input") or [])
             if item.get("role") == "user"]
    compaction = {"type": "compaction", "id": f"cmp_{number}",
                  "encrypted_content": f"ENCRYPTED-{len(users)}-messages"}
    prompt, _, _ = usage
    return {"id": f"resp_{number}", "object": "response.compaction",
            "created_at": int(time.time()), "output": [*users, compaction],
            "usage": {"input_tokens": prompt, "output_tokens": 50, "total_tokens": prompt + 50,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def _response_events(response: dict[str, Any], text: str | None) -> list[tuple[str | None, Any]]:
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "response": started})]
    for index, item in enumerate(response["output"]):
        events.append(("response.output_item.added", {
            "type": "response.output_item.added", "output_index": index,
            "item": {**item, "status": "in_progress"} if item["type"] != "message"
            else {**item, "status": "in_progress", "content": []}}))
        if item["type"] == "message":
            for piece in _words(text):
                events.append(("response.output_text.delta", {
                    "type": "response.output_text.delta", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "delta": piece,
                    "logprobs": [], "_text": True}))
        events.append(("response.output_item.done", {
            "type": "response.output_item.done", "output_index": index, "item": item}))
    events.append(("response.completed", {"type": "response.completed", "response": response}))
    for number, (_, data) in enumerate(events):
        data["sequence_number"] = number
    return events


def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any,
               headers: dict[str, str] | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _drop(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection now, as a dropped network does (no clean end of the body)."""
    handler.wfile.flush()
    handler.connection.shutdown(socket.SHUT_RDWR)
    handler.close_connection = True


class _Out:
    """How one 200 answer goes out: whole, or with the body fault of ``fail_next``."""

    def __init__(self, server: FakeOpenAI, handler: BaseHTTPRequestHandler,
                 fault: str | None) -> None:
        self.server, self.handler, self.fault = server, handler, fault

    def json(self, payload: Any) -> None:
        handler, fault = self.handler, self.fault
        if fault is None:
            _send_json(handler, 200, payload)
            return
        data = json.dumps(payload).encode()
        kind = "application/json"
        if fault == "html":
            kind = "text/html; charset=utf-8"
            data = b"<html><body><h1>Service Unavailable</h1></body></html>"
        elif fault == "malformed":
            data = data[:len(data) // 2]   # a whole, well-framed body of broken JSON
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        # "cut" and "hang" promise the whole body and send half of it.
        handler.send_header("Content-Length", str(len(json.dumps(payload).encode())
                                                  if fault in ("cut", "hang") else len(data)))
        handler.end_headers()
        if fault in ("cut", "hang"):
            handler.wfile.write(data[:len(data) // 2])
            handler.wfile.flush()
            if fault == "hang":
                self.server.stall()
            _drop(handler)
            return
        handler.wfile.write(data)

    def stream(self, events: list[tuple[str | None, Any]], reply: Reply, *, chat: bool,
               response: dict[str, Any] | None = None) -> None:
        if self.fault == "html":   # a proxy's page, whatever was asked
            self.json({})
            return
        _send_stream(self.handler, events, reply, chat=chat, response=response,
                     stall=self.server.stall)


def _send_stream(handler: BaseHTTPRequestHandler, events: list[tuple[str | None, Any]],
                 reply: Reply, *, chat: bool, response: dict[str, Any] | None = None,
                 stall: Callable[[], None] | None = None) -> None:
    """Write SSE events as HTTP chunks, with the stream fault ``reply`` asks for after
    its number of text deltas: drop the connection mid-chunk (``cut_after``), go silent
    with the connection open (``hang_after``), send an event that is not JSON
    (``malformed_after``), end cleanly without the final events (``end_after``), or
    report the API's in-stream failure (``fail_after``)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()

    def send(name: str | None, data: Any) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        raw = ((f"event: {name}\n" if name else "") + f"data: {payload}\n\n").encode()
        handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        handler.wfile.flush()

    def due(after: int | None) -> bool:
        return after is not None and is_text and texts >= after

    texts = 0
    for name, data in events:
        is_text = isinstance(data, dict) and data.pop("_text", False)
        if due(reply.cut_after):
            handler.wfile.write(b"5\r\ndata:")   # half a chunk, then the line goes dead
            _drop(handler)
            return
        if due(reply.hang_after):
            if stall is not None:
                stall()   # silent, the connection open, until the client gives up
            _drop(handler)
            return
        if due(reply.malformed_after):
            send(name, '{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "x')
            break
        if due(reply.end_after):
            break
        if due(reply.fail_after):
            error = {"code": "server_error", "message": "The model crashed mid-answer"}
            if chat:
                send(None, {"error": {**error, "type": "server_error", "param": None}})
            else:
                failed = {**(response or {}), "status": "failed", "error": error,
                          "output": [], "usage": None}
                send("response.failed", {"type": "response.failed", "response": failed,
                                         "sequence_number": texts + 1})
            break
        texts += bool(is_text)
        send(name, data)
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()
