"""The store's schema as an ordered list of migrations; each one that has run is recorded in `migrations`.

Append new migrations at the end; never edit or reorder one that has shipped.
"""
from __future__ import annotations

import time

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_core",
        """
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'planning',   -- planning|awaiting-approval|running|done|failed|rejected|cancelled
            origin TEXT NOT NULL DEFAULT 'human',
            base TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE lanes (
            task_id TEXT NOT NULL REFERENCES tasks(id),
            id TEXT NOT NULL,
            role TEXT NOT NULL,
            goal TEXT NOT NULL,
            depends_on TEXT NOT NULL DEFAULT '[]',    -- JSON list of lane ids
            kind TEXT NOT NULL DEFAULT 'work',        -- work|review|consult|delegated
            parent_lane TEXT,                          -- the lane that delegated or asked for this one
            depth INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'queued',
            branch TEXT,
            worktree TEXT,
            base_commit TEXT,
            head_commit TEXT,
            runner_id TEXT,
            step_no INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            check_failures INTEGER NOT NULL DEFAULT 0,
            conflict_returns INTEGER NOT NULL DEFAULT 0,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            usd REAL NOT NULL DEFAULT 0,
            checks TEXT,                               -- JSON list overriding the role's checks
            packet_path TEXT,
            merge_commit TEXT,
            feedback TEXT,                             -- review comments, conflicts, check output for the next attempt
            error TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (task_id, id)
        );
        CREATE INDEX lanes_state ON lanes(state);
        CREATE TABLE steps (
            id INTEGER PRIMARY KEY,
            task_id TEXT NOT NULL,
            lane_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,                        -- model|tool|check|message
            name TEXT NOT NULL,
            input TEXT,                                -- JSON
            output TEXT,                               -- JSON
            state TEXT NOT NULL DEFAULT 'started',     -- started|done|failed|interrupted
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            usd REAL NOT NULL DEFAULT 0,
            started_at REAL NOT NULL,
            ended_at REAL,
            UNIQUE (task_id, lane_id, seq)
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            task_id TEXT,
            kind TEXT NOT NULL,                        -- ask|tell|answer|delegate|human
            from_role TEXT NOT NULL,
            from_lane TEXT,
            to_role TEXT NOT NULL,                     -- a role name or 'team'
            to_lane TEXT,
            body TEXT NOT NULL,
            reply_to INTEGER REFERENCES messages(id),
            thread TEXT,
            depth INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'new',         -- new|read|answered
            created_at REAL NOT NULL,
            read_at REAL
        );
        CREATE INDEX messages_to ON messages(to_role, state);
        CREATE TABLE approvals (
            id INTEGER PRIMARY KEY,
            task_id TEXT,
            lane_id TEXT,
            role TEXT NOT NULL,
            tool TEXT NOT NULL,
            action TEXT NOT NULL,                      -- JSON: the exact action (command, diff, message)
            why TEXT,
            state TEXT NOT NULL DEFAULT 'pending',     -- pending|approved|rejected|expired
            decided_by TEXT,
            note TEXT,
            created_at REAL NOT NULL,
            expires_at REAL,
            decided_at REAL
        );
        CREATE INDEX approvals_state ON approvals(state);
        CREATE TABLE locks (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            token TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            lease_until REAL NOT NULL
        );
        CREATE TABLE merge_queue (
            id INTEGER PRIMARY KEY,
            task_id TEXT NOT NULL,
            lane_id TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'waiting',     -- waiting|merging|merged|conflict|failed
            merge_commit TEXT,
            enqueued_at REAL NOT NULL,
            ended_at REAL
        );
        CREATE TABLE control (
            key TEXT PRIMARY KEY,                      -- 'pause' or 'pause:<task>/<lane>' ...
            value TEXT NOT NULL,                       -- JSON
            set_by TEXT NOT NULL,
            set_at REAL NOT NULL
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            task_id TEXT,
            lane_id TEXT,
            role TEXT,
            actor TEXT NOT NULL,                       -- a role, 'human:<name>', 'runner', 'merger'
            kind TEXT NOT NULL,
            summary TEXT NOT NULL,
            data TEXT,                                 -- JSON
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            usd REAL NOT NULL DEFAULT 0
        );
        CREATE INDEX events_task ON events(task_id, id);
        CREATE TRIGGER events_append_only_u BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        CREATE TRIGGER events_append_only_d BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        CREATE TABLE costs (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            day TEXT NOT NULL,                         -- YYYY-MM-DD, UTC
            task_id TEXT,
            lane_id TEXT,
            role TEXT,
            model TEXT,
            tokens_in INTEGER NOT NULL,
            tokens_out INTEGER NOT NULL,
            usd REAL NOT NULL
        );
        CREATE INDEX costs_day ON costs(day, role);
        CREATE INDEX costs_task ON costs(task_id);
        CREATE TABLE runners (
            id TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'running'      -- running|stopped
        );
        """,
    ),
    (
        "002_team",
        """
        ALTER TABLE approvals ADD COLUMN action_hash TEXT;   -- same lane+tool+hash on resume -> the same approval
        ALTER TABLE approvals ADD COLUMN used_at REAL;        -- when the decision was handed back to the agent
        CREATE INDEX approvals_lane ON approvals(task_id, lane_id, tool, action_hash);
        ALTER TABLE lanes ADD COLUMN msg_cursor INTEGER NOT NULL DEFAULT 0;  -- last message id surfaced to the lane
        CREATE INDEX messages_reply ON messages(reply_to);
        """,
    ),
    (
        "003_lock_owner",
        """
        ALTER TABLE locks ADD COLUMN pid INTEGER;        -- the merge lock taker's process, to reclaim the lock at once
        ALTER TABLE locks ADD COLUMN host TEXT;          -- when that process is gone from this host
        ALTER TABLE locks ADD COLUMN proc_start TEXT;    -- its boot and start time: a reused pid is not the holder
        """,
    ),
    (
        "004_approval_step",
        """
        ALTER TABLE approvals ADD COLUMN step_seq INTEGER;  -- the lane's journal step (tool call) that asked
        """,
    ),
    (
        "005_reservations",
        """
        CREATE TABLE reservations (                -- model calls in flight and what each may cost (budgets.InFlight)
            id INTEGER PRIMARY KEY,
            pid INTEGER NOT NULL,                  -- the process that made the call: its row is void once it is gone
            host TEXT NOT NULL,
            proc_start TEXT,                       -- its boot and start time: a reused pid is not that process
            task_id TEXT,
            role TEXT,
            tokens INTEGER NOT NULL,
            usd REAL NOT NULL,
            started_at REAL NOT NULL
        );
        """,
    ),
]


def applied(conn) -> set[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    return {row[0] for row in conn.execute("SELECT name FROM migrations")}


def migrate(conn) -> list[str]:
    """Run every migration not yet recorded, each in its own transaction. Returns the names that ran."""
    ran = []
    done = applied(conn)
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the write lock
            if conn.execute("SELECT 1 FROM migrations WHERE name=?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO migrations(name, applied_at) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran


def _statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    out, buf, depth = [], [], 0
    for line in sql.strip().splitlines():
        stripped = line.split("--", 1)[0].strip()
        buf.append(line)
        upper = stripped.upper()
        if upper.endswith("BEGIN") or " BEGIN " in f" {upper} ":
            depth += 1
        if upper.startswith("END;") or upper.endswith(" END;"):
            depth = max(0, depth - 1)
            if depth == 0:
                out.append("\n".join(buf))
                buf = []
            continue
        if depth == 0 and stripped.endswith(";"):
            out.append("\n".join(buf))
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf))
    return out
