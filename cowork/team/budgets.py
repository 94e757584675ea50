"""Budgets: spend per task, per role and per day (tokens and USD) against the caps in cowork.toml and role files.

The engine calls `check` before every model call and `record_usage` after it, and while other lanes' calls are in
flight, a call starts only if the caps hold with every in-flight call counted at what it may cost (`InFlight`),
so a cap is overshot by at most one call, also when many lanes run at once, in one runner or several. A human
raises a cap with `raise_cap` (`cowork budget raise`); raises live in the store's control table (keys
`budget:task:<id>`, `budget:role:<name>`, `budget:day`), so every process sees them.
"""
from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable

from cowork.config import TeamSettings
from cowork.errors import BadInput
from cowork.roles import Role, RoleSet
from cowork.procs import gone, me
from cowork.store import Store, day, now
from cowork.store import db
from cowork.store.store import loads

TYPICAL_TOKENS_IN = 6_000    # per model call, for plan estimates: the context grows over a lane
TYPICAL_TOKENS_OUT = 600
TYPICAL_STEPS = 15


@dataclass
class Cap:
    """One limit and what has been used against it."""

    scope: str        # "task" | "task/role" | "day" | "day/role"
    unit: str         # "usd" | "tokens"
    limit: float
    used: float

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit > 0 else (1.0 if self.used > 0 else 0.0)

    def label(self) -> str:
        fmt = (lambda v: f"${v:.2f}") if self.unit == "usd" else (lambda v: f"{int(v):,} tokens")
        return f"{self.scope} {fmt(self.used)} of {fmt(self.limit)}"


# The lane error a budget stop writes starts with this; `blocked_by_budget` and `requeue_blocked` read it.
BUDGET_EXCEEDED = "budget exceeded: "


@dataclass
class BudgetState:
    state: str                 # ok | wrap_up | exceeded
    message: str
    caps: list[Cap] = field(default_factory=list)


_litellm_rates: dict[str, tuple[float, float]] = {}  # model -> litellm's USD per million tokens (in, out)


def rates(settings: TeamSettings | None, model: str) -> tuple[float, float]:
    """USD per million tokens (input, output) for `model`, in the order `price` uses; litellm is asked once per
    model and process (an unknown model costs it an exception each time)."""
    p = settings.price_for(model) if settings is not None else None
    if p is not None:
        return p.input_per_mtok, p.output_per_mtok
    found = _litellm_rates.get(model)
    if found is None:
        found = _litellm_rates[model] = (price(None, model, 1_000_000, 0), price(None, model, 0, 1_000_000))
    return found


def price(settings: TeamSettings | None, model: str, tokens_in: int, tokens_out: int) -> float:
    """USD for a call: `[prices."model"]` in cowork.toml when given, else litellm's price, else 0 (the same order
    as `cowork.engines.models.cost_of`)."""
    p = settings.price_for(model) if settings is not None else None
    if p is not None:
        return (tokens_in * p.input_per_mtok + tokens_out * p.output_per_mtok) / 1_000_000
    try:
        from cowork.engines.models import litellm

        cin, cout = litellm().cost_per_token(model=model, prompt_tokens=tokens_in, completion_tokens=tokens_out)
        return float(cin + cout)
    except Exception:  # noqa: BLE001 - unknown model: no price
        return 0.0


def record_usage(store: Store, *, task: str | None, lane: str | None, role: str | None, model: str | None,
                 tokens_in: int, tokens_out: int, usd: float | None = None, settings: TeamSettings | None = None) -> float:
    """Write one `costs` row (usd computed from the price when not given). Returns the usd recorded."""
    if usd is None:
        usd = price(settings, model or "", tokens_in, tokens_out)
    t = now()
    store.execute("INSERT INTO costs(ts, day, task_id, lane_id, role, model, tokens_in, tokens_out, usd) "
                  "VALUES (?,?,?,?,?,?,?,?,?)", (t, day(t), task, lane, role, model, int(tokens_in),
                                                 int(tokens_out), float(usd or 0.0)))
    tot = _totals_of(store)
    with tot.lock:
        tot.written[0] += int(tokens_in) + int(tokens_out)
        tot.written[1] += float(usd or 0.0)
    return float(usd or 0.0)


