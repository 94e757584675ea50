"""Fan-out: N lanes at once, each 2 model calls with 1 s of scripted latency, worktrees and packet commits included.

The ideal is 2 s whatever N (the model calls overlap perfectly); the ratio wall / 2 s shows what cowork adds
(worktrees, the packet commit, journal, scheduling) on top of what the model client itself costs: the same N x 2
calls made by bare litellm coroutines are timed in the same run, as the floor for one process on this machine.
Merges are serial by design and reported apart. Each N also says where the time went, from the server's own
arrival stamps: when every first request was in, when every second one was (after its 1 s reply), and how long
after the last reply the round was done (every packet committed, for cowork), and how long the cyclic garbage
collector held the event loop (every lane waits while it runs).

    uv run python bench/bench_fanout.py [--lanes 4 8 16] [--latency 1.0] [--rounds 3]
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

from tests.support.scripted_server import ServerProcess, delay, tool_call  # noqa: E402
from tests.support.team import DEV, PLANNER, make_team  # noqa: E402


GOAL = 1.05  # wall / ideal, from the issue


class GcPauses:
    """The cyclic collector's pauses inside a `with GcPauses() as pauses:` block: `total` and `longest`, in s."""

    def __enter__(self) -> "GcPauses":
        import gc

        self.total = self.longest = 0.0
        self._t = 0.0
        gc.callbacks.append(self._seen)
        return self

    def __exit__(self, *exc) -> None:
        import gc

        gc.callbacks.remove(self._seen)

    def _seen(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            took = time.perf_counter() - self._t
            self.total += took
            self.longest = max(self.longest, took)


def lane_scripts(key: str, n: int, latency: float) -> dict:
    """Each of `n` lanes (its route key `key` with the lane number) writes one file, then finishes: 2 model calls."""
    return {key.format(i=i): [
        delay(latency, tool_call("write_file", path=f"out/{i:02d}.txt", content=f"lane {i}\n")),
        delay(latency, tool_call("finish", status="done", summary=f"lane {i}", checklist=[]))] for i in range(n)}


def run_one(n: int, latency: float, base: Path) -> dict:
    server = ServerProcess(lane_scripts(f"Goal: fan lane {{i:02d}} of {n}.", n, latency), base)
    try:
        result = _run(server, n, base)
        result.update(phases(server.arrivals(), result["t0"], latency, result["to_packets"]))
        return result
    finally:
        server.stop()


def phases(arrivals: list[dict], t0: float, latency: float, done: float) -> dict:
    """Where a round's time went, by the server's clock: when the last lane's first request had arrived, when the
    last second request had arrived (counted from its reply, `latency` after its first), and how long after the
    last reply the round was done. Seconds."""
    first = max(a["wall"] for a in arrivals if a["index"] == 0) - t0
    second = max(a["wall"] for a in arrivals if a["index"] == 1) - t0
    return {"first_in": first, "second_in": second - latency, "after_last": done - (second + latency)}


def _run(server: "ServerProcess", n: int, base: Path) -> dict:
    from cowork.config import load_settings
    from cowork.plan import LaneSpec, Plan, PlanMeta
    from cowork.roles import load_roles
    from cowork.runner import planning
    from cowork.runner.runner import Runner
    from cowork.store import Store
    from cowork.workspace import Workspace

    root = make_team(base / f"repo{n}-{time.time_ns()}", server.url, {"planner": PLANNER, "dev": DEV},
                     concurrency=max(4, n))
    ws = Workspace(root)
    st = Store(ws.db_path)
    settings, roles = load_settings(ws.config_path), load_roles(ws.roles_dir, root)
    draft = planning.create_task(ws, st, settings, roles, f"fan out {n}")
    plan = Plan(meta=PlanMeta(title=f"fan out {n}"),
                lanes=[LaneSpec(id=f"l{i:02d}", role="dev", goal=f"fan lane {i:02d} of {n}.") for i in range(n)])
    planning.save_plan(ws, st, settings, draft.task, plan)
    planning.approve(st, draft.task, plan)
    import resource

    r0s, r0c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with GcPauses() as pauses:
        result = asyncio.run(Runner(ws, tasks=[draft.task]).run())
    total = time.time() - t0
    r1s, r1c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_self = (r1s.ru_utime + r1s.ru_stime) - (r0s.ru_utime + r0s.ru_stime)
    cpu_children = (r1c.ru_utime + r1c.ru_stime) - (r0c.ru_utime + r0c.ru_stime)
    assert result == {draft.task: "done"}, result
    queued = [e["ts"] for e in st.events(task=draft.task, kinds=["lane.state"]) if e["data"]["state"] == "merge-queue"]
    started = [e["ts"] for e in st.events(task=draft.task, kinds=["lane.state"]) if e["data"]["state"] == "running"]
    assert len(queued) == n
    if os.environ.get("FANOUT_DEBUG"):
        for e in st.events(task=draft.task, kinds=["lane.state", "model.call", "tool.call"]):
            print(f"  {e['ts'] - t0:6.3f} {e['lane_id']} {e['kind']} {e['summary'][:60]}")
    return {"lanes": n, "t0": t0, "to_packets": max(queued) - t0, "first_start": min(started) - t0,
            "last_start": max(started) - t0, "total": total,
            "cpu_self": cpu_self, "cpu_children": cpu_children, "gc_total": pauses.total, "gc_longest": pauses.longest}


def plain_fanout(n: int, latency: float, base: Path) -> dict:
    """The same N x 2 calls made by bare litellm coroutines (no journal, worktree or commit), each sending what a
    lane sends: the role's tool schemas plus answer and finish, and a system prompt and kickoff built the same way.
    The floor on this box."""
    import litellm

    from cowork.engines import prompts
    from cowork.roles import load_roles
    from cowork.tools.specs import spec

    team = make_team(base / f"plain{n}-{time.time_ns()}", "http://127.0.0.1:9/v1", {"planner": PLANNER, "dev": DEV})
    dev = load_roles(team / "roles", team)["dev"]
    tools = [spec(name) for name in [*dev.tools, "answer", "finish"]]

    def first_messages(i: int) -> list[dict]:
        goal = f"PLAIN fan {i:02d} of {n}."
        brief = (f"---\ncowork: brief/v1\ntask: t1-fan-out-{n}\nfrom: human\nto: planner\n"
                 f"created: '2026-01-01T00:00:00Z'\n---\n# fan out {n}\n\nfan out {n}\n")  # as the task's brief.md
        return [{"role": "system", "content": prompts.lane_system(dev, team="testteam", task=f"t1-fan-out-{n}",
                                                                  lane=f"l{i:02d}", goal=goal, brief=brief)},
                {"role": "user", "content": prompts.lane_kickoff(goal)}]

    server = ServerProcess(lane_scripts(f"PLAIN fan {{i:02d}} of {n}.", n, latency), base)

    async def lane(i: int) -> None:
        messages = first_messages(i)
        for _ in range(2):
            r = await litellm.acompletion(model="openai/scripted", api_base=server.url, api_key="k",
                                          messages=messages, tools=tools, num_retries=0, timeout=30)
            call = r.choices[0].message.tool_calls[0]
            messages += [{"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                                 "arguments": call.function.arguments}}]},
                         {"role": "tool", "tool_call_id": call.id, "content": "ok"}]

    async def all_lanes() -> tuple[float, float]:
        t0 = time.time()
        await asyncio.gather(*(lane(i) for i in range(n)))
        return t0, time.time() - t0

    try:
        with GcPauses() as pauses:
            t0, total = asyncio.run(all_lanes())
        return {"total": total, "gc_total": pauses.total, "gc_longest": pauses.longest,
                **phases(server.arrivals(), t0, latency, total)}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lanes", type=int, nargs="*", default=[4, 8, 16])
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per N; bare litellm and cowork alternate")
    args = ap.parse_args()
    ideal = 2 * args.latency
    os.environ["SCRIPTED_KEY"] = "k"
    import litellm  # noqa: F401  (warm: import time is not fan-out)

    base = Path(tempfile.mkdtemp(prefix="cowork-fanout-"))
    run_one(2, 0.05, base)  # warm the litellm client path once
    print(f"ideal {ideal:.2f} s (2 model calls x {args.latency:g} s), load average {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} rounds per N, bare litellm and cowork alternating; ratios are median (min-max)")
    for n in args.lanes:
        plains, runs = [], []
        for _ in range(args.rounds):  # alternating, so the box's drift over seconds hits both alike
            plains.append(plain_fanout(n, args.latency, base))
            runs.append(run_one(n, args.latency, base))
        cowork = [r["to_packets"] for r in runs]
        bare = [p["total"] for p in plains]
        over = statistics.median(c - p for c, p in zip(cowork, bare))
        met = sum(1 for c in cowork if c / ideal <= GOAL)
        mid = runs[cowork.index(sorted(cowork)[len(cowork) // 2])]  # the median round, for its details
        print(f"N={n:>2}: bare litellm ratio {_spread(bare, ideal)} | cowork: all packets committed, ratio "
              f"{_spread(cowork, ideal)} (goal <= {GOAL}: {met} of {len(cowork)} rounds; {over * 1000:+.0f} ms over "
              f"bare litellm) | median round: lanes started {mid['first_start']:.2f}-{mid['last_start']:.2f} s, "
              f"with serial merges + summary {mid['total']:.2f} s, cpu: runner {mid['cpu_self']:.2f} s, "
              f"git and server {mid['cpu_children']:.2f} s")
        print("      each round, bare litellm / cowork:", "  ".join(f"{p / ideal:.3f} / {c / ideal:.3f}"
                                                              for p, c in zip(bare, cowork)))
        print("      where the time went, median over rounds, bare litellm / cowork (ms; arrivals by the server's "
              "clock): "
              + "; ".join(f"{label} {_ms(plains, key)} / {_ms(runs, key)}" for key, label in (
                  ("first_in", "every first request in by"),
                  ("second_in", f"every second request in by (after {args.latency:g} s)"),
                  ("after_last", "done after the last reply"),
                  ("gc_total", "the garbage collector's pauses"), ("gc_longest", "its longest"))))


def _ms(rounds: list[dict], key: str) -> str:
    return f"{statistics.median(r[key] for r in rounds) * 1000:.0f}"


def _spread(seconds: list[float], ideal: float) -> str:
    ratios = sorted(s / ideal for s in seconds)
    return f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})"


if __name__ == "__main__":
    main()
