"""Built-in tools through the real gateway: a real team repo, a real lane worktree, a real store."""
from __future__ import annotations

import asyncio
import json

import pytest

from cowork.procs import pid_alive
from tests.support.lanectx import TeamEnv, git

DEV = {"tools": ["read_file", "write_file", "list_files", "search", "run", "git_diff"],
       "run_allow": ["echo *", "sleep *", "pwd", "env", "python3 -c *", "false"]}


@pytest.fixture
def env(tmp_path):
    return TeamEnv(tmp_path, {"dev": DEV, "reader": {"tools": ["read_file"]}})


def call(g, name, **args):
    return asyncio.run(g.call(name, args))


def test_tool_specs_list_the_roles_tools_plus_answer_and_finish(env):
    g = env.gateway("dev")
    names = [s["function"]["name"] for s in g.tool_specs()]
    assert names == DEV["tools"] + ["answer", "finish"]
    finish = next(s for s in g.tool_specs() if s["function"]["name"] == "finish")["function"]["parameters"]
    assert finish["properties"]["status"]["enum"] == ["done", "blocked", "needs-review", "failed"]
    assert finish["properties"]["checklist"]["items"]["required"] == ["item", "done"]
    reader = env.gateway("reader", lane="l2")
    assert [s["function"]["name"] for s in reader.tool_specs(extra=["submit_plan"])] == \
        ["read_file", "answer", "finish", "submit_plan"]
    for s in g.tool_specs():
        assert s["type"] == "function" and s["function"]["parameters"]["type"] == "object"
        json.dumps(s)


def test_finish_and_submit_plan_are_validated_and_returned_as_data(env):
    g = env.gateway("dev")
    r = call(g, "finish", status="done", summary="all good", checklist=[{"item": "x", "done": True}])
    assert r.ok and r.data["summary"] == "all good"
    assert not call(g, "finish", status="great", summary="x").ok
    assert not call(g, "finish", status="done", summary=" ").ok
    assert call(g, "submit_plan", title="p", lanes=[{"id": "a", "role": "dev", "goal": "g"}]).data["title"] == "p"


def test_read_file_pages_through_long_files(env):
    g = env.gateway("dev")
    (g.ctx.worktree / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 101)))
    r = call(g, "read_file", path="long.txt", offset=10, limit=3)
    assert r.ok and r.content.startswith("line 10\nline 11\nline 12\n")
    assert "88 more lines" in r.content and "offset=13" in r.content
    assert not call(g, "read_file", path="missing.txt").ok
    (g.ctx.worktree / "bin.dat").write_bytes(b"\x00\x01\x02")
    assert "binary" in call(g, "read_file", path="bin.dat").content
    (g.ctx.worktree / "empty.txt").write_text("")
    assert call(g, "read_file", path="empty.txt").ok
    (g.ctx.worktree / "sub").mkdir()
    assert "is a directory" in call(g, "read_file", path="sub").content


def test_read_file_never_blocks_on_a_fifo(env):
    import os

    g = env.gateway("dev")
    os.mkfifo(g.ctx.worktree / "pipe")  # nobody writes to it: a blocking open would hang the lane
    r = call(g, "read_file", path="pipe")
    assert not r.ok and "not a regular file" in r.content


def test_write_then_list_search_and_git_diff_see_new_files(env):
    g = env.gateway("dev")
    assert call(g, "write_file", path="src/app/main.py", content="def hello():\n    return 'hi'\n").ok
    assert (g.ctx.worktree / "src/app/main.py").read_text().startswith("def hello")
    listed = call(g, "list_files").content.splitlines()
    assert "src/app/main.py" in listed and "README.md" in listed and not any(".cowork" in x for x in listed)
    assert call(g, "list_files", pattern="*.py").content == "src/app/main.py"
    assert call(g, "search", query=r"def \w+\(").content == "src/app/main.py:1: def hello():"
    (g.ctx.worktree / "paren.txt").write_text("x = call(1\n")
    assert call(g, "search", query="call(").content == "paren.txt:1: x = call(1"  # not a regex: plain text
    assert call(g, "search", query="(unclosed").content.startswith("no matches")
    (g.ctx.worktree / "README.md").write_text("# changed\n")
    diff = call(g, "git_diff").content
    assert "+# changed" in diff and "+def hello():" in diff and "b/src/app/main.py" in diff


