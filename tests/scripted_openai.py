"""A scripted OpenAI-compatible HTTP server for fault-injection tests (and the request benchmark).

It speaks just enough of the OpenAI API for clients: `POST /v1/chat/completions` (non-streaming, and streaming
as server-sent events with or without the final `data: [DONE]`) and `GET /v1/models`. Each request can be
scripted to fail: 429 with `Retry-After`, 5xx, a stall (before the headers or in the middle of a stream), a
dropped connection, or a malformed JSON body. Every request is recorded, headers included, so tests can assert on
the fields a client sent and on an API key never leaking anywhere else.

It is a stand-in for fault injection only: client code is also tested against a real server (`transformers
serve`, see tests/servers.py).

    from scripted_openai import Fault, ScriptedOpenAI

    with ScriptedOpenAI(reply=lambda req: "俺老孙来也", latency=0.01) as server:
        server.queue_faults(Fault.rate_limit(retry_after=0.05), Fault.server_error())
        client = OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        assert server.requests[0].json["model"] == "wukong"

Faults are decided per request, in this order: the queue (`queue_faults`, consumed in arrival order), then
`script(request)` (a function returning a Fault or None), then `transient_rate` (seeded random 429/500/drop).

Run it as a separate process (the benchmark does, so the server does not share the client's GIL):

    python tests/scripted_openai.py --latency 0.1      # prints "READY <base_url>" then serves until killed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

FaultKind = Literal["rate_limit", "server_error", "stall", "drop", "malformed", "echo_headers", "error_body"]
Where = Literal["before_headers", "mid_stream"]


@dataclasses.dataclass(frozen=True)
class Fault:
    """What goes wrong with one request. Build with the class methods."""

    kind: FaultKind
    status: int = 200
    retry_after: float | None = None
    seconds: float = 0.0
    where: Where = "before_headers"

    @classmethod
    def rate_limit(cls, retry_after: float | None = 0.05) -> Fault:
        """429 Too Many Requests, with a `Retry-After` header in seconds (None: no header)."""
        return cls("rate_limit", status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx answer with an OpenAI-style error body."""
        return cls("server_error", status=status)

    @classmethod
    def stall(cls, seconds: float = 30.0, where: Where = "before_headers") -> Fault:
        """Say nothing for `seconds` before the headers, or after the first chunk of a stream; then carry on."""
        return cls("stall", seconds=seconds, where=where)

    @classmethod
    def drop(cls, where: Where = "before_headers") -> Fault:
        """Close the connection without an answer (or after the first chunk of a stream)."""
        return cls("drop", where=where)

    @classmethod
    def echo_headers(cls, status: int = 401) -> Fault:
        """An error answer whose body echoes the request's headers, `Authorization` included (as many proxies
        do): a client must not show it to anyone."""
        return cls("echo_headers", status=status)

    @classmethod
    def error_body(cls) -> Fault:
        """200 with a JSON error object and no reply, streamed or not, as LMDeploy's proxy answers for a server it
        still lists after the server died: `{"error_code": 10402, "text": "..."}`."""
        return cls("error_body")

    @classmethod
    def malformed(cls) -> Fault:
        """200 with a body that is not valid JSON (in a stream: a `data:` line that is not JSON)."""
        return cls("malformed")


@dataclasses.dataclass
class RecordedRequest:
    """One request as the server received it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any
    received_at: float
    fault: Fault | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages") or [])

    @property
    def last_user(self) -> str:
        """The content of the last user message ('' if none)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                content = m.get("content")
                return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return ""

    @property
    def stream(self) -> bool:
        return bool((self.json or {}).get("stream"))

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None


