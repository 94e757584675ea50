"""The approvals queue: pending blocked actions, and the exact action of the selected one."""
from __future__ import annotations

import json

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from cowork.display import printable_obj
from cowork.tui import fmt


def render_action(row: dict) -> Group:
    """The exact action a role asked for: its command, diff, message, then any other arguments."""
    row = printable_obj(row)  # the agent wrote these: no escape sequence reaches the terminal
    action = row.get("action")
    parts: list = [Text.assemble(("#" + str(row["id"]), "bold"), f"  {row.get('role')} wants ",
                                 (str(row.get("tool")), "bold yellow"),
                                 f"  in {row.get('task_id') or '-'}/{row.get('lane_id') or '-'}")]
    if row.get("why"):
        parts.append(Text(f"why: {row['why']}", "italic"))
    if not isinstance(action, dict):
        parts.append(Text(str(action)))
        return Group(*parts)
    rest = dict(action)
    for key in ("command", "cmd"):
        if key in rest:
            cmd = rest.pop(key)
            parts.append(Text("$ " + (" ".join(cmd) if isinstance(cmd, list) else str(cmd)), "bold"))
    if "path" in rest:
        parts.append(Text(f"path: {rest.pop('path')}"))
    if "diff" in rest:
        parts.append(Syntax(str(rest.pop("diff")), "diff", theme="ansi_dark", word_wrap=True))
    for key in ("message", "body", "content", "text"):
        if key in rest:
            parts.append(Text(f"{key}:", "bold"))
            parts.append(Text(str(rest.pop(key))))
    if rest:
        parts.append(Syntax(json.dumps(rest, indent=2, ensure_ascii=False, default=str), "json",
                            theme="ansi_dark", word_wrap=True))
    return Group(*parts)


def render_plans(plans: tuple | list) -> Text:
    """Plans waiting for a human, and the commands that decide them (they run in a terminal: approving starts a
    runner)."""
    text = Text()
    for i, p in enumerate(plans):
        if i:
            text.append("\n")
        text.append("plan of task ", "bold yellow")
        text.append(str(p["task_id"]), "bold")
        text.append(f": {fmt.clip(p.get('title'), 80)}  (waiting {fmt.age(p.get('updated_at'))})\n")
        text.append(f"  cowork approve {p['task_id']}", "bold")
        text.append(" runs it  ·  ")
        text.append(f"cowork reject {p['task_id']}", "bold")
        text.append(" drops it")
    return text


class ApprovalsView(Vertical):
    """`a` approves the selected request, `r` rejects it with a reason (bound on the app). Plans waiting for approval
    show above the requests, with the commands that decide them."""

    DEFAULT_CSS = """
    ApprovalsView #approval-plans { height: auto; max-height: 40%; padding: 0 1; border-bottom: solid $primary; }
    ApprovalsView #approvals-table { height: 1fr; min-height: 4; }
    ApprovalsView #approval-scroll { height: 2fr; border-top: solid $primary; }
    ApprovalsView #approval-empty { padding: 1 2; color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: dict[int, dict] = {}
        self.plans: tuple = ()
        self._shown: dict | None = None
        # held, not queried: an update that lands while the app shuts down must not look for removed children
        self.plans_note = Static("", id="approval-plans")
        self.empty_note = Static("No approvals waiting.", id="approval-empty")
        self.table: DataTable = DataTable(id="approvals-table", cursor_type="row")
        self.action = Static("", id="approval-action")
        self.action_scroll = VerticalScroll(self.action, id="approval-scroll")

    def compose(self) -> ComposeResult:
        yield self.plans_note
        yield self.empty_note
        yield self.table
        yield self.action_scroll

    def on_mount(self) -> None:
        table = self.table
        for key, label in (("id", "#"), ("lane", "Lane"), ("role", "Role"), ("tool", "Tool"), ("why", "Why"),
                           ("age", "Waiting")):
            table.add_column(label, key=key)
        self._toggle()

    def show(self, rows: list[dict]) -> None:
        table = self.table
        new = {r["id"]: r for r in rows}
        for gone in set(self.rows) - set(new):
            table.remove_row(str(gone))
        for id_, r in new.items():
            if id_ not in self.rows:
                table.add_row(str(id_), f"{r.get('task_id') or '-'}/{r.get('lane_id') or '-'}", r.get("role"),
                              r.get("tool"), Text(fmt.clip(r.get("why"), 50)),  # a Text: never read as markup
                              fmt.age(r.get("created_at")), key=str(id_))
        self.rows = new
        self._toggle()
        self.show_selected()

    def show_plans(self, plans: tuple) -> None:
        if plans != self.plans:
            self.plans = plans
            self.plans_note.update(render_plans(plans))
            self._toggle()

    def tick(self) -> None:
        if self.plans:
            self.plans_note.update(render_plans(self.plans), layout=False)
        table = self.table
        for id_, r in self.rows.items():
            table.update_cell(str(id_), "age", fmt.age(r.get("created_at")))

    def selected(self) -> dict | None:
        table = self.table
        if not self.rows or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.rows.get(int(key))

    def show_selected(self) -> None:
        row = self.selected()
        if row != self._shown:
            self._shown = row
            self.action.update(render_action(row) if row else "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_selected()

    def _toggle(self) -> None:
        has = bool(self.rows)
        self.plans_note.display = bool(self.plans)
        self.empty_note.display = not has and not self.plans
        self.table.display = has
        self.action_scroll.display = has
