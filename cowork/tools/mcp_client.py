"""MCP servers declared in cowork.toml (`[mcp.NAME] command = [...]`) as tools `NAME.tool`, over stdio.

A lane's first call to a server starts it (in the lane's worktree) and the lane's later calls reuse it
(`Sessions`): a server keeps its state between calls, and its start-up (about 1 s for a Python server) is paid once.
A server that dies, or a call that times out, takes down that one call, never the lane: the agent gets an error
naming the server, and the lane's next call starts the server again. A server's own error reply to a call (an
unknown tool, bad parameters) fails that call and keeps the server. The lane's end stops its servers. Tool
listings are cached per server command for the process.
A server's stderr goes to `mcp-NAME.log` in the log directory the caller names (a lane's own, for its servers),
each start marked with a line of cowork's, else to the process's own stderr: never to whatever stream happens
to stand in for sys.stderr (a TUI's, a test's capture).
Model-facing names replace the dot with a double underscore (providers allow only [A-Za-z0-9_-] in tool names).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, TextIO

from cowork.config import McpServer, TeamSettings
from cowork.tools.context import ToolResult

LIST_TIMEOUT_S = 30.0
SEP = "__"

_listing_cache: dict[tuple, dict[str, dict]] = {}
_lock = threading.Lock()


class McpUnavailable(Exception):
    """An MCP server could not be started or stopped answering."""


class McpRefused(Exception):
    """An MCP server answered a call with a protocol error (an unknown tool, bad parameters, its own failure): the
    server is alive, and its session goes on."""


def model_name(qualified: str) -> str:
    return qualified.replace(".", SEP, 1)


def _params(cfg: McpServer, cwd: Path | None):
    from mcp import StdioServerParameters

    env = {k: os.path.expandvars(v) for k, v in cfg.env.items()}  # "$GITHUB_TOKEN" is read from our environment
    return StdioServerParameters(command=cfg.command[0], args=list(cfg.command[1:]), env=env or None,
                                 cwd=str(cwd) if cwd else None)


@contextlib.contextmanager
def _errlog(name: str, log_dir: Path | None) -> Iterator[TextIO]:
    """Where server `name`'s stderr goes: `log_dir/mcp-NAME.log` (appended), else this process's real stderr."""
    if log_dir is None:
        yield sys.__stderr__
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"mcp-{name}.log", "a", encoding="utf-8") as f:
        f.write(f"--- cowork started server {name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        yield f


def _client(cfg: McpServer, cwd: Path | None, log: TextIO, timeout_s: float | None):
    from mcp import Client
    from mcp.client.stdio import stdio_client

    return Client(stdio_client(_params(cfg, cwd), errlog=log), read_timeout_seconds=timeout_s)


def _describe(err: BaseException) -> str:
    # anyio wraps failures in exception groups; the first leaf says what happened
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = str(err).strip() or ("timed out" if isinstance(err, TimeoutError) else "no detail")
    return f"{type(err).__name__}: {text}"


async def list_tools(name: str, cfg: McpServer, cwd: Path | None = None,
                     timeout_s: float = LIST_TIMEOUT_S, log_dir: Path | None = None) -> dict[str, dict]:
    """{"NAME.tool": {"description", "parameters"}} for the tools the server offers (and cowork.toml allows)."""
    try:
        with _errlog(name, log_dir) as log:
            async with asyncio.timeout(timeout_s):
                async with _client(cfg, cwd, log, timeout_s) as client:
                    result = await client.list_tools()
    except BaseException as exc:  # noqa: BLE001 - any failure of a foreign process becomes one clear error
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            raise
        raise McpUnavailable(_describe(exc)) from None
    out = {}
    for tool in result.tools:
        if cfg.tools is not None and tool.name not in cfg.tools:
            continue
        out[f"{name}.{tool.name}"] = {"description": (tool.description or f"{name} tool {tool.name}")[:1000],
                                      "parameters": tool.input_schema or {"type": "object", "properties": {}}}
    return out


def list_tools_sync(name: str, cfg: McpServer, cwd: Path | None = None,
                    log_dir: Path | None = None) -> dict[str, dict]:
    """`list_tools` from synchronous code (in its own thread and event loop), cached per server command."""
    key = (name, tuple(cfg.command), tuple(sorted(cfg.env.items())), tuple(cfg.tools or ()))
    with _lock:
        if key in _listing_cache:
            return _listing_cache[key]
    box: dict = {}

    def work() -> None:
        try:
            box["tools"] = asyncio.run(list_tools(name, cfg, cwd, log_dir=log_dir))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(LIST_TIMEOUT_S + 5)
    if "tools" not in box:
        err = box.get("error")
        raise err if isinstance(err, McpUnavailable) else McpUnavailable(_describe(err) if err else "timed out")
    with _lock:
        _listing_cache[key] = box["tools"]
    return box["tools"]


class Sessions:
    """The MCP servers one lane has called, each kept running for the lane's later calls.

    Args:
        cwd: where the servers run (the lane's worktree).
        log_dir: where their stderr goes (`mcp-NAME.log`), else this process's own stderr.
    """

    def __init__(self, cwd: Path | None = None, log_dir: Path | None = None) -> None:
        self.cwd, self.log_dir = cwd, log_dir
        self._sessions: list[_Session] = []  # the live ones and those still stopping (`aclose` waits for both)

    async def call(self, name: str, cfg: McpServer, tool: str, args: dict) -> ToolResult:
        """Call `tool` on server `name`, starting the server first when it is not running for this lane. A call
        gets `cfg.timeout_s`; a server that takes longer is stopped."""
        loop = asyncio.get_running_loop()
        session = next((s for s in self._sessions if s.name == name and not s.ended and s.loop is loop), None)
        if session is None:
            session = _Session(name, cfg, self.cwd, self.log_dir)
            self._sessions = [s for s in self._sessions if not s.stopped] + [session]
        try:
            result = await session.call(tool, args)
        except McpUnavailable as exc:
            return ToolResult(False, f"MCP server '{name}' failed while calling {tool}: {exc}",
                              {"mcp_server": name, "error": str(exc)})
        except McpRefused as exc:
            return ToolResult(False, f"MCP server '{name}' refused {tool}: {exc}", {"mcp_server": name,
                                                                                  "error": str(exc)})
        return _result(name, tool, result)

    async def aclose(self) -> None:
        """Stop every server this lane started: its stdin is closed, then after a grace period it is terminated
        (bounded: a few seconds for a server that ignores both)."""
        sessions, self._sessions = self._sessions, []
        loop = asyncio.get_running_loop()
        for session in sessions:
            if session.loop is loop:  # one from an event loop that has ended was cancelled with it
                await session.aclose()


class _Session:
    """One running server. A task of its own holds the connection (anyio's scopes must be entered and left by one
    task) and runs the calls handed to it, one at a time; any failure of the connection ends the session. It is
    stopped through anyio's cancellation, never `Task.cancel()`, which could cut short the SDK's shielded shutdown
    and leave the server running."""

    def __init__(self, name: str, cfg: McpServer, cwd: Path | None, log_dir: Path | None) -> None:
        import anyio

        self.name, self.cfg, self.cwd, self.log_dir = name, cfg, cwd, log_dir
        self.loop = asyncio.get_running_loop()
        self.ended = False    # takes no more calls
        self._jobs: asyncio.Queue = asyncio.Queue()
        self._current: tuple | None = None
        self._scope = anyio.CancelScope()
        self._closing = False
        self._task = self.loop.create_task(self._own(), name=f"mcp-{name}")

    @property
    def stopped(self) -> bool:
        return self._task.done()

    async def call(self, tool: str, args: dict) -> Any:
        done = self.loop.create_future()
        self._jobs.put_nowait((tool, args, done))
        return await done

    async def _own(self) -> None:
        import math

        import anyio

        why = "the server has stopped"
        try:
            with _errlog(self.name, self.log_dir) as log, self._scope:
                self._scope.deadline = anyio.current_time() + LIST_TIMEOUT_S
                async with _client(self.cfg, self.cwd, log, None) as client:  # each call has its own limit
                    self._scope.deadline = math.inf
                    why = await self._serve(client)
            if self._scope.cancelled_caught:
                why = "the lane stopped its servers" if self._closing else \
                    f"did not start within {LIST_TIMEOUT_S:g} s"
        except BaseException as exc:  # noqa: BLE001 - a foreign process failing is one clear error
            if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                raise
            why = _describe(exc)
        finally:
            if self.log_dir is not None and not self._closing:  # what the server said of it is in its log
                why += f" (its stderr: {self.log_dir / f'mcp-{self.name}.log'})"
            self._fail(why)

    async def _serve(self, client: Any) -> str:
        """Run calls until one fails the connection or times out; what ended the session."""
        import anyio

        timeout_s = self.cfg.timeout_s
        while True:
            tool, args, done = self._current = await self._jobs.get()
            try:
                with anyio.fail_after(timeout_s):
                    result = await client.call_tool(tool, args)
            except TimeoutError:
                why = f"timed out after {timeout_s:g} s; the server was stopped"
                self._fail(why)
                return why
            except Exception as exc:  # noqa: BLE001
                if _answered(exc):  # the server said no: it is alive, and keeps its state for the next call
                    _settle(done, McpRefused(f"{exc} (error {exc.code})"))
                    self._current = None
                    continue
                # the connection is gone: so is the session
                why = _describe(exc)
                self._fail(why)
                return why
            _settle(done, result)
            self._current = None

    def _fail(self, why: str) -> None:
        """End the session now (the next call starts a new server) and fail the calls it still holds; stopping the
        server may take its grace period, and no call waits for that."""
        self.ended = True
        if self._current is not None:  # the call in flight
            _settle(self._current[2], McpUnavailable(why))
            self._current = None
        while not self._jobs.empty():  # calls handed over while the server was starting or going down
            _settle(self._jobs.get_nowait()[2], McpUnavailable(why))

    async def aclose(self) -> None:
        self.ended = self._closing = True
        self._scope.cancel()
        await asyncio.wait([self._task])  # a lane cancelled meanwhile still lets its server stop


def _answered(exc: BaseException) -> bool:
    """Whether `exc` is the server's own error reply to a call (not the connection closing or timing out)."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    return isinstance(exc, MCPError) and exc.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT)


def _settle(done: asyncio.Future, value: Any) -> None:
    if done.done():  # the caller was cancelled meanwhile
        return
    if isinstance(value, BaseException):
        done.set_exception(value)
    else:
        done.set_result(value)


def _result(name: str, tool: str, result: Any) -> ToolResult:
    parts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if text is not None else f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        import json

        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    content = "\n".join(parts) or "(no output)"
    return ToolResult(not result.is_error, content if not result.is_error else f"{name}.{tool} error: {content}",
                      {"mcp_server": name})


def servers_for(settings: TeamSettings, tools: list[str]) -> dict[str, McpServer]:
    """The declared servers that a role's `server.tool` entries refer to."""
    wanted = {t.split(".", 1)[0] for t in tools if "." in t}
    return {n: cfg for n, cfg in settings.mcp.items() if n in wanted}
