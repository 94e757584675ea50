"""Mission control (`cowork mc`) driven through Textual's Pilot, against a real team repo and a real store.

Every control is checked twice: on screen, and in the store row the core API wrote.
"""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time

import pytest
from rich.console import Console

from cowork import handoff
from cowork.gitops import merge
from cowork.runner import control
from cowork.store import Store
from cowork.store import lanes as L
from cowork.team import approvals, messages
from cowork.gitops.lock import MergeLock
from cowork.tui import fmt
from cowork.tui.app import MissionControl, make_app
from cowork.tui.data import Delta, Poller
from cowork.tui.screens.help import HelpScreen
from cowork.tui.screens.lane import LaneDetailScreen
from cowork.tui.screens.modals import AskScreen
from cowork.tui.widgets.approvals import ApprovalsView
from cowork.tui.widgets.channel import ChannelView, parse_post
from cowork.tui.widgets.header import StatusHeader
from tests.conftest import ROOT, git

pytestmark = pytest.mark.anyio
SIZE = (160, 50)
TASK = "t1-login"


def seed(store: Store) -> int:
    """A running task with four lanes in different states, a few events, and one pending approval (its id)."""
    L.create_task(store, TASK, "Rate-limit login", state="running")
    for lane, role, state in (("plan", "planner", "merged"), ("impl", "dev", "running"),
                              ("review", "reviewer", "queued"), ("docs", "writer", "waiting-approval")):
        L.add_lane(store, TASK, lane, role, f"{lane}: rate-limit /api/login with a token bucket")
        if state != "queued":
            L.set_lane_state(store, TASK, lane, state)
    store.event("tool.call", "run uv run pytest -q", actor="dev", task=TASK, lane="impl", role="dev")
    store.event("tool.denied", "write_file outside the worktree", actor="dev", task=TASK, lane="impl", role="dev")
    return approvals.request(store, task=TASK, lane="docs", role="writer", tool="run",
                             action={"command": "rm -rf build/"}, why="clean stale docs build", timeout_s=3600)


@pytest.fixture
def store(team):
    s = Store.for_workspace(team)
    yield s
    s.close()


@pytest.fixture
def app(team) -> MissionControl:
    return make_app(team, poll_interval=0.05)


def log_text(log) -> str:
    """A RichLog's text, with wrapped lines joined."""
    return " ".join(" ".join(line.text for line in log.lines).split())