def test_search_output_is_bounded(env):
    g = env.gateway("dev")
    (g.ctx.worktree / "many.txt").write_text("needle\n" * 1000)
    r = call(g, "search", query="needle")
    assert r.data["matches"] == 1000 and "800 more matches" in r.content


def test_tree_walking_tools_leave_the_event_loop_free_for_other_lanes(env):
    """search, list_files and git_diff walk the worktree or run git: other lanes' coroutines keep running
    meanwhile (read_file and write_file, one file operation each, stay on the loop)."""
    g = env.gateway("dev")
    for d in range(10):
        (g.ctx.worktree / f"d{d}").mkdir()
        for f in range(30):
            (g.ctx.worktree / f"d{d}" / f"f{f}.txt").write_text("haystack line\n" * 1500)

    async def main(name: str, args: dict) -> tuple[float, float, list[float]]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def other_lane() -> None:
            while not stop.is_set():
                ticks.append(asyncio.get_running_loop().time())
                await asyncio.sleep(0.002)

        ticker = asyncio.create_task(other_lane())
        await asyncio.sleep(0.01)
        t0 = asyncio.get_running_loop().time()
        await g.call(name, args)
        t1 = asyncio.get_running_loop().time()
        stop.set()
        await ticker
        return t0, t1, ticks

    for name, args in (("search", {"query": "needle"}), ("list_files", {}), ("git_diff", {})):
        t0, t1, ticks = asyncio.run(main(name, args))
        inside = [t for t in ticks if t0 < t < t1]
        # search reads 450,000 lines (long enough to see); a fast listing or diff may finish between two ticks
        assert len(inside) >= 2 or (name != "search" and t1 - t0 < 0.02), (name, t1 - t0, len(inside))


def test_run_executes_in_the_worktree_with_exit_code(env):
    g = env.gateway("dev")
    r = call(g, "run", command="pwd")
    assert r.ok and str(g.ctx.worktree.resolve()) in r.content and "[exit code 0]" in r.content
    r = call(g, "run", command="false")
    assert not r.ok and r.data["exit_code"] == 1


def test_run_times_out_and_kills_the_process(env):
    g = env.gateway("dev")
    g.run_timeout_s = 0.5
    r = call(g, "run", command="sleep 30")
    assert not r.ok and r.data["timeout"] and "timed out" in r.content


def test_run_output_is_bounded(env):
    g = env.gateway("dev")
    r = call(g, "run", command="python3 -c \"print('x' * 100000)\"")
    assert r.ok and len(r.content) < 21_000 and "characters cut" in r.content


