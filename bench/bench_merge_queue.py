"""Benchmark: 50 ready lanes merged through cowork's merge queue vs a plain `git merge` loop, in one run.

Each lane is a branch touching its own file. Three ways are timed on the same branches:

- plain:   `git merge --no-ff` of each branch, one after the other, in a scratch worktree (the floor);
- next:    `merge_next` per lane: lock + queue + merge worktree + trailers + CAS update-ref + events + fast-forward
           of the user's clean checkout, taking and releasing the lock for every lane;
- drain:   `process_queue`: the same, holding the lock for the whole drain.

Run: `uv run python bench/bench_merge_queue.py [--lanes 50]`. Scratch repo under a temp dir, removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowork.config import load_settings  # noqa: E402
from cowork.gitops.git import git, head  # noqa: E402
from cowork.gitops.merge import enqueue, merge_next, process_queue  # noqa: E402
from cowork.store import Store  # noqa: E402
from cowork.workspace import Workspace  # noqa: E402


def setup(root: Path, lanes: int) -> tuple[Workspace, Store, str]:
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    for key, value in (("user.name", "Bench"), ("user.email", "bench@example.com"), ("commit.gpgsign", "false")):
        git("config", key, value, cwd=root)
    (root / "cowork.toml").write_text('name = "bench"\n')
    (root / "README.md").write_text("# bench\n")
    (root / ".gitignore").write_text(".cowork/\n")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "initial", cwd=root)
    ws = Workspace(root.resolve())
    store = Store(ws.db_path)
    store.execute("INSERT INTO tasks(id, title, state, created_at, updated_at) VALUES ('b', 'bench', 'running', 0, 0)")
    scratch = root.parent / "scratch"
    git("worktree", "add", "-q", "--detach", str(scratch), "main", cwd=root)
    for i in range(lanes):
        git("checkout", "-q", "-b", f"cowork/b/l{i:02d}", "main", cwd=scratch)
        (scratch / f"lane{i:02d}.txt").write_text(f"work of lane {i}\n")
        git("add", "-A", cwd=scratch)
        git("commit", "-q", "-m", f"lane {i}", cwd=scratch)
        store.execute("INSERT INTO lanes(task_id, id, role, goal, state, branch, created_at, updated_at) "
                      "VALUES ('b', ?, 'dev', ?, 'in-review', ?, 0, 0)", (f"l{i:02d}", f"goal {i}", f"cowork/b/l{i:02d}"))
    git("checkout", "-q", "--detach", "main", cwd=scratch)
    return ws, store, head(root)


def plain_loop(ws: Workspace, lanes: int, initial: str) -> list[float]:
    scratch = ws.root.parent / "scratch"
    git("checkout", "-q", "--detach", initial, cwd=scratch)
    times = []
    for i in range(lanes):
        t = time.perf_counter()
        subprocess.run(["git", "merge", "-q", "--no-ff", "--no-edit", f"cowork/b/l{i:02d}"], cwd=scratch, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def reset(ws: Workspace, store: Store, initial: str, lanes: int) -> None:
    git("update-ref", "refs/heads/main", initial, cwd=ws.root)
    git("reset", "-q", "--hard", "main", cwd=ws.root)
    store.execute("UPDATE lanes SET state='in-review', merge_commit=NULL")
    for i in range(lanes):
        enqueue(store, "b", f"l{i:02d}")


def next_loop(ws: Workspace, store: Store, settings, lanes: int) -> list[float]:
    times = []
    for _ in range(lanes):
        t = time.perf_counter()
        res = merge_next(ws, store, settings, holder="bench")
        assert res is not None and res.status == "merged", res
        times.append(time.perf_counter() - t)
    assert (ws.root / f"lane{lanes - 1:02d}.txt").exists(), "the user's checkout was not fast-forwarded"
    return times


def drain(ws: Workspace, store: Store, settings, lanes: int) -> list[float]:
    t = time.perf_counter()
    results = process_queue(ws, store, settings, holder="bench")
    wall = time.perf_counter() - t
    assert len(results) == lanes and all(r.status == "merged" for r in results)
    return [wall / lanes] * lanes  # only the drain's total is measured


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all three ways, interleaved (noise)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cowork-bench-"))
    try:
        ws, store, initial = setup(tmp / "repo", args.lanes)
        settings = load_settings(ws.config_path)
        print(f"{args.lanes} lanes, each a branch touching its own file; {args.rounds} interleaved rounds; "
              f"git {git('version', cwd=tmp).split()[-1]}; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cpus")
        ways = {"plain": [], "next": [], "drain": []}   # per round: list of per-merge seconds
        for _ in range(args.rounds):
            ways["plain"].append(plain_loop(ws, args.lanes, initial))
            reset(ws, store, initial, args.lanes)
            ways["next"].append(next_loop(ws, store, settings, args.lanes))
            reset(ws, store, initial, args.lanes)
            ways["drain"].append(drain(ws, store, settings, args.lanes))
        totals = {name: statistics.median(sum(r) for r in rounds) for name, rounds in ways.items()}
        for name, rounds in ways.items():
            every = [t for r in rounds for t in r]
            line = (f"{name:<6} total {totals[name]:6.3f} s  {args.lanes / totals[name]:6.1f} merges/s")
            if name != "drain":
                line += f"   median {statistics.median(every) * 1000:6.1f} ms   p95 {p95(every) * 1000:6.1f} ms"
            else:
                line += "   (one lock held for the whole drain; per-merge times not split)"
            print(line)
        medians = {name: statistics.median(t for r in rounds for t in r) for name, rounds in ways.items()}
        print(f"ratio  next/plain {totals['next'] / totals['plain']:4.1f}x total, "
              f"{medians['next'] / medians['plain']:4.1f}x median;  drain/plain {totals['drain'] / totals['plain']:4.1f}x total")
        print("(totals are the median over rounds; median/p95 are over every merge of every round)")
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