def plain(renderable) -> str:
    console = Console(width=150, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


async def until(pilot, cond, what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.03)


async def synced(pilot, app: MissionControl, store: Store) -> None:
    """Wait until the app has shown every event in the store."""
    top = store.scalar("SELECT max(id) FROM events", default=0)
    await until(pilot, lambda: app.header_info is not None and app.last_event >= top, "the app to catch up")


async def test_pause_asks_then_sets_and_clears_the_flag(app, store):
    seed(store)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        header = app.query_one(StatusHeader)
        assert not header.has_class("-paused")

        await pilot.press("p")
        assert isinstance(app.screen, AskScreen)
        await pilot.press("escape")  # cancelled: nothing changes
        await pilot.pause(0.2)
        assert store.flag("pause") is None

        await pilot.press("p")
        await pilot.press(*"lunch break", "enter")
        await until(pilot, lambda: store.flag("pause") is not None, "the pause flag")
        flag = store.flag("pause")
        assert flag["value"] == {"reason": "lunch break"}
        assert flag["set_by"].startswith("human:")
        await until(pilot, lambda: header.has_class("-paused"), "the PAUSED banner")
        banner = str(header.query_one("#paused-banner").content)
        assert "PAUSED" in banner and "lunch break" in banner

        await pilot.press("p")
        assert "Unpause" in str(app.screen.query_one("#ask-title").content)
        await pilot.press("enter")
        await until(pilot, lambda: store.flag("pause") is None, "the flag to clear")
        await until(pilot, lambda: not header.has_class("-paused"), "the banner to go")
    kinds = [e["kind"] for e in store.events(kinds=["pause.set", "pause.cleared"])]
    assert kinds == ["pause.set", "pause.cleared"]


async def test_pause_one_lane_from_the_table_or_its_screen(app, store):
    """`p` paused everything; holding one runaway lane took `cowork pause --lane` in another terminal. `P` pauses the
    selected lane (with a reason, as pause-all asks) and, asked again, unpauses it: the same flag the CLI writes."""
    from textual.widgets._footer import FooterKey

    seed(store)
    key, flag = f"{TASK}/impl", f"pause:{TASK}/impl"
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        footer = lambda: [k.description for k in app.screen.query(FooterKey)]  # noqa: E731
        await until(pilot, lambda: "Pause lane" in footer(), "P in the footer")
        app.lanes_table.move_cursor(row=app.lanes_table.visible_keys().index(key))
        await pilot.press("P")
        assert isinstance(app.screen, AskScreen)
        assert key in str(app.screen.query_one("#ask-title").content)
        await pilot.press("escape")  # cancelled: nothing changes
        await pilot.pause(0.2)
        assert store.flag(flag) is None

        await pilot.press("P", *"runaway loop", "enter")
        await until(pilot, lambda: store.flag(flag) is not None, "the lane's pause flag")
        assert store.flag(flag)["value"] == {"reason": "runaway loop"}
        assert store.flag(flag)["set_by"].startswith("human:")
        assert store.flag("pause") is None  # only this lane
        assert control.paused(store, TASK, "review") is None

        await pilot.press("enter")  # its screen says it is paused, and P there unpauses it
        screen = app.screen
        assert isinstance(screen, LaneDetailScreen)
        info = screen.query_one("#lane-info")
        await until(pilot, lambda: "paused: runaway loop" in str(info.content), "the lane's pause on its screen")
        await until(pilot, lambda: "Pause lane" in footer(), "P in the lane screen's footer")
        await pilot.press("P")
        assert isinstance(app.screen, AskScreen)
        assert "Unpause" in str(app.screen.query_one("#ask-title").content)
        await pilot.press("enter")
        await until(pilot, lambda: store.flag(flag) is None, "the flag to clear")
        await until(pilot, lambda: "paused:" not in str(info.content), "the pause to go from its screen")
        await pilot.press("P")  # and pauses it again, from its screen
        assert "Pause lane" in str(app.screen.query_one("#ask-title").content)
        await pilot.press("enter")
        await until(pilot, lambda: store.flag(flag) is not None, "the lane paused from its screen")
        await pilot.press("question_mark")
        assert "cowork pause --lane" in app.screen.query_one("Markdown").source
    events = store.events(kinds=["pause.set", "pause.cleared"])
    assert [(e["kind"], e["lane_id"]) for e in events] == [("pause.set", "impl"), ("pause.cleared", "impl"),
                                                         ("pause.set", "impl")]


async def test_a_broken_role_file_is_a_warning_and_pause_still_works(team, store):
    """Mission control opens on a team with a broken role file, says which file and line once, and still pauses
    everything."""
    (team.roles_dir / "writer.yaml").write_text("name: writer\nmandate: Writes the docs.\ncolour: blue\n")
    seed(store)
    app = make_app(team, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        notes = [n for n in app._notifications if n.severity == "warning"]
        assert len(notes) == 1 and "roles/writer.yaml:3:1: colour: unknown key 'colour'" in notes[0].message
        await pilot.press("p")
        await pilot.press(*"runaway", "enter")
        await until(pilot, lambda: store.flag("pause") is not None, "the pause flag")


async def test_a_plan_waiting_for_approval_shows_with_its_commands(app, store):
    """A plan nobody approved at the prompt (`cowork approvals` lists it): mission control said "No approvals
    waiting" and counted nothing, so the operator watching it never learnt the task was stuck on them."""
    from cowork.runner import planning

    L.create_task(store, "t3-health", "Add a /health endpoint", state="awaiting-approval")
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        status = app.query_one(StatusHeader).query_one("#status")
        await until(pilot, lambda: "plans waiting 1" in str(status.content), "the waiting plan in the header")
        assert str(app.tabs.get_tab("tab-approvals").label) == "Approvals (1)"
        await pilot.press("2")
        await pilot.pause(0.1)
        plans = app.query_one("#approval-plans")
        assert plans.display and not app.query_one("#approval-empty").display
        text = str(plans.content)
        assert "t3-health: Add a /health endpoint" in text
        assert "cowork approve t3-health" in text and "cowork reject t3-health" in text

        planning.reject(Store(store.path), "t3-health", by="human:ops", reason="not now")
        await until(pilot, lambda: not plans.display, "the decided plan to go")
        assert app.query_one("#approval-empty").display
        assert str(app.tabs.get_tab("tab-approvals").label) == "Approvals"
        assert "plans waiting" not in str(status.content)


async def test_pause_while_a_runner_holds_the_store_says_so(app, store, monkeypatch, cli):
    """A runner holding the store's write lock through the busy wait: pause from mission control said only
    "OperationalError: database is locked", and `cowork pause` died with a traceback. Both say it as a tool call
    over MCP does (`db.failure`), in one wording."""
    from cowork.store import db

    seed(store)
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 300)  # connections opened from here on wait 0.3 s, not 10 s
    busy = "the team's store (.cowork/state.db) is busy: another cowork process has held its write lock for over 0.3s"
    holder = db.connect(store.path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await synced(pilot, app, store)
            await pilot.press("p", "enter")
            said = lambda: [n.message for n in app._notifications if "is busy" in n.message]  # noqa: E731
            await until(pilot, said, "the busy store to be reported")
            assert said()[0] == f"{busy}\n  fix: try again in a moment"
        res = cli("pause", "--reason", "freeze")  # outside the app, which captures what is printed
        assert res.code == 1 and "Traceback" not in res.err, res
        assert res.err == f"error: {busy}\n  fix: try again in a moment\n"
        locked = db.OperationalError("database is locked")
        assert db.failure(locked) == f"{busy}; try again in a moment"     # a tool call's error, over MCP too
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.flag("pause") is None


async def test_reject_needs_a_reason_and_approve_takes_a_note(app, store):
    first = seed(store)
    second = approvals.request(store, task=TASK, lane="impl", role="dev", tool="github.create_pull_request",
                               action={"title": "Rate-limit login", "diff": "--- a/x\n+++ b/x\n+limit = 5\n"},
                               why="open the PR", timeout_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        view = app.query_one(ApprovalsView)
        await pilot.press("r")  # not on the approvals view: nothing happens
        assert not isinstance(app.screen, AskScreen)

        await pilot.press("2")
        await until(pilot, lambda: len(view.rows) == 2, "two pending approvals")
        assert view.selected()["id"] == first
        assert "$ rm -rf build/" in plain(app.query_one("#approval-action").content)

        await pilot.press("r")
        assert isinstance(app.screen, AskScreen)
        await pilot.press("enter")  # empty reason: refused, the modal stays
        assert isinstance(app.screen, AskScreen)
        await pilot.press(*"use make clean", "enter")
        await until(pilot, lambda: approvals.get(store, first)["state"] == "rejected", "the rejection")
        row = approvals.get(store, first)
        assert row["note"] == "use make clean" and row["decided_by"].startswith("human:")

        await until(pilot, lambda: list(view.rows) == [second], "the list to drop the decided one")
        await pilot.press("a", *"ship it", "enter")
        await until(pilot, lambda: approvals.get(store, second)["state"] == "approved", "the approval")
        assert approvals.get(store, second)["note"] == "ship it"
        await until(pilot, lambda: not view.rows, "an empty queue")


async def test_channel_posts_a_human_message(app, store):
    seed(store)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await pilot.press("3")
        await until(pilot, lambda: app.focused is not None and app.focused.id == "channel-input", "the input")
        await pilot.press(*"no at sign", "enter")  # refused: no message
        await pilot.press("ctrl+u", *"@dev please rebase on main", "enter")
        await until(pilot, lambda: store.scalar("SELECT count(*) FROM messages") == 1, "the message")
        m = store.one("SELECT * FROM messages")
        assert (m["kind"], m["to_role"], m["body"]) == ("human", "dev", "please rebase on main")
        assert m["from_role"].startswith("human:")
        channel = app.query_one(ChannelView)
        await until(pilot, lambda: channel.count == 1, "the channel to show it")
        await pilot.press(*"@nobody hi", "enter")  # not a role: refused by the core, as `cowork say` refuses it
        await pilot.pause(0.5)
        assert store.scalar("SELECT count(*) FROM messages") == 1
    assert parse_post("@team  all hands ") == ("team", "all hands")


async def test_a_failed_channel_post_keeps_what_was_typed(app, store):
    """A post the core refuses (no such role) emptied the input: the operator had to type it all again to fix one
    word. The text stays until the post succeeds, and the error shows as before."""
    seed(store)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await pilot.press("3")
        box = app.query_one("#channel-input")
        await until(pilot, lambda: app.focused is box, "the input")
        await pilot.press(*"@nosuchrole please rebase", "enter")
        errors = lambda: [n.message for n in app._notifications if n.severity == "error"]  # noqa: E731
        await until(pilot, errors, "the refusal")
        assert "nosuchrole" in errors()[0]
        assert box.value == "@nosuchrole please rebase"
        assert store.scalar("SELECT count(*) FROM messages") == 0
        await pilot.press("home", *["delete"] * len("@nosuchrole"), *"@dev", "enter")
        await until(pilot, lambda: store.scalar("SELECT count(*) FROM messages") == 1, "the message")
        assert store.one("SELECT body, to_role FROM messages") == {"body": "please rebase", "to_role": "dev"}
        await until(pilot, lambda: box.value == "", "the input to clear once posted")


async def test_lane_filter_narrows_the_table(app, store):
    seed(store)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        table = app.lanes_table
        assert table.row_count == 4
        await pilot.press("slash", *"role:dev")
        assert table.visible_keys() == [f"{TASK}/impl"]
        await pilot.press(*["backspace"] * 8, *"state:wait")
        assert table.visible_keys() == [f"{TASK}/docs"]
        await pilot.press(*["backspace"] * 10, *"review")
        assert set(table.visible_keys()) == {f"{TASK}/review"}
        # a lane that starts matching while filtered shows up; one that stops matching goes
        other = Store(store.path)
        L.set_lane_state(other, TASK, "review", "running")
        await pilot.press(*["backspace"] * 6, *"state:running")
        await synced(pilot, app, store)
        assert set(table.visible_keys()) == {f"{TASK}/impl", f"{TASK}/review"}
        await pilot.press("escape")
        assert app.focused is table
        other.close()


async def test_enter_opens_the_lane_with_its_packet(app, store, team):
    seed(store)
    root = team.root
    branch = f"cowork/{TASK}/impl"
    git(root, "checkout", "-q", "-b", branch)
    (root / "src").mkdir()
    (root / "src" / "limits.py").write_text("BUCKET = 5\n")
    packet = handoff.Packet(
        meta=handoff.Meta(task=TASK, lane="impl", **{"from": "dev"}, to="reviewer", status="done", branch=branch),
        title="Token bucket for /api/login",
        sections={s: "- see src/limits.py" for s in handoff.SECTIONS},
    )
    (root / "handoffs" / TASK).mkdir(parents=True)
    (root / "handoffs" / TASK / "impl.md").write_text(handoff.render(packet))
    git(root, "add", "src", "handoffs")
    git(root, "commit", "-q", "-m", "impl")
    git(root, "checkout", "-q", "main")
    assert not (root / "handoffs" / TASK / "impl.md").exists()  # only on the branch
    messages.post(store, kind="ask", from_role="reviewer", from_lane=f"{TASK}/review", to_role="dev",
                  to_lane=f"{TASK}/impl", body="which bucket size?", task=TASK)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        app.lanes_table.move_cursor(row=app.lanes_table.visible_keys().index(f"{TASK}/impl"))
        await pilot.press("enter")
        assert isinstance(app.screen, LaneDetailScreen)
        screen = app.screen
        await until(pilot, lambda: screen.loaded, "the lane to load")
        markdown = screen.query_one("#packet").source
        assert "Token bucket for /api/login" in markdown and "## Open risks" in markdown
        assert branch in str(screen.query_one("#packet-source").content)
        assert "src/limits.py" in str(screen.query_one("#diff-stat").content)
        lines = screen.query_one("#lane-timeline").text_lines()
        assert any("uv run pytest" in line for line in lines)
        assert all("docs" not in line.split()[3] for line in lines)

        screen.query_one("#lane-tabs").active = "tab-lane-messages"
        log = screen.query_one("#lane-messages")
        await until(pilot, lambda: "which bucket size?" in log_text(log), "the lane's messages")

        # the open lane follows the store live
        other = Store(store.path)
        other.event("model.call", "dev thinks", actor="dev", task=TASK, lane="impl", role="dev")
        messages.post(other, kind="answer", from_role="dev", from_lane=f"{TASK}/impl", to_role="reviewer",
                      to_lane=f"{TASK}/review", body="five per second", task=TASK)
        messages.post(other, kind="tell", from_role="dev", from_lane=f"{TASK}/docs", to_role="writer",
                      body="not about impl", task=TASK)
        await until(pilot, lambda: "five per second" in log_text(log), "the lane's new message")
        assert "not about impl" not in log_text(log)
        # the lane rewrites its packet and moves on: the packet on screen follows
        git(root, "checkout", "-q", branch)
        packet.title = "Token bucket, revised"
        (root / "handoffs" / TASK / "impl.md").write_text(handoff.render(packet))
        git(root, "commit", "-q", "-am", "revise")
        git(root, "checkout", "-q", "main")
        L.set_lane_state(other, TASK, "impl", "checking")
        await until(pilot, lambda: screen.row.state == "checking", "the lane state")
        await until(pilot, lambda: "Token bucket, revised" in screen.query_one("#packet").source, "the new packet")
        await until(pilot, lambda: any("dev thinks" in x for x in screen.query_one("#lane-timeline").text_lines()),
                    "the lane's new event")
        other.close()
        await pilot.press("escape")
        assert not isinstance(app.screen, LaneDetailScreen)


async def test_lanes_table_and_lane_screen_count_steps_as_cowork_lanes_does(app, store, cli):
    """The lanes table showed `#22 run` (the journal's row count, tool calls and notes included) where the lane
    screen first said `step #6` and `cowork lanes` says 6: the model calls of the lane."""
    from cowork.runner.journal import Journal

    seed(store)
    journal = Journal(store, TASK, "impl")
    for _ in range(6):
        journal.finish(journal.start("model", "gpt-test"), {"content": "ok"}, tokens_in=10, lane_step_no=True)
        for name in ("read_file", "write_file"):
            journal.finish(journal.start("tool", name), {"ok": True})
    journal.record("message", "between", output={"messages": []})
    journal.start("tool", "run")  # in flight
    assert store.scalar("SELECT max(seq) FROM steps WHERE lane_id='impl'") == 20
    res = cli("lanes", "--task", TASK, "--json")
    assert [r["step"] for r in json.loads(res.out) if r["lane"] == "impl"] == [6]
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        key = f"{TASK}/impl"
        await until(pilot, lambda: str(app.lanes_table.get_cell(key, "step")) == "#6 run",
                    "the step as cowork lanes counts it")
        app.lanes_table.move_cursor(row=app.lanes_table.visible_keys().index(key))
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, LaneDetailScreen)
        assert "step #6 run " in str(screen.query_one("#lane-info").content)
        await until(pilot, lambda: screen.loaded, "the lane to load")
        assert "step #6 run " in str(screen.query_one("#lane-info").content)
        # the next model call lands: both views move to 7 together
        other = Store(store.path)
        later = Journal(other, TASK, "impl")
        later.finish(later.start("model", "gpt-test"), {"content": "ok"}, lane_step_no=True)
        await until(pilot, lambda: "step #7 gpt-test " in str(screen.query_one("#lane-info").content), "step 7")
        await pilot.press("escape")  # the table is redrawn at most every LANES_EVERY_S, the lane screen at once
        await until(pilot, lambda: str(app.lanes_table.get_cell(key, "step")) == "#7 gpt-test", "the table's step 7")
        other.close()


async def test_a_command_lane_shows_what_it_runs_and_for_how_long(app, store, cli, monkeypatch):
    """A lane whose role runs an external agent CLI (engine: command) makes no model call of its own, so its step
    count never moves: the lanes table said `#0 command` for as long as the agent ran. It names the agent's program
    and how long it has run, then what the lane does next (its checks), in mission control as in `cowork lanes`."""
    from cowork.runner.journal import Journal

    seed(store)
    journal = Journal(store, TASK, "impl")
    run = journal.start("tool", "command", {"argv": ["/usr/local/bin/claude", "-p", "build the login page"]})
    clock = {"now": run.started_at + 185}
    monkeypatch.setattr(fmt, "clock", lambda: clock["now"])
    (row,) = [r for r in json.loads(cli("lanes", "--task", TASK, "--json").out) if r["lane"] == "impl"]
    assert (row["step"], row["doing"], row["doing_since"]) == (0, "claude", run.started_at)
    (line,) = [x for x in cli("lanes", "--task", TASK).out.splitlines() if "/impl " in x]
    assert line.split()[2:4] == ["running", "claude"] and line.split()[4].endswith("s"), line  # claude 0s
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        key = f"{TASK}/impl"
        step = lambda: str(app.lanes_table.get_cell(key, "step"))  # noqa: E731
        await until(pilot, lambda: step() == "claude 3m", "the agent's program and how long it has run")
        clock["now"] += 3600
        await until(pilot, lambda: step() == "claude 1h03", "the time to move on with the clock")
        other = Store(store.path)
        later = Journal(other, TASK, "impl")
        later.finish(later.steps[-1], {"exit": 0})
        check = later.start("check", "uv run pytest -q")
        clock["now"] = check.started_at
        await until(pilot, lambda: step() == "uv run pyt… 0s", "the check that follows, cut to keep its time")
        app.lanes_table.move_cursor(row=app.lanes_table.visible_keys().index(key))
        await pilot.press("enter")
        info = lambda: str(app.screen.query_one("#lane-info").content)  # noqa: E731
        assert "step uv run pytest -q 0s " in info()
        clock["now"] += 60
        await until(pilot, lambda: "step uv run pytest -q 1m " in info(), "the lane screen's time to move on")
        later.finish(check, {"exit": 0})
        await until(pilot, lambda: "step uv run pytest -q " in info(), "the check to end, and its time with it")
        await pilot.press("escape")
        await until(pilot, lambda: step() == "uv run pytest…", "the table to show the check ended")
        other.close()


async def test_a_long_error_leaves_room_for_the_lane_tabs(app, store):
    """A failed lane's error can be a page of check output: the lane screen showed all of it above the tabs, which it
    pushed off an 80x24 terminal (the packet, timeline and diff could not be seen at all)."""
    L.create_task(store, TASK, "Rate-limit login", state="running")
    L.add_lane(store, TASK, "impl", "dev", "rate-limit /api/login " * 20)
    error = "\n".join(f"FAILED tests/test_limits.py::test_{i} - AssertionError: " + "x" * 90 for i in range(60))
    L.set_lane_state(store, TASK, "impl", "failed", error=error)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, store)
        await until(pilot, lambda: app.lanes_table.row_count == 1, "the lane")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, LaneDetailScreen)
        await until(pilot, lambda: screen.loaded, "the lane to load")
        await pilot.pause(0.1)
        tabs = screen.query_one("#lane-tabs").region
        assert tabs.y < 10 and tabs.height >= 12, tabs
        assert "test_59" in str(screen.query_one("#lane-info").content)  # all of it, in its own scrolling box


