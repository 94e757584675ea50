"""Per-step overhead of cowork's agent loop (journal writes, events, gateway, pause checks) over a plain litellm
loop, both against the same local scripted server in the same run, with the same number of steps.

A step is one model call answered with one `read_file` tool call and its result. The server runs in a process of
its own and keeps connections alive, as a provider does.

The two loops run interleaved: they take turns at the points where a lane may be held (before each model call and
before each tool call), so a plain step and a cowork step are a few milliseconds apart and a change in the box's
speed (other processes, a noisy neighbour) hits both alike. Each loop's time is the time it held the turn. Printed
are the medians per step of each loop and the median over trials of the difference (goal: <= 1.0 ms), once with
cowork's fast path for the openai SDK's request transform (what cowork runs; see bench_long_lane.py) and once with
the SDK's own transform, each time the same for both loops.

    uv run python bench/bench_step_overhead.py [--steps 40] [--trials 15]
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
from tests.support.team import PLANNER, make_team  # noqa: E402

DEV = """name: dev
mandate: Implements code changes on its lane's branch.
tools: [read_file]
"""


class Turns:
    """Two loops taking turns: a loop runs only while it holds the turn; `wall` and `cpu` are the time each held it.

    `switch(me)` ends loop `me`'s turn (its clock stops), hands the turn over and returns when it comes back. A loop
    that has ended calls `done(me)`; from then on the other runs alone.
    """

    def __init__(self) -> None:
        self.wall, self.cpu = [0.0, 0.0], [0.0, 0.0]
        self._mine = [asyncio.Event(), asyncio.Event()]
        self._ended = [False, False]
        self._t = (0.0, 0.0)

    def _stop(self, me: int) -> None:
        self.wall[me] += time.perf_counter() - self._t[0]
        self.cpu[me] += time.process_time() - self._t[1]

    def _go(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    async def start(self, me: int) -> None:
        if me == 1:
            await self._mine[1].wait()
            self._mine[1].clear()
        self._go()

    async def switch(self, me: int) -> None:
        self._stop(me)
        other = 1 - me
        if not self._ended[other]:
            self._mine[other].set()
            await self._mine[me].wait()
            self._mine[me].clear()
        self._go()

    def done(self, me: int) -> None:
        self._stop(me)
        self._ended[me] = True
        self._mine[1 - me].set()


def script(steps: int) -> list:
    return [tool_call("read_file", path="README.md")] * steps + [
        tool_call("finish", status="done", summary="read it", checklist=[])]


async def plain_loop(server: ServerProcess, steps: int, root: Path, turns: Turns | None = None,
                     me: int = 0) -> tuple[float, float]:
    """The baseline: litellm calls and the same tool done inline, nothing recorded. The request carries the same
    tool schemas cowork sends (read_file, answer, finish), so both loops pay the same client-side encoding."""
    import litellm

    from cowork.tools.specs import spec

    tools = [spec("read_file"), spec("answer"), spec("finish")]
    messages = [{"role": "system", "content": "PLAIN bench loop"}, {"role": "user", "content": "go"}]
    if turns is not None:
        await turns.start(me)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps + 1):
        if turns is not None:
            await turns.switch(me)  # where cowork's loop is held before a model call
        r = await litellm.acompletion(model="openai/scripted", api_base=server.url, api_key="k", messages=messages,
                                      tools=tools, num_retries=0, timeout=30)
        msg = r.choices[0].message
        call = msg.tool_calls[0]
        if call.function.name == "finish":
            break
        messages.append({"role": "assistant", "content": msg.content, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                             "arguments": call.function.arguments}}]})
        if turns is not None:
            await turns.switch(me)  # and before a tool call
        content = (root / "README.md").read_text()
        messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    if turns is not None:
        turns.done(me)
        return turns.wall[me] / (steps + 1), turns.cpu[me] / (steps + 1)
    return (time.perf_counter() - t0) / (steps + 1), (time.process_time() - c0) / (steps + 1)


async def cowork_loop(server: ServerProcess | None, steps: int, root: Path, trial: int, turns: Turns | None = None,
                      me: int = 1) -> tuple[float, float]:
    """cowork's loop: run_llm_lane with the real gateway, journal and store, as the runner calls it."""
    from cowork.config import load_settings
    from cowork.engines.llm import Hooks, run_llm_lane
    from cowork.roles import load_roles
    from cowork.runner import control
    from cowork.runner.journal import Journal
    from cowork.store import Store
    from cowork.store import lanes as lanes_db
    from cowork.tools.gateway import Gateway, LaneCtx
    from cowork.workspace import Workspace

    ws = Workspace(root)
    st = Store(ws.db_path)
    settings = load_settings(ws.config_path)
    roles = load_roles(ws.roles_dir, root)
    task = f"t{trial}-bench"
    lanes_db.create_task(st, task, "bench", state="running")
    lanes_db.add_lane(st, task, "work", "dev", "bench")
    ctx = LaneCtx(ws=ws, store=st, settings=settings, roles=roles, role=roles["dev"], task_id=task, lane_id="work",
                  worktree=root)

    async def hold() -> None:  # as the runner's: the lane waits while paused
        while control.paused(st, task, "work"):
            await asyncio.sleep(0.1)
        if turns is not None:
            await turns.switch(me)

    journal = Journal(st, task, "work")
    if turns is not None:
        await turns.start(me)
    t0, c0 = time.perf_counter(), time.process_time()
    out = await run_llm_lane(ctx, Gateway(ctx), journal, system="COWORK bench loop", kickoff="go",
                             hooks=Hooks(hold=hold))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if turns is not None:
        turns.done(me)
        elapsed, cpu = turns.wall[me], turns.cpu[me]
    assert out.status == "done", out
    return elapsed / (steps + 1), cpu / (steps + 1)  # steps + 1 model calls, the last one answered by finish


