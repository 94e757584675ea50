"""The team channel: messages between roles and humans; a human posts with `@role text` or `@team text`."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, RichLog

from cowork.display import printable
from cowork.errors import BadInput
from cowork.team.messages import is_human
from cowork.tui import fmt


def parse_post(text: str) -> tuple[str, str]:
    """`@dev please look at the flaky test` -> ("dev", "please look at the flaky test").

    Raises:
        BadInput: without a leading @role (or @team) and a body.
    """
    text = text.strip()
    head, _, body = text.partition(" ")
    if not head.startswith("@") or len(head) < 2 or not body.strip():
        raise BadInput("write `@role text` or `@team text`")
    return head[1:], body.strip()


def message_line(m: dict) -> Text:
    text = Text(no_wrap=False)
    text.append(fmt.hms(m["created_at"]) + " ", "dim")
    text.append(str(m.get("from_role")), "bold cyan" if is_human(m.get("from_role")) else "bold")
    if m.get("from_lane"):
        text.append(f"({m['from_lane']})", "dim")
    text.append(" → ")
    text.append(str(m.get("to_role")), "bold")
    if m.get("to_lane"):
        text.append(f"({m['to_lane']})", "dim")
    text.append(f" [{m.get('kind')}] ", "magenta")
    if m.get("task_id"):
        text.append(f"{m['task_id']} ", "dim")
    text.append(printable(m.get("body", "")))  # the agent wrote it: no escape sequence reaches the terminal
    return text


class ChannelView(Vertical):
    """Messages, newest at the bottom, and an input for posting."""

    DEFAULT_CSS = """
    ChannelView #channel-log { height: 1fr; }
    ChannelView #channel-input { dock: bottom; }
    """

    class Post(Message):
        """A human typed a message to post (`text` as typed: the input keeps it until `posted(text)`)."""

        def __init__(self, to_role: str, body: str, text: str) -> None:
            super().__init__()
            self.to_role, self.body, self.text = to_role, body, text

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count = 0
        self.log_view = RichLog(id="channel-log", wrap=True, max_lines=2000)  # held: see StatusHeader
        self.input_box = Input(placeholder="@role text  or  @team text   (Enter posts)", id="channel-input")

    def compose(self) -> ComposeResult:
        yield self.log_view
        yield self.input_box

    def add(self, messages: list[dict]) -> None:
        log = self.log_view
        for m in messages:
            log.write(message_line(m))
        self.count += len(messages)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "channel-input":
            return
        event.stop()
        try:
            to_role, body = parse_post(event.value)
        except BadInput as exc:
            self.notify(str(exc), severity="warning")
            return
        # cleared only once the post succeeds (`posted`): a refused one stays, to be corrected rather than retyped
        self.post_message(self.Post(to_role, body, event.value))

    def posted(self, text: str) -> None:
        """The post of `text` succeeded: clear the input, unless the human has typed something else since."""
        if self.input_box.value == text:
            self.input_box.value = ""