async def test_lane_states_show_on_an_80_column_terminal(app, store):
    """The State column came after a 34-cell Goal, past column 80: on a standard terminal no lane showed its state."""
    seed(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, store)
        table = app.lanes_table
        await until(pilot, lambda: table.row_count == 4, "the lanes")
        await pilot.pause(0.1)
        shown = {}
        for y in range(1, 1 + table.row_count):  # row 0 is the header
            line = "".join(segment.text for segment in table.render_line(y))
            shown[line.split()[0].rsplit("/", 1)[-1]] = line
        assert len(table.render_line(1).text) <= 80
        for lane, state in (("plan", "merged"), ("impl", "running"), ("review", "queued"),
                            ("docs", "waiting-approval")):
            assert state in shown[lane], shown


async def test_header_puts_what_waits_for_a_human_within_80_columns(app, store):
    """The status line led with the merge lock, spend and totals; at 80 columns the approvals waiting and the lanes
    waiting or failed were cut off the end."""
    seed(store)
    L.set_lane_state(store, TASK, "review", "failed", error="check failed")
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, store)
        status = app.query_one(StatusHeader).query_one("#status")
        await until(pilot, lambda: "failed 1" in str(status.content), "the failed lane in the header")
        visible = str(status.content)[: status.content_region.width]
        for part in ("approvals 1", "waiting-approval 1", "failed 1", "merge lock free"):
            assert part in visible, visible


