"""Small messages the poller thread posts to the UI."""
from __future__ import annotations

from textual.message import Message

from cowork.tui.data import Delta


class StoreChanged(Message):
    """News from the store. Queued ones merge, so a busy UI handles one combined batch, not a backlog."""

    def __init__(self, delta: Delta) -> None:
        super().__init__()
        self.delta = delta

    def can_replace(self, message: Message) -> bool:
        # Textual asks the older message whether the next queued one may supersede it; fold ours into it first.
        if isinstance(message, StoreChanged):
            message.delta = self.delta.merge(message.delta)
            return True
        return False


class PollFailed(Message):
    """The poller could not read the store (it keeps trying)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PollFailed)
