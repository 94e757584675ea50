"""Store: one SQLite database shared by the runner, the TUI, CLI commands and the MCP server.

Each thread gets its own connection. Writes are short transactions; events are append-only.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from cowork.errors import CoworkError
from cowork.redact import redact, redact_obj
from cowork.store import db
from cowork.store.migrations import migrate


def now() -> float:
    return time.time()


def day(ts: float | None = None) -> str:
    """The UTC calendar day of `ts`, the key of per-day budgets."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts if ts is not None else time.time()))


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def loads(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


_serials = itertools.count(1)


class StoreUnavailable(CoworkError):
    """The store file cannot be used: damaged, not a database, unreadable, or locked for the whole busy wait.

    Opening raises it; the CLI and mission control turn the same SQLite errors met later into it (`about_the_file`).
    """

    FILE_ERRORS = ("not a database", "malformed", "locked", "busy", "unable to open", "readonly", "disk i/o")

    @classmethod
    def about_the_file(cls, exc: BaseException) -> bool:
        """Whether `exc` is SQLite's error about the file or its locks (the user's to fix), not about our SQL."""
        return isinstance(exc, db.DatabaseError) and any(part in str(exc).lower() for part in cls.FILE_ERRORS)

    def __init__(self, path: Path | str, exc: BaseException, *, doing: str = "open"):
        reason = str(exc)
        message = f"cannot {doing} the store {path}: {reason}"
        if db.busy(exc):
            message, hint = db.busy_text(str(path))
        elif "not a database" in reason or "malformed" in reason:
            hint = (f"move it aside with any {Path(path).name}-wal and -shm beside it (`mv {path} {path}.damaged`) "
                    "and run again: cowork starts a new, empty store; the work and the handoffs in git are safe, the "
                    "journal of lanes, events and approvals is not")
        else:
            hint = f"check that {path} and its folder can be read and written by you"
        super().__init__(message, hint=hint)


class Store:
    """Access to `.cowork/state.db`.

    Args:
        path: the database file; created and migrated on first open.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._wrote: dict[str, int] = {}  # writes through this store, per table (see `version`)
        try:
            migrate(self.conn)
        except db.DatabaseError as exc:
            if not StoreUnavailable.about_the_file(exc):  # a bug of ours (a bad migration) keeps its traceback
                raise
            self.close()
            raise StoreUnavailable(self.path, exc) from exc

    @classmethod
    def for_workspace(cls, ws) -> "Store":
        return cls(ws.db_path)

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = db.connect(self.path)
            self._local.conn, self._local.serial = conn, next(_serials)  # data_version is per connection
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- low level -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def tx(self, immediate: bool = True) -> Iterator[Any]:
        """A write transaction (BEGIN IMMEDIATE takes the write lock up front, so compare-and-swap is safe)."""
        conn = self.conn
        if conn.in_transaction:  # nested: join the outer transaction
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Any]:
        """Inside `tx()`: writes that are undone on their own when the block raises, the transaction going on."""
        conn = self.conn
        assert conn.in_transaction, "a savepoint belongs inside tx()"
        conn.execute("SAVEPOINT part")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO part")
            conn.execute("RELEASE part")
            raise
        else:
            conn.execute("RELEASE part")

    def execute(self, sql: str, params: tuple | dict = ()) -> Any:
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: tuple | dict = ()) -> dict | None:
        row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def scalar(self, sql: str, params: tuple | dict = (), default: Any = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row is not None and row[0] is not None else default

    def schema_version(self) -> list[str]:
        return [r["name"] for r in self.all("SELECT name FROM migrations ORDER BY applied_at, name")]

    # -- events (append-only timeline) -----------------------------------------------------------------------

    def event(self, kind: str, summary: str, *, actor: str = "cowork", task: str | None = None,
              lane: str | None = None, role: str | None = None, data: dict | None = None,
              tokens_in: int = 0, tokens_out: int = 0, usd: float = 0.0) -> int:
        """Append one line to the timeline. Text and data are redacted first. Returns the event id."""
        cur = self.conn.execute(
            "INSERT INTO events(ts, task_id, lane_id, role, actor, kind, summary, data, tokens_in, tokens_out, usd)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (now(), task, lane, role, actor, kind, redact(summary),
             dumps(redact_obj(data)) if data is not None else None, tokens_in, tokens_out, usd),
        )
        return cur.lastrowid

    def events(self, *, after: int = 0, task: str | None = None, lane: str | None = None, role: str | None = None,
               kinds: list[str] | None = None, limit: int = 1000) -> list[dict]:
        """Events with id > `after`, oldest first (incremental readers pass the last id they saw)."""
        sql, params = "SELECT * FROM events WHERE id > ?", [after]
        for col, val in (("task_id", task), ("lane_id", lane), ("role", role)):
            if val:
                sql += f" AND {col} = ?"
                params.append(val)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        rows = self.all(sql, tuple(params))
        for r in rows:
            r["data"] = loads(r["data"], None)
        return rows

    def last_events(self, n: int = 50, **filters: Any) -> list[dict]:
        """The newest `n` events matching the filters, oldest first."""
        top = self.scalar("SELECT max(id) FROM events", default=0)
        rows: list[dict] = []
        after = max(0, top - n * 4)
        while True:
            rows = self.events(after=after, limit=100000, **filters)
            if len(rows) >= n or after == 0:
                return rows[-n:]
            after = max(0, after - n * 16)

    # -- "has anything changed?" without reading a row ------------------------------------------------------------

    def version(self, *tables: str) -> tuple:
        """A value that differs whenever one of `tables` may have changed since it was taken: any other connection
        committed (`PRAGMA data_version`, a few microseconds), or this store noted a write to one of them
        (`wrote`). Readers keep an answer together with the version it was read at and reuse it while it holds."""
        conn = self.conn
        return (self._local.serial, conn.execute("PRAGMA data_version").fetchone()[0],
                *(self._wrote.get(t, 0) for t in tables))

    def wrote(self, table: str) -> None:
        """Note a write to `table` through this store, so that `version(table)` moves on."""
        with self._lock:
            self._wrote[table] = self._wrote.get(table, 0) + 1

    # -- control flags (pause) --------------------------------------------------------------------------------

    def control_rows(self, keys: list[str]) -> dict[str, dict]:
        """The control rows (pause flags, budget raises) for `keys`, by key, read through a cache of the small
        control table: every step of every lane asks several times, and the answer changes a few times a day.

        The cache holds while `version("control")` does: `set_flag`/`clear_flag` are the table's only writers.
        """
        conn = self.conn
        if conn.in_transaction:  # what this transaction sees may yet roll back: read it, remember nothing
            self._local.control = None
            return {k: dict(r) for k in keys
                    for r in conn.execute("SELECT * FROM control WHERE key=?", (k,)).fetchall()}
        mark = self.version("control")
        cached = getattr(self._local, "control", None)
        if cached is None or cached[0] != mark:
            rows = {r["key"]: dict(r) for r in conn.execute("SELECT * FROM control").fetchall()}
            cached = (mark, rows)
            self._local.control = cached
        return {k: cached[1][k] for k in keys if k in cached[1]}

    def set_flag(self, key: str, value: Any, by: str) -> None:
        self.wrote("control")
        self.conn.execute(
            "INSERT INTO control(key, value, set_by, set_at) VALUES (?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, set_by=excluded.set_by, set_at=excluded.set_at",
            (key, dumps(value), by, now()),
        )

    def clear_flag(self, key: str) -> bool:
        self.wrote("control")
        return self.conn.execute("DELETE FROM control WHERE key=?", (key,)).rowcount > 0

    def flag(self, key: str) -> dict | None:
        row = self.one("SELECT * FROM control WHERE key=?", (key,))
        if row:
            row["value"] = loads(row["value"])
        return row

    def flags(self, prefix: str = "") -> list[dict]:
        rows = self.all("SELECT * FROM control WHERE key LIKE ? ORDER BY key", (prefix + "%",))
        for r in rows:
            r["value"] = loads(r["value"])
        return rows