async def test_live_updates_go_cell_by_cell(app, store):
    seed(store)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        table = app.lanes_table
        other = Store(store.path)  # another writer, as a runner would be
        L.update_lane(other, TASK, "impl", tokens_in=1500, tokens_out=500, usd=0.25)
        L.add_lane(other, TASK, "extra", "dev", "a delegated lane", kind="delegated")
        control.pause(other, by="human:ops", reason="deploy freeze")
        await synced(pilot, app, store)
        await until(pilot, lambda: f"{TASK}/extra" in table.visible_keys(), "the new lane")
        assert str(table.get_cell(f"{TASK}/impl", "tokens")) == "2.0k"
        assert str(table.get_cell(f"{TASK}/impl", "cost")) == "$0.25"
        assert app.timeline.text_lines()[-1].split()[2] == "pause.set"
        await until(pilot, lambda: app.query_one(StatusHeader).has_class("-paused"), "the banner")
        other.close()


async def test_timeline_keeps_the_lane_id_of_a_long_task_id(app, store):
    """Task ids made from a long title are 30 characters: the timeline clipped `task/lane` from the right, so every
    line read `t1-a-very-long-goal-that-keeps/…` and no line said which lane it was about."""
    task = "t1-a-very-long-goal-that-keeps"
    L.create_task(store, task, "A very long goal that keeps going", state="running")
    for lane in ("lane00", "lane01"):
        L.add_lane(store, task, lane, "dev", f"write {lane}")
        store.event("tool.call", "dev write_file(path='f.txt')", actor="dev", task=task, lane=lane, role="dev")
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        calls = [line for line in app.timeline.text_lines() if "tool.call" in line]
        assert len(calls) == 2
        assert "…ery-long-goal-that-keeps/lane00 dev write_file" in calls[0], calls
        assert "/lane01 dev write_file" in calls[1], calls


