"""The merge lock: one row in the store's `locks` table, taken by compare-and-swap and held by a lease.

Only the holder of the lock changes the merge target. A live holder keeps it with a background heartbeat. The row
also records the holder's process (pid, host, start token): when that process is gone from this host, the next
taker reclaims the lock at once; a holder on another host (or one that recorded no process) is reclaimed once
its lease has run out. A taker that waits more than a moment says who holds the lock (an event, and its
`on_wait` listener).
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import uuid
from typing import Callable, Iterator

from cowork.errors import CoworkError
from cowork.procs import gone, me as _me
from cowork.store import Store, now

WAIT_NOTICE_S = 1.0  # a taker waiting this long says who holds the lock

# the `on_wait` listener of locks made in this context (see `waiting_notices`)
_ON_WAIT: contextvars.ContextVar[Callable[[dict], None] | None] = contextvars.ContextVar("merge_lock_on_wait",
                                                                                       default=None)


@contextlib.contextmanager
def waiting_notices(listener: Callable[[dict], None]) -> Iterator[None]:
    """Within this block, every MergeLock made without its own `on_wait` (also those made deep inside merge and
    revert) calls `listener` with the lock's row when it has to wait for another holder."""
    token = _ON_WAIT.set(listener)
    try:
        yield
    finally:
        _ON_WAIT.reset(token)


def holder_gone(store: Store, row: dict) -> bool:
    """Whether the holder of a `locks` row is provably gone (`procs.gone`). A holder elsewhere, or one that left no
    trace of its process, is not."""
    pid, host, token = row.get("pid"), row.get("host"), row.get("proc_start")
    if pid is None:  # taken before locks recorded their process: a runner's own row knows it
        runner = store.one("SELECT pid, host FROM runners WHERE id=?", (row["holder"],))
        if runner is None:
            return False
        pid, host, token = runner["pid"], runner["host"], None
    return gone(pid, host, token)


class LockLost(CoworkError):
    """Our lease ran out and someone else took the lock."""


class LockTimeout(CoworkError):
    """The lock stayed busy for the whole wait."""


