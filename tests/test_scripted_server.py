"""The scripted model server, proven through the REAL litellm + HTTP path (no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before importing litellm: no price-map fetch, no network

import litellm  # noqa: E402
import pytest  # noqa: E402

from tests.support.scripted_server import (  # noqa: E402
    ScriptedServer,
    delay,
    error,
    raw_tool_call,
    text,
    tool_call,
    tool_calls,
)

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on expected errors

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [
    {"type": "function", "function": {"name": name, "description": name, "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}}}}
    for name in ("read_file", "write_file")
]


def ask(server: ScriptedServer, messages: list[dict] | str, **kw):
    """One real litellm call; num_retries=0 so an HTTP error is one request, not three with backoff."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    kw.setdefault("model", "openai/scripted")
    return litellm.completion(api_base=server.url, api_key="test", messages=messages, num_retries=0, **kw)


def test_text_reply_and_usage(server):
    server.script("", [text("hello from the script")])
    r = ask(server, "hi")
    assert r.choices[0].message.content == "hello from the script"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens >= 1 and r.usage.completion_tokens == len("hello from the script") // 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert len(server.requests) == 1 and server.requests[0].model == "scripted"  # litellm strips "openai/"


def test_tool_call_parsed_by_litellm(server):
    server.script("", [tool_call("read_file", path="README.md")])
    r = ask(server, "read it", tools=TOOLS)
    (tc,) = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert tc.type == "function" and tc.function.name == "read_file" and tc.id
    assert json.loads(tc.function.arguments) == {"path": "README.md"}
    assert server.requests[0].body["tools"][0]["function"]["name"] == "read_file"


def test_parallel_tool_calls(server):
    server.script("", [tool_calls([("read_file", {"path": "a"}), ("write_file", {"path": "b", "content": "x"})])])
    calls = ask(server, "go", tools=TOOLS).choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["read_file", "write_file"]
    assert len({c.id for c in calls}) == 2


