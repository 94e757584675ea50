"""One lane in full: its handoff packet as Markdown, its messages, its diff stat and its own timeline."""
from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown, RichLog, Static, TabbedContent, TabPane

from cowork.display import printable
from cowork.handoff import parse as parse_packet
from cowork.tui import data, fmt, gitinfo
from cowork.tui.data import LaneRow
from cowork.tui.widgets.channel import message_line
from cowork.tui.widgets.timeline import Timeline


def lane_info(row: LaneRow, pause: str | None = None) -> Text:
    """The lane's summary; `pause` is the reason of its own pause flag ("" for none given), None if not paused."""
    return Text.assemble(
        (row.key, "bold"), "  ", (row.role, "bold cyan"), "  ", (row.state, fmt.STATE_STYLES.get(row.state, "")),
        *((("  ⏸ paused" + (f": {pause}" if pause else "") + " (P unpauses)", "bold red"),) if pause is not None
          else ()),
        f"  step {row.step or '-'}  tokens {fmt.tokens(row.tokens)}  cost {fmt.usd(row.usd)}  age {fmt.age(row.created_at)}",
        f"  branch {row.branch or '-'}\n", ("goal: ", "dim"), printable(row.goal),
        *((("\nerror: ", "bold red"), printable(row.error)) if row.error else ()),
    )


def packet_markdown(text: str | None, source: str) -> str:
    """The packet as Markdown to show; front matter becomes a small table (invalid packets are shown raw). Agents
    write packets: their control characters show as `\\xNN` (`printable`), never reaching the terminal."""
    if text is None:
        return f"*No handoff packet yet* (`{source}` is written when the lane finishes)."
    text = printable(text)
    try:
        packet = parse_packet(text, source)
    except Exception:  # a half-written or invalid packet is still worth reading
        return text
    meta = packet.meta
    rows = [(k, getattr(meta, k, None)) for k in ("status", "from_", "to", "branch", "base")]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k.rstrip('_')} | {v} |" for k, v in rows if v)
    body = "\n\n".join(f"## {name}\n\n{content.strip()}" for name, content in packet.sections.items())
    return f"# {packet.title}\n\n{table}\n\n{body}"


class LaneDetailScreen(Screen):
    """Escape goes back to the lanes. The app forwards this lane's new events and row changes while it is open."""

    DEFAULT_CSS = """
    LaneDetailScreen #lane-info-scroll { height: auto; max-height: 30%; background: $panel; }
    LaneDetailScreen #lane-info { height: auto; padding: 0 1; }
    LaneDetailScreen TabbedContent { height: 1fr; }
    LaneDetailScreen #packet-source { color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("ctrl+r", "reload", "Reload")]

    def __init__(self, row: LaneRow, pause: str | None = None) -> None:
        super().__init__()
        self.row, self.pause = row, pause
        self.last_event = self.last_message = 0
        self.loaded = False

    def compose(self) -> ComposeResult:
        # a long goal or error scrolls in its own box: it must not push the packet, timeline and diff off screen
        with VerticalScroll(id="lane-info-scroll"):
            self.info = Static(lane_info(self.row, self.pause), id="lane-info")  # held: `tick` may come as it goes
            yield self.info
        with TabbedContent(id="lane-tabs"):
            with TabPane("Packet", id="tab-packet"):
                with VerticalScroll():
                    yield Static("", id="packet-source")
                    yield Markdown("*loading…*", id="packet")
            with TabPane("Timeline", id="tab-lane-timeline"):
                yield Timeline(scope={"task_id": self.row.task, "lane_id": self.row.lane}, id="lane-timeline")
            with TabPane("Messages", id="tab-lane-messages"):
                yield RichLog(id="lane-messages", wrap=True)
            with TabPane("Diff stat", id="tab-diff"):
                with VerticalScroll():
                    yield Static("loading…", id="diff-stat")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="lane-detail")
    def load(self) -> None:
        app = self.app
        row = data.lane(app.store, self.row.task, self.row.lane) or self.row
        text, source = gitinfo.packet(app.ws.root, task=row.task, lane=row.lane, branch=row.branch,
                                      worktree=row.worktree, target=app.target)
        stat = gitinfo.diff_stat(app.ws.root, branch=row.branch, base=row.base_commit,
                                 merge_commit=row.merge_commit, target=app.target)
        messages = data.lane_messages(app.store, row.task, row.lane)
        events = data.lane_events(app.store, row.task, row.lane)
        app.call_from_thread(self._loaded, row, text, source, stat, messages, events)

    @work(thread=True, exclusive=True, group="lane-git")
    def load_git(self, row: LaneRow) -> None:
        """Re-read the packet and the diff stat (a lane writes its packet and commits as it finishes)."""
        app = self.app
        text, source = gitinfo.packet(app.ws.root, task=row.task, lane=row.lane, branch=row.branch,
                                      worktree=row.worktree, target=app.target)
        stat = gitinfo.diff_stat(app.ws.root, branch=row.branch, base=row.base_commit,
                                 merge_commit=row.merge_commit, target=app.target)
        app.call_from_thread(self._git_loaded, text, source, stat)

    def _git_loaded(self, text, source, stat) -> None:
        self.query_one("#packet-source", Static).update(Text(f"from {source}" if text else "", "dim"))
        self.query_one("#packet", Markdown).update(packet_markdown(text, source))
        self.query_one("#diff-stat", Static).update(Text(stat))

    def _loaded(self, row, text, source, stat, messages, events) -> None:
        self.row = row
        self.info.update(lane_info(row, self.pause))
        self._git_loaded(text, source, stat)
        log = self.query_one("#lane-messages", RichLog)
        log.clear()
        for m in messages:
            log.write(message_line(m))
        self.last_message = max([self.last_message, *(m["id"] for m in messages)])
        if not messages:
            log.write(Text("no messages to or from this lane", "dim"))
        timeline = self.query_one(Timeline)
        timeline.clear()
        timeline.add([e for e in events if e["id"] > 0])
        self.last_event = max([self.last_event, *(e["id"] for e in events)])
        self.loaded = True

    def apply_lane(self, row: LaneRow) -> None:
        old, self.row = self.row, row
        self.info.update(lane_info(row, self.pause))
        if self.loaded and (old.state, old.merge_commit) != (row.state, row.merge_commit):
            self.load_git(row)

    def tick(self) -> None:
        """How long its step has run moves on with the clock, where the step shows it (`LaneRow.step`)."""
        if self.row.doing_since is not None and not self.row.step_no:
            self.info.update(lane_info(self.row, self.pause))

    def show_pause(self, pause: str | None) -> None:
        """This lane's own pause: its reason ("" for none), or None once unpaused."""
        if pause != self.pause:
            self.pause = pause
            self.info.update(lane_info(self.row, pause))

    def add_messages(self, messages: list[dict]) -> None:
        if not self.loaded:
            return
        mine = [m for m in messages if data.is_lane_message(m, self.row.task, self.row.lane)]
        log = self.query_one("#lane-messages", RichLog)
        for m in mine:
            if m["id"] > self.last_message:
                log.write(message_line(m))
                self.last_message = m["id"]

    def add_events(self, events: list[dict]) -> None:
        if not self.loaded:
            return
        new = [e for e in events if e["id"] > self.last_event]
        if new:
            self.query_one(Timeline).add(new)
            self.last_event = new[-1]["id"]
