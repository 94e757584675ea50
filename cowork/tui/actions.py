"""Mission control's actions: the controls (each the same core calls as its CLI command) and navigation.

A mixin of `MissionControl`; the key bindings and the command palette both call these.
"""
from __future__ import annotations

from typing import Any, Callable

from textual import work
from textual.widgets import DataTable, Input, TabbedContent

from cowork.errors import CoworkError
from cowork.store.store import StoreUnavailable
from cowork.team import messages
from cowork.tui import controls
from cowork.tui.screens.help import HelpScreen
from cowork.tui.screens.lane import LaneDetailScreen
from cowork.tui.screens.modals import AskScreen
from cowork.tui.widgets.channel import ChannelView

TABS = {"lanes": "tab-lanes", "approvals": "tab-approvals", "channel": "tab-channel", "merge": "tab-merge"}
FOCUS = {"lanes": "#lanes-table", "approvals": "#approvals-table", "channel": "#channel-input", "merge": "#merge-table"}


class Actions:
    """Needs, from the app: ws, store, header_info, poke(), and the widgets it caches on mount."""

    # -- controls (each one is the CLI command's core call, run off the UI thread) -----------------------------

    @work(thread=True, group="control", exit_on_error=False)
    def run_control(self, fn: Callable[..., str], *args: Any, then: Callable[[], None] | None = None,
                    **kwargs: Any) -> None:
        """Run `fn(ws, store, *args, by=<this human>, **kwargs)` in a worker and notify what it says; call `then` on
        the UI thread if it succeeded."""
        try:
            if self._human is None:
                self._human = messages.human_id(self.ws.root)
            said = fn(self.ws, self.store, *args, by=self._human, **kwargs)
        except CoworkError as exc:
            self.call_from_thread(self.notify, exc.render(), severity="error", timeout=8)
        except Exception as exc:
            if StoreUnavailable.about_the_file(exc):  # a runner held the write lock through the busy wait
                exc = StoreUnavailable(self.ws.rel(self.store.path), exc, doing="write to")
                self.call_from_thread(self.notify, exc.render(), severity="error", timeout=12)
            else:
                self.call_from_thread(self.notify, f"{type(exc).__name__}: {exc}", severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, said, timeout=4)
            if then is not None:
                self.call_from_thread(then)
        finally:
            self.store.close()  # this thread's connection
            self.poke()

    def action_toggle_pause(self) -> None:
        if self.header_info and self.header_info.paused:
            def resume(answer: str | None) -> None:
                if answer is not None:
                    self.run_control(controls.unpause_all)

            self.push_screen(AskScreen("Unpause all lanes?", "Every paused lane continues from its next step.",
                                       confirm="Unpause"), resume)
        else:
            def pause(answer: str | None) -> None:
                if answer is not None:
                    self.run_control(controls.pause_all, reason=answer or None)

            self.push_screen(AskScreen("Pause all lanes?", "Every lane stops before its next step (running tools "
                                       "finish; external agents get SIGSTOP) until you unpause.",
                                       placeholder="reason (optional)", confirm="Pause"), pause)

    def action_toggle_lane_pause(self) -> None:
        """Pause the lane on screen (its detail screen, or the lanes table's selected row), or unpause it."""
        key = self.selected_lane()
        if key is None:
            return
        task, _, lane = key.rpartition("/")
        if self.lane_pause(key) is not None:
            def unpause(answer: str | None) -> None:
                if answer is not None:
                    self.run_control(controls.unpause_lane, task, lane)

            self.push_screen(AskScreen(f"Unpause lane {key}?", "It continues from its next step (a pause-all or a "
                                       "pause of its task still holds it).", confirm="Unpause"), unpause)
        else:
            def pause(answer: str | None) -> None:
                if answer is not None:
                    self.run_control(controls.pause_lane, task, lane, reason=answer or None)

            self.push_screen(AskScreen(f"Pause lane {key}?", "It stops before its next step (a running tool "
                                       "finishes; an external agent gets SIGSTOP) until you unpause it.",
                                       placeholder="reason (optional)", confirm="Pause"), pause)

    def lane_pause(self, key: str) -> str | None:
        """The reason of the lane's own pause flag ("" if none was given), or None when it has none."""
        return dict(self.header_info.lane_pauses if self.header_info else ()).get(key)

    def selected_lane(self) -> str | None:
        """`task/lane` of the lane on screen: its detail screen, or the selected row of the lanes table."""
        if isinstance(self.screen, LaneDetailScreen):
            return self.screen.row.key
        if self.screen is self.screen_stack[0] and self.tabs.active == "tab-lanes" and self.lanes_table.display \
                and self.lanes_table.row_count:
            return str(self.lanes_table.coordinate_to_cell_key((self.lanes_table.cursor_row, 0)).row_key.value)
        return None

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
        self.run_control(controls.say, "@" + message.to_role, message.body,
                         then=lambda: self.channel_view.posted(message.text))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            if self.screen is not self.screen_stack[0] or self.tabs.active != "tab-approvals":
                return False
            return True if self.approvals_view.rows else None
        if action == "toggle_lane_pause":
            return self.selected_lane() is not None
        return True

    # -- navigation -----------------------------------------------------------------------------------------

    def _to_main(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_show(self, name: str) -> None:
        self._to_main()
        self.tabs.active = TABS[name]
        # after the messages the switch posts (the pane is shown then), not after the next refresh, which a busy
        # loop can delay for seconds
        self.call_later(self._focus_view, name)
        self.refresh_bindings()

    def _focus_view(self, name: str) -> None:
        # an empty view hides its table (no lanes yet, no approvals): keys must not go to a widget nobody sees
        target = self.query_one(FOCUS[name])
        (target if target.display else self.timeline).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()

    def action_filter_lanes(self) -> None:
        self.action_show("lanes")
        if self.empty_note.display:  # no lanes yet: the filter is hidden, and what was typed would vanish into it
            self.notify("no lanes to filter yet: the filter opens once a task starts", timeout=3)
            return
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
            lanes = self.focused.id == "lane-filter" and self.lanes_table.display
            self.lanes_table.focus() if lanes else self.timeline.focus()

    def sort_lanes(self, column: str) -> None:
        self.action_show("lanes")
        self.lanes_table.sort_by(column)

    # handlers by name, not @on: Textual collects @on handlers only on its own classes, and this is a mixin

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "lane-filter":
            self.lanes_table.set_filter(event.value)
        elif event.input.id == "timeline-filter":
            self.timeline.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "lane-filter":
            self.lanes_table.focus()
        elif event.input.id == "timeline-filter":
            self.timeline.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "lanes-table":
            self.open_lane(str(event.row_key.value))

    def open_lane(self, key: str) -> None:
        """Open the lane detail screen for `task/lane`."""
        row = self.lanes_table.lane_rows.get(key)
        if row is None:
            self.notify(f"no lane {key}", severity="warning")
            return
        self._to_main()
        self.push_screen(LaneDetailScreen(row, self.lane_pause(key)))
