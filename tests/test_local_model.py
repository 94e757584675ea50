"""The embedded offline model: discovery, the loopback server, sharing it across processes, constrained calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cowork.engines import local_model as lm

ROOT = Path(__file__).resolve().parents[1]
AVAILABLE, REASON = lm.local_available()


def embedded(test):
    """Runs the real model: marked `embedded`, skipped (with the reason) when the `local` extra is missing."""
    test = pytest.mark.skipif(not AVAILABLE, reason=f"embedded model not available: {REASON}")(test)
    return pytest.mark.timeout(120)(pytest.mark.embedded(test))


STR = {"type": "string"}
WRITE = {"type": "function", "function": {
    "name": "write_file", "description": "Write a file in the repository",
    "parameters": {"type": "object", "properties": {"path": STR, "content": STR}, "required": ["path", "content"]}}}
FINISH = {"type": "function", "function": {
    "name": "finish", "description": "Declare the task done",
    "parameters": {"type": "object", "properties": {"summary": STR}, "required": ["summary"]}}}


# ---------------------------------------------------------------- fast


def test_find_gguf_honours_the_env_override(tmp_path, monkeypatch):
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv(lm.GGUF_ENV, str(gguf))
    assert lm.find_gguf() == gguf

    monkeypatch.setenv(lm.GGUF_ENV, str(tmp_path / "missing.gguf"))
    assert lm.find_gguf() is None
    ok, reason = lm.local_available()
    if not ok and "llama-cpp-python" not in reason:
        assert lm.GGUF_ENV in reason and "missing.gguf" in reason


def test_importing_the_module_loads_neither_llama_cpp_nor_litellm():
    code = ("import sys, cowork.engines.local_model as m; m.find_gguf(); m.local_available(); "
            "print([n for n in sys.modules if n.split('.')[0] in ('llama_cpp', 'litellm')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_messages_show_tool_calls_and_results_in_the_reply_format():
    messages = [
        {"role": "system", "content": "You are the developer."},
        {"role": "user", "content": [{"type": "text", "text": "Create hello.py"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "write_file", "arguments": '{"path": "hello.py", "content": "print(1)"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "wrote 8 bytes"},
    ]
    out = lm.local_messages(messages, [WRITE, FINISH])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("You are the developer.")
    assert "- write_file(path: string, content: string): Write a file" in out[0]["content"]
    assert json.loads(out[2]["content"]) == {"tool": "write_file",
                                             "arguments": {"path": "hello.py", "content": "print(1)"}}
    assert out[3]["content"] == "Result of write_file:\nwrote 8 bytes"


def test_call_schema_offers_every_tool_or_only_the_chosen_one():
    assert [b["properties"]["tool"]["const"] for b in lm.call_schema([WRITE, FINISH])["anyOf"]] == \
        ["write_file", "finish"]
    only = lm.call_schema([WRITE, FINISH], choose="finish")
    assert only["properties"]["tool"] == {"const": "finish"}
    with pytest.raises(lm.LocalModelError):
        lm.call_schema([WRITE], choose="nope")


def test_a_reply_cut_off_mid_string_is_closed():
    assert lm._close_json('{"tool": "w", "arguments": {"path": "a.py", "content": "pri') == \
        {"tool": "w", "arguments": {"path": "a.py", "content": "pri"}}
    assert lm._close_json('{"tool": "w", "arguments": {"path": "a\\') == {"tool": "w", "arguments": {"path": "a"}}


# ---------------------------------------------------------------- the real model


def _valid_write_args(args: dict) -> bool:
    return set(args) == {"path", "content"} and all(isinstance(v, str) for v in args.values())


@embedded
def test_server_answers_a_constrained_tool_call_with_schema_valid_arguments(tmp_path):
    log = tmp_path / "logs" / "local-model.log"
    with lm.LocalModelServer(log) as server:
        assert server.api_base == f"http://127.0.0.1:{server.port}/v1" and server.model == "openai/cowork-local"
        messages = [{"role": "system", "content": "You are the developer. Use the tools."},
                    {"role": "user", "content": "Create a file hello.py that prints hello world."}]

        name, args, usage = lm.constrained_tool_call(messages, [WRITE, FINISH], api_base=server.api_base,
                                                     model=server.model)
        assert name in ("write_file", "finish")
        assert _valid_write_args(args) if name == "write_file" else set(args) == {"summary"}
        assert usage["completion_tokens"] > 0 and usage["seconds"] > 0

        name, args, _usage = lm.constrained_tool_call(messages, [WRITE, FINISH], api_base=server.api_base,
                                                      choose="write_file")
        assert name == "write_file" and _valid_write_args(args)
        pid = server.pid
    assert server.proc is not None and server.proc.poll() is not None, f"server {pid} still running"
    assert "Uvicorn running on http://127.0.0.1:" in log.read_text()


@embedded
def test_ensure_local_server_is_shared_across_processes_and_stops(tmp_path):
    state = tmp_path / ".cowork"
    try:
        first = lm.ensure_local_server(state)
        assert not first.reused and (state / "logs" / "local-model.log").exists()
        record = json.loads((state / "local-model.json").read_text())
        assert (record["pid"], record["port"]) == (first.pid, first.port)

        again = lm.ensure_local_server(state)
        assert again.reused and (again.port, again.pid) == (first.port, first.pid)

        code = ("import sys; from pathlib import Path; from cowork.engines import local_model as lm; "
                "e = lm.ensure_local_server(Path(sys.argv[1])); print(e.port, e.pid, e.reused)")
        out = subprocess.run([sys.executable, "-c", code, str(state)], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=60)
        assert out.stdout.split() == [str(first.port), str(first.pid), "True"]
    finally:
        assert lm.stop_local_server(state)
    assert not Path(f"/proc/{first.pid}").exists() or not lm._is_our_server(first.pid)
    assert not (state / "local-model.json").exists()
    assert lm.stop_local_server(state) is False


@embedded
def test_a_server_that_cannot_start_names_its_log(tmp_path, monkeypatch):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a gguf file")
    monkeypatch.setenv(lm.GGUF_ENV, str(bad))
    log = tmp_path / "local-model.log"
    with pytest.raises(lm.LocalModelError, match=str(log)):
        lm.LocalModelServer(log, startup_timeout=30).start()
