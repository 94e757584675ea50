"""What mission control reads: plain SELECTs over the store, read incrementally by a poller in a worker thread.

Nothing here changes state: controls go through the core APIs (cowork.runner.control, cowork.team.*).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from cowork.gitops import merge
from cowork.runner import control
from cowork.store import Store
from cowork.team import approvals, budgets
from cowork import views
from cowork.tui import fmt, gitinfo

LANE_COLUMNS = ("task_id, id, role, goal, state, kind, step_no, tokens_in, tokens_out, usd, created_at, started_at,"
                " ended_at, updated_at, branch, worktree, base_commit, head_commit, merge_commit, error")
# A writer stamps updated_at before it waits for the write lock, so a row can commit with a stamp older than
# one already seen: re-read this window behind the newest stamp and keep only rows that really changed.
LANE_OVERLAP_S = 3.0
FIRST_EVENTS = 500
EVENT_BATCH = 5000
SLOW_EVERY_S = 5.0  # git head (moved outside cowork) and approvals are also re-read this often without news


@dataclass(frozen=True)
class LaneRow:
    task: str
    lane: str
    role: str
    goal: str
    state: str
    kind: str = "work"
    step_no: int = 0  # the lane's model calls, as `cowork lanes` counts its steps
    doing: str = ""  # its latest journal step: a model, a tool, a check, an agent CLI's program (`views.doing`)
    doing_since: float | None = None  # when that step started, while it runs
    tokens: int = 0
    usd: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    updated_at: float = 0.0
    branch: str | None = None
    worktree: str | None = None
    base_commit: str | None = None
    merge_commit: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.lane}"

    @property
    def step(self) -> str:
        """As `cowork lanes` shows it (`views.step_text`): `#6 run`, or `claude 12m` for a lane without model calls
        ("" before it starts)."""
        return self.step_in()

    def step_in(self, width: int | None = None) -> str:
        """`step` in at most `width` characters, its name cut so that the number and the time stay."""
        return views.step_text(self.state, self.step_no, self.doing, self.doing_since, fmt.clock(), width)

    @classmethod
    def from_db(cls, r: dict, doing: tuple[str, float | None] = ("", None)) -> "LaneRow":
        return cls(task=r["task_id"], lane=r["id"], role=r["role"], goal=r["goal"], state=r["state"], kind=r["kind"],
                   step_no=r["step_no"] or 0, doing=doing[0], doing_since=doing[1],
                   tokens=(r["tokens_in"] or 0) + (r["tokens_out"] or 0), usd=r["usd"] or 0.0,
                   created_at=r["created_at"], started_at=r["started_at"], updated_at=r["updated_at"],
                   branch=r["branch"], worktree=r["worktree"], base_commit=r["base_commit"],
                   merge_commit=r["merge_commit"], error=r["error"])


@dataclass(frozen=True)
class HeaderInfo:
    team: str
    repo: str
    target: str
    head: str | None = None
    head_subject: str = ""
    paused: dict | None = None
    lock: dict = field(default_factory=dict)
    queue: tuple = ()  # merge-queue entries (dicts), first in line first
    spend_today: float = 0.0
    budget_day: float | None = None
    tasks: int = 0
    states: tuple = ()  # (state, count) pairs
    approvals: int = 0
    plans: tuple = ()  # tasks whose plan waits for `cowork approve TASK` ({task_id, title, updated_at}), oldest first
    lane_pauses: tuple = ()  # (task/lane, reason) of each lane paused on its own (`cowork pause --lane`)


@dataclass
class Delta:
    """One poll's news. Lanes and events are incremental; the rest are whole values, or None when unchanged."""

    header: HeaderInfo | None = None
    lanes: dict[str, LaneRow] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    approvals: list[dict] | None = None
    first: bool = False

    def merge(self, newer: "Delta") -> "Delta":
        """This delta followed by `newer`, as one."""
        return Delta(header=newer.header or self.header, lanes={**self.lanes, **newer.lanes},
                     events=self.events + newer.events, messages=self.messages + newer.messages,
                     approvals=newer.approvals if newer.approvals is not None else self.approvals,
                     first=self.first or newer.first)

    def __bool__(self) -> bool:
        return bool(self.header or self.lanes or self.events or self.messages or self.approvals is not None
                    or self.first)