def test_poller_reads_only_what_changed(team, store):
    seed(store)
    poller = Poller(team, store, team="t", target="main", budget_day=None)
    first = poller.poll()
    assert first.first and len(first.lanes) == 4 and first.header.tasks == 1
    top = first.events[-1]["id"]
    assert not poller.poll(now=poller.slow_at + 0.1)  # nothing new, and the store was not read past data_version

    other = Store(store.path)
    L.set_lane_state(other, TASK, "review", "running")
    delta = poller.poll(now=poller.slow_at + 0.1)
    assert list(delta.lanes) == [f"{TASK}/review"]
    assert [e["id"] > top for e in delta.events] == [True]
    assert delta.approvals is None  # no approval news: not re-read
    other.execute("INSERT INTO steps(task_id, lane_id, seq, kind, name, started_at) VALUES (?,?,?,?,?,?)",
                  (TASK, "impl", 3, "tool", "run", time.time()))
    delta = poller.poll(now=poller.slow_at + 0.1)
    # the name of the lane's latest journal step, and for how long it has run: no model call to count yet
    assert delta.lanes[f"{TASK}/impl"].step.startswith("run ") and not delta.events
    other.close()


async def test_empty_team_shows_what_to_run_first(app, store):
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.header_info is not None, "the first poll")
        empty = app.query_one("#empty")
        assert empty.display and not app.lanes_table.display
        assert 'cowork delegate' in str(empty.content)
        L.create_task(store, "t2", "first task", state="running")
        L.add_lane(store, "t2", "a", "dev", "first lane")
        await synced(pilot, app, store)
        assert not empty.display and app.lanes_table.row_count == 1


