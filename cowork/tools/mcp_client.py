"""MCP servers declared in cowork.toml (`[mcp.NAME] command = [...]`) as tools `NAME.tool`, over stdio.

Each call starts the server, calls the tool and stops it: a server that dies takes down one call, never a lane,
and the agent gets an error naming the server. Tool listings are cached per server command for the process.
A server's stderr goes to `mcp-NAME.log` in the log directory the caller names (else to the process's own
stderr): never to whatever stream happens to stand in for sys.stderr (a TUI's, a test's capture).
Model-facing names replace the dot with a double underscore (providers allow only [A-Za-z0-9_-] in tool names).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterator, TextIO

from cowork.config import McpServer, TeamSettings
from cowork.tools.context import ToolResult

LIST_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 300.0
SEP = "__"

_listing_cache: dict[tuple, dict[str, dict]] = {}
_lock = threading.Lock()


class McpUnavailable(Exception):
    """An MCP server could not be started or stopped answering."""


def model_name(qualified: str) -> str:
    return qualified.replace(".", SEP, 1)


def _params(cfg: McpServer, cwd: Path | None):
    from mcp import StdioServerParameters

    if not cfg.command:
        raise McpUnavailable("its `command` is empty")
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
        yield f


def _client(cfg: McpServer, cwd: Path | None, log: TextIO, timeout_s: float):
    from mcp import Client
    from mcp.client.stdio import stdio_client

    return Client(stdio_client(_params(cfg, cwd), errlog=log), read_timeout_seconds=timeout_s)


def _describe(err: BaseException) -> str:
    # anyio wraps failures in exception groups; the first leaf says what happened
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return f"{type(err).__name__}: {err}".strip()


async def list_tools(name: str, cfg: McpServer, cwd: Path | None = None,
                     timeout_s: float = LIST_TIMEOUT_S, log_dir: Path | None = None) -> dict[str, dict]:
    """{"NAME.tool": {"description", "parameters"}} for the tools the server offers (and cowork.toml allows)."""
    try:
        with _errlog(name, log_dir) as log:
            async with asyncio.timeout(timeout_s):
                async with _client(cfg, cwd, log, timeout_s) as client:
                    result = await client.list_tools()
    except McpUnavailable:
        raise
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


async def call_tool(name: str, cfg: McpServer, tool: str, args: dict, cwd: Path | None = None,
                    timeout_s: float = CALL_TIMEOUT_S, log_dir: Path | None = None) -> ToolResult:
    """Call `tool` on server `name`. A server that fails to start or dies gives an error naming it."""
    try:
        with _errlog(name, log_dir) as log:
            async with asyncio.timeout(timeout_s):
                async with _client(cfg, cwd, log, timeout_s) as client:
                    result = await client.call_tool(tool, args)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            raise
        why = "timed out" if isinstance(exc, TimeoutError) else _describe(exc)
        return ToolResult(False, f"MCP server '{name}' failed while calling {tool}: {why}",
                          {"mcp_server": name, "error": why})
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