def written(store: Store) -> tuple[int, float]:
    """Tokens and USD `record_usage` has written through `store` so far: a sum that only grows (a row whose
    transaction rolled back still counts, which errs on the side of checking again)."""
    w = _totals_of(store).written
    return w[0], w[1]


def headroom(state: BudgetState, wrap_up_at: float) -> tuple[float, float]:
    """(tokens, USD) that may still be spent, in any scope, before the first of `state`'s caps reaches its wrap-up
    point: while less has been spent since `state` was read (and no cap was raised), `check` still says ok."""
    at = min(wrap_up_at, 1.0)
    room = {"tokens": float("inf"), "usd": float("inf")}
    for c in state.caps:
        room[c.unit] = min(room[c.unit], c.limit * at - c.used)
    return room["tokens"], room["usd"]


def _spent(store: Store, where: str, params: tuple) -> tuple[int, float]:
    row = store.one(f"SELECT COALESCE(SUM(tokens_in + tokens_out), 0) AS tok, COALESCE(SUM(usd), 0) AS usd "
                    f"FROM costs WHERE {where}", params)
    return int(row["tok"]), float(row["usd"])


def spend_today(store: Store) -> dict:
    """Today's spend: {"day", "tokens", "usd", "by_role": {role: {"tokens", "usd"}}}."""
    today = day()
    tok, usd = _spent(store, "day=?", (today,))
    by_role = {r["role"] or "-": {"tokens": int(r["tok"]), "usd": float(r["usd"])} for r in store.all(
        "SELECT role, SUM(tokens_in + tokens_out) AS tok, SUM(usd) AS usd FROM costs WHERE day=? GROUP BY role",
        (today,))}
    return {"day": today, "tokens": tok, "usd": usd, "by_role": by_role}


def _raise(store: Store, key: str) -> dict:
    f = store.flag(key)
    return (f or {}).get("value") or {}


def _raises(store: Store, keys: list[str]) -> dict[str, dict]:
    """The raises in force for `keys`, read in one query."""
    return {k: loads(r["value"], {}) or {} for k, r in store.control_rows(keys).items()}


class _Totals:
    """Running spend sums of one store by task, task/role, day and day/role, advanced by the `costs` rows added
    since the last read. Exact because costs rows are only ever appended (never updated or deleted) and SQLite has
    one writer at a time, so committed ids only grow."""

    def __init__(self) -> None:
        self.last_id = 0
        self.sums: dict[tuple, list] = {}   # ("task", t) | ("task/role", t, r) | ("day", d) | ("day/role", d, r)
        self.written = [0, 0.0]             # see `written`
        self.lock = threading.Lock()

    def refresh(self, store: Store) -> None:
        with self.lock:
            rows = store.conn.execute("SELECT id, day, task_id, role, tokens_in + tokens_out, usd FROM costs "
                                      "WHERE id > ? ORDER BY id", (self.last_id,)).fetchall()
            for rid, d, task, role, tok, usd in rows:
                keys = [("day", d), ("day/role", d, role)]
                if task is not None:
                    keys += [("task", task), ("task/role", task, role)]
                for k in keys:
                    acc = self.sums.get(k)
                    if acc is None:
                        self.sums[k] = [int(tok), float(usd)]
                    else:
                        acc[0] += int(tok)
                        acc[1] += float(usd)
                self.last_id = rid

    def get(self, *key) -> tuple[int, float]:
        acc = self.sums.get(key)
        return (acc[0], acc[1]) if acc else (0, 0.0)


_totals: "weakref.WeakKeyDictionary[Store, _Totals]" = weakref.WeakKeyDictionary()


