"""MCP tool calls: a lane's server kept between calls (as cowork runs) against a server started for every call.

A real MCP server over stdio (the `mcp` SDK's MCPServer, a Python process) answers a trivial tool. Both ways go
through `cowork.tools.mcp_client.Sessions`; "a server per call" closes the lane's servers after every call, which is
what cowork did before a lane kept them. A server whose start-up is slower (one fetched through npx or uvx,
say) makes the gap wider; this one starts in about a second.

    uv run python bench/bench_mcp_calls.py [--calls 20]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("bench")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


server.run("stdio")
'''


async def timed_calls(calls: int, script: Path, per_call_server: bool) -> list[float]:
    from cowork.config import McpServer
    from cowork.tools.mcp_client import Sessions

    cfg = McpServer(command=[sys.executable, str(script)])
    sessions = Sessions(cwd=script.parent)
    took = []
    try:
        for i in range(calls):
            t = time.perf_counter()
            result = await sessions.call("bench", cfg, "echo", {"text": f"call {i}"})
            took.append(time.perf_counter() - t)
            assert result.ok and result.content == f"call {i}", result.content
            if per_call_server:
                await sessions.aclose()  # stopping is part of the per-call way's cost, as it was
                took[-1] = time.perf_counter() - t
    finally:
        await sessions.aclose()
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    script = Path(tempfile.mkdtemp(prefix="cowork-mcp-bench-")) / "server.py"
    script.write_text(SERVER)
    kept = asyncio.run(timed_calls(args.calls, script, per_call_server=False))
    each = asyncio.run(timed_calls(args.calls, script, per_call_server=True))
    first, later = kept[0], statistics.median(kept[1:])
    per_call = statistics.median(each)
    print(f"{args.calls} calls of a trivial tool on a Python MCP server over stdio")
    print(f"  kept for the lane (cowork): first call {first * 1000:.0f} ms (starts the server), "
          f"later calls median {later * 1000:.2f} ms")
    print(f"  a server per call:          median {per_call * 1000:.0f} ms a call")
    print(f"  lane of {args.calls} calls: {sum(kept):.2f} s kept vs {sum(each):.2f} s per call "
          f"({sum(each) / sum(kept):.1f}x); a later call {per_call / later:.0f}x faster")


if __name__ == "__main__":
    main()
