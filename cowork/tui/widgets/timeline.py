"""The timeline: the live event stream, one line per event, rendered only for the lines on screen."""
from __future__ import annotations

import time
from typing import Callable

from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from cowork.display import printable
from cowork.tui import fmt
from cowork.tui.filters import EVENT_KEYS, Filter, event_fields

ShownHook = Callable[[list[dict], float], None]


class Timeline(ScrollView, can_focus=True):
    """Events, oldest at the top; follows the end unless scrolled up. Keeps the newest `max_events` in memory."""

    DEFAULT_CSS = """
    Timeline { background: $surface; overflow-y: scroll; overflow-x: hidden; }
    Timeline:focus { background-tint: $foreground 5%; }
    """

    def __init__(self, *, max_events: int = 5000, scope: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_events = max_events
        self.scope = scope or {}  # fixed filter (a lane's own timeline)
        self.filter = Filter()
        self.events: list[dict] = []
        self.shown: list[dict] = []
        self.shown_hooks: list[ShownHook] = []
        self._cache: LRUCache[int, Strip] = LRUCache(2048)

    # -- data -----------------------------------------------------------------------------------------------

    def add(self, events: list[dict]) -> None:
        """Append events (oldest first)."""
        if self.scope:
            events = [e for e in events if all(e.get(k) == v for k, v in self.scope.items())]
        if not events:
            return
        follow = self.is_vertical_scroll_end or not self.shown
        self.events.extend(events)
        new = [e for e in events if self.filter.matches(event_fields(e))] if self.filter else events
        self.shown.extend(new)
        if len(self.events) > self.max_events * 5 // 4:
            del self.events[: len(self.events) - self.max_events]
        if len(self.shown) > self.max_events * 5 // 4:
            del self.shown[: len(self.shown) - self.max_events]
        self._resize(follow)
        if self.shown_hooks and new:
            self.call_after_refresh(self._shown, new)

    def set_filter(self, text: str) -> None:
        self.filter = Filter.parse(text, EVENT_KEYS)
        self.shown = [e for e in self.events if self.filter.matches(event_fields(e))] if self.filter else list(self.events)
        self._resize(True)

    def clear(self) -> None:
        self.events.clear()
        self.shown.clear()
        self._resize(True)

    def _resize(self, follow: bool) -> None:
        size = Size(self.size.width, len(self.shown))
        if size != self.virtual_size:
            # virtual_size is a layout reactive: assigning it re-lays out the whole screen, on every batch. The
            # timeline's own height is fixed by CSS, so only its scrollbar needs to hear about the new length.
            self.set_reactive(Timeline.virtual_size, size)
            self._scroll_update(size)
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def _shown(self, events: list[dict]) -> None:
        at = time.time()
        for hook in self.shown_hooks:
            hook(events, at)

    def text_lines(self) -> list[str]:
        """The shown events as plain lines (for tests and copying)."""
        return [self._text(e).plain for e in self.shown]

    # -- rendering ------------------------------------------------------------------------------------------

    def _text(self, ev: dict) -> Text:
        where = "/".join(p for p in (ev.get("task_id"), ev.get("lane_id")) if p)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(fmt.hms(ev["ts"]) + " ", "dim")
        text.append(f"{fmt.clip(ev.get('actor'), 14):<14} ", "bold")
        text.append(f"{ev['kind']:<18} ", fmt.kind_style(ev["kind"]))
        summary = printable(" ".join(str(ev.get("summary", "")).split()))  # it may quote what an agent wrote
        if where and not summary.startswith(where):
            text.append(fmt.clip_lane(where, 32) + " ", "dim")
        text.append(summary)
        cost = ev.get("usd") or 0
        if cost:
            text.append(f"  {fmt.usd(cost)}", "dim")
        return text

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if index >= len(self.shown):
            return Strip.blank(width, style)
        ev = self.shown[index]
        strip = self._cache.get(ev["id"])
        if strip is None:
            text = self._text(ev)
            text.stylize_before(style)
            strip = Strip(text.render(self.app.console), text.cell_len)
            self._cache[ev["id"]] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