async def test_empty_team_keys_never_go_to_hidden_widgets(app, store):
    """With no lanes the lanes table and its filter are hidden: `/`, `1` and `2` must not focus them (what was typed
    vanished, `q` no longer quit, and the invisible filter hid the first lanes when a task started)."""
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.header_info is not None, "the first poll")
        await pilot.pause(0.1)
        for key in ("slash", "1", "2", "1"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert app.focused is not None and app.focused.display, (key, app.focused)
        await pilot.press("slash", *"xy", "escape")
        await pilot.pause(0.1)
        assert app.lane_filter.value == "" and app.focused.display
        L.create_task(store, "t2", "first task", state="running")
        L.add_lane(store, "t2", "a", "dev", "first lane")
        await synced(pilot, app, store)
        await until(pilot, lambda: app.lanes_table.row_count == 1, "the first lane in the table")
        await pilot.press("q")
    assert app.return_code == 0


async def test_palette_help_merge_queue_and_timeline_filter(app, store):
    seed(store)
    merge.enqueue(store, TASK, "review")
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")

        await pilot.press("m")
        await until(pilot, lambda: app.query_one("#merge-table").row_count == 1, "the merge queue")
        assert app.query_one("#main").active == "tab-merge"

        await pilot.press("ctrl+p")
        await pilot.press(*"open lane t1-login/plan")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, LaneDetailScreen), "the lane from the palette")
        assert app.screen.row.lane == "plan"
        await pilot.press("escape")

        await pilot.press("ctrl+p")
        await pilot.press(*"pause all lanes")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, AskScreen), "the pause question from the palette")
        await pilot.press("escape")

        await pilot.press("f", *"kind:tool")
        lines = app.timeline.text_lines()
        assert [line.split()[2] for line in lines] == ["tool.call", "tool.denied"]
        await pilot.press("ctrl+u")
        assert len(app.timeline.text_lines()) > 2


