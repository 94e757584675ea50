"""The merge lock: one row in the store's `locks` table, taken by compare-and-swap and held by a lease.

Only the holder of the lock changes the merge target. A holder that dies stops renewing its lease, and the next
taker reclaims the lock once the lease has run out; a live holder keeps it with a background heartbeat.
"""
from __future__ import annotations

import threading
import time
import uuid

from cowork.errors import CoworkError
from cowork.store import Store, now


class LockLost(CoworkError):
    """Our lease ran out and someone else took the lock."""


class LockTimeout(CoworkError):
    """The lock stayed busy for the whole wait."""


class MergeLock:
    """A lease-based lock named `name` in `store`, held by `holder` (a readable id: runner, CLI user, CI job).

    Use as a context manager (waits up to `wait_s`, raises LockTimeout) or call `acquire`/`release`.
    While held, a daemon thread renews the lease every `lease_s / 3` seconds.
    """

    def __init__(self, store: Store, holder: str, name: str = "merge", lease_s: float = 60.0, *,
                 wait_s: float = 300.0, heartbeat: bool = True):
        self.store, self.holder, self.name, self.lease_s = store, holder, name, float(lease_s)
        self.wait_s, self._beat = wait_s, heartbeat
        self.token: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.token is not None and not self.lost

    def try_acquire(self) -> bool:
        """Take the lock if it is free or its lease has expired, in one write transaction."""
        token, t = uuid.uuid4().hex, now()
        with self.store.tx():
            row = self.store.one("SELECT * FROM locks WHERE name=?", (self.name,))
            if row is not None and row["lease_until"] > t:
                return False
            self.store.execute(
                "INSERT INTO locks(name, holder, token, acquired_at, lease_until) VALUES (?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, token=excluded.token, "
                "acquired_at=excluded.acquired_at, lease_until=excluded.lease_until",
                (self.name, self.holder, token, t, t + self.lease_s))
            data = {"lock": self.name, "holder": self.holder, "lease_until": t + self.lease_s}
            summary = f"{self.holder} took the {self.name} lock"
            if row is not None:  # the previous holder's lease ran out without a release
                data["reclaimed_from"] = row["holder"]
                summary += f" (reclaimed from {row['holder']}, lease expired)"
            self.store.event("merge.locked", summary, actor=self.holder, data=data)
        self.token, self.lost = token, False
        self._start_heartbeat()
        return True

    def acquire(self, timeout: float | None = 0.0) -> bool:
        """Take the lock, waiting up to `timeout` seconds (0: try once; None: wait forever). Returns whether held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            if self.try_acquire():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(pause * 2, 0.1)

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
                              hint="see `cowork queue`; a dead holder's lock frees itself when its lease runs out")
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


def lock_row(store: Store, name: str = "merge") -> dict | None:
    """The lock's row (holder, acquired_at, lease_until) with `expired`, or None when free."""
    row = store.one("SELECT holder, acquired_at, lease_until FROM locks WHERE name=?", (name,))
    if row is not None:
        row["expired"] = row["lease_until"] <= now()
    return row