def default_reply(request: RecordedRequest) -> str:
    return f"scripted reply to: {request.last_user[:80]}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    scripted: ScriptedOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, dropped connection) is part of the script, not a server bug.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client's connection pool is reused as with real servers
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr access log
        pass

    # --- plumbing -------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, content_type: str = "application/json", extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        # headers and body in one write (one packet), as production servers do: a client then wakes up once
        self._headers_buffer.append(b"\r\n" + payload)
        self.flush_headers()

    def _send_json(self, status: int, obj: Any, extra: dict | None = None) -> None:
        self._send(status, _json_bytes(obj), extra=extra)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # --- routes ---------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        s = self.server.scripted
        s._record(self, b"")
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in s.models]
            self._send_json(200, {"object": "list", "data": data})
        elif self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, _error(f"no route {self.path}", "not_found"))

    def do_POST(self) -> None:
        s = self.server.scripted
        with s._lock:
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            self._post()
        finally:
            with s._lock:
                s.in_flight -= 1

    def _post(self) -> None:
        s = self.server.scripted
        body = self._read_body()
        req = s._record(self, body)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error(f"no route {self.path}", "not_found"))
            return
        if not isinstance(req.json, dict) or not isinstance(req.json.get("messages"), list):
            self._send_json(400, _error("body must be a JSON object with 'messages'", "invalid_request_error"))
            return
        fault = req.fault
        if s.latency > 0:
            s._sleep(s.latency)
        if fault is not None and fault.where == "before_headers":
            if fault.kind == "stall":
                s._sleep(fault.seconds)
            elif fault.kind == "drop":
                self._drop()
                return
        if fault is not None and fault.kind == "rate_limit":
            extra = {"Retry-After": _fmt_seconds(fault.retry_after)} if fault.retry_after is not None else {}
            self._send_json(429, _error("rate limited (scripted)", "rate_limit_exceeded"), extra)
            return
        if fault is not None and fault.kind == "server_error":
            self._send_json(fault.status, _error("internal error (scripted)", "server_error"))
            return
        if fault is not None and fault.kind == "echo_headers":
            headers = "; ".join(f"{k}: {v}" for k, v in req.headers.items())
            self._send_json(fault.status, _error(f"request refused (scripted); you sent {headers}", "echo"))
            return
        if fault is not None and fault.kind == "error_body":
            self._send_json(200, {"error_code": 10402, "text": "Failed to get response after a period of time"})
            return
        refused = sorted(set(s.refuse_fields) & set(req.json))
        if refused:  # as transformers serve does for LMDeploy's extra fields
            self._send_json(422, _error(f"unexpected field(s): {', '.join(refused)}", "invalid_request_error"))
            return
        text = s.reply(req) if callable(s.reply) else str(s.reply)
        model = req.json.get("model") or (s.models[0] if s.models else "scripted")
        if req.stream:
            self._stream(req, text, model, fault)
        else:
            self._complete(req, text, model, fault)
        with s._lock:
            s.completed += 1

    def _complete(self, req: RecordedRequest, text: str, model: str, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "malformed":
            self._send(200, b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "unterminated')
            return
        prompt_chars = sum(len(str(m.get("content", ""))) for m in req.messages)
        obj = {
            "id": f"chatcmpl-{req.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_chars,
                "completion_tokens": len(text),
                "total_tokens": prompt_chars + len(text),
            },
        }
        self._send_json(200, obj)

    def _stream(self, req: RecordedRequest, text: str, model: str, fault: Fault | None) -> None:
        s = self.server.scripted
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {
            "id": f"chatcmpl-{req.index}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def event(delta: dict, finish: str | None = None) -> bytes:
            obj = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
            return b"data: " + _json_bytes(obj) + b"\n\n"

        pieces = [text[i : i + s.chunk_chars] for i in range(0, len(text), s.chunk_chars)] or [""]
        self._chunk(event({"role": "assistant", "content": ""}))
        for n, piece in enumerate(pieces):
            if n > 0 and s.chunk_delay > 0:
                s._sleep(s.chunk_delay)
            self._chunk(event({"content": piece}))
            if n == 0 and fault is not None:  # mid-stream faults strike after the first piece of text
                if fault.kind == "malformed":
                    self._chunk(b"data: {this is not json\n\n")
                elif fault.where == "mid_stream" and fault.kind == "stall":
                    s._sleep(fault.seconds)
                elif fault.where == "mid_stream" and fault.kind == "drop":
                    self._drop()
                    return
        self._chunk(event({}, "stop"))
        if s.send_done:
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


def _json_bytes(obj: Any) -> bytes:
    """JSON as UTF-8; text UTF-8 cannot hold (a lone surrogate in a hostile reply) goes out as a \\u escape."""
    try:
        return json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(obj).encode()


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class ScriptedOpenAI:
    """The server. Use as a context manager (or start()/stop()); `base_url` ends in /v1.

    reply: the answer text, or a function of the RecordedRequest. latency: seconds before the first byte of every
    chat answer. chunk_chars / chunk_delay: how a streamed answer is cut and paced. send_done: end streams with
    `data: [DONE]` (transformers serve does not). script / transient_rate / seed: see the module docstring.
    refuse_fields: body fields answered with HTTP 422 (e.g. "stop", "top_k"), as servers that refuse them do.
    """

    def __init__(
        self,
        reply: str | Callable[[RecordedRequest], str] = default_reply,
        *,
        latency: float = 0.0,
        models: Iterable[str] = ("scripted-model",),
        chunk_chars: int = 4,
        chunk_delay: float = 0.0,
        send_done: bool = True,
        script: Callable[[RecordedRequest], Fault | None] | None = None,
        transient_rate: float = 0.0,
        seed: int = 0,
        record_bodies: bool = True,
        refuse_fields: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.host, self._bind_port = host, port
        self.refuse_fields = tuple(refuse_fields)
        self.latency = latency
        self.models = list(models)
        self.chunk_chars = max(1, chunk_chars)
        self.chunk_delay = chunk_delay
        self.send_done = send_done
        self.script = script
        self.transient_rate = transient_rate
        self.record_bodies = record_bodies
        self.requests: list[RecordedRequest] = []
        self.completed = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the most chat requests handled at the same time
        self._random = random.Random(seed)
        self._queue: list[Fault | None] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> ScriptedOpenAI:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server((self.host, self._bind_port), _Handler)
        self._httpd.scripted = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # wakes stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the scripted server is not running; call start() or use it as a context manager")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- scripting ------------------------------------------------------------------------------------------
    def queue_faults(self, *faults: Fault | None) -> None:
        """Faults for the next chat requests, in arrival order (None: that request succeeds)."""
        with self._lock:
            self._queue.extend(faults)

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def _decide(self, req: RecordedRequest) -> Fault | None:
        # called with the lock held
        if req.method != "POST":
            return None
        if self._queue:
            return self._queue.pop(0)
        if self.script is not None:
            fault = self.script(req)
            if fault is not None:
                return fault
        if self.transient_rate > 0 and self._random.random() < self.transient_rate:
            return self._random.choice([Fault.rate_limit(retry_after=0.01), Fault.server_error(), Fault.drop()])
        return None

    def _record(self, handler: _Handler, body: bytes) -> RecordedRequest:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            req = RecordedRequest(
                index=len(self.requests),
                method=handler.command,
                path=handler.path,
                headers={k.lower(): v for k, v in handler.headers.items()},
                body=body if self.record_bodies else b"",
                json=parsed,
                received_at=time.monotonic(),
            )
            req.fault = self._decide(req)
            self.requests.append(req)
            if not self.record_bodies and len(self.requests) > 10_000:
                del self.requests[:5_000]
        return req

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the scripted OpenAI-compatible server until killed.")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before each chat answer")
    parser.add_argument("--transient-rate", type=float, default=0.0, help="share of requests that fail transiently")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reply", default=None, help="reply text, {model} replaced by the requested model (default: echo the question)"
    )
    parser.add_argument("--model", action="append", help="a model name /v1/models lists (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    template = args.reply

    def reply(req: RecordedRequest) -> str:
        return template.replace("{model}", str((req.json or {}).get("model"))) if template else default_reply(req)

    server = ScriptedOpenAI(
        reply=reply,
        latency=args.latency,
        transient_rate=args.transient_rate,
        seed=args.seed,
        record_bodies=False,
        models=args.model or ("scripted-model",),
        host=args.host,
        port=args.port,
    ).start()
    print(f"READY {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
