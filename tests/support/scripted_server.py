"""A deterministic OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks: tests drive
the REAL litellm + HTTP path against it (model ``openai/<anything>``, ``api_base=server.url``), never mocks.

A request is routed to a *script* by key. The key is matched as a substring of the request's system
message (or, without one, its first user message); the longest matching key wins, and the key ``""`` is the
default. The reply index is the number of ``assistant`` messages already in the conversation, so the server keeps
no conversation state: a client killed and resumed with the same history gets the same next reply. Past the end
of a script the LAST reply repeats, unless the script was registered with ``strict=True`` (then HTTP 500).

A reply is a JSON-able dict (the shape the ``--script`` file uses) built by the helpers below, or a callable
``(request_json) -> reply`` for dynamic behaviour. ``server.requests`` records every request::

    with ScriptedServer() as server:
        server.script("You are dev", [tool_call("read_file", path="README.md"), text("done")])
        litellm.completion(model="openai/scripted", api_base=server.url, api_key="test", messages=...)

Subprocess mode (end-to-end tests): ``python -m tests.support.scripted_server --script FILE.json [--port N]``.
FILE.json is ``{"scripts": {"key": [reply, ...]}}``; a script may also be ``{"replies": [...], "strict": true}``,
and an optional ``"fail_models": {"model": status}`` maps to :meth:`ScriptedServer.fail_model`. It prints
``READY http://127.0.0.1:PORT/v1`` (flushed) once listening and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

Reply = Union[dict, Callable[[dict], Any]]


def text(content: str) -> dict:
    """An assistant message with plain text content (finish_reason ``stop``)."""
    return {"text": content}


def tool_call(name: str, **args: Any) -> dict:
    """One tool call ``name(**args)``; arguments are sent as a JSON string (finish_reason ``tool_calls``)."""
    return {"tool_call": {"name": name, "args": args}}


def tool_calls(calls: list[tuple[str, dict]]) -> dict:
    """Several parallel tool calls in one assistant message: ``[(name, args_dict), ...]``."""
    return {"tool_calls": [{"name": name, "args": dict(args)} for name, args in calls]}


def raw_tool_call(name: str, arguments: str) -> dict:
    """One tool call whose ``arguments`` string is sent verbatim (e.g. broken JSON, for error paths)."""
    return {"tool_call": {"name": name, "arguments": arguments}}


def error(status: int = 500, message: str = "scripted error", headers: dict[str, str] | None = None) -> dict:
    """Answer with HTTP ``status`` and an OpenAI-style error body (to test retries and fallbacks); ``headers`` are
    sent with it (e.g. ``{"Retry-After": "2"}``)."""
    return {"error": {"status": status, "message": message, **({"headers": dict(headers)} if headers else {})}}


def raw(payload: dict) -> dict:
    """Answer HTTP 200 with ``payload`` as the whole JSON body, as sent (e.g. a reply whose ``choices`` is empty)."""
    return {"raw": payload}


def delay(seconds: float, reply: Reply) -> dict:
    """Sleep ``seconds`` (in this request's own thread; others are not blocked), then answer with ``reply``."""
    return {"delay": seconds, "reply": reply}


def _content_text(content: Any) -> str:
    """The text of a message ``content`` (a string, or a list of parts as in the OpenAI vision format)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _route_text(messages: list[dict]) -> str:
    """The text keys are matched against: the system message, else the first user message."""
    for role in ("system", "user"):
        for m in messages:
            if m.get("role") == role:
                return _content_text(m.get("content"))
    return ""


def _message(reply: dict, index: int) -> dict:
    """Build ``choices[0].message`` for a resolved reply dict."""
    calls = list(reply.get("tool_calls") or []) + ([reply["tool_call"]] if "tool_call" in reply else [])
    rendered = []
    for i, c in enumerate(calls):
        args = c["arguments"] if "arguments" in c else json.dumps(c.get("args", {}))
        rendered.append({"id": c.get("id", f"call_{index}_{i}"), "type": "function",
                         "function": {"name": c["name"], "arguments": args}})
    msg: dict = {"role": "assistant", "content": reply.get("text", None if rendered else "")}
    return {**msg, "tool_calls": rendered} if rendered else msg


@dataclass
class Recorded:
    """One request the server received: the matched script ``key`` (None if none), reply ``index``, ``body``,
    ``at``, the ``time.perf_counter()`` when its body had been read (comparable in-process only), and ``wall``,
    the same moment as ``time.time()`` (comparable across processes on one machine)."""

    key: str | None
    index: int
    body: dict
    at: float = 0.0
    wall: float = 0.0

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    @property
    def text(self) -> str:
        """Every message's text plus the tools JSON: what to search for leaked secrets."""
        parts = [_content_text(m.get("content")) for m in self.body.get("messages", [])]
        parts += [json.dumps(m.get("tool_calls")) for m in self.body.get("messages", []) if m.get("tool_calls")]
        return "\n".join(parts + [json.dumps(self.body.get("tools", []))])


class _Handler(BaseHTTPRequestHandler):
    server: "ScriptedServer"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        return

    def _error(self, status: int, message: str, kind: str = "scripted_error", headers: dict | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _path(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path[3:] if path.startswith("/v1/") else path

    def do_GET(self) -> None:
        path = self._path()
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/_arrivals":  # for benchmarks timing a client against the server's own clock
            with self.server._lock:
                rows = [{"key": r.key, "index": r.index, "wall": r.wall} for r in self.server._requests]
            self._json(200, {"arrivals": rows})
        elif path == "/models":
            self._json(200, {"object": "list",
                             "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "scripted"}]})
        else:
            self._error(404, f"no route GET {self.path}", "not_found")

    def do_POST(self) -> None:
        if self._path() != "/chat/completions":
            return self._error(404, f"no route POST {self.path}", "not_found")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError as e:
            return self._error(400, f"bad JSON body: {e}", "invalid_request_error")
        status, result = self.server._answer(body)
        if status != 200:
            message, headers = result if isinstance(result, tuple) else (result, None)
            self._error(status, message, headers=headers)
        elif body.get("stream"):
            self._stream(body, result)
        else:
            self._json(200, result)

    def _stream(self, body: dict, full: dict) -> None:
        """Send ``full`` as an SSE stream of chat.completion.chunk events, then ``data: [DONE]``."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # no length: the end of the stream is the end of the connection
        self.close_connection = True
        self.end_headers()
        msg, head = full["choices"][0]["message"], {k: full[k] for k in ("id", "created", "model")}

        def send(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> None:
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                chunk["usage"] = usage
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        send({"role": "assistant", "content": ""})
        content = msg.get("content") or ""
        for i in range(0, len(content), 16):
            send({"content": content[i:i + 16]})
        for n, tc in enumerate(msg.get("tool_calls", [])):
            send({"tool_calls": [{"index": n, "id": tc["id"], "type": "function",
                                  "function": {"name": tc["function"]["name"], "arguments": ""}}]})
            args = tc["function"]["arguments"]
            for i in range(0, len(args), 16):
                send({"tool_calls": [{"index": n, "function": {"arguments": args[i:i + 16]}}]})
        send({}, full["choices"][0]["finish_reason"])
        if (body.get("stream_options") or {}).get("include_usage"):
            send(None, usage=full["usage"])
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class _KeepAliveHandler(_Handler):
    """HTTP/1.1 with persistent connections, as real model servers keep them: a client reuses its connection
    instead of paying a TCP connect and close per call. For servers in their own process (a handler thread waits
    on an idle connection until the client or the process goes away)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle would hold the body for the ACK (40 ms)


class ScriptedServer(ThreadingHTTPServer):
    """The scripted server on 127.0.0.1 (ephemeral port unless ``port`` is given). See the module docstring."""

    request_queue_size = 128  # the stdlib default (5) makes bursts of parallel clients hit 1 s connect retries
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, keep_alive: bool = False) -> None:
        super().__init__(("127.0.0.1", port), _KeepAliveHandler if keep_alive else _Handler)
        self._lock = threading.Lock()
        self._scripts: dict[str, tuple[list[Reply], bool]] = {}
        self._failing: dict[str, int] = {}
        self._requests: list[Recorded] = []
        self._counter = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the litellm ``api_base``."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> "ScriptedServer":
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="scripted-server",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (in-flight requests finish in their daemon threads)."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up mid-reply (e.g. a cancelled stream); report anything else."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    # ---- scripting
    def script(self, key: str, replies: list[Reply], strict: bool = False) -> "ScriptedServer":
        """Register (or replace) the replies for ``key``; ``strict`` makes running past the end an HTTP 500."""
        if not replies:
            raise ValueError(f"script {key!r} needs at least one reply")
        with self._lock:
            self._scripts[key] = (list(replies), strict)
        return self

    def fail_model(self, model: str, status: int | None = 500) -> None:
        """Requests whose ``model`` equals ``model`` (an ``openai/`` prefix is ignored) get HTTP ``status``.
        ``status=None`` heals the model again."""
        with self._lock:
            self._failing[model.removeprefix("openai/")] = status

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every chat-completions request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def calls(self, key: str) -> int:
        """How many requests were routed to script ``key``."""
        return sum(1 for r in self.requests if r.key == key)

    def reset(self) -> None:
        """Forget recorded requests (scripts and failing models stay)."""
        with self._lock:
            self._requests.clear()

    # ---- answering (called from handler threads)
    def _answer(self, body: dict) -> tuple[int, Any]:
        """Resolve ``body`` to ``(200, completion_dict)``, ``(status, error_message)`` or, for an error reply with
        headers, ``(status, (error_message, headers))``."""
        at, wall = time.perf_counter(), time.time()
        messages = body.get("messages") or []
        index = sum(1 for m in messages if m.get("role") == "assistant")
        route = _route_text(messages)
        with self._lock:
            keys = [k for k in self._scripts if k in route]
            key = max(keys, key=len) if keys else None
            self._requests.append(Recorded(key, index, body, at, wall))
            self._counter += 1
            n, failing = self._counter, self._failing.get(body.get("model", ""))  # None: healthy
            replies, strict = self._scripts[key] if key is not None else ([], False)
        if failing is not None:
            return failing, f"scripted failure for model {body.get('model')!r}"
        if key is None:
            return 500, f"no script matches this request (route text starts {route[:80]!r})"
        if index >= len(replies) and strict:
            return 500, f"strict script {key!r} has {len(replies)} replies; request asks for reply #{index}"
        reply: Any = replies[min(index, len(replies) - 1)]
        while callable(reply) or (isinstance(reply, dict) and "delay" in reply):
            if callable(reply):
                reply = reply(body)
            else:
                time.sleep(float(reply["delay"]))
                reply = reply["reply"]
        if not isinstance(reply, dict):
            return 500, f"script {key!r} reply #{index} is not a reply dict: {reply!r}"
        if "error" in reply:
            err = reply["error"]
            message = err.get("message", "scripted error")
            return int(err.get("status", 500)), ((message, err["headers"]) if err.get("headers") else message)
        if "raw" in reply:
            return 200, reply["raw"]
        msg = _message(reply, index)
        prompt = Recorded(key, index, body).text
        completion = (msg["content"] or "") + (json.dumps(msg["tool_calls"]) if "tool_calls" in msg else "")
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": max(1, len(completion) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = reply.get("finish_reason") or ("tool_calls" if msg.get("tool_calls") else "stop")
        return 200, {"id": f"chatcmpl-scripted-{n}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model", "scripted"),
                     "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
                     "usage": usage}


def load_script_file(server: ScriptedServer, path: str) -> None:
    """Apply a ``{"scripts": {...}, "fail_models": {...}}`` JSON file to ``server``."""
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    for key, value in (spec.get("scripts") or {}).items():
        if isinstance(value, dict):
            server.script(key, value["replies"], strict=bool(value.get("strict")))
        else:
            server.script(key, value)
    for model, status in (spec.get("fail_models") or {}).items():
        server.fail_model(model, int(status))


class ServerProcess:
    """The scripted server in a process of its own, as a real provider is: its CPU and its threads are not the
    client's (in-process, the server's thread holds the GIL while the client's steps want it). For benchmarks.

    Args:
        scripts: {key: [reply, ...]} as ``--script`` files hold them (replies as built by the helpers above).
        workdir: where the script file is written.
        keep_alive: persistent HTTP/1.1 connections, as a real provider keeps them.
    """

    def __init__(self, scripts: dict, workdir: str | Any, keep_alive: bool = True) -> None:
        import os
        import subprocess
        from pathlib import Path

        spec = Path(workdir) / f"scripts-{os.getpid()}-{time.time_ns()}.json"
        spec.write_text(json.dumps({"scripts": scripts}))
        root = Path(__file__).resolve().parents[2]
        argv = [sys.executable, "-m", "tests.support.scripted_server", "--script", str(spec)]
        self.proc = subprocess.Popen(argv + (["--keep-alive"] if keep_alive else []),
                                     stdout=subprocess.PIPE, text=True, cwd=str(root))
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"scripted server did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    def arrivals(self) -> list[dict]:
        """Every request so far as {"key", "index", "wall"}: when (``time.time()``) the server had read it."""
        import urllib.request

        with urllib.request.urlopen(self.url.rsplit("/v1", 1)[0] + "/v1/_arrivals", timeout=10) as resp:
            return json.loads(resp.read())["arrivals"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible chat-completions server.")
    parser.add_argument("--script", required=True, help='JSON file: {"scripts": {"key": [reply, ...]}}')
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: ephemeral)")
    parser.add_argument("--keep-alive", action="store_true", help="persistent HTTP/1.1 connections")
    args = parser.parse_args(argv)
    server = ScriptedServer(args.port, keep_alive=args.keep_alive)
    load_script_file(server, args.script)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"READY {server.url}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
