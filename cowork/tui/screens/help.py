"""The help screen: what mission control shows and every key."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# cowork mission control

A live view of the team's store and git, and the human's controls. Lanes keep running when this closes;
open it again at any time, from any terminal.

| key | does |
| --- | --- |
| `1` `2` `3` `4` | lanes, approvals, channel, merge queue |
| `m` | merge queue (lock holder, lanes waiting) |
| `enter` | open the selected lane: packet, messages, diff stat, its timeline |
| `/` | filter lanes: words, or `role:dev state:running task:t1 lane:impl` |
| `s` / `S` | sort lanes by the next column / reverse (or click a header) |
| `f` | filter the timeline: words, or `task:` `lane:` `role:` `kind:` `actor:` |
| `t` | focus the timeline (scroll up to stop following) |
| `a` | approve the selected request (approvals view), with an optional note |
| `r` | reject the selected request, with a reason |
| `c` | write in the team channel: `@role text` or `@team text` |
| `p` | pause everything / unpause (asks first) |
| `P` | pause / unpause the selected lane (lanes table or its screen; asks first) |
| `ctrl+p` | command palette: every action, and "open lane …" |
| `escape` | leave a filter, close a screen |
| `q` | quit (lanes keep running) |

Same as the CLI: `p` is `cowork pause` / `cowork unpause`, `P` is `cowork pause --lane` / `cowork unpause --lane`,
`a`/`r` are `cowork approve` / `cowork reject`, the channel is `cowork say`.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 100%; max-height: 90%; border: thick $primary; background: $surface; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
