"""Opening the SQLite store: WAL, a busy timeout, and sqlite-vec loaded.

The stdlib sqlite3 here cannot load extensions, so pysqlite3 (a bundled SQLite that can) is preferred.
"""
from __future__ import annotations

import time
from pathlib import Path

try:  # pragma: no cover - which one depends on the platform
    import pysqlite3.dbapi2 as sqlite3  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    import sqlite3  # type: ignore[no-redef]

BUSY_TIMEOUT_MS = 10_000


def busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite giving up on a lock another process held through the whole busy wait."""
    text = str(exc).lower()
    return isinstance(exc, DatabaseError) and ("locked" in text or "busy" in text)


def busy_text(path: str = ".cowork/state.db") -> tuple[str, str]:
    """The one wording of a store that `busy` refused: (what happened, what to do). The gateway, `cowork mcp
    serve` (`failure`), the CLI and mission control (`StoreUnavailable`) all say it so."""
    return (f"the team's store ({path}) is busy: another cowork process has held its write lock for over "
            f"{BUSY_TIMEOUT_MS / 1000:g}s", "try again in a moment")


def failure(exc: BaseException) -> str:
    """What went wrong, for the agent or person whose call failed, in one line: a busy store as `busy_text` says it
    (it was "OperationalError: database is locked"), anything else as its type and message."""
    if busy(exc):
        return "; ".join(busy_text())
    return f"{type(exc).__name__}: {exc}"


_vec_path: str | None = None  # the sqlite-vec extension, found once; "" when it is not installed


def _vec_extension() -> str:
    """Where sqlite-vec's loadable extension is (without its suffix, as SQLite wants it), found without importing
    the `sqlite_vec` package: importing it imports numpy, about 95 ms of every command that opens the store."""
    global _vec_path
    if _vec_path is None:
        import importlib.util

        spec = importlib.util.find_spec("sqlite_vec")
        _vec_path = str(Path(spec.origin).with_name("vec0")) if spec is not None and spec.origin else ""
    return _vec_path


_vec_ok: bool | None = None


def load_vec(conn: "sqlite3.Connection") -> bool:
    """Load sqlite-vec into `conn`; extension loading is enabled only around the load."""
    global _vec_ok
    if _vec_ok is False:
        return False
    path = _vec_extension()
    try:
        if not path:
            raise ImportError("sqlite-vec is not installed")
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path)
        finally:
            conn.enable_load_extension(False)
        _vec_ok = True
    except (AttributeError, ImportError, sqlite3.OperationalError):
        _vec_ok = False
    return _vec_ok


def connect(path: Path, *, vec: bool = True) -> "sqlite3.Connection":
    """A connection in WAL mode with a busy timeout, rows as sqlite3.Row, autocommit (explicit transactions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _use_wal(conn)
    # NORMAL is durable across a killed process in WAL mode (only power loss can drop the last commits)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if vec:
        load_vec(conn)
    return conn


def _use_wal(conn: "sqlite3.Connection") -> None:
    """Switch to WAL (persistent in the file). Retried by hand: SQLite does not call the busy handler for this
    pragma, so processes opening a new database at the same moment get "database is locked" at once."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError
DatabaseError = sqlite3.DatabaseError
