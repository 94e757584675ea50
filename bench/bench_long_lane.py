"""Long lanes: the model client's CPU per call as a lane's conversation grows, with the openai SDK's own request
transform and with cowork's fast path for chat requests (`cowork.engines.openai_fastpath`).

Every lane's calls share one event loop, so this CPU is time no other lane can use. Each history length is timed
with both transforms in alternating trials against the same local scripted server; the figure is client CPU
(process time) per litellm call, median over trials.

    uv run python bench/bench_long_lane.py [--steps 0 10 50 100] [--calls 30] [--trials 3]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.scripted_server import ServerProcess, tool_call  # noqa: E402


def history(steps: int) -> list[dict]:
    """A lane's conversation after `steps` tool steps: each a read_file call and a 40-line result."""
    from cowork.engines import prompts

    msgs = [{"role": "system", "content": "You are dev. " * 80}, {"role": "user", "content": prompts.lane_kickoff("go")}]
    for i in range(steps):
        msgs += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": f"c{i}", "type": "function",
                      "function": {"name": "read_file", "arguments": f'{{"path": "src/m{i}.py"}}'}}]},
                 {"role": "tool", "tool_call_id": f"c{i}", "content": f"value_{i} = {i}\n" * 40}]
    return msgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="*", default=[0, 10, 50, 100])
    ap.add_argument("--calls", type=int, default=30, help="calls per trial")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()

    from cowork.engines import models, openai_fastpath
    from cowork.tools.specs import spec

    lm = models.litellm()  # installs the fast path
    tools = [spec(name) for name in ("read_file", "write_file", "list_files", "search", "run", "answer", "finish")]
    server = ServerProcess({"": [tool_call("read_file", path="a.py")]}, Path(tempfile.mkdtemp(prefix="cowork-long-")))

    async def cpu_per_call(messages: list[dict], n: int) -> float:
        c0 = time.process_time()
        for _ in range(n):
            await lm.acompletion(model="openai/scripted", api_base=server.url, api_key="k", messages=messages,
                                 tools=tools, num_retries=0, timeout=30)
        return (time.process_time() - c0) / n * 1000

    async def run() -> None:
        await cpu_per_call(history(0), 10)  # warm the client
        print(f"client CPU per litellm call (ms, median of {args.trials} trials x {args.calls} calls), "
              f"load average {os.getloadavg()[0]:.1f}")
        for steps in args.steps:
            msgs = history(steps)
            sdk, fast = [], []
            for _ in range(args.trials):
                openai_fastpath.uninstall()
                sdk.append(await cpu_per_call(msgs, args.calls))
                openai_fastpath.install()
                fast.append(await cpu_per_call(msgs, args.calls))
            s, f = statistics.median(sdk), statistics.median(fast)
            print(f"{steps:>4} tool steps ({len(msgs):>3} messages): openai SDK transform {s:6.2f} | cowork fast "
                  f"path {f:6.2f} | {s / f:4.1f}x less CPU per call")

    try:
        asyncio.run(run())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