def _totals_of(store: Store) -> _Totals:
    tot = _totals.get(store)
    return tot if tot is not None else _totals.setdefault(store, _Totals())


def _spend(store: Store, role: Role | None, task: str | None, today: str) -> dict[str, tuple[int, float]]:
    """Spend per cap scope for `role` on `task` today."""
    name = role.name if role is not None else None
    if store.conn.in_transaction:  # rows this transaction added may roll back: sum them afresh, cache nothing
        out = {"day": _spent(store, "day=?", (today,))}
        if name is not None:
            out["day/role"] = _spent(store, "day=? AND role=?", (today, name))
        if task:
            out["task"] = _spent(store, "task_id=?", (task,))
            if name is not None:
                out["task/role"] = _spent(store, "task_id=? AND role=?", (task, name))
        return out
    tot = _totals_of(store)
    tot.refresh(store)
    return {"day": tot.get("day", today), "day/role": tot.get("day/role", today, name),
            "task": tot.get("task", task), "task/role": tot.get("task/role", task, name)}


def caps(store: Store, settings: TeamSettings, role: Role | None, task: str | None) -> list[Cap]:
    """Every cap that applies to `role` working on `task`, with what has been used (raises included)."""
    out: list[Cap] = []
    b = settings.budget
    rb = role.budget if role is not None else None
    today = day()
    keys = ["budget:day"] + ([f"budget:task:{task}"] if task else []) + \
        ([f"budget:role:{role.name}"] if rb is not None else [])
    raised = _raises(store, keys)
    spent = _spend(store, role, task, today)
    if task:
        extra = raised.get(f"budget:task:{task}", {})
        tok, usd = spent["task"]
        out += _pair("task", b.usd_per_task, b.tokens_per_task, usd, tok, extra)
        if rb is not None:
            tok, usd = spent["task/role"]
            out += _pair("task/role", rb.usd_per_task, rb.tokens_per_task, usd, tok, extra)
    tok, usd = spent["day"]
    out += _pair("day", b.usd_per_day, b.tokens_per_day, usd, tok, raised.get("budget:day", {}))
    if rb is not None:
        tok, usd = spent["day/role"]
        out += _pair("day/role", rb.usd_per_day, rb.tokens_per_day, usd, tok, raised.get(f"budget:role:{role.name}", {}))
    return out


def _pair(scope: str, usd_cap, tok_cap, usd: float, tok: int, extra: dict) -> list[Cap]:
    out = []
    if usd_cap is not None:
        out.append(Cap(scope, "usd", float(usd_cap) + float(extra.get("usd", 0.0)), usd))
    if tok_cap is not None:
        out.append(Cap(scope, "tokens", float(tok_cap) + float(extra.get("tokens", 0)), float(tok)))
    return out


def check(store: Store, settings: TeamSettings, role: Role | None, task: str | None) -> BudgetState:
    """Whether the next model call may run: ok, wrap_up (near a cap) or exceeded (at or over a cap)."""
    found = caps(store, settings, role, task)
    over = [c for c in found if c.used >= c.limit]
    if over:
        return BudgetState("exceeded", BUDGET_EXCEEDED + "; ".join(c.label() for c in over), found)
    near = [c for c in found if c.fraction >= settings.budget.wrap_up_at]
    if near:
        return BudgetState("wrap_up", "budget nearly spent (" + "; ".join(c.label() for c in near) +
                           "): wrap up now — finish the essential part and call finish with what is left in Next.",
                           found)
    return BudgetState("ok", "", found)


# ---------------------------------------------------------------- calls in flight


@dataclass(frozen=True)
class Reservation:
    """What one model call in flight may cost, and whose it is."""

    task: str | None
    role: str | None
    tokens: int
    usd: float

    def counts_against(self, scope: str, task: str | None, role: str | None) -> bool:
        if scope == "day":
            return True
        if scope == "day/role":
            return self.role == role
        if scope == "task":
            return self.task == task
        return self.task == task and self.role == role  # task/role


