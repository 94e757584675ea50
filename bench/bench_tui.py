"""Mission control under load: 100 lanes, and 2,000 events per second written by a separate process.

The app runs headless (`run_test`, 160x50) with its real poller. Each event's latency is the time from its write
(`events.ts`, stamped by the writer) to the moment the timeline has rendered it (the timeline's shown hook fires
after the screen refresh that painted the batch). Also reported: the app's CPU use (all its threads) and the
writer's. Goal: median latency under 100 ms.

    uv run python bench/bench_tui.py [--seconds 10] [--rate 2000] [--lanes 100] [--poll 0.1 0.2 0.05]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cowork.tui.app import DEFAULT_POLL_S  # noqa: E402

KINDS = ("model.call", "tool.call", "tool.call", "tool.call", "message.sent", "tool.denied", "check.passed")
STATES = ("running", "waiting-approval", "checking", "running", "in-review", "merge-queue")


def make_team(root: Path, n_lanes: int):
    from cowork.init import init_team
    from cowork.store import Store
    from cowork.store import lanes as L
    from cowork.workspace import Workspace

    root.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "Bench"], ["config", "user.email", "b@b"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    (root / "README.md").write_text("bench\n")
    subprocess.run(["git", "add", "README.md"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True)
    init_team(root)
    ws = Workspace(root)
    store = Store.for_workspace(ws)
    for t in range(n_lanes // 10):
        task = f"t{t}-feature"
        L.create_task(store, task, f"feature {t}", state="running")
        for i in range(10):
            L.add_lane(store, task, f"lane{i}", ("dev", "reviewer", "planner")[i % 3], f"goal {i} of task {t}")
            L.set_lane_state(store, task, f"lane{i}", "running")
    store.close()
    return ws


def writer(db: str, seconds: float, rate: int, n_lanes: int) -> None:
    """Append `rate` events per second (small transactions every ~5 ms) and touch ~100 lane rows per second."""
    from cowork.store import Store
    from cowork.store import lanes as L

    store = Store(db)
    lanes = [(f"t{i // 10}-feature", f"lane{i % 10}") for i in range(n_lanes)]
    rnd = random.Random(7)
    start = time.monotonic()
    written = 0
    next_lanes = start
    while (elapsed := time.monotonic() - start) < seconds:
        due = min(int(elapsed * rate), written + rate // 10) - written
        if due > 0:
            with store.tx():
                for _ in range(due):
                    task, lane = rnd.choice(lanes)
                    store.event(rnd.choice(KINDS), f"step {written} of {task}/{lane}: did a thing", actor="dev",
                                task=task, lane=lane, role="dev", tokens_in=100, usd=0.0001)
                    written += 1
                if time.monotonic() >= next_lanes:
                    next_lanes += 0.1
                    for task, lane in rnd.sample(lanes, 10):
                        L.update_lane(store, task, lane, tokens_in=rnd.randint(0, 90000), usd=rnd.random())
                    task, lane = rnd.choice(lanes)
                    L.set_lane_state(store, task, lane, rnd.choice(STATES))
        time.sleep(0.005)
    store.close()
    print(written, flush=True)


async def measure(ws, seconds: float, rate: int, n_lanes: int, poll: float) -> dict:
    from cowork.store import Store
    from cowork.tui.app import make_app

    store = Store.for_workspace(ws)
    top = store.scalar("SELECT max(id) FROM events", default=0)
    app = make_app(ws, store, poll_interval=poll)
    latencies: list[float] = []
    batches: list[int] = []

    def shown(events: list[dict], at: float) -> None:
        batches.append(len(events))
        latencies.extend(at - e["ts"] for e in events if e["id"] > top)

    async with app.run_test(size=(160, 50)) as pilot:
        while app.header_info is None or app.lanes_table.row_count < n_lanes:
            await pilot.pause(0.05)
        app.timeline.shown_hooks.append(shown)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, wall0 = time.process_time(), time.monotonic()
        proc = subprocess.Popen([sys.executable, __file__, "--writer", str(ws.db_path), str(seconds), str(rate),
                                 str(n_lanes)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        while proc.poll() is None:
            await asyncio.sleep(0.2)
        written = int(proc.stdout.read().strip() or 0)
        last = store.scalar("SELECT max(id) FROM events", default=0)
        deadline = time.monotonic() + 10
        while app.last_event < last and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await pilot.pause(0.3)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    store.close()
    writer_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    lat = sorted(latencies)
    return {
        "poll": poll, "written": written, "shown": len(lat), "batches": len(batches),
        "median_ms": statistics.median(lat) * 1000 if lat else float("nan"),
        "p95_ms": lat[int(len(lat) * 0.95) - 1] * 1000 if lat else float("nan"),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "app_cpu": cpu / wall, "writer_cpu": writer_cpu / seconds,
    }


def idle_cpu(seconds: float = 3.0) -> float:
    """The app's CPU use while the store is quiet (one cheap read per poll)."""
    from cowork.tui.app import make_app

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            ws = make_team(Path(tmp) / "team", 100)
            app = make_app(ws)
            async with app.run_test(size=(160, 50)) as pilot:
                while app.lanes_table.row_count < 100:
                    await pilot.pause(0.05)
                await asyncio.sleep(1.5)  # let the first batches settle
                cpu0, wall0 = time.process_time(), time.monotonic()
                await asyncio.sleep(seconds)
                return (time.process_time() - cpu0) / (time.monotonic() - wall0)

    return asyncio.run(run())


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--lanes", type=int, default=100)
    parser.add_argument("--poll", type=float, nargs="+", default=[DEFAULT_POLL_S, 0.2, 0.05],
                        help="poll intervals to compare (the first is the one the goal is checked on)")
    args = parser.parse_args()
    print(f"idle: {idle_cpu():.1%} CPU with nothing being written (default poll {DEFAULT_POLL_S}s)")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    print(f"cowork mc under load: {args.lanes} lanes, {args.rate} events/s for {args.seconds:.0f}s, "
          f"headless 160x50, {os.cpu_count()} cores")
    print(f"{'poll s':>7} {'written':>8} {'shown':>7} {'batches':>8} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}"
          f" {'app CPU':>8} {'writer CPU':>10}")
    results = []
    for poll in args.poll:
        with tempfile.TemporaryDirectory() as tmp:
            ws = make_team(Path(tmp) / "team", args.lanes)
            r = asyncio.run(measure(ws, args.seconds, args.rate, args.lanes, poll))
        results.append(r)
        print(f"{r['poll']:>7.2f} {r['written']:>8} {r['shown']:>7} {r['batches']:>8} {r['median_ms']:>10.1f}"
              f" {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} {r['app_cpu']:>7.0%} {r['writer_cpu']:>10.0%}")
    base = results[0]
    for r in results[1:]:
        print(f"poll {r['poll']:.2f}s vs {base['poll']:.2f}s: median x{r['median_ms'] / base['median_ms']:.2f}, "
              f"app CPU x{r['app_cpu'] / base['app_cpu']:.2f}")
    ok = base["median_ms"] < 100
    print(f"goal (median < 100 ms at poll {base['poll']:.2f}s): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