async def bookkeeping_only(steps: int, root: Path, trial: int) -> float:
    """cowork's loop with the model boundary answered in-process (no HTTP, no litellm): what cowork itself costs
    per step (journal, events, gateway, pause and budget checks)."""
    from cowork.engines import models

    real = models.complete

    async def canned(choice, messages, tools=None, **kw):
        n = sum(1 for m in messages if m["role"] == "assistant")
        name, args = (("finish", '{"status": "done", "summary": "s", "checklist": []}') if n >= steps
                      else ("read_file", '{"path": "README.md"}'))
        return models.Completion({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": args}}]},
            "openai/scripted", 100, 10, 0.0)

    models.complete = canned
    try:
        return (await cowork_loop(None, steps, root, trial))[0]
    finally:
        models.complete = real


async def main_async(steps: int, trials: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cowork-bench-"))
    root = make_team(tmp / "repo", "http://127.0.0.1:9/v1", {"planner": PLANNER, "dev": DEV},
                     extra_toml="[policy]\nmax_steps_per_lane = 10000\nmax_repeated_calls = 100000\n")
    with ServerProcess({"PLAIN bench loop": script(steps), "COWORK bench loop": script(steps)}, tmp) as server:
        (root / "cowork.toml").write_text((root / "cowork.toml").read_text().replace("http://127.0.0.1:9/v1",
                                                                                     server.url))
        os.environ["SCRIPTED_KEY"] = "k"
        from cowork.engines.models import litellm

        litellm()  # imported as cowork imports it (the runner does the same); import time is not a step
        from cowork.engines import openai_fastpath

        await plain_loop(server, 3, root)
        await cowork_loop(server, 3, root, 0)
        sdk = ("with the openai SDK's own request transform in both loops", openai_fastpath.uninstall)
        if os.environ.get("COWORK_OPENAI_FASTPATH", "1") != "0":
            as_run = openai_fastpath.install
            configs = (("with cowork's fast path for the openai SDK's request transform, as cowork runs", as_run), sdk)
        else:  # the fast path is switched off, for cowork and so for this bench: one setting to measure
            as_run = openai_fastpath.uninstall
            configs = ((sdk[0] + " (COWORK_OPENAI_FASTPATH=0), as cowork runs", as_run),)
        results = []
        for n, (label, use) in enumerate(configs):
            use()
            plain, cow = [], []
            for i in range(trials):  # interleaved, alternating which loop takes the first turn
                turns = Turns()
                p, c = await asyncio.gather(plain_loop(server, steps, root, turns, me=i % 2),
                                            cowork_loop(server, steps, root, 1 + n * trials + i, turns,
                                                        me=1 - i % 2))
                plain.append(p)
                cow.append(c)
            results.append((label, plain, cow))
        as_run()
        own = [await bookkeeping_only(steps, root, 1000 + i) for i in range(trials)]
    print(f"steps per trial: {steps + 1} model calls per loop, trials: {trials} per setting (loops interleaved), "
          f"load average {os.getloadavg()[0]:.1f}")
    for label, plain, cow in results:
        print(label + ":")
        for kind, k in (("wall", 0), ("cpu ", 1)):
            p = statistics.median(x[k] for x in plain) * 1000
            c = statistics.median(x[k] for x in cow) * 1000
            d = statistics.median(y[k] - x[k] for x, y in zip(plain, cow)) * 1000
            print(f"  {kind}: plain litellm loop median {p:7.3f} ms/step | cowork loop median {c:7.3f} ms/step | "
                  f"overhead (median over trials) {d:+7.3f} ms/step (goal <= 1.0 ms)")
    print(f"cowork's own bookkeeping, model answered in-process: median {statistics.median(own) * 1000:.3f} "
          "ms/step (wall)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--trials", type=int, default=15)
    args = ap.parse_args()
    asyncio.run(main_async(args.steps, args.trials))


if __name__ == "__main__":
    main()