class MergeLock:
    """A lease-based lock named `name` in `store`, held by `holder` (a readable id: runner, CLI user, CI job).

    Use as a context manager (waits up to `wait_s`, raises LockTimeout) or call `acquire`/`release`.
    While held, a daemon thread renews the lease every `lease_s / 3` seconds. `on_wait(row)` is called when a wait
    has lasted `WAIT_NOTICE_S`, and again whenever the holder changes (default: the `waiting_notices` listener).
    """

    def __init__(self, store: Store, holder: str, name: str = "merge", lease_s: float = 60.0, *,
                 wait_s: float = 300.0, heartbeat: bool = True, on_wait: Callable[[dict], None] | None = None):
        self.store, self.holder, self.name, self.lease_s = store, holder, name, float(lease_s)
        self.wait_s, self._beat = wait_s, heartbeat
        self.on_wait = on_wait if on_wait is not None else _ON_WAIT.get()
        self.token: str | None = None
        self.lost = False
        self.busy: dict | None = None  # the row that kept the last try out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.token is not None and not self.lost

    def try_acquire(self) -> bool:
        """Take the lock if it is free, its lease has expired or its holder is gone, in one write transaction."""
        token, t = uuid.uuid4().hex, now()
        pid, host, started = _me()
        with self.store.tx():
            row = self.store.one("SELECT * FROM locks WHERE name=?", (self.name,))
            gone = row is not None and row["lease_until"] > t and holder_gone(self.store, row)
            if row is not None and row["lease_until"] > t and not gone:
                self.busy = row
                return False
            self.store.execute(
                "INSERT INTO locks(name, holder, token, acquired_at, lease_until, pid, host, proc_start) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, "
                "token=excluded.token, acquired_at=excluded.acquired_at, lease_until=excluded.lease_until, "
                "pid=excluded.pid, host=excluded.host, proc_start=excluded.proc_start",
                (self.name, self.holder, token, t, t + self.lease_s, pid, host, started))
            data = {"lock": self.name, "holder": self.holder, "lease_until": t + self.lease_s}
            summary = f"{self.holder} took the {self.name} lock"
            if row is not None:  # the previous holder did not release it
                why = f"its process {row['pid']} is gone" if gone and row.get("pid") else \
                    "its runner is gone" if gone else "lease expired"
                data["reclaimed_from"], data["reclaimed_because"] = row["holder"], why
                summary += f" (reclaimed from {row['holder']}, {why})"
            self.store.event("merge.locked", summary, actor=self.holder, data=data)
        self.token, self.lost, self.busy = token, False, None
        self._start_heartbeat()
        return True

    def acquire(self, timeout: float | None = 0.0) -> bool:
        """Take the lock, waiting up to `timeout` seconds (0: try once; None: wait forever). Returns whether held.

        A wait longer than `WAIT_NOTICE_S` records a `merge.lock_wait` event naming the holder (once per holder) and
        calls `on_wait`."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        pause, told = 0.01, None
        while True:
            if self.try_acquire():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if time.monotonic() - start >= WAIT_NOTICE_S and self.busy and self.busy["token"] != told:
                told = self.busy["token"]
                self._tell_waiting(self.busy)
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(pause * 2, 0.1)

    def _tell_waiting(self, row: dict) -> None:
        info = describe(row)
        where = f" (pid {info['pid']} on {info['host']})" if info.get("pid") else ""
        since = time.strftime("%H:%M:%S", time.localtime(info["acquired_at"]))
        self.store.event("merge.lock_wait", f"{self.holder} waits for the {self.name} lock, held by "
                         f"{info['holder']}{where} since {since}; lease {max(0.0, info['lease_until'] - now()):.0f}s "
                         "left", actor=self.holder,
                         data={"lock": self.name, "waiting": self.holder, "holder": info["holder"],
                               "pid": info.get("pid"), "host": info.get("host"), "lease_until": info["lease_until"]})
        if self.on_wait is not None:
            self.on_wait(info)

    def heartbeat(self) -> float:
        """Extend the lease from now. Returns the new lease end.

        Raises:
            LockLost: when the lock is no longer ours (our lease expired and someone took it, or it was released).
        """
        if self.token is None:
            raise LockLost(f"{self.holder} does not hold the {self.name} lock")
        until = now() + self.lease_s
        cur = self.store.execute("UPDATE locks SET lease_until=? WHERE name=? AND token=?",
                                 (until, self.name, self.token))
        if cur.rowcount == 0:
            self.lost = True
            raise LockLost(f"{self.holder} lost the {self.name} lock (its lease expired and it was taken)")
        return until

    def check(self) -> None:
        """Raise LockLost unless we still hold the lock (call right before changing what the lock protects)."""
        if self.lost:
            raise LockLost(f"{self.holder} lost the {self.name} lock")
        self.heartbeat()

    def release(self) -> bool:
        """Give the lock up. Returns whether it was still ours."""
        self._stop_heartbeat()
        token, self.token = self.token, None
        if token is None:
            return False
        with self.store.tx():
            mine = self.store.execute("DELETE FROM locks WHERE name=? AND token=?", (self.name, token)).rowcount > 0
            if mine:
                self.store.event("merge.unlocked", f"{self.holder} released the {self.name} lock", actor=self.holder,
                                 data={"lock": self.name, "holder": self.holder})
        return mine

    def __enter__(self) -> "MergeLock":
        if not self.acquire(self.wait_s):
            status = self.store.one("SELECT holder, lease_until FROM locks WHERE name=?", (self.name,)) or {}
            raise LockTimeout(f"the {self.name} lock is held by {status.get('holder', '?')}; waited {self.wait_s:g}s",
                              hint="see `cowork queue`; a holder whose process is gone from this host is replaced "
                                   "at once, one elsewhere when its lease runs out")
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- heartbeat thread ------------------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if not self._beat:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lock-heartbeat-{self.name}", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(self.lease_s / 3, 0.05)
        try:
            while not self._stop.wait(interval):
                try:
                    self.heartbeat()
                except LockLost:
                    return
                except Exception:  # a busy database is retried at the next beat; the lease has slack for it
                    continue
        finally:
            self.store.close()  # this thread's connection


def describe(row: dict, store: Store | None = None) -> dict:
    """A `locks` row for people: holder, acquired_at, lease_until, pid, host, `expired` (the lease ran out) and,
    given the store, `gone` (the holder's process is gone from this host). Either way the next taker takes it."""
    out = {k: row.get(k) for k in ("holder", "acquired_at", "lease_until", "pid", "host")}
    out["expired"] = row["lease_until"] <= now()
    if store is not None:
        out["gone"] = not out["expired"] and holder_gone(store, row)
    return out


def lock_row(store: Store, name: str = "merge") -> dict | None:
    """The lock's row as `describe` gives it (with `expired` and `gone`), or None when free."""
    row = store.one("SELECT * FROM locks WHERE name=?", (name,))
    return describe(row, store) if row is not None else None