def test_run_never_sees_secret_environment_variables(env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("PLAIN_SETTING", "visible")
    r = call(env.gateway("dev"), "run", command="env")
    assert "PLAIN_SETTING=visible" in r.content and "OPENAI_API_KEY" not in r.content


def test_every_call_is_an_audit_event(env):
    g = env.gateway("dev")
    call(g, "read_file", path="README.md")
    call(g, "read_file", path="nope.txt")
    events = env.events("tool.call", lane="l1")
    assert [(e["data"]["tool"], e["data"]["ok"]) for e in events] == [("read_file", True), ("read_file", False)]
    assert events[0]["role"] == "dev" and events[0]["task_id"] == "t1"


def test_the_callers_record_and_the_audit_event_commit_together(env):
    """The engine journals a tool step in the audit event's transaction: if its write fails, neither is kept, and
    a denial is recorded the same way."""
    g = env.gateway("dev")
    seen = []

    def broken(result):
        seen.append(result.ok)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        asyncio.run(g.call("read_file", {"path": "README.md"}, then=broken))
    assert seen == [True] and env.events("tool.call", lane="l1") == []
    r = asyncio.run(g.call("read_file", {"path": "../etc/passwd"}, then=lambda res: seen.append(res.ok)))
    assert not r.ok and seen == [True, False] and len(env.events("tool.denied", lane="l1")) == 1


def test_lane_worktree_is_a_real_branch(env):
    g = env.gateway("dev")
    assert git(g.ctx.worktree, "rev-parse", "--abbrev-ref", "HEAD") == "cowork/t1/l1"


# -- MCP servers from cowork.toml, through the same gateway ------------------------------------------------------------

MCP_SERVER = '''
import os
import sys
from mcp.server.mcpserver import MCPServer

print("demo server: starting", file=sys.stderr, flush=True)
server = MCPServer("demo")


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper() + " from " + os.getcwd()


@server.tool()
def refuse() -> str:
    """Answer with a protocol error, as a server refusing a call does (it stays up)."""
    from mcp.shared.exceptions import MCPError
    raise MCPError(code=-32602, message="not today")


@server.tool()
def die() -> str:
    """Exit abruptly, as a crashing server would."""
    os._exit(3)


CALLS = []


@server.tool()
def count(tag: str = "") -> str:
    """How many times this server process has been called, and its process id."""
    CALLS.append(1)
    return f"{len(CALLS)} {os.getpid()}"


@server.tool()
def nap(seconds: float) -> str:
    """Sleep, as a stuck server would."""
    import time
    time.sleep(seconds)
    return "awake"


server.run("stdio")
'''


def test_mcp_tools_go_through_the_gateway(tmp_path, monkeypatch):
    import io
    import sys

    script = tmp_path / "demo_server.py"
    script.write_text(MCP_SERVER)
    toml = (f'[mcp.demo]\ncommand = ["{sys.executable}", "{script}"]\n'
            '[mcp.broken]\ncommand = ["/nonexistent/mcp-server"]\n')
    env = TeamEnv(tmp_path, {"mcp": {"tools": ["demo.shout", "demo.die", "broken.anything"],
                                     "approvals": {"notify": ["demo.shout"]}},
                             "plain": {"tools": ["read_file"]}}, toml)
    g = env.gateway("mcp")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # as a TUI or a capture stands in for it: no file descriptor
    specs = {s["function"]["name"]: s["function"] for s in g.tool_specs()}
    assert set(specs) == {"demo__shout", "demo__die", "broken__anything", "answer", "finish"}
    assert "text" in specs["demo__shout"]["parameters"]["properties"] and "Upper-case" in specs["demo__shout"]["description"]
    r = call(g, "demo__shout", text="hello")
    assert r.ok and r.content.startswith("HELLO from ") and str(g.ctx.worktree.resolve()) in r.content
    # the servers' stderr lands in the team's log, not on whatever stands in for ours
    assert "demo server: starting" in (env.ws.logs_dir / "mcp-demo.log").read_text()
    assert sys.stderr.getvalue() == ""
    assert env.events("tool.call")[-1]["data"]["tool"] == "demo.shout"
    assert "demo.shout" in msgs_to_humans(env)                      # notify tier applies to MCP tools too
    r = call(g, "demo.die")
    assert not r.ok and "MCP server 'demo' failed while calling die" in r.content
    r = call(g, "broken__anything")
    assert not r.ok and "MCP server 'broken' is unavailable" in r.content
    plain = env.gateway("plain", lane="p")
    assert not call(plain, "demo__shout", text="x").ok and env.events("tool.denied")[-1]["role"] == "plain"


def test_a_lane_keeps_its_mcp_servers_until_its_end_and_restarts_one_that_died_or_hung(tmp_path):
    """A lane's first call starts the server and its later calls reuse it (state kept, no start-up per call); a
    server that dies or overruns `timeout_s` fails that one call, and the next call gets a fresh server; the lane's
    end (`aclose`) stops them. A server's error reply fails the call and keeps the server (and its state)."""
    import sys
    import time

    script = tmp_path / "demo_server.py"
    script.write_text(MCP_SERVER)
    toml = f'[mcp.demo]\ncommand = ["{sys.executable}", "{script}"]\ntimeout_s = 1.5\n'
    env = TeamEnv(tmp_path, {"mcp": {"tools": ["demo.count", "demo.die", "demo.nap", "demo.refuse", "demo.shout"]}}, toml)
    g = env.gateway("mcp")
    g.tool_specs()

    def counted(r) -> tuple[int, int]:
        assert r.ok, r.content
        n, pid = r.content.split()
        return int(n), int(pid)

    async def lane() -> list:
        seen = [counted(await g.call("demo__count", {"tag": "a"})), counted(await g.call("demo__count", {"tag": "b"}))]
        seen.append(await g.call("demo__refuse", {}))
        t = time.monotonic()
        seen.append((await g.call("demo__count", {"tag": "c"}), time.monotonic() - t))
        died = await g.call("demo__die", {})
        seen += [died, counted(await g.call("demo__count", {"tag": "d"}))]
        hung = await g.call("demo__nap", {"seconds": 30})
        seen += [hung, counted(await g.call("demo__count", {"tag": "e"}))]
        await g.aclose()
        return seen

    (n1, pid1), (n2, pid2), refused, (third, took), died, (n4, pid4), hung, (n5, pid5) = asyncio.run(lane())
    assert (n1, n2) == (1, 2) and pid1 == pid2 and took < 0.5           # one process, kept between calls
    assert not refused.ok and "MCP server 'demo' refused refuse: not today (error -32602)" in refused.content
    assert third.ok and third.content == f"3 {pid1}"                     # the refusal kept the server and its state
    assert not died.ok and "MCP server 'demo' failed while calling die" in died.content
    assert n4 == 1 and pid4 != pid1                                      # a fresh server after the crash
    assert not hung.ok and "timed out after 1.5 s" in hung.content
    assert n5 == 1 and pid5 not in (pid1, pid4)                          # and after the hang
    for pid in (pid1, pid4, pid5):                                       # none outlives the lane
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), pid
    assert [e["data"]["ok"] for e in env.events("tool.call")] == [True, True, False, True, False, True, False, True]



