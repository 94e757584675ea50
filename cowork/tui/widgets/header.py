"""The header: team and repo, main's head, a loud PAUSED banner, the merge lock and queue, spend against budget."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from cowork.tui import fmt
from cowork.tui.data import HeaderInfo


def title_line(h: HeaderInfo) -> Text:
    text = Text.assemble(("cowork mc", "bold"), "  team ", (h.team, "bold cyan"), "  repo ", (h.repo, "bold"),
                         f"  {h.target} ")
    if h.head:
        text.append(h.head, "yellow")
        text.append(" " + fmt.clip(h.head_subject, 60), "dim")
    else:
        text.append("(no commits)", "dim")
    return text


def paused_line(h: HeaderInfo) -> Text:
    p = h.paused or {}
    text = Text.assemble(("⏸ PAUSED", "bold"), " — every lane is held before its next step")
    if p.get("reason"):
        text.append(f"  reason: {p['reason']}", "bold")
    text.append(f"  (by {p.get('by') or '?'}, {fmt.age(p.get('since'))} ago)  ·  p to unpause")
    return text


def status_line(h: HeaderInfo) -> Text:
    """What waits for a human first (approvals, lanes by state), then the merge lock, tasks and spend: a narrow
    terminal cuts the end of the line."""
    text = Text()
    if h.plans:
        text.append(f"plans waiting {len(h.plans)}  ", "bold yellow")
    if h.approvals:
        text.append(f"approvals {h.approvals}  ", "bold yellow")
    states = dict(h.states)
    text.append(f"lanes {sum(states.values())}")
    for state in ("running", "waiting-approval", "paused", "merge-queue", "failed", "blocked"):
        if states.get(state):
            text.append(f"  {state} {states[state]}", fmt.STATE_STYLES.get(state, ""))
    lock = h.lock or {}
    text.append("  merge lock ")
    if lock.get("holder"):
        text.append(str(lock["holder"]), "bold blue")
        text.append(f" for {fmt.age(lock.get('since'))}")
        stale = fmt.stale_lock(lock)
        if stale:
            text.append(f" ({stale})", "bold yellow")
    else:
        text.append("free", "green")
    text.append(f"  queue {len(h.queue)}", "bold" if h.queue else "")
    text.append(f"  tasks {h.tasks}")
    budget = f" / {fmt.usd(h.budget_day)}" if h.budget_day else ""
    over = h.budget_day and h.spend_today >= h.budget_day
    text.append("  spend today ")
    text.append(f"{fmt.usd(h.spend_today)}{budget}", "bold red" if over else "bold")
    return text


class StatusHeader(Vertical):
    """Three lines; the middle one, the PAUSED banner, shows only while pause-all is set."""

    DEFAULT_CSS = """
    StatusHeader { height: auto; dock: top; background: $panel; }
    StatusHeader > Static { height: 1; padding: 0 1; }
    StatusHeader #paused-banner { background: $error; color: $text; text-style: bold; display: none; }
    StatusHeader.-paused #paused-banner { display: block; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info: HeaderInfo | None = None
        # held, not queried: the 1 s tick can fire while the app shuts down and its children are being removed
        self.title_bar = Static("cowork mc  loading…", id="title")
        self.banner = Static("", id="paused-banner")
        self.status = Static("", id="status")

    def compose(self) -> ComposeResult:
        yield self.title_bar
        yield self.banner
        yield self.status

    def show(self, info: HeaderInfo) -> None:
        self.info = info
        self.tick()

    def tick(self) -> None:
        """Re-render (ages move on even when nothing else changes). Each line is one row high: no re-layout."""
        h = self.info
        if h is None:
            return
        self.title_bar.update(title_line(h), layout=False)
        self.set_class(bool(h.paused), "-paused")
        if h.paused:
            self.banner.update(paused_line(h), layout=False)
        self.status.update(status_line(h), layout=False)