def test_reply_index_follows_assistant_count_and_repeats_last(server):
    server.script("", [tool_call("read_file", path="a"), text("second"), text("last")])
    history = [{"role": "user", "content": "start"}]
    r1 = ask(server, history, tools=TOOLS)
    tc = r1.choices[0].message.tool_calls[0]
    history += [r1.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": tc.id, "content": "file a"}]
    assert ask(server, history, tools=TOOLS).choices[0].message.content == "second"
    # Stateless: the same history (e.g. a resumed runner) gets the same reply again.
    assert ask(server, history, tools=TOOLS).choices[0].message.content == "second"
    history += [{"role": "assistant", "content": "second"}, {"role": "user", "content": "more"}]
    assert ask(server, history).choices[0].message.content == "last"
    history += [{"role": "assistant", "content": "last"}, {"role": "user", "content": "again"}]
    assert ask(server, history).choices[0].message.content == "last"  # past the end: last reply repeats
    assert [r.index for r in server.requests] == [0, 1, 1, 2, 3]


def test_strict_script_fails_past_the_end(server):
    server.script("STRICT", [text("only")], strict=True)
    history = [{"role": "system", "content": "STRICT"}, {"role": "user", "content": "hi"}]
    assert ask(server, history).choices[0].message.content == "only"
    with pytest.raises(litellm.exceptions.InternalServerError, match="strict script 'STRICT'"):
        ask(server, history + [{"role": "assistant", "content": "only"}, {"role": "user", "content": "and?"}])


def test_key_routing_longest_match_wins(server):
    server.script("", [text("default")])
    server.script("You are", [text("generic")])
    server.script("You are dev", [text("dev")])
    sysmsg = lambda s: [{"role": "system", "content": s}, {"role": "user", "content": "You are dev"}]  # noqa: E731
    assert ask(server, sysmsg("You are dev, implement it")).choices[0].message.content == "dev"
    assert ask(server, sysmsg("You are reviewer")).choices[0].message.content == "generic"
    assert ask(server, sysmsg("Nothing matches")).choices[0].message.content == "default"  # system msg wins
    assert ask(server, "You are dev (no system message)").choices[0].message.content == "dev"
    assert (server.calls("You are dev"), server.calls("You are"), server.calls("")) == (2, 1, 1)


def test_no_matching_script_is_a_clear_500(server):
    server.script("only-this", [text("x")])
    with pytest.raises(litellm.exceptions.InternalServerError, match="no script matches"):
        ask(server, "something else")
    assert server.requests[0].key is None


def test_broken_arguments_arrive_raw(server):
    server.script("", [raw_tool_call("write_file", '{"path": "a.txt", "content": ')])
    (tc,) = ask(server, "write", tools=TOOLS).choices[0].message.tool_calls
    assert tc.function.name == "write_file"
    assert tc.function.arguments == '{"path": "a.txt", "content": '


def test_error_status_surfaces_as_litellm_exception(server):
    server.script("", [error(500, "model exploded")])
    server.script("RATE", [error(429, "slow down")])
    with pytest.raises(litellm.exceptions.InternalServerError, match="model exploded"):
        ask(server, "hi")
    with pytest.raises(litellm.exceptions.RateLimitError, match="slow down"):
        ask(server, [{"role": "system", "content": "RATE"}, {"role": "user", "content": "hi"}])
    assert server.calls("") == 1 and server.calls("RATE") == 1  # num_retries=0: exactly one request each


def test_fail_model_for_fallbacks(server):
    server.script("", [text("answered")])
    server.fail_model("openai/primary", status=503)
    with pytest.raises(litellm.exceptions.ServiceUnavailableError):
        ask(server, "hi", model="openai/primary")
    assert ask(server, "hi", model="openai/backup").choices[0].message.content == "answered"
    server.fail_model("primary", status=None)
    assert ask(server, "hi", model="openai/primary").choices[0].message.content == "answered"
    assert [r.model for r in server.requests] == ["primary", "backup", "primary"]
    server.fail_model("primary")
    r = ask(server, "hi", model="openai/primary", fallbacks=["openai/backup"])  # litellm's own fallback path
    assert r.choices[0].message.content == "answered"
    assert [r.model for r in server.requests][-2:] == ["primary", "backup"]


def test_callable_reply_and_delay_wrapping(server):
    def echo(body: dict):
        return delay(0.01, tool_call("write_file", path="echo.txt", content=body["messages"][-1]["content"]))

    server.script("", [echo])
    (tc,) = ask(server, "remember SECRET-123", tools=TOOLS).choices[0].message.tool_calls
    assert json.loads(tc.function.arguments) == {"path": "echo.txt", "content": "remember SECRET-123"}
    assert any("SECRET-123" in r.text for r in server.requests)
    assert not any("never-sent" in r.text for r in server.requests)


def test_streaming_text_with_usage(server):
    server.script("", [text("a streamed reply that is longer than one sixteen-char chunk")])
    msgs = [{"role": "user", "content": "stream please"}]
    chunks = list(ask(server, msgs, stream=True, stream_options={"include_usage": True}))
    assert len(chunks) > 3
    full = litellm.stream_chunk_builder(chunks, messages=msgs)
    assert full.choices[0].message.content == "a streamed reply that is longer than one sixteen-char chunk"
    assert full.usage.completion_tokens == len(full.choices[0].message.content) // 4


def test_streaming_tool_call(server):
    server.script("", [tool_calls([("write_file", {"path": "notes/long-file-name.md", "content": "x" * 40}),
                                   ("read_file", {"path": "b"})])])
    msgs = [{"role": "user", "content": "go"}]
    chunks = list(ask(server, msgs, tools=TOOLS, stream=True))
    full = litellm.stream_chunk_builder(chunks, messages=msgs)
    assert full.choices[0].finish_reason == "tool_calls"
    calls = full.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["write_file", "read_file"]
    assert json.loads(calls[0].function.arguments) == {"path": "notes/long-file-name.md", "content": "x" * 40}
    assert server.requests[0].body["stream"] is True


def test_health_and_models_endpoints(server):
    with urllib.request.urlopen(server.url.removesuffix("/v1") + "/health", timeout=5) as r:
        assert json.load(r) == {"status": "ok"}
    with urllib.request.urlopen(server.url + "/models", timeout=5) as r:
        assert json.load(r)["data"][0]["id"] == "scripted"


def test_async_acompletion(server):
    server.script("", [text("async hello")])

    async def main():
        return await litellm.acompletion(model="openai/scripted", api_base=server.url, api_key="test",
                                         messages=[{"role": "user", "content": "hi"}], num_retries=0)

    assert asyncio.run(main()).choices[0].message.content == "async hello"


def test_32_parallel_delayed_requests_overlap(server):
    server.script("", [delay(0.5, text("slow"))])
    ask(server, "warm up litellm's client and lazy imports")
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: ask(server, f"lane {i}"), range(32)))
    elapsed = time.monotonic() - started
    assert all(r.choices[0].message.content == "slow" for r in replies)
    assert elapsed < 2.0, f"32 x 0.5 s requests took {elapsed:.2f} s: they did not run in parallel"
    assert len(server.requests) == 33