# -- single reads (also used by the lane detail screen) ---------------------------------------------------------

def pending_approvals(store: Store) -> list[dict]:
    return approvals.pending(store)


def plans_waiting(store: Store) -> list[dict]:
    """Tasks whose plan waits for a human (`cowork approve TASK` / `cowork reject TASK`), oldest first."""
    return approvals.plans_waiting(store)


def lock_status(store: Store) -> dict:
    """{holder, since, lease_until, expired, gone, queue: [{id, task, lane, role, state, enqueued_at}]}."""
    return merge.lock_status(store)


def spend_today(store: Store) -> float:
    return float(budgets.spend_today(store).get("usd") or 0.0)


def paused(store: Store) -> dict | None:
    return control.paused(store)


def lane_pauses(store: Store) -> tuple[tuple[str, str], ...]:
    """(task/lane, reason) for each lane's own pause flag (pause-all and task pauses are not listed)."""
    scoped = views.pause_flags(store)[1]
    return tuple((f["scope"], f["reason"]) for f in scoped if "/" in f["scope"])


def lane_messages(store: Store, task: str, lane: str) -> list[dict]:
    """Messages from or to one lane (lanes are addressed as "task/lane")."""
    q = f"{task}/{lane}"
    return store.all("SELECT * FROM messages WHERE from_lane=? OR to_lane=? OR (task_id=? AND (from_lane=? OR "
                     "to_lane=?)) ORDER BY id", (q, q, task, lane, lane))


def is_lane_message(m: dict, task: str, lane: str) -> bool:
    q = f"{task}/{lane}"
    ends = (m.get("from_lane"), m.get("to_lane"))
    return q in ends or (m.get("task_id") == task and lane in ends)


def lane_events(store: Store, task: str, lane: str, limit: int = 2000) -> list[dict]:
    return store.last_events(limit, task=task, lane=lane)


def lane(store: Store, task: str, lane_id: str) -> LaneRow | None:
    row = store.one(f"SELECT {LANE_COLUMNS} FROM lanes WHERE task_id=? AND id=?", (task, lane_id))
    if not row:
        return None
    step = store.one(f"SELECT {views.STEP_COLUMNS} FROM steps WHERE task_id=? AND lane_id=? ORDER BY seq DESC "
                     "LIMIT 1", (task, lane_id))
    return LaneRow.from_db(row, views.doing(step) if step else ("", None))


# -- the poller ------------------------------------------------------------------------------------------------

