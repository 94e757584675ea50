"""The merge queue view: who holds the merge lock, and the lanes waiting to merge, in order."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from cowork.tui import fmt
from cowork.tui.data import HeaderInfo


class MergeView(Vertical):
    DEFAULT_CSS = """
    MergeView #merge-lock { height: 1; padding: 0 1; }
    MergeView DataTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info: HeaderInfo | None = None
        # held, not queried: the 1 s tick can fire while the app shuts down and its children are being removed
        self.lock_line = Static("merge lock: free", id="merge-lock")
        self.table: DataTable = DataTable(id="merge-table", cursor_type="row")

    def compose(self) -> ComposeResult:
        yield self.lock_line
        yield self.table

    def on_mount(self) -> None:
        table = self.table
        for key, label in (("pos", "#"), ("lane", "Lane"), ("state", "State"), ("waiting", "Waiting")):
            table.add_column(label, key=key)

    def show(self, info: HeaderInfo) -> None:
        queue_changed = self.info is None or self.info.queue != info.queue
        self.info = info
        if queue_changed:
            table = self.table
            table.clear()  # the queue is short and re-ordered as a whole
            for i, q in enumerate(info.queue, 1):
                q = q if isinstance(q, dict) else {}
                table.add_row(str(i), f"{q.get('task_id', q.get('task', '?'))}/{q.get('lane_id', q.get('lane', '?'))}",
                              str(q.get("state", "waiting")), fmt.age(q.get("enqueued_at")), key=str(i))
        self.tick()

    def tick(self) -> None:
        h = self.info
        if h is None:
            return
        table = self.table
        for i, q in enumerate(h.queue, 1):  # waiting times move on while the queue stands still
            waited = fmt.age(q.get("enqueued_at") if isinstance(q, dict) else None)
            if table.get_cell(str(i), "waiting") != waited:
                table.update_cell(str(i), "waiting", waited)
        lock = h.lock or {}
        if lock.get("holder"):
            text = Text.assemble("merge lock held by ", (str(lock["holder"]), "bold blue"),
                                 f" for {fmt.age(lock.get('since'))}")
            stale = fmt.stale_lock(lock)
            if stale:
                text.append(f", {stale}: the next merger takes it", "bold yellow")
            elif lock.get("lease_until"):
                text.append(f", lease {int(lock['lease_until'] - fmt.clock())}s left")
        else:
            text = Text.assemble("merge lock ", ("free", "green"))
        text.append(f"   queue {len(h.queue)}   {h.target} at {h.head or '-'}")
        self.lock_line.update(text, layout=False)
