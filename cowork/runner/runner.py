"""The runner: owns tasks (a lease each), schedules their ready lanes under the concurrency cap, merges passing
lanes one at a time, and closes each task with its summary.

The lanes table is the truth and may grow while a task runs (delegated, consult and review lanes): the scheduler
re-reads it every tick. Model calls are asyncio, commands and checks are asyncio subprocesses, git is in threads.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cowork.config import load_settings
from cowork.gitops import merge
from cowork.roles import team_roles
from cowork.procs import stop_orphans
from cowork.runner import control, lease
from cowork.runner.lane import run_lane
from cowork.runner.tasks import ACTIVE_LANE_STATES
from cowork.store import Store
from cowork.store import lanes as lanes_db
from cowork.team import budgets

WORKING = {"running", "checking", "paused", "waiting-approval"}  # a lane in one of these has (had) a coroutine
DEAD_DEPS = {"failed", "blocked", "cancelled", "reverted"}
MERGER_YIELD_TICKS = 100  # at most 1 s of waiting for lanes' commits before a merge
EXPIRE_EVERY_S = 5.0  # how often overdue approvals are expired while the runner lives (one indexed SELECT)


class Runner:
    """Runs tasks to their end.

    Args:
        ws: the team's Workspace.
        tasks: task ids to run; with `reclaim`, also every unfinished task no live runner holds.
        poll_s: how often the lanes table is re-read.
    """

    def __init__(self, ws, *, tasks: list[str] | None = None, reclaim: bool = False, poll_s: float = 0.1,
                 store: Store | None = None):
        self.ws = ws
        self.store = store or Store.for_workspace(ws)
        self.settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
        self.roles = team_roles(ws, self.settings)  # every role: its agents may ask or delegate to any of them
        self.wanted = list(tasks or [])
        self.reclaim = reclaim
        self.poll_s = poll_s
        self.id = ""
        self.owned: list[str] = []
        self.active: dict[tuple[str, str], asyncio.Task] = {}
        self.results: dict[str, str] = {}
        self._wake: asyncio.Event | None = None
        self._told_waiting: set[str] = set()
        self._told_merge: set[int] = set()  # merge-queue entries a human was told to merge (merge.auto off)
        self._closing: dict[str, asyncio.Task] = {}  # tasks writing their summary (in a thread: see _close)
        self.committing = 0  # lanes' git commits in flight (cowork.runner.lane._commit)
        self.stopping = threading.Event()  # set as the runner stops: a merge check in the merger's thread ends
        self.sync_lane = self._sync_lane

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- the main loop ---------------------------------------------------------------------------------------

    async def run(self) -> dict[str, str]:
        """Run until every owned task has ended. Returns {task: final state}."""
        self._wake = asyncio.Event()
        # git runs in threads: the default pool (cpus + 4) would queue lanes' commits behind each other
        workers = max(8, 2 * self.settings.concurrency + 4)
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers, thread_name_prefix="cowork-git"))
        self.id = lease.register(self.store)
        self.store.event("runner.started", f"runner {self.id} started", actor="runner",
                         data={"runner": self.id, "tasks": self.wanted, "reclaim": self.reclaim})
        stopped = stop_orphans(self.ws.state_dir)  # checks and commands a killed runner left running
        if stopped:
            self.store.event("runner.cleanup", f"runner {self.id} stopped what a runner that died had left running: "
                             + "; ".join(stopped), actor="runner", data={"stopped": stopped})
        beat = asyncio.create_task(self._heartbeat())
        merger = asyncio.create_task(self._merger())
        expirer = asyncio.create_task(self._expirer())
        try:
            self._claim()
            while self.owned:
                for task in list(self.owned):
                    closing = self._closing.get(task)
                    if closing is not None:
                        if closing.done():
                            del self._closing[task]
                            state = closing.result()  # a crash while closing ends the runner, as before
                            if state == "running":  # reopened: a lane was sent back while it closed
                                continue
                            self.results[task] = state
                            self.owned.remove(task)
                            lease.release(self.store, self.id, task)
                        continue
                    self._schedule(task)
                    rows = self._closable(task)
                    if rows is not None:
                        self._closing[task] = asyncio.create_task(self._close(task, rows), name=f"close {task}")
                if not self.owned:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
        finally:
            self.stopping.set()
            for t in self.active.values():
                t.cancel()
            merger.cancel()
            beat.cancel()
            expirer.cancel()
            await asyncio.gather(*self.active.values(), *self._closing.values(), merger, beat, expirer,
                                 return_exceptions=True)
            lease.stop(self.store, self.id, self.owned)
        return self.results

    def _claim(self) -> None:
        tasks = list(self.wanted)
        if self.reclaim:
            tasks += [t for t in lease.orphaned(self.store, grace_s=0) if t not in tasks]
        for task in tasks:
            row = lanes_db.get_task(self.store, task)
            if row is None or row["state"] != "running":  # ended, or not approved yet: nothing to run
                if row is not None:
                    self.results[task] = row["state"]
                continue
            if lease.acquire(self.store, self.id, task):
                self.owned.append(task)
                if self.reclaim and task not in self.wanted or self._has_orphans(task):
                    self.store.event("runner.recovered", f"runner {self.id} reclaimed task {task}", actor="runner",
                                     task=task, data={"runner": self.id})
            else:
                self.results[task] = "held-elsewhere"

    def _has_orphans(self, task: str) -> bool:
        return any(r["state"] in WORKING for r in lanes_db.list_lanes(self.store, task))

    def _schedule(self, task: str) -> None:
        rows = lanes_db.list_lanes(self.store, task)
        by_id = {r["id"]: r for r in rows}
        for r in rows:
            key = (task, r["id"])
            if key in self.active:
                if self.active[key].done():
                    del self.active[key]
                else:
                    continue
            if r["state"] == "blocked" and r["feedback"] and self._return_to_role(r):
                continue
            if r["state"] in WORKING:  # left mid-flight by a dead runner (or by us a moment ago): resume it
                self._start(r)
                continue
            if r["state"] != "queued":
                continue
            deps = [by_id.get(d) for d in r["depends_on"]]
            dead = [d for d, row in zip(r["depends_on"], deps) if row is None or row["state"] in DEAD_DEPS]
            if dead:
                lanes_db.set_lane_state(self.store, task, r["id"], "cancelled",
                                        detail=f"dependency {', '.join(dead)} did not merge")
                continue
            if not all(row["state"] in ("merged", "done") for row in deps):
                continue
            # a consult lane answers a lane that waits for it inside `ask`: holding it back could deadlock
            if r["kind"] != "consult" and self._running_count() >= self.settings.concurrency:
                continue
            if control.paused(self.store, task, r["id"]) is not None:
                continue
            self._start(r)

    def _running_count(self) -> int:
        return sum(1 for t in self.active.values() if not t.done())

    def _start(self, row: dict) -> None:
        key = (row["task_id"], row["id"])
        self.active[key] = asyncio.create_task(run_lane(self, row), name=f"lane {key[0]}/{key[1]}")
        self.active[key].add_done_callback(lambda _t: self.wake())

    def _return_to_role(self, row: dict) -> bool:
        """A lane the merger blocked (conflict, failed merge check) goes back to its role while retries remain."""
        if not self._could_return(row):
            return False
        with self.store.tx():
            if merge.blocked_by(row["feedback"]) == "checks":
                lanes_db.update_lane(self.store, row["task_id"], row["id"], check_failures=row["check_failures"] + 1)
            lanes_db.set_lane_state(self.store, row["task_id"], row["id"], "queued", detail="returned to its role: "
                                    + (row["feedback"] or "")[:200])
        return True

    def _closable(self, task: str) -> list[dict] | None:
        """The task's lanes when no lane can move any more (the task ends: done if every work lane merged, else
        failed), else None."""
        if any(k[0] == task and not t.done() for k, t in self.active.items()):
            return None
        rows = lanes_db.list_lanes(self.store, task)
        if any(r["state"] in ACTIVE_LANE_STATES for r in rows):
            return None
        if any(r["state"] == "blocked" and r["feedback"] and self._could_return(r) for r in rows):
            return None
        waiting = [r for r in rows if r["state"] == "blocked" and budgets.blocked_by_budget(r["error"])]
        if waiting:  # at a budget cap a lane waits for a human to raise it (`budgets.raise_cap` requeues it)
            if task not in self._told_waiting:
                self._told_waiting.add(task)
                self.store.event("task.waiting", f"task {task} waits for a human: "
                                 + ", ".join(f"{r['id']} ({r['error'][:80]})" for r in waiting)
                                 + "; raising that cap (`cowork budget raise`, see `cowork budget`) lets it go on",
                                 actor="runner", task=task)
            return None
        return rows

    async def _close(self, task: str, rows: list[dict]) -> str:
        """Write, commit and close the task's summary in a thread: it waits for the merge lock, runs git and may
        ask the cheap model, and the other tasks' lanes, the heartbeat and the merger keep going meanwhile."""
        from cowork.runner.summary import close_task

        if not self.holds(task):
            return "held-elsewhere"
        try:
            return await asyncio.to_thread(close_task, self, task, rows)
        finally:
            self.wake()

    def _could_return(self, row: dict) -> bool:
        """Whether a lane the merger blocked may go back to its role (its retries for that reason remain)."""
        pol = self.settings.policy
        why = merge.blocked_by(row["feedback"])
        if why == "conflict":
            return row["conflict_returns"] <= pol.max_conflict_returns
        if why == "checks":
            return row["check_failures"] < pol.max_check_retries
        return False

    # -- background coroutines -------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(lease.HEARTBEAT_S)
            try:
                lost = lease.heartbeat(self.store, self.id, self.owned)
            except Exception:  # a busy database: the lease has slack for a missed beat
                continue
            for task in lost:
                self.lose(task)

    def lose(self, task: str) -> None:
        """Another runner took the task while this one was stalled (its heartbeat went stale): stop its lanes here
        without writing their state, which is the new holder's now, and let the task go."""
        if task not in self.owned:
            return
        self.owned.remove(task)
        self.results[task] = "held-elsewhere"
        me = asyncio.current_task()  # a lane or the close that found out: it returns by itself
        for key, t in list(self.active.items()):
            if key[0] == task and t is not me:
                t.cancel()
        closing = self._closing.pop(task, None)
        if closing is not None and closing is not me:
            closing.cancel()
        taker = self.store.scalar("SELECT holder FROM locks WHERE name=?", (lease.lock_name(task),))
        self.store.event("runner.lost", f"runner {self.id} lost task {task} to {taker or 'nobody'} (its heartbeat "
                         "went stale); it stopped the task's lanes here", actor="runner", task=task,
                         data={"runner": self.id, "taker": taker})
        self.wake()

    def holds(self, task: str) -> bool:
        """Whether this runner still holds the task (checked before writing a lane's end, or closing the task)."""
        if lease.holds(self.store, self.id, task):
            return True
        self.lose(task)
        return False

    async def _expirer(self) -> None:
        """Expire approvals past `policy.approval_timeout_s` even when no gateway is waiting on them (a lane
        resumed elsewhere, a runner restarted): the role's `escalate_to` is told and the lane paused."""
        from cowork.team.approvals import expire_overdue

        every = min(EXPIRE_EVERY_S, max(self.poll_s, self.settings.policy.approval_timeout_s / 2))
        while True:
            try:
                if await asyncio.to_thread(expire_overdue, self.store, self.settings, self.roles):
                    self.wake()
            except Exception:  # a busy database: the next round tries again
                pass
            await asyncio.sleep(every)

    async def _merger(self) -> None:
        """Merge queued lanes one at a time; a conflict or failed merge check goes back to the lane's role."""

        while True:
            waiting = self.store.scalar(
                f"SELECT count(*) FROM merge_queue WHERE state IN ('waiting','merging') AND task_id IN "
                f"({','.join('?' * len(self.owned)) or 'NULL'})", tuple(self.owned), 0)
            if not waiting:
                await asyncio.sleep(self.poll_s)
                continue
            if not self.settings.merge.auto:  # a human merges (`cowork merge`); say once what waits for them
                self._tell_merge_waits()
                await asyncio.sleep(self.poll_s)
                continue
            # lanes finishing together commit their packets first: a merge's git work would slow every one of
            # them on a small machine (bounded, so a lane that commits all the time never starves the queue)
            for _ in range(MERGER_YIELD_TICKS):
                if not self.committing:
                    break
                await asyncio.sleep(0.01)
            try:
                result = await asyncio.to_thread(merge.merge_next, self.ws, self.store, self.settings, self.roles,
                                                 holder=self.id, stop=self.stopping)
            except Exception as exc:
                self.store.event("merge.error", f"merger: {type(exc).__name__}: {exc}"[:500], actor="merger")
                await asyncio.sleep(self.poll_s * 5)
                continue
            self.wake()
            if result is None:
                await asyncio.sleep(self.poll_s)

    def _tell_merge_waits(self) -> None:
        rows = self.store.all(
            f"SELECT id, task_id, lane_id FROM merge_queue WHERE state='waiting' AND task_id IN "
            f"({','.join('?' * len(self.owned)) or 'NULL'}) ORDER BY id", tuple(self.owned))
        for r in rows:
            if r["id"] in self._told_merge:
                continue
            self._told_merge.add(r["id"])
            name = f"{r['task_id']}/{r['lane_id']}"
            self.store.event("merge.waiting", f"{name} waits for a human to merge it (merge.auto is off): "
                             f"`cowork merge {name}`, or `cowork merge --all`", actor="runner", task=r["task_id"],
                             lane=r["lane_id"], data={"entry": r["id"]})

    async def _sync_lane(self, row: dict, worktree: Path) -> list[str]:
        """Merge the current target into a lane sent back for a conflict, leaving the conflicts to resolve."""
        from cowork.gitops.git import git_dir, run_git

        target = self.settings.merge.target
        proc = await asyncio.to_thread(run_git, "merge", "--no-ff", "--no-commit", f"refs/heads/{target}",
                                       cwd=worktree)
        if proc.returncode == 0:
            if not (git_dir(worktree) / "MERGE_HEAD").exists():  # up to date: sent back for what it committed
                return []                                        # itself (conflict markers); the feedback says so
            return [f"{target} was merged into your branch cleanly; check the result and finish again."]
        out = await asyncio.to_thread(run_git, "diff", "--name-only", "--diff-filter=U", cwd=worktree)
        files = [f for f in out.stdout.split() if f]
        return [f"{target} has been merged into your branch and these files have conflict markers (<<<<<<< ======= "
                f">>>>>>>): {', '.join(files)}. Edit each one to keep both sides' intent, remove the markers, then "
                "call finish; the merge commit is made for you."]
