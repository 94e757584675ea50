"""`cowork mc`: a live view and control surface over the store and git. It never runs lanes.

Build it with `make_app` (the CLI, the tests, the snapshots and the benchmark all do).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from cowork.errors import CoworkError
from cowork.team import messages
from cowork.tui import controls
from cowork.tui.commands import MissionCommands
from cowork.tui.data import Delta, HeaderInfo, Poller
from cowork.tui.messages import PollFailed, StoreChanged
from cowork.tui.screens.help import HelpScreen
from cowork.tui.screens.lane import LaneDetailScreen
from cowork.tui.screens.modals import AskScreen
from cowork.tui.widgets.approvals import ApprovalsView
from cowork.tui.widgets.channel import ChannelView
from cowork.tui.widgets.header import StatusHeader
from cowork.tui.widgets.lanes import LanesTable
from cowork.tui.widgets.merge import MergeView
from cowork.tui.widgets.timeline import Timeline

# Seconds between reads of the store. An event waits half of it on average before it is read, so 0.1 keeps the
# median event-to-screen latency under 100 ms; an idle store costs one `PRAGMA data_version` per read.
DEFAULT_POLL_S = 0.1
LANES_EVERY_S = 0.5
TABS = {"lanes": "tab-lanes", "approvals": "tab-approvals", "channel": "tab-channel", "merge": "tab-merge"}

EMPTY = """\
[b]No tasks yet.[/b] This team is ready; start it from a terminal:

  [b]cowork roles list[/b]                         who is on the team, and what each role may do
  [b]cowork delegate "add a /health endpoint"[/b]  the planner writes a plan; approve it and lanes start
  [b]cowork run handoffs/<task>/plan.md[/b]        run a plan you wrote yourself
  [b]cowork say @team "..."[/b]                    post to the team channel (or press [b]3[/b] here)

