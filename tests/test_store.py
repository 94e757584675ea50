"""The SQLite store on real files: migrations on existing databases, concurrent opens, the append-only timeline."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cowork.store import Store, db, migrations
from tests.conftest import ROOT


def make_old_database(path) -> None:
    """A database as an older cowork left it: only the first migration ran, with some data in it."""
    conn = db.connect(path, vec=False)
    migrations.applied(conn)
    name, sql = migrations.MIGRATIONS[0]
    for statement in migrations._statements(sql):
        conn.execute(statement)
    conn.execute("INSERT INTO migrations(name, applied_at) VALUES (?, ?)", (name, time.time()))
    conn.execute("INSERT INTO tasks(id, title, created_at, updated_at) VALUES ('t1', 'old task', 1, 1)")
    conn.execute("INSERT INTO events(ts, actor, kind, summary) VALUES (1, 'human', 'task.created', 'old event')")
    conn.close()


def test_a_fresh_store_records_every_migration_once(tmp_path):
    store = Store(tmp_path / "state.db")
    assert store.schema_version() == [name for name, _ in migrations.MIGRATIONS]
    store.close()
    again = Store(tmp_path / "state.db")
    assert again.scalar("SELECT COUNT(*) FROM migrations") == len(migrations.MIGRATIONS)
    assert again.scalar("PRAGMA journal_mode") == "wal"


def test_reopening_an_old_database_keeps_its_data(tmp_path):
    path = tmp_path / "state.db"
    make_old_database(path)
    store = Store(path)
    assert store.schema_version() == [name for name, _ in migrations.MIGRATIONS]
    assert store.one("SELECT title FROM tasks WHERE id='t1'")["title"] == "old task"
    assert [e["summary"] for e in store.events()] == ["old event"]
    rows = store.all("SELECT name, COUNT(*) AS n FROM migrations GROUP BY name")
    assert all(r["n"] == 1 for r in rows)


def test_a_new_migration_applies_to_an_existing_database(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    make_old_database(path)
    Store(path).close()
    extra = ("999_test_extra", "CREATE TABLE extra (x INTEGER);\nALTER TABLE tasks ADD COLUMN priority INTEGER DEFAULT 3;")
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, extra])
    store = Store(path)
    assert store.schema_version()[-1] == "999_test_extra"
    assert store.one("SELECT title, priority FROM tasks WHERE id='t1'") == {"title": "old task", "priority": 3}
    store.close()
    assert Store(path).scalar("SELECT COUNT(*) FROM migrations WHERE name='999_test_extra'") == 1


def test_a_failing_migration_rolls_back_and_is_not_recorded(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    Store(path).close()
    bad = ("998_bad", "CREATE TABLE half (x INTEGER);\nTHIS IS NOT SQL;")
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, bad])
    with pytest.raises(db.OperationalError):
        Store(path)
    conn = db.connect(path, vec=False)
    assert conn.execute("SELECT COUNT(*) FROM migrations WHERE name='998_bad'").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='half'").fetchone()[0] == 0


OPENER = """
import sys, time
from cowork.store import Store
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
store = Store(sys.argv[1])
store.event("runner.started", "opened by " + sys.argv[3], actor="test")
print("ok")
"""


def test_concurrent_opens_from_processes_migrate_once(tmp_path):
    path = tmp_path / "state.db"
    start = time.time() + 1.0  # let every process import first, then open at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(start), str(i)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]
    store = Store(path)
    counts = store.all("SELECT name, COUNT(*) AS n FROM migrations GROUP BY name")
    assert {r["name"]: r["n"] for r in counts} == {name: 1 for name, _ in migrations.MIGRATIONS}
    assert sorted(e["summary"] for e in store.events()) == [f"opened by {i}" for i in range(4)]


def test_events_are_append_only(tmp_path):
    store = Store(tmp_path / "state.db")
    first = store.event("task.created", "made t1", actor="human:ann", task="t1")
    with pytest.raises(db.DatabaseError, match="append-only"):
        store.execute("UPDATE events SET summary='changed' WHERE id=?", (first,))
    with pytest.raises(db.DatabaseError, match="append-only"):
        store.execute("DELETE FROM events")
    assert store.events()[0]["summary"] == "made t1"


def test_events_read_incrementally_and_filtered(tmp_path):
    store = Store(tmp_path / "state.db")
    ids = [store.event("lane.state", f"e{i}", task="t1" if i % 2 else "t2", lane="a", data={"i": i}) for i in range(6)]
    assert ids == sorted(ids)
    assert [e["summary"] for e in store.events(after=ids[2])] == ["e3", "e4", "e5"]
    assert [e["summary"] for e in store.events(task="t1")] == ["e1", "e3", "e5"]
    assert store.events(kinds=["model.call"]) == []
    assert store.events(after=ids[0], limit=2)[-1]["data"] == {"i": 2}
    assert [e["summary"] for e in store.last_events(2, task="t2")] == ["e2", "e4"]


def test_events_are_redacted(tmp_path):
    store = Store(tmp_path / "state.db")
    store.event("tool.call", "ran with sk-ant-abcdefghijklmnop1234567890", data={"token": "ghp_" + "a" * 30})
    [e] = store.events()
    assert "sk-ant" not in e["summary"] and "[REDACTED]" in e["summary"]
    assert e["data"] == {"token": "[REDACTED]"}


def test_flags(tmp_path):
    store = Store(tmp_path / "state.db")
    store.set_flag("pause", {"reason": "lunch"}, by="human:ann")
    store.set_flag("pause:t1/a", {}, by="human:ann")
    assert store.flag("pause")["value"] == {"reason": "lunch"}
    assert [f["key"] for f in store.flags("pause")] == ["pause", "pause:t1/a"]
    assert store.clear_flag("pause") and not store.clear_flag("pause") and store.flag("pause") is None


def test_cached_control_reads_see_every_writer(tmp_path):
    """Pause flags are read through a cache; a flag set by this store, by another connection, from another thread
    or by another process is seen by the very next read."""
    import threading

    from cowork.runner import control

    a, b = Store(tmp_path / "state.db"), Store(tmp_path / "state.db")
    assert control.paused(a, "t1", "l1") is None
    control.pause(b, by="human:ann", reason="other connection")
    assert control.paused(a, "t1", "l1")["reason"] == "other connection"
    control.unpause(a, by="human:ann")
    assert control.paused(a, "t1", "l1") is None and control.paused(b, "t1", "l1") is None
    worker = threading.Thread(target=lambda: control.pause(a, by="human:ann", task="t1", reason="a thread"))
    worker.start()
    worker.join()
    assert control.paused(a, "t1", "l1")["key"] == "pause:t1"
    code = ("import sys; from cowork.store import Store; from cowork.runner import control; "
            "control.pause(Store(sys.argv[1]), by='human:bo', reason='a process')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "state.db")], check=True, cwd=ROOT)
    assert control.paused(a, "t1", "l1")["reason"] == "a process"  # pause-all wins over the task's pause
    with a.tx():  # inside a transaction that then rolls back, the read still matches the database
        control.unpause(a, by="human:ann")
        assert control.paused(a, "t1", "l1")["key"] == "pause:t1"
        a.conn.execute("ROLLBACK")
        a.conn.execute("BEGIN")
    assert control.paused(a, "t1", "l1")["reason"] == "a process"


def test_a_store_has_sqlite_vec_without_importing_numpy(tmp_path):
    """sqlite-vec is loaded from its extension file: importing the `sqlite_vec` package would import numpy, about
    95 ms of every command that opens the store. In a fresh interpreter, so earlier tests cannot hide the import."""
    import json

    probe = ("import json, sys; from cowork.store import Store; s = Store(sys.argv[1]); "
             "print(json.dumps([s.scalar('SELECT vec_version()'), 'numpy' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "state.db")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    version, numpy = json.loads(proc.stdout)
    assert version.startswith("v") and numpy is False
