"""The lanes table: one row per lane, updated cell by cell as the poller reports changes."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from cowork.display import printable
from cowork.store.lanes import LANE_STATES
from cowork.tui import fmt
from cowork.tui.data import LaneRow
from cowork.tui.filters import LANE_KEYS, Filter, lane_fields

# fixed widths (each column also pads one cell either side): the table fits 132 columns, and the state comes before
# the goal so that an 80-column terminal still shows what each lane is doing
COLUMNS = (("lane", "Lane", 26), ("role", "Role", 10), ("state", "State", 16), ("goal", "Goal", 34),
           ("step", "Step", 14), ("tokens", "Tokens", 6), ("cost", "Cost", 6), ("age", "Age", 5))
STEP_WIDTH = dict((k, w) for k, _, w in COLUMNS)["step"]
STATE_ORDER = {s: i for i, s in enumerate(LANE_STATES)}
SORT_KEYS = {
    "lane": lambda r: (r.task, r.lane), "role": lambda r: r.role, "state": lambda r: STATE_ORDER.get(r.state, 99),
    "goal": lambda r: r.goal.lower(), "step": lambda r: (r.step_no, r.doing), "tokens": lambda r: r.tokens,
    "cost": lambda r: r.usd, "age": lambda r: -r.created_at,
}


class LaneCell(Text):
    """The lane column's cell: `task/lane`, clipped from the left (the lane id matters most), carrying its row key
    so that sorting, which only sees cell values, can find the row."""

    def __init__(self, key: str, width: int) -> None:
        task, _, lane = key.rpartition("/")
        if len(key) > width:
            task = "…" + task[max(0, len(task) - (width - len(lane) - 2)):]
        super().__init__(no_wrap=True, overflow="ellipsis")
        self.append(task + "/", "dim")
        self.append(lane, "bold")
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LaneCell) and other.key == self.key and super().__eq__(other)


def step_cell(row: LaneRow) -> Text:
    """The step column: a tool's name is the model's word (an unknown tool keeps the name it was called by)."""
    return Text(printable(row.step_in(STEP_WIDTH)))


def cells(row: LaneRow) -> dict[str, object]:
    """The rendered cells of a lane."""
    return {
        "lane": LaneCell(row.key, COLUMNS[0][2]),
        "role": row.role,
        "state": Text(row.state, fmt.STATE_STYLES.get(row.state, "")),
        "goal": Text(fmt.clip(row.goal, 60)),  # a Text: a string cell is read as markup ("[/x]" would raise)
        "step": step_cell(row),
        "tokens": Text(fmt.tokens(row.tokens), justify="right"),
        "cost": Text(fmt.usd(row.usd), justify="right"),
        "age": Text(fmt.age(row.created_at, coarse=True), justify="right"),
    }


class LanesTable(DataTable):
    """Lanes that pass the filter, in created order unless sorted (`s` cycles the column, `S` reverses)."""

    BINDINGS = [("s", "cycle_sort", "Sort"), ("S", "reverse_sort", "Reverse")]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.lane_rows: dict[str, LaneRow] = {}
        self.rendered: dict[str, dict[str, object]] = {}
        self.filter = Filter()
        self.sort_column: str | None = None
        self.sort_reverse = False

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    # -- data -----------------------------------------------------------------------------------------------

    def apply(self, rows: dict[str, LaneRow]) -> None:
        """Show changed lanes: update their cells in place, add new ones, drop those the filter now hides."""
        resort = False
        for key, row in rows.items():
            old = self.lane_rows.get(key)
            self.lane_rows[key] = row
            if not self.filter.matches(lane_fields(row)):
                self._hide(key)
                continue
            if key not in self.rendered:
                self._show(key)
                resort = True
                continue
            new = cells(row)
            for col, value in new.items():
                if col != "age" and self.rendered[key][col] != value:
                    self.update_cell(key, col, value)
            self.rendered[key] = {**new, "age": self.rendered[key]["age"]}
            if self.sort_column and old is not None and SORT_KEYS[self.sort_column](old) != SORT_KEYS[self.sort_column](row):
                resort = True
        if resort:
            self._resort()

    def tick(self) -> None:
        """Refresh the ages, and how long a step runs where it is shown (only cells whose text changed)."""
        for key, shown in self.rendered.items():
            row = self.lane_rows[key]
            fresh = {"age": Text(fmt.age(row.created_at, coarse=True), justify="right")}
            if row.doing_since is not None and not row.step_no:
                fresh["step"] = step_cell(row)
            for col, value in fresh.items():
                if shown[col] != value:
                    self.update_cell(key, col, value)
                    shown[col] = value

    def set_filter(self, text: str) -> None:
        self.filter = Filter.parse(text, LANE_KEYS)
        for key, row in self.lane_rows.items():
            if self.filter.matches(lane_fields(row)):
                self._show(key)
            else:
                self._hide(key)
        self._resort()

    def visible_keys(self) -> list[str]:
        """Row keys in display order."""
        return [str(self.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(self.row_count)]

    def _show(self, key: str) -> None:
        if key in self.rendered:
            return
        values = cells(self.lane_rows[key])
        self.add_row(*values.values(), key=key)
        self.rendered[key] = values

    def _hide(self, key: str) -> None:
        if self.rendered.pop(key, None) is not None:
            self.remove_row(key)

    # -- sorting --------------------------------------------------------------------------------------------

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self._resort()

    def _resort(self) -> None:
        column = self.sort_column
        if column is None:
            self.sort("lane", key=lambda c: (self.lane_rows[c.key].created_at, c.key), reverse=self.sort_reverse)
        else:
            self.sort("lane", key=lambda c: (SORT_KEYS[column](self.lane_rows[c.key]), c.key), reverse=self.sort_reverse)

    def action_cycle_sort(self) -> None:
        keys = [None, *SORT_KEYS]
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)], self.sort_reverse)
        self.notify(f"sorted by {self.sort_column or 'created'}", timeout=1.5)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        self.sort_by(column, not self.sort_reverse if column == self.sort_column else False)