# a call in flight counts this long at most: a model call that long has hung, and another host's process cannot be
# looked at (a store on a shared disk)
STALE_RESERVATION_S = 3600.0


class InFlight:
    """The model calls in flight against one store's caps, each with its reservation.

    Each lane checks its caps before a call, but the spend of calls in flight is not known until they answer:
    without this, N lanes near a cap would each see room for one more call and all start, overshooting it by N
    calls. `try_start` lets a call start only when every cap it counts against holds with it and every call in
    flight against that cap counted at their reservations, or when no other call against that cap is in flight
    (so a cap is still overshot by at most one call, the one that crossed it, whatever the estimates).

    Every call in flight is a row of the store's `reservations` table, read and written in one write transaction,
    so the runners of other tasks (other processes) count it too and a shared day cap holds across them. A row
    whose process is gone (killed mid-call) counts no more and is deleted by the next call that looks. `calls`
    holds this process's own, so that its waiters wake the moment one ends; other processes' are polled.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[int, Reservation] = {}   # this process's calls in flight, by reservations row id
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def reserved(self, cap: Cap, task: str | None, role: str | None,
                 others: list[Reservation] = ()) -> tuple[int, float]:
        """(calls, amount in the cap's unit) in flight against `cap` of `role` working on `task`: this process's
        and `others`."""
        mine = [r for r in (*self.calls.values(), *others) if r.counts_against(cap.scope, task, role)]
        return len(mine), float(sum(r.tokens if cap.unit == "tokens" else r.usd for r in mine))

    def blocking(self, found: list[Cap], res: Reservation,
                 others: list[Reservation] = ()) -> tuple[Cap, int, float] | None:
        """The first of `found` (caps read just now) that `res` must not start against, with the calls in flight
        against it and their reservations; None when it may start."""
        for cap in found:
            n, amount = self.reserved(cap, res.task, res.role, others)
            mine = res.tokens if cap.unit == "tokens" else res.usd
            if n and cap.used + amount + mine >= cap.limit:
                return cap, n, amount
        return None

    def try_start(self, store: Store, res: Reservation,
                  read_caps: Callable[[], list[Cap]]) -> tuple[int | None, tuple | None]:
        """Start `res` unless a cap blocks it: (its key for `done`, None) or (None, (cap, calls, amount) from
        `blocking`). `read_caps` reads the caps now; it is asked only when other calls are in flight."""
        with self.lock, store.tx():  # the write lock: no other process starts or ends a call between look and note
            others = self._others(store)
            if self.calls or others:
                why = self.blocking(read_caps(), res, others)
                if why is not None:
                    return None, why
            pid, host, token = _me()
            key = store.conn.execute(
                "INSERT INTO reservations(pid, host, proc_start, task_id, role, tokens, usd, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (pid, host, token, res.task, res.role, res.tokens, res.usd,
                                                    now())).lastrowid
            self.calls[key] = res
            return key, None

    def _others(self, store: Store) -> list[Reservation]:
        """The calls in flight in other processes. Rows no call stands behind are deleted: those of processes that
        are gone, this process's own that `done` could not delete, and any older than `STALE_RESERVATION_S`. Called in `try_start`'s write transaction."""
        me = _me()
        out, void, seen = [], [], {}
        for row in store.conn.execute("SELECT id, pid, host, proc_start, task_id, role, tokens, usd, started_at "
                                      "FROM reservations").fetchall():
            if row["id"] in self.calls:
                continue
            who = (row["pid"], row["host"], row["proc_start"])
            if who not in seen:
                seen[who] = who == me or gone(*who)
            if seen[who] or now() - row["started_at"] > STALE_RESERVATION_S:
                void.append((row["id"],))
            else:
                out.append(Reservation(row["task_id"], row["role"], row["tokens"], row["usd"]))
        if void:
            store.conn.executemany("DELETE FROM reservations WHERE id=?", void)
        return out

    def done(self, store: Store, key: int | None) -> None:
        """The call is over (its spend recorded, or it failed): give its reservation back and wake the calls
        waiting for room."""
        if key is None:
            return
        with self.lock:
            self.calls.pop(key, None)
            try:
                store.conn.execute("DELETE FROM reservations WHERE id=?", (key,))
            except db.sqlite3.OperationalError:  # busy past the timeout: the row is void (not in `calls`), and
                pass                             # this process's next `try_start` deletes it
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            def wake(f: asyncio.Future = fut) -> None:
                if not f.done():
                    f.set_result(None)
            try:
                loop.call_soon_threadsafe(wake)
            except RuntimeError:  # that loop has closed
                pass

    async def changed(self, timeout: float) -> None:
        """Return when a call in flight in this process ends, or after `timeout` seconds (other processes' calls
        are seen by asking again)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self.lock:
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            with self.lock:
                if (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))