def msgs_to_humans(env) -> str:
    from cowork.team import messages

    return "\n".join(m["body"] for m in messages.inbox(env.store))


def test_a_search_that_backtracks_without_end_is_stopped(tmp_path, monkeypatch):
    """Before: search matched in one of the runner's threads with no limit, so "(a+)+$" over a line of a's (a file
    the agent wrote) spun there for hours: the lane stood still, the thread could not be stopped, and a few such
    searches took every thread the runner's lanes share for list_files, search and git_diff."""
    import time

    from cowork.tools import builtin
    from tests.support.lanectx import TeamEnv

    monkeypatch.setattr(builtin, "SEARCH_TIMEOUT_S", 2.0, raising=False)
    env = TeamEnv(tmp_path, {"dev": {"tools": ["write_file", "search"]}})
    g = env.gateway("dev")
    assert asyncio.run(g.call("write_file", {"path": "trap.txt", "content": "a" * 60 + "b\nfine line\n"})).ok
    t0 = time.monotonic()
    r = asyncio.run(g.call("search", {"query": "(a+)+$"}))
    assert time.monotonic() - t0 < 10
    assert not r.ok and "stopped after 2s" in r.content and "simplify it" in r.content
    ok = asyncio.run(g.call("search", {"query": "fine"}))
    assert ok.ok and "trap.txt:2: fine line" in ok.content
