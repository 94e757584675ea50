"""Modal questions: confirm (with an optional note) and a required reason. Enter answers, Escape cancels."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

MODAL_CSS = """
AskScreen { align: center middle; }
AskScreen > Vertical { width: 72; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
AskScreen #ask-title { text-style: bold; }
AskScreen #ask-body { margin: 1 0; }
AskScreen #ask-error { color: $error; height: auto; }
AskScreen Horizontal { height: auto; align-horizontal: right; }
AskScreen Button { margin-left: 1; }
"""


class AskScreen(ModalScreen[str | None]):
    """Asks for confirmation and optionally some text. Dismisses with the text ("" if none) or None if cancelled.

    Args:
        title: the question.
        body: what will happen.
        placeholder: show an input with this placeholder (None: no input; `y` and Enter confirm).
        required: the input must not be empty (a reject reason).
        confirm: the confirm button's label.
    """

    DEFAULT_CSS = MODAL_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str = "", *, placeholder: str | None = None, required: bool = False,
                 confirm: str = "Confirm") -> None:
        super().__init__()
        self.title_text, self.body, self.placeholder = title, body, placeholder
        self.required, self.confirm = required, confirm

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="ask-title")
            if self.body:
                yield Static(self.body, id="ask-body")
            if self.placeholder is not None:
                yield Input(placeholder=self.placeholder, id="ask-input")
            yield Static("", id="ask-error")
            with Horizontal():
                yield Button("Cancel (Esc)", id="cancel")
                yield Button(f"{self.confirm} (Enter)", id="ok", variant="primary")

    def on_mount(self) -> None:
        if self.placeholder is not None:
            self.query_one("#ask-input", Input).focus()
        else:
            self.query_one("#ok", Button).focus()

    def on_key(self, event) -> None:
        if self.placeholder is None and event.key in ("y", "enter"):
            event.stop()
            self.action_ok()
        elif self.placeholder is None and event.key == "n":
            event.stop()
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_ok()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_ok() if event.button.id == "ok" else self.action_cancel()

    def action_ok(self) -> None:
        value = self.query_one("#ask-input", Input).value.strip() if self.placeholder is not None else ""
        if self.required and not value:
            self.query_one("#ask-error", Static).update("A reason is required.")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
