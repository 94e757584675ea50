"""Store: one SQLite database shared by the runner, the TUI, CLI commands and the MCP server.

Each thread gets its own connection. Writes are short transactions; events are append-only.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

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


class Store:
    """Access to `.cowork/state.db`.

    Args:
        path: the database file; created and migrated on first open.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        migrate(self.conn)

    @classmethod
    def for_workspace(cls, ws) -> "Store":
        return cls(ws.db_path)

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = db.connect(self.path)
            self._local.conn = conn
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

    # -- control flags (pause) --------------------------------------------------------------------------------

    def set_flag(self, key: str, value: Any, by: str) -> None:
        self.conn.execute(
            "INSERT INTO control(key, value, set_by, set_at) VALUES (?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, set_by=excluded.set_by, set_at=excluded.set_at",
            (key, dumps(value), by, now()),
        )

    def clear_flag(self, key: str) -> bool:
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