_me_cache: tuple[int, tuple] | None = None


def _me() -> tuple[int, str, str | None]:
    """`procs.me()`, read once per process (a forked child reads its own)."""
    global _me_cache
    if _me_cache is None or _me_cache[0] != os.getpid():
        _me_cache = (os.getpid(), me())
    return _me_cache[1]


CHARS_PER_TOKEN = 3     # a call's estimate counts a token per 3 characters (English runs near 4, code nearer 3)
MIN_TOKENS_OUT = 256    # and at least this many tokens of reply


def estimate_call(settings: TeamSettings, role: Role | None, model: str,
                  measure: Callable[[], tuple[int, int, int]]) -> tuple[int, float] | None:
    """(tokens, USD) a model call may cost, for its reservation, from `measure()`: (the request's characters, the
    tokens the lane's last call read, the most tokens any of its calls wrote). The call reads no less than the
    last one did, and writes as much as the longest reply so far (at least `MIN_TOKENS_OUT`).
    None, without measuring, when nothing would be reserved: the model has no price and no cap counts tokens."""
    pin, pout = rates(settings, model)
    b, rb = settings.budget, role.budget if role is not None else None
    counts_tokens = b.tokens_per_task is not None or b.tokens_per_day is not None or (
        rb is not None and (rb.tokens_per_task is not None or rb.tokens_per_day is not None))
    if not counts_tokens and pin == 0 and pout == 0:
        return None
    chars, last_in, most_out = measure()
    tin, tout = max(chars // CHARS_PER_TOKEN, last_in), max(most_out, MIN_TOKENS_OUT)
    return tin + tout, (tin * pin + tout * pout) / 1_000_000


_in_flight: dict[str, InFlight] = {}
_in_flight_lock = threading.Lock()


def in_flight(store: Store) -> InFlight:
    """The calls in flight against the caps of `store`'s database (one per database in a process)."""
    key = str(store.path.resolve())
    with _in_flight_lock:
        found = _in_flight.get(key)
        if found is None:
            found = _in_flight[key] = InFlight()
        return found


def raise_cap(store: Store, *, by: str, task: str | None = None, role: str | None = None, today: bool = False,
              usd: float | None = None, tokens: int | None = None) -> dict:
    """Add `usd` / `tokens` to one cap (a task's, a role's per day, or the team's per day) and re-queue the
    lanes that the old cap had blocked. Returns the raise now in force."""
    scopes = [s for s in (task, role, today or None) if s]
    if len(scopes) != 1:
        raise BadInput("say which budget to raise: exactly one of --task T, --role R or --day")
    if not usd and not tokens:
        raise BadInput("say how much to add: --usd X and/or --tokens N")
    if (usd or 0) < 0 or (tokens or 0) < 0:
        raise BadInput("a raise must be positive")
    if task and store.one("SELECT 1 FROM tasks WHERE id=?", (task,)) is None:
        raise BadInput(f"no task '{task}'", hint="`cowork status` and `cowork lanes` list the tasks")
    key = f"budget:task:{task}" if task else (f"budget:role:{role}" if role else "budget:day")
    with store.tx():  # read, add and write under the write lock: two raises at once both count
        cur = _raise(store, key)
        new = {"usd": float(cur.get("usd", 0.0)) + float(usd or 0.0),
               "tokens": int(cur.get("tokens", 0)) + int(tokens or 0)}
        store.set_flag(key, new, by)
        store.event("budget.raised", f"{key.split(':', 1)[1]} raised by " +
                    ", ".join(x for x in (f"${usd:.2f}" if usd else "", f"{tokens} tokens" if tokens else "") if x),
                    actor=by, task=task, role=role, data={"key": key, **new})
        requeue_blocked(store, task=task, role=role)
    return new


def blocked_by_budget(error: str | None) -> bool:
    """Whether a blocked lane's error says a budget cap stopped it (so a raise resumes it)."""
    return (error or "").startswith(BUDGET_EXCEEDED)


def requeue_blocked(store: Store, *, task: str | None = None, role: str | None = None) -> list[str]:
    """Lanes blocked by a budget cap, moved back to queued so the runner resumes them."""
    from cowork.store import lanes as lanes_db

    sql, params = "SELECT task_id, id FROM lanes WHERE state='blocked' AND error LIKE ?", [BUDGET_EXCEEDED + "%"]
    if task:
        sql += " AND task_id=?"
        params.append(task)
    if role:
        sql += " AND role=?"
        params.append(role)
    out = []
    for r in store.all(sql, tuple(params)):
        lanes_db.set_lane_state(store, r["task_id"], r["id"], "queued", actor="cowork", detail="budget raised",
                                error=None)
        out.append(f"{r['task_id']}/{r['id']}")
    return out


def estimate_plan(plan, roles: RoleSet, settings: TeamSettings) -> dict:
    """A rough cost of a plan before it runs: per lane, steps x typical tokens x the role model's price."""
    lanes, total_usd, total_tok = [], 0.0, 0
    for spec in plan.lanes:
        role = roles.roles.get(spec.role)
        model = (role.model if role and role.model else None) or settings.model.name or "unknown"
        steps = min(TYPICAL_STEPS, (role.budget.max_steps if role and role.budget.max_steps else None)
                    or settings.policy.max_steps_per_lane)
        tin, tout = steps * TYPICAL_TOKENS_IN, steps * TYPICAL_TOKENS_OUT
        usd = price(settings, model, tin, tout)
        lanes.append({"lane": spec.id, "role": spec.role, "model": model, "steps": steps, "tokens": tin + tout,
                      "usd": round(usd, 4)})
        total_usd += usd
        total_tok += tin + tout
    cap = settings.budget.usd_per_task
    return {"lanes": lanes, "tokens": total_tok, "usd": round(total_usd, 4), "usd_cap": cap,
            "over_cap": cap is not None and total_usd > cap,
            "note": "rough: typical steps x typical tokens per step x the model's price"}


def overview(store: Store, settings: TeamSettings, roles: RoleSet) -> dict:
    """Spend against every cap, for `cowork budget`: today, per role today, and each task with spend."""
    today = spend_today(store)
    tasks = []
    for r in store.all("SELECT task_id FROM costs WHERE task_id IS NOT NULL GROUP BY task_id ORDER BY MAX(ts) DESC "
                       "LIMIT 20"):
        cs = caps(store, settings, None, r["task_id"])
        tasks.append({"task": r["task_id"], "caps": [c.__dict__ | {"label": c.label()} for c in cs
                                                     if c.scope == "task"]})
    team_caps = [c.__dict__ | {"label": c.label()} for c in caps(store, settings, None, None)]
    role_caps = {}
    for name, role in roles.roles.items():
        cs = [c for c in caps(store, settings, role, None) if c.scope == "day/role"]
        if cs:
            role_caps[name] = [c.__dict__ | {"label": c.label()} for c in cs]
    return {"today": today, "day_caps": team_caps, "role_caps": role_caps, "tasks": tasks}