async def test_merge_lock_of_a_dead_holder_or_an_expired_lease_shows_as_stale(app, store):
    """A runner killed while merging leaves the lock row behind: mission control said it was held ("lease 592s
    left") where `cowork queue` says the holder is gone and the next merger takes it."""
    seed(store)
    merge.enqueue(store, TASK, "review")
    taker = ("import os, sys; from cowork.store import Store; from cowork.gitops.lock import MergeLock; "
             "assert MergeLock(Store(sys.argv[1]), 'r-killed', lease_s=600, heartbeat=False).try_acquire(); "
             "os._exit(0)")
    subprocess.run([sys.executable, "-c", taker, str(store.path)], cwd=ROOT, check=True, timeout=60)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await pilot.press("m")
        status = app.query_one(StatusHeader).query_one("#status")
        lock_line = app.query_one("#merge-lock")
        await until(pilot, lambda: "r-killed" in str(status.content), "the holder in the header")
        assert "holder gone" in str(status.content)
        assert "holder gone: the next merger takes it" in str(lock_line.content)
        assert "left" not in str(lock_line.content)

        # a live holder whose lease ran out (no heartbeat) is reclaimable too, and says so
        store.execute("DELETE FROM locks")
        lock = MergeLock(Store(store.path), "r-stuck", lease_s=0.3, heartbeat=False)
        assert lock.try_acquire()
        await until(pilot, lambda: "r-stuck" in str(status.content), "the new holder")
        await until(pilot, lambda: "lease expired" in str(lock_line.content), "the lease to run out")
        await until(pilot, lambda: "lease expired" in str(status.content), "the header to say so")
        lock.release()
        await until(pilot, lambda: "free" in str(lock_line.content), "the lock to be free")


