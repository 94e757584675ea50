"""Runner registration and task leases: one runner per task at a time, found dead by a stale heartbeat.

A runner has a row in `runners` with a heartbeat. Owning a task is a lease in `locks` named `task:<id>`, taken and
renewed by compare-and-swap. A lease whose holder's heartbeat is stale, or whose holder's process is gone (same
host), can be taken over at once: that is how `cowork resume` reclaims the work of a killed runner.
"""
from __future__ import annotations

import os
import socket
import uuid

from cowork.procs import pid_alive
from cowork.store import Store, now

LEASE_S = 20.0
HEARTBEAT_S = 2.0
STALE_S = 10.0  # a heartbeat older than this means the runner is gone


def lock_name(task: str) -> str:
    return f"task:{task}"


def register(store: Store) -> str:
    """Add this process to `runners`. Returns the runner id."""
    runner_id = f"r-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    t = now()
    store.execute("INSERT INTO runners(id, pid, host, started_at, heartbeat_at, state) VALUES (?,?,?,?,?,?)",
                  (runner_id, os.getpid(), socket.gethostname(), t, t, "running"))
    return runner_id


def heartbeat(store: Store, runner_id: str, tasks: list[str]) -> list[str]:
    """Refresh the runner's heartbeat and extend the leases it holds. Returns the tasks among `tasks` whose lease
    it no longer holds (another runner took them while this one was stalled: a suspended laptop, a SIGSTOP)."""
    t = now()
    lost = []
    with store.tx():
        store.execute("UPDATE runners SET heartbeat_at=? WHERE id=?", (t, runner_id))
        for task in tasks:
            cur = store.execute("UPDATE locks SET lease_until=? WHERE name=? AND holder=?",
                                (t + LEASE_S, lock_name(task), runner_id))
            if cur.rowcount == 0:
                lost.append(task)
    return lost


def holds(store: Store, runner_id: str, task: str) -> bool:
    """Whether `runner_id` still holds the task's lease (whatever its expiry: only a taker ends it)."""
    return store.scalar("SELECT 1 FROM locks WHERE name=? AND holder=?", (lock_name(task), runner_id)) is not None


def stop(store: Store, runner_id: str, tasks: list[str]) -> None:
    with store.tx():
        store.execute("UPDATE runners SET state='stopped', heartbeat_at=? WHERE id=?", (now(), runner_id))
        for task in tasks:
            store.execute("DELETE FROM locks WHERE name=? AND holder=?", (lock_name(task), runner_id))


def release(store: Store, runner_id: str, task: str) -> None:
    """Give up the task's lease (its task has ended)."""
    store.execute("DELETE FROM locks WHERE name=? AND holder=?", (lock_name(task), runner_id))


def alive(store: Store, runner_id: str) -> bool:
    """Whether a runner is still running: a fresh heartbeat, and (on this host) a live process."""
    row = store.one("SELECT * FROM runners WHERE id=?", (runner_id,))
    if row is None or row["state"] != "running":
        return False
    if row["host"] == socket.gethostname() and not pid_alive(row["pid"]):
        return False
    return now() - row["heartbeat_at"] < STALE_S


def acquire(store: Store, runner_id: str, task: str) -> bool:
    """Take the task's lease if it is free, expired, ours, or held by a dead runner."""
    t = now()
    with store.tx():
        row = store.one("SELECT * FROM locks WHERE name=?", (lock_name(task),))
        if row and row["holder"] != runner_id and row["lease_until"] > t and alive(store, row["holder"]):
            return False
        store.execute("INSERT INTO locks(name, holder, token, acquired_at, lease_until) VALUES (?,?,?,?,?) "
                      "ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, token=excluded.token, "
                      "acquired_at=excluded.acquired_at, lease_until=excluded.lease_until",
                      (lock_name(task), runner_id, uuid.uuid4().hex, t, t + LEASE_S))
    return True


def holder(store: Store, task: str) -> str | None:
    """The live runner holding the task, or None."""
    row = store.one("SELECT * FROM locks WHERE name=?", (lock_name(task),))
    if row and row["lease_until"] > now() and alive(store, row["holder"]):
        return row["holder"]
    return None


def orphaned(store: Store, grace_s: float = STALE_S) -> list[str]:
    """Running tasks that no live runner holds. A task that never had a runner and was set running within
    `grace_s` is not one yet: its runner may still be starting."""
    out = []
    for r in store.all("SELECT id, updated_at FROM tasks WHERE state='running' ORDER BY created_at"):
        lock = store.one("SELECT holder FROM locks WHERE name=?", (lock_name(r["id"]),))
        if lock is None and r["updated_at"] > now() - grace_s:
            continue
        if holder(store, r["id"]) is None:
            out.append(r["id"])
    return out