Lanes show up here the moment a task starts, and this screen updates live.
[dim]? help · p pause all · ctrl+p every command · q quit (lanes keep running)[/dim]
"""


class MissionControl(App):
    """Mission control. Reads the store in a worker thread; every control calls the same core API as the CLI."""

    TITLE = "cowork mc"
    COMMANDS = App.COMMANDS | {MissionCommands}
    CSS = """
    #main { height: 1fr; }
    #lane-filter, #timeline-filter { height: 1; border: none; padding: 0 1; background: $boost; }
    #lane-filter:focus, #timeline-filter:focus { background: $primary 30%; }
    #lanes-table { height: 1fr; }
    #empty { padding: 1 2; height: auto; display: none; }
    #timeline-panel { height: 40%; border-top: solid $primary; }
    #timeline-bar { height: 1; }
    #timeline-title { width: auto; padding: 0 1; text-style: bold; }
    #timeline { height: 1fr; }
    TabPane { padding: 0; }
    """
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("1", "show('lanes')", "Lanes", show=False),
        Binding("2", "show('approvals')", "Approvals", show=False),
        Binding("3", "show('channel')", "Channel", show=False),
        Binding("4,m", "show('merge')", "Merge queue"),
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
        Binding("slash", "filter_lanes", "Filter", key_display="/"),
        Binding("f", "filter_timeline", "Filter timeline", show=False),
        Binding("t", "focus_timeline", "Timeline", show=False),
        Binding("c", "channel", "Say", show=False),
        Binding("escape", "leave_input", "Back", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, ws, store, settings, *, poll_interval: float = DEFAULT_POLL_S) -> None:
        super().__init__()
        self.ws, self.store, self.settings = ws, store, settings
        self.target = settings.merge.target
        self.poll_interval = poll_interval
        self.header_info: HeaderInfo | None = None
        self.batches = 0  # store batches applied; tests wait on it
        self.last_event = 0
        self._wake = threading.Event()
        self._poll_error: str | None = None
        self._human: str | None = None
        self._pending_lanes: dict = {}
        self._lanes_flushed = 0.0
        self._lanes_timer = False

    # -- layout ---------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with TabbedContent(id="main", initial="tab-lanes"):
            with TabPane("Lanes", id="tab-lanes"):
                yield Input(placeholder="/ filter lanes: words, role:dev state:running task:t1", id="lane-filter")
                yield Static(EMPTY, id="empty")
                yield LanesTable(id="lanes-table")
            with TabPane("Approvals", id="tab-approvals"):
                yield ApprovalsView(id="approvals")
            with TabPane("Channel", id="tab-channel"):
                yield ChannelView(id="channel")
            with TabPane("Merge queue", id="tab-merge"):
                yield MergeView(id="merge")
        with Vertical(id="timeline-panel"):
            with Horizontal(id="timeline-bar"):
                yield Static("Timeline", id="timeline-title")
                yield Input(placeholder="f filter: words, task:… lane:… role:… kind:… actor:…", id="timeline-filter")
            yield Timeline(id="timeline")
        yield Footer()

    def on_mount(self) -> None:
        # widgets the store updates touch, looked up once (a late update during shutdown must not query a torn-down
        # screen)
        self.lanes_table = self.query_one("#lanes-table", LanesTable)
        self.timeline = self.query_one("#timeline", Timeline)
        self.header_bar = self.query_one(StatusHeader)
        self.tabs = self.query_one(TabbedContent)
        self.approvals_view = self.query_one(ApprovalsView)
        self.channel_view = self.query_one(ChannelView)
        self.merge_view = self.query_one(MergeView)
        self.empty_note = self.query_one("#empty", Static)
        self.lane_filter = self.query_one("#lane-filter", Input)
        self.lanes_table.focus()
        self.poll_loop()
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        self._wake.set()

    # -- reading the store ------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll_loop(self) -> None:
        worker = get_current_worker()
        s = self.settings
        poller = Poller(self.ws, self.store, team=s.name, target=self.target, budget_day=s.budget.usd_per_day)
        try:
            while not worker.is_cancelled and self.is_running:
                try:
                    delta = poller.poll()
                except Exception as exc:  # a locked or damaged store: say so, keep trying
                    self.post_message(PollFailed(f"{type(exc).__name__}: {exc}"))
                else:
                    if delta:
                        self.post_message(StoreChanged(delta))
                self._wake.wait(self.poll_interval)
                self._wake.clear()
        finally:
            self.store.close()  # this thread's connection

    def poke(self) -> None:
        """Poll now (after a control, so its effect shows at once)."""
        self._wake.set()

    def on_store_changed(self, message: StoreChanged) -> None:
        self.apply(message.delta)

    def on_poll_failed(self, message: PollFailed) -> None:
        if message.error != self._poll_error:
            self._poll_error = message.error
            self.notify(f"cannot read the store: {message.error}", severity="error", timeout=8)

    def apply(self, delta: Delta) -> None:
        """Show one batch of news from the store."""
        self._poll_error = None
        if delta.lanes:
            self._pending_lanes.update(delta.lanes)
            self._flush_lanes_soon()
        if delta.events:
            self.timeline.add(delta.events)
            self.last_event = delta.events[-1]["id"]
        if delta.messages:
            self.channel_view.add(delta.messages)
        if delta.approvals is not None:
            self.approvals_view.show(delta.approvals)
            label = f"Approvals ({len(delta.approvals)})" if delta.approvals else "Approvals"
            tab = self.tabs.get_tab("tab-approvals")
            if str(tab.label) != label:
                tab.label = label
        if delta.header is not None:
            self.header_info = delta.header
            self.header_bar.show(delta.header)
            self.merge_view.show(delta.header)
        self._check_empty()
        for screen in self.screen_stack:
            if isinstance(screen, LaneDetailScreen):
                if delta.events:
                    screen.add_events(delta.events)
                if delta.messages:
                    screen.add_messages(delta.messages)
                if screen.row.key in delta.lanes:
                    screen.apply_lane(delta.lanes[screen.row.key])
        self.batches += 1

    def _flush_lanes_soon(self) -> None:
        # Any changed cell makes the DataTable re-render every visible row, so under a stream of lane updates the
        # table is redrawn at most every LANES_EVERY_S (the first change after a quiet spell shows at once).
        wait = self._lanes_flushed + LANES_EVERY_S - time.monotonic()
        if wait <= 0:
            self._flush_lanes()
        elif not self._lanes_timer:
            self._lanes_timer = True
            self.set_timer(wait, self._flush_lanes)

    def _flush_lanes(self) -> None:
        self._lanes_timer = False
        self._lanes_flushed = time.monotonic()
        rows, self._pending_lanes = self._pending_lanes, {}
        if rows:
            self.lanes_table.apply(rows)
            self._check_empty()

    def _check_empty(self) -> None:
        empty = self.header_info is not None and self.header_info.tasks == 0 and not self.lanes_table.lane_rows
        if empty != self.empty_note.display:
            self._show_empty(empty)

    def _show_empty(self, empty: bool) -> None:
        self.empty_note.display = empty
        self.lanes_table.display = self.lane_filter.display = not empty
        # focus something visible ourselves: Textual would move it off a hidden widget, a frame or so later
        if empty and self.focused in (None, self.lanes_table, self.lane_filter):
            self.timeline.focus()
        elif not empty and self.focused in (None, self.timeline):
            self.lanes_table.focus()

    def _tick(self) -> None:
        self.lanes_table.tick()
        self.header_bar.tick()
        self.merge_view.tick()
        self.approvals_view.tick()

    # -- controls (each one is the CLI command's core call, run off the UI thread) -----------------------------

    @work(thread=True, group="control", exit_on_error=False)
    def run_control(self, fn: Callable[..., str], *args: Any, **kwargs: Any) -> None:
        """Run `fn(ws, store, *args, by=<this human>, **kwargs)` in a worker and notify what it says."""
        try:
            if self._human is None:
                self._human = messages.human_id(self.ws.root)
            said = fn(self.ws, self.store, *args, by=self._human, **kwargs)
        except CoworkError as exc:
            self.call_from_thread(self.notify, exc.render(), severity="error", timeout=8)
        except Exception as exc:
            self.call_from_thread(self.notify, f"{type(exc).__name__}: {exc}", severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, said, timeout=4)
        finally:
            self.store.close()  # this thread's connection
            self.poke()

    def action_toggle_pause(self) -> None:
        if self.header_info and self.header_info.paused:
            def resume(answer: str | None) -> None:
                if answer is not None:
                    self.run_control(controls.unpause_all)

            self.push_screen(AskScreen("Resume all lanes?", "Every paused lane continues from its next step.",
                                       confirm="Resume"), resume)
        else:
            def pause(answer: str | None) -> None:
                if answer is not None:
                    self.run_control(controls.pause_all, reason=answer or None)

            self.push_screen(AskScreen("Pause all lanes?", "Every lane stops before its next step (running tools "
                                       "finish; external agents get SIGSTOP) until you resume.",
                                       placeholder="reason (optional)", confirm="Pause"), pause)

    def action_approve(self) -> None:
        row = self.approvals_view.selected()
        if row is None:
            return

        def answer(note: str | None) -> None:
            if note is not None:
                self.run_control(controls.approve, row["id"], note=note or None)

        self.push_screen(AskScreen(f"Approve #{row['id']}: {row.get('role')} → {row.get('tool')}?",
                                   "The action runs as shown.", placeholder="note (optional)", confirm="Approve"),
                         answer)

    def action_reject(self) -> None:
        row = self.approvals_view.selected()
        if row is None:
            return

        def answer(reason: str | None) -> None:
            if reason:
                self.run_control(controls.reject, row["id"], reason=reason)

        self.push_screen(AskScreen(f"Reject #{row['id']}: {row.get('role')} → {row.get('tool')}?",
                                   "The role is told why and carries on without it.", placeholder="reason (required)",
                                   required=True, confirm="Reject"), answer)

    def on_channel_view_post(self, message: ChannelView.Post) -> None:
        self.run_control(controls.say, "@" + message.to_role, message.body)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            if self.screen is not self.screen_stack[0] or self.tabs.active != "tab-approvals":
                return False
            return True if self.approvals_view.rows else None
        return True

    # -- navigation -----------------------------------------------------------------------------------------

    def _to_main(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_show(self, name: str) -> None:
        self._to_main()
        self.tabs.active = TABS[name]
        focus = {"lanes": "#lanes-table", "approvals": "#approvals-table", "channel": "#channel-input",
                 "merge": "#merge-table"}[name]
        self.call_after_refresh(lambda: self.query_one(focus).focus())
        self.refresh_bindings()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()

    def action_filter_lanes(self) -> None:
        self.action_show("lanes")
        self.call_after_refresh(lambda: self.lane_filter.focus())

    def action_filter_timeline(self) -> None:
        self._to_main()
        self.query_one("#timeline-filter").focus()

    def action_focus_timeline(self) -> None:
        self._to_main()
        self.timeline.focus()

    def action_channel(self) -> None:
        self.action_show("channel")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_leave_input(self) -> None:
        if isinstance(self.focused, Input):
            self.lanes_table.focus() if self.focused.id == "lane-filter" else self.timeline.focus()

    def sort_lanes(self, column: str) -> None:
        self.action_show("lanes")
        self.lanes_table.sort_by(column)

    @on(Input.Changed, "#lane-filter")
    def _lane_filter(self, event: Input.Changed) -> None:
        self.lanes_table.set_filter(event.value)

    @on(Input.Submitted, "#lane-filter")
    def _lane_filter_done(self) -> None:
        self.lanes_table.focus()

    @on(Input.Changed, "#timeline-filter")
    def _timeline_filter(self, event: Input.Changed) -> None:
        self.timeline.set_filter(event.value)

    @on(Input.Submitted, "#timeline-filter")
    def _timeline_filter_done(self) -> None:
        self.timeline.focus()

    @on(DataTable.RowSelected, "#lanes-table")
    def _lane_selected(self, event: DataTable.RowSelected) -> None:
        self.open_lane(str(event.row_key.value))

    def open_lane(self, key: str) -> None:
        """Open the lane detail screen for `task/lane`."""
        row = self.lanes_table.lane_rows.get(key)
        if row is None:
            self.notify(f"no lane {key}", severity="warning")
            return
        self._to_main()
        self.push_screen(LaneDetailScreen(row))


def make_app(ws, store=None, *, poll_interval: float = DEFAULT_POLL_S) -> MissionControl:
    """Mission control for the team at `ws`.

    Args:
        ws: the team's Workspace.
        store: its Store (default: opened from `ws`).
        poll_interval: seconds between reads of the store.

    Raises:
        ValidationFailed: when cowork.toml is invalid.
    """
    from cowork.config import load_settings
    from cowork.store import Store

    settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    return MissionControl(ws, store if store is not None else Store.for_workspace(ws), settings,
                          poll_interval=poll_interval)