async def test_merge_queue_waiting_times_move_on(app, store, monkeypatch):
    seed(store)
    merge.enqueue(store, TASK, "review")
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await pilot.press("m")
        table = app.query_one("#merge-table")
        await until(pilot, lambda: table.row_count == 1, "the merge queue")
        assert table.get_row_at(0)[3].endswith("s")
        real = time.time
        monkeypatch.setattr(fmt, "clock", lambda: real() + 180)  # three minutes on, with nothing else changing
        await until(pilot, lambda: table.get_row_at(0)[3] == "3m", "the waiting time to move on")


async def test_help_fits_80_columns_and_names_the_unpause_command(app, store):
    """The help box was 100 cells wide whatever the terminal (cut off at 80), and told the operator that `p` is
    `cowork resume`, which restarts a crashed runner; the pause is cleared by `cowork unpause`."""
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.header_info is not None, "the first poll")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause(0.2)
        box = app.screen.query_one("VerticalScroll").region
        assert box.x >= 0 and box.right <= 80, box
        text = app.screen.query_one("Markdown").source
        assert "`cowork unpause`" in text and "cowork resume" not in text


def test_a_damaged_store_is_an_error_not_a_traceback(team, cli):
    """A state.db that is not a database (a bad copy, a disk error) made `cowork mc`, and every other command, die
    with pysqlite3's traceback."""
    team.db_path.parent.mkdir(exist_ok=True)
    team.db_path.write_bytes(b"this is not a sqlite file, just some bytes" * 100)
    for args in (("mc",), ("status",)):
        res = cli(*args)
        assert res.code == 1, res
        assert "Traceback" not in res.err
        assert f"cannot open the store {team.db_path}: file is not a database" in res.err
        assert "move it aside" in res.err


async def test_a_tick_or_store_news_during_shutdown_does_not_crash(app, store):
    """Quitting removes the widgets while the 1 s tick and queued store news can still arrive: the header, merge
    view, approvals view and channel looked their children up on each update, and raised NoMatches (a traceback on
    quit, now and then)."""
    seed(store)
    merge.enqueue(store, TASK, "review")
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await app.query_one(StatusHeader).remove()  # as the shutdown does, widget by widget
        await app.query_one("#main").remove()
        app._tick()
        message = {"id": 99, "created_at": time.time(), "from_role": "dev", "to_role": "team", "kind": "tell",
                   "body": "late news", "task_id": TASK}
        app.apply(Delta(header=app.header_info, messages=[message], approvals=[]))
        await pilot.press("q")


async def test_closing_mission_control_leaves_the_store_alone(app, store):
    seed(store)
    async with app.run_test(size=SIZE) as pilot:
        await synced(pilot, app, store)
        await pilot.press("q")
    await asyncio.sleep(0.1)
    assert [r["state"] for r in L.list_lanes(store, TASK)] == ["merged", "running", "queued", "waiting-approval"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_what_agents_write_shows_as_written_in_the_tables(app, store):
    """Before: the lanes and approvals tables took goals, step names and reasons as strings, which a DataTable reads
    as Rich markup: "[x]" vanished, "[link=...]" made a link, and "[/red]" raised MarkupError and took mission
    control down; escape sequences went to the terminal. Agents write all three (a delegated lane's goal, the name
    of a tool the model made up, the `why` of a blocked call)."""
    seed(store)
    goal = "fix [/red] parsing, tick [x] boxes \x1b[2K"
    L.add_lane(store, TASK, "odd", "dev", goal)
    L.set_lane_state(store, TASK, "odd", "running")
    store.execute("INSERT INTO steps(task_id, lane_id, seq, kind, name, state, started_at) "
                  "VALUES (?, 'odd', 1, 'tool', '[/b]oom', 'started', 1.0)", (TASK,))
    approvals.request(store, task=TASK, lane="odd", role="dev", tool="run", action={"command": "make"},
                      why="because [/red] [link=https://evil.example]trust me[/link]", timeout_s=3600)
    async with app.run_test(size=(200, 50)) as pilot:
        await synced(pilot, app, store)
        key = f"{TASK}/odd"
        await until(pilot, lambda: key in app.lanes_table.rendered, "the odd lane in the table")
        assert str(app.lanes_table.get_cell(key, "goal")) == "fix [/red] parsing, tick [x] boxes \\x1b[2K"
        assert "[/b]oom" in str(app.lanes_table.get_cell(key, "step"))
        await pilot.press("2")  # the approvals view
        view = app.query_one(ApprovalsView)
        await until(pilot, lambda: view.table.row_count == 2, "both approvals listed")
        whys = [str(view.table.get_row_at(i)[4]) for i in range(view.table.row_count)]
        assert any(w.startswith("because [/red] [link=https://evil.example]trust") for w in whys), whys
        await pilot.pause()
        assert app.is_running
