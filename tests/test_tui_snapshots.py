"""Snapshots of mission control: the empty state, a populated lanes view, and the PAUSED banner.

Time is frozen (the store's clock, the TUI's clock, UTC, fixed git dates) and the cursor does not blink, so the
pictures are stable. Update them with `pytest tests/test_tui_snapshots.py --snapshot-update` and review the SVGs.
"""
from __future__ import annotations

import sys
import time

import pytest
from textual.widgets import Input

import cowork.store.store as store_module
from cowork.runner import control
from cowork.store import Store
from cowork.store import lanes as L
from cowork.team import approvals
from cowork.tui import fmt
from cowork.tui.app import make_app

FROZEN = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC
SIZE = (140, 40)


@pytest.fixture(autouse=True)
def frozen(monkeypatch):
    """Freeze every clock the picture depends on, and the cursor blink."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.setenv(var, "2026-01-01T12:00:00+00:00")
    original = store_module.now
    for mod in list(sys.modules.values()):  # modules that imported `now` from the store
        if (getattr(mod, "__name__", "") or "").startswith("cowork") and getattr(mod, "now", None) is original:
            monkeypatch.setattr(mod, "now", lambda: FROZEN)
    monkeypatch.setattr(fmt, "clock", lambda: FROZEN + 95)
    init = Input.__init__

    def no_blink(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.set_reactive(Input.cursor_blink, False)

    monkeypatch.setattr(Input, "__init__", no_blink)
    yield
    monkeypatch.undo()
    time.tzset()


def seed(store: Store) -> None:
    L.create_task(store, "t7-login", "Rate-limit /api/login", state="running")
    lanes = (("plan", "planner", "merged", 0, 0.0), ("impl", "dev", "running", 14210, 0.07),
             ("tests", "dev", "checking", 9020, 0.04), ("review", "reviewer", "queued", 0, 0.0),
             ("docs", "writer", "waiting-approval", 3100, 0.01))
    for lane, role, state, tokens, usd in lanes:
        L.add_lane(store, "t7-login", lane, role, f"{lane} for the token-bucket rate limit on /api/login")
        if state != "queued":
            L.set_lane_state(store, "t7-login", lane, state, tokens_in=tokens, usd=usd, step_no=3 if tokens else 0)
    store.event("model.call", "dev: planning the bucket", actor="dev", task="t7-login", lane="impl", role="dev",
                tokens_in=1200, usd=0.01)
    store.event("tool.call", "run uv run pytest -q", actor="dev", task="t7-login", lane="tests", role="dev")
    store.event("tool.denied", "run `curl example.com`: not in run_allow", actor="dev", task="t7-login",
                lane="impl", role="dev")
    approvals.request(store, task="t7-login", lane="docs", role="writer", tool="run",
                      action={"command": "rm -rf site/"}, why="clean the docs build", timeout_s=3600)


def shoot(snap_compare, ws, store) -> bool:
    app = make_app(ws, store, poll_interval=0.05)

    async def synced(pilot) -> None:
        top = store.scalar("SELECT max(id) FROM events", default=0)
        for _ in range(200):
            if app.header_info is not None and app.last_event >= top and app.header_info.head:
                break
            await pilot.pause(0.03)
        await pilot.pause(0.1)

    return snap_compare(app, terminal_size=SIZE, run_before=synced)


@pytest.fixture
def store(team):
    s = Store.for_workspace(team)
    yield s
    s.close()


def test_empty_state(snap_compare, team, store):
    assert shoot(snap_compare, team, store)


def test_populated_lanes(snap_compare, team, store):
    seed(store)
    assert shoot(snap_compare, team, store)


def test_paused_banner(snap_compare, team, store):
    seed(store)
    control.pause(store, by="human:ops", reason="deploy freeze until 14:00")
    assert shoot(snap_compare, team, store)