def test_subprocess_mode(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"scripts": {
        "": [{"text": "from the subprocess"}],
        "TOOLS": {"replies": [{"tool_call": {"name": "read_file", "args": {"path": "x"}}}], "strict": True},
        "SLOW": [{"delay": 0.05, "reply": {"tool_calls": [{"name": "read_file", "args": {"path": "y"}}]}}],
    }}))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.scripted_server", "--script", str(script)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1"), line
        url = line.split()[1]
        r = litellm.completion(model="openai/any", api_base=url, api_key="test", num_retries=0,
                               messages=[{"role": "user", "content": "hello"}])
        assert r.choices[0].message.content == "from the subprocess"
        sys_tools = [{"role": "system", "content": "TOOLS"}, {"role": "user", "content": "go"}]
        r = litellm.completion(model="openai/any", api_base=url, api_key="test", num_retries=0,
                               messages=sys_tools, tools=TOOLS)
        assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"path": "x"}
        r = litellm.completion(model="openai/any", api_base=url, api_key="test", num_retries=0, tools=TOOLS,
                               messages=[{"role": "system", "content": "SLOW"}, {"role": "user", "content": "go"}])
        assert r.choices[0].message.tool_calls[0].function.name == "read_file"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_process_keeps_connections_alive(tmp_path):
    """ServerProcess (the benchmarks' server) answers several requests on one HTTP/1.1 connection, as a provider
    does; a stream still ends with its connection."""
    import http.client

    from tests.support.scripted_server import ServerProcess

    began = time.time()
    with ServerProcess({"": [text("one"), text("two")]}, tmp_path) as server:
        host, port = server.url.split("//")[1].split("/")[0].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        messages: list[dict] = [{"role": "user", "content": "hi"}]
        seen, socks = [], []
        for _ in range(2):
            conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": messages}),
                         {"Content-Type": "application/json"})
            reply = conn.getresponse()
            assert reply.version == 11 and reply.getheader("Connection") != "close"
            msg = json.loads(reply.read())["choices"][0]["message"]
            seen.append(msg["content"])
            messages += [msg, {"role": "user", "content": "again"}]
            socks.append(conn.sock)
        assert seen == ["one", "two"]
        assert socks[0] is not None and socks[0] is socks[1]  # http.client reconnects (a new socket) after a close
        conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": messages, "stream": True}),
                     {"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.getheader("Connection") == "close" and reply.read().rstrip().endswith(b"data: [DONE]")
        arrived = server.arrivals()  # the benchmarks' view of when each request came in, by the wall clock
        assert [a["index"] for a in arrived] == [0, 1, 2] and all(a["key"] == "" for a in arrived)
        assert began < arrived[0]["wall"] <= arrived[1]["wall"] <= arrived[2]["wall"] <= time.time()
