"""Every mission control action in the command palette (ctrl+p), plus "open lane …" for each lane."""
from __future__ import annotations

from functools import partial
from typing import Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider


class MissionCommands(Provider):
    def actions(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        paused = bool(app.header_info and app.header_info.paused)
        commands: list[tuple[str, Callable[[], object], str]] = [
            ("Unpause all lanes" if paused else "Pause all lanes", app.action_toggle_pause,
             "clear the pause flag (cowork unpause)" if paused else "hold every lane before its next step (cowork pause)"),
            ("Pause or unpause the selected lane", app.action_toggle_lane_pause,
             "hold one lane (cowork pause --lane), or clear its pause (cowork unpause --lane) (P)"),
            ("Show lanes", partial(app.action_show, "lanes"), "the lanes table (1)"),
            ("Show approvals", partial(app.action_show, "approvals"), "blocked actions waiting for a human (2)"),
            ("Show channel", partial(app.action_show, "channel"), "team messages (3)"),
            ("Show merge queue", partial(app.action_show, "merge"), "merge lock holder and the queue (4, m)"),
            ("Approve selected request", app.action_approve, "cowork approve (a)"),
            ("Reject selected request", app.action_reject, "cowork reject, with a reason (r)"),
            ("Post to the team channel", app.action_channel, "@role text or @team text (c)"),
            ("Filter lanes", app.action_filter_lanes, "role:, state:, task:, lane: or words (/)"),
            ("Filter timeline", app.action_filter_timeline, "task:, lane:, role:, kind:, actor: or words (f)"),
            ("Focus timeline", app.action_focus_timeline, "scroll the event stream (t)"),
            ("Help: keys", app.action_help, "what every key does (?)"),
        ]
        for column in ("lane", "role", "state", "goal", "step", "tokens", "cost", "age"):
            commands.append((f"Sort lanes by {column}", partial(app.sort_lanes, column), "s cycles, S reverses"))
        for key, row in app.lanes_table.lane_rows.items():
            commands.append((f"Open lane {key}", partial(app.open_lane, key), f"{row.role} · {row.state} · {row.goal}"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self.actions():
            if not name.startswith(("Open lane", "Sort lanes")):
                yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self.actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
