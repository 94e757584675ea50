"""`cowork mc`: a live view and control surface over the store and git. It never runs lanes.

Build it with `make_app` (the CLI, the tests, the snapshots and the benchmark all do).
"""
from __future__ import annotations

import threading
import time
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from cowork.tui.actions import Actions
from cowork.tui.commands import MissionCommands
from cowork.tui.data import Delta, HeaderInfo, Poller
from cowork.tui.messages import PollFailed, StoreChanged
from cowork.tui.screens.lane import LaneDetailScreen
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

EMPTY = """\
[b]No tasks yet.[/b] This team is ready; start it from a terminal:

  [b]cowork roles list[/b]                         who is on the team, and what each role may do
  [b]cowork delegate "add a /health endpoint"[/b]  the planner writes a plan; approve it and lanes start
  [b]cowork run handoffs/<task>/plan.md[/b]        run a plan you wrote yourself
  [b]cowork say @team "..."[/b]                    post to the team channel (or press [b]3[/b] here)

Lanes show up here the moment a task starts, and this screen updates live.
[dim]? help · p pause all · ctrl+p every command · q quit (lanes keep running)[/dim]
"""


class MissionControl(Actions, App):
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
        Binding("p", "toggle_pause", "Pause/unpause"),
        Binding("P", "toggle_lane_pause", "Pause lane"),
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

    def __init__(self, ws, store, settings, *, poll_interval: float = DEFAULT_POLL_S,
                 roles_notice: str | None = None) -> None:
        super().__init__()
        self.ws, self.store, self.settings = ws, store, settings
        self.roles_notice = roles_notice  # broken role files: shown once, as `cowork status` warns on stderr
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
        self.approvals_tab = self.tabs.get_tab("tab-approvals")
        self.approvals_view = self.query_one(ApprovalsView)
        self.channel_view = self.query_one(ChannelView)
        self.merge_view = self.query_one(MergeView)
        self.empty_note = self.query_one("#empty", Static)
        self.lane_filter = self.query_one("#lane-filter", Input)
        self.lanes_table.focus()
        if self.roles_notice:
            self.notify(self.roles_notice, severity="warning", timeout=20, markup=False)
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
        if delta.header is not None:
            self.header_info = delta.header
            self.header_bar.show(delta.header)
            self.merge_view.show(delta.header)
            self.approvals_view.show_plans(delta.header.plans)
        if delta.approvals is not None or delta.header is not None:
            waiting = len(self.approvals_view.rows) + len(self.approvals_view.plans)
            label = f"Approvals ({waiting})" if waiting else "Approvals"
            if str(self.approvals_tab.label) != label:
                self.approvals_tab.label = label
        self._check_empty()
        for screen in self.screen_stack:
            if isinstance(screen, LaneDetailScreen):
                if delta.events:
                    screen.add_events(delta.events)
                if delta.messages:
                    screen.add_messages(delta.messages)
                if screen.row.key in delta.lanes:
                    screen.apply_lane(delta.lanes[screen.row.key])
                if delta.header is not None:
                    screen.show_pause(dict(delta.header.lane_pauses).get(screen.row.key))
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
            had = self.lanes_table.row_count
            self.lanes_table.apply(rows)
            self._check_empty()
            if bool(had) != bool(self.lanes_table.row_count):  # a first lane to pause, or none left: P comes or goes
                self.refresh_bindings()

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
        if isinstance(self.screen, LaneDetailScreen):
            self.screen.tick()


def make_app(ws, store=None, *, poll_interval: float = DEFAULT_POLL_S) -> MissionControl:
    """Mission control for the team at `ws`.

    Args:
        ws: the team's Workspace.
        store: its Store (default: opened from `ws`).
        poll_interval: seconds between reads of the store.

    Raises:
        ValidationFailed: when cowork.toml is invalid (a broken role file only shows a warning: mission control
            watches and controls, it starts no agent).
    """
    from cowork.config import load_settings
    from cowork.roles import team_roles
    from cowork.store import Store

    settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    return MissionControl(ws, store if store is not None else Store.for_workspace(ws), settings,
                          poll_interval=poll_interval, roles_notice=team_roles(ws, settings, strict=False).notice())