class Poller:
    """Reads what changed since its last call. Lives in one worker thread (the store gives it its own connection).

    Args:
        ws: the team workspace (for git).
        store: the team's store.
        team: team name shown in the header.
        target: the merge target branch (main).
        budget_day: the daily USD budget, if any.
    """

    def __init__(self, ws, store: Store, *, team: str, target: str, budget_day: float | None):
        self.ws, self.store = ws, store
        self.base = HeaderInfo(team=team, repo=ws.root.name, target=target, budget_day=budget_day)
        self.header: HeaderInfo | None = None
        self.lanes: dict[str, LaneRow] = {}
        self.doing: dict[str, tuple[str, float | None]] = {}  # task/lane -> its latest journal step (views.doing)
        self.running: dict[int, str] = {}  # the id of each lane's latest step while it runs -> task/lane
        self.last_event = self.last_message = self.last_step = 0
        self.lane_mark = 0.0
        self.data_version: int | None = None
        self.slow_at = 0.0
        self.head: tuple[str | None, str] = (None, "")

    def poll(self, *, now: float | None = None) -> Delta:
        """Everything new since the previous call (the first call returns the current picture)."""
        now = fmt.clock() if now is None else now
        first = self.header is None
        slow = first or now - self.slow_at >= SLOW_EVERY_S
        version = self.store.scalar("PRAGMA data_version")
        if not slow and version == self.data_version:
            return Delta()
        self.data_version = version
        delta = Delta(first=first)
        delta.events = self._events(first)
        self._steps()
        delta.lanes = self._lanes()
        delta.messages = self._messages(first)
        kinds = {e["kind"].split(".", 1)[0] for e in delta.events}
        if slow or "approval" in kinds:
            delta.approvals = pending_approvals(self.store)
        if slow or "merge" in kinds:
            self.head = gitinfo.head(self.ws.root, self.base.target)
        if slow:
            self.slow_at = now
        header = self._header(delta)
        if header != self.header:
            delta.header = self.header = header
        return delta

    def _events(self, first: bool) -> list[dict]:
        if first:
            rows = self.store.last_events(FIRST_EVENTS)
        else:
            rows = self.store.events(after=self.last_event, limit=EVENT_BATCH)
        if rows:
            self.last_event = rows[-1]["id"]
        return rows

    def _steps(self) -> None:
        # a step that ends is updated in place: look again at the few that ran at the last look
        if self.running:
            ended = self.store.all(f"SELECT id FROM steps WHERE state != 'started' AND id IN "
                                   f"({','.join('?' * len(self.running))})", tuple(self.running))
            for r in ended:
                key = self.running.pop(r["id"])
                self.doing[key] = (self.doing[key][0], None)
        rows = self.store.all(f"SELECT {views.STEP_COLUMNS} FROM steps WHERE id > ? ORDER BY id", (self.last_step,))
        for r in rows:  # not seq: it counts every journal row (tool calls, notes), not the lane's steps
            key = f"{r['task_id']}/{r['lane_id']}"
            self.running = {i: k for i, k in self.running.items() if k != key}
            self.doing[key] = views.doing(r)
            if self.doing[key][1] is not None:
                self.running[r["id"]] = key
            self.last_step = r["id"]

    def _lanes(self) -> dict[str, LaneRow]:
        rows = self.store.all(f"SELECT {LANE_COLUMNS} FROM lanes WHERE updated_at >= ? ORDER BY updated_at",
                              (self.lane_mark - LANE_OVERLAP_S if self.lane_mark else 0.0,))
        changed: dict[str, LaneRow] = {}
        for r in rows:
            key = f"{r['task_id']}/{r['id']}"
            row = LaneRow.from_db(r, self.doing.get(key, ("", None)))
            if self.lanes.get(key) != row:
                changed[key] = self.lanes[key] = row
            self.lane_mark = max(self.lane_mark, r["updated_at"])
        for key, (name, since) in self.doing.items():  # a new or ended step without a lanes update
            row = self.lanes.get(key)
            if row is not None and (row.doing, row.doing_since) != (name, since):
                changed[key] = self.lanes[key] = replace(row, doing=name, doing_since=since)
        return changed

    def _messages(self, first: bool) -> list[dict]:
        if first:
            rows = self.store.all("SELECT * FROM (SELECT * FROM messages ORDER BY id DESC LIMIT 500) ORDER BY id")
        else:
            rows = self.store.all("SELECT * FROM messages WHERE id > ? ORDER BY id LIMIT 1000", (self.last_message,))
        if rows:
            self.last_message = rows[-1]["id"]
        return rows

    def _header(self, delta: Delta) -> HeaderInfo:
        lock = lock_status(self.store)
        states: dict[str, int] = {}
        for row in self.lanes.values():
            states[row.state] = states.get(row.state, 0) + 1
        approvals = (len(delta.approvals) if delta.approvals is not None
                     else self.header.approvals if self.header else 0)
        return replace(
            self.base, head=self.head[0], head_subject=self.head[1], paused=paused(self.store),
            lock={k: lock.get(k) for k in ("holder", "since", "lease_until", "gone")},
            queue=tuple(lock.get("queue") or ()),
            spend_today=spend_today(self.store), budget_day=self.base.budget_day,
            tasks=int(self.store.scalar("SELECT count(*) FROM tasks", default=0)),
            states=tuple(sorted(states.items())), approvals=approvals, plans=tuple(plans_waiting(self.store)),
            lane_pauses=lane_pauses(self.store),
        )
