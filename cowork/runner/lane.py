"""One lane's life in the runner: worktree, engine, packet commit, checks, review, and the merge queue.

Every phase is safe to repeat: a lane reclaimed after a crash re-enters here, its engine resumes from the journal,
committing an unchanged worktree is a no-op, and checks simply run again.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from cowork.engines import prompts, retry
from cowork.engines.llm import Hooks, LaneOutcome, run_llm_lane
from cowork.gitops.git import head, run_git
from cowork.gitops.worktrees import commit_all, create_lane_worktree, diff_stat, lane_path
from cowork.procs import child_env, communicate_bounded, tracked
from cowork.runner import control, handoffs
from cowork.runner.journal import Journal
from cowork.store import lanes as lanes_db

if TYPE_CHECKING:  # pragma: no cover
    from cowork.runner.runner import Runner

# Work is committed at finish, and after a write step when the last commit is older than this: a killed runner
# loses no commit (uncommitted files stay in the worktree for the resumed lane), and short lanes pay for one commit.
WIP_COMMIT_EVERY_S = 30.0
# A model lane's worktree is made this long after the lane starts: lanes started together get their first model
# requests out before their git work (several processes per worktree) competes with them for the CPU. The worktree
# is still ready long before any model answers; tools wait for it.
WORKTREE_AFTER_S = 0.05


async def run_lane(rt: "Runner", row: dict) -> None:
    """Drive one lane (work, delegated, consult or review) as far as it can go now."""
    task, lane = row["task_id"], row["id"]
    try:
        if row["kind"] == "review":
            from cowork.runner.review import run_review

            await run_review(rt, row)
        else:
            await _work(rt, row)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a lane's own failure never takes the runner down
        try:
            ours = rt.holds(task)
        except Exception:  # the store is busy: report the crash as before
            ours = True
        if not ours:  # a stalled runner's lane, failing against the new holder's writes: not its to end
            return
        msg = f"lane {task}/{lane} crashed: {type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        with rt.store.tx():
            rt.store.event("lane.error", msg, actor="runner", task=task, lane=lane, role=row["role"])
            lanes_db.set_lane_state(rt.store, task, lane, "failed", detail=msg[:300], error=msg)
            escalate(rt, row, msg)


def _ctx(rt: "Runner", row: dict, role: Any, worktree) -> Any:
    from cowork.tools.gateway import LaneCtx

    return LaneCtx(ws=rt.ws, store=rt.store, settings=rt.settings, roles=rt.roles, role=role, task_id=row["task_id"],
                   lane_id=row["id"], worktree=worktree, depth=row.get("depth") or 0, kind=row.get("kind") or "work")


def _trailers(row: dict, role: str) -> dict[str, str]:
    return {"Cowork-Task": row["task_id"], "Cowork-Lane": row["id"], "Cowork-Role": role}


async def _commit(rt: "Runner", path, row: dict, role: str, message: str) -> str | None:
    rt.committing = getattr(rt, "committing", 0) + 1  # the merger lets lanes' commits go first
    try:
        return await asyncio.to_thread(commit_all, path, message, role=role, trailers=_trailers(row, role))
    finally:
        rt.committing -= 1


def _last_packet(tree, row: dict) -> str | None:
    """The text of the packet the lane last committed (after checks, review or a conflict sent it back), or None."""
    if not row.get("packet_path") or not row.get("head_commit"):
        return None
    shown = run_git("show", f"{row['head_commit']}:{row['packet_path']}", cwd=tree.path)
    return shown.stdout if shown.returncode == 0 else None


class LaneGit:
    """A lane's worktree being made (in the background, while the first model call runs) and its early commits.

    Commits after write steps run in the background while the next model call is in flight; the next tool call,
    and the packet commit, wait for them, so two git commands never race in one worktree.
    """

    def __init__(self, rt: "Runner", row: dict, role: str):
        self.rt, self.row, self.role = rt, row, role
        self.tree = None
        self._making: asyncio.Future | None = None
        self._pending: list[asyncio.Task] = []
        self.last_commit = time.monotonic()  # the lane's start counts: short lanes commit once, at finish

    def start(self, after_s: float = 0.0) -> None:
        async def make():
            if after_s > 0:
                await asyncio.sleep(after_s)
            return await asyncio.to_thread(create_lane_worktree, self.rt.ws, self.row["task_id"], self.row["id"],
                                           self.rt.settings.merge.target)

        self._making = asyncio.ensure_future(make())

    async def ready(self):
        """The LaneTree, once made (its path, branch and base are recorded on the lane)."""
        if self.tree is None:
            self.tree = await self._making
            lanes_db.update_lane(self.rt.store, self.row["task_id"], self.row["id"], worktree=str(self.tree.path),
                                 branch=self.tree.branch, base_commit=self.row["base_commit"] or self.tree.base_commit)
        return self.tree

    async def settle(self) -> None:
        """Wait for the worktree and every background commit."""
        await self.ready()
        pending, self._pending = self._pending, []
        for t in pending:
            await t

    def commit_soon(self, message: str) -> None:
        prev = list(self._pending)

        async def run() -> None:
            for t in prev:  # one git command at a time in this worktree
                await asyncio.gather(t, return_exceptions=True)
            await _commit(self.rt, self.tree.path, self.row, self.role, message)

        self._pending = [asyncio.ensure_future(run())]
        self.last_commit = time.monotonic()


def make_hooks(rt: "Runner", row: dict, role: Any, worktree, lane_git: LaneGit | None = None) -> Hooks:
    task, lane = row["task_id"], row["id"]

    async def hold() -> None:
        if control.paused(rt.store, task, lane) is None:
            return
        before = lanes_db.get_lane(rt.store, task, lane)["state"]
        lanes_db.set_lane_state(rt.store, task, lane, "paused")
        while control.paused(rt.store, task, lane) is not None:
            await asyncio.sleep(rt.poll_s)
        lanes_db.set_lane_state(rt.store, task, lane, before if before != "paused" else "running")

    async def after_write(tool: str) -> None:
        if lane_git is not None:
            if time.monotonic() - lane_git.last_commit >= WIP_COMMIT_EVERY_S:
                lane_git.commit_soon(f"{lane}: work in progress (after {tool})")
        else:
            await _commit(rt, worktree, row, role.name, f"{lane}: work in progress (after {tool})")

    def on_fallback(failed: str, nxt: str, exc: Exception) -> None:
        rt.store.event("model.fallback", f"{task}/{lane}: {failed} failed ({type(exc).__name__}); trying {nxt}",
                       actor=role.name, task=task, lane=lane, role=role.name,
                       data={"failed": failed, "next": nxt, "error": str(exc)[:500]})

    on_retry = retry.reporter(rt.store, f"{task}/{lane}", actor=role.name, task=task, lane=lane, role=role.name)

    before_tool = lane_git.settle if lane_git is not None else None
    return Hooks(hold=hold, before_tool=before_tool, after_write=after_write, on_fallback=on_fallback,
                 on_retry=on_retry)


async def run_engine(rt: "Runner", row: dict, role: Any, ctx: Any, journal: Journal, notes: list[str],
                     system: str, kickoff: str, lane_git: LaneGit | None = None,
                     mcp_sessions: Any = None) -> LaneOutcome:
    """Run the role's engine for the lane once (until finish or failure). `mcp_sessions`: the lane's MCP servers,
    kept by the caller across runs; without them, servers the run starts are stopped when it returns."""
    task, lane = row["task_id"], row["id"]
    if role.engine == "command":
        from cowork.engines.command import run_command_lane, timeout_for

        async def on_pause(stopped: bool) -> None:
            lanes_db.set_lane_state(rt.store, task, lane, "paused" if stopped else "running")

        if lane_git is not None:
            await lane_git.settle()
        return await run_command_lane(ctx, journal, log_path=rt.ws.logs_dir / task / f"{lane}.log", notes=notes,
                                      is_paused=lambda: control.paused(rt.store, task, lane) is not None,
                                      on_pause=on_pause, timeout=timeout_for(role, rt.settings))
    from cowork.tools.gateway import Gateway

    gateway = Gateway(ctx, mcp_sessions)
    try:
        return await run_llm_lane(ctx, gateway, journal, system=system, kickoff=kickoff, notes=notes,
                                  hooks=make_hooks(rt, row, role, ctx.worktree, lane_git))
    finally:
        await gateway.aclose()


def _skills(rt: "Runner", role: Any, goal: str) -> list:
    try:
        from cowork.team import skills
    except ImportError:
        return []
    try:
        return list(skills.for_lane(rt.ws, role, goal))
    except Exception:  # skills are help, never a reason to fail a lane
        return []


def _brief(rt: "Runner", task: str) -> str | None:
    row = rt.store.one("SELECT title FROM tasks WHERE id=?", (task,))
    path = rt.ws.task_dir(task) / "brief.md"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return row["title"] if row else None


async def _work(rt: "Runner", row: dict) -> None:
    from cowork.tools.mcp_client import Sessions

    # the lane's MCP servers: started by its first call to each, kept through check retries, stopped at its end
    # (after its packet is committed and handed on, so stopping them never delays the hand-off)
    sessions = Sessions(cwd=lane_path(rt.ws, row["task_id"], row["id"]),
                        log_dir=rt.ws.logs_dir / row["task_id"] / row["id"])  # one lane's servers, apart from others
    try:
        await _work_in(rt, row, sessions)
    finally:
        await sessions.aclose()


async def _work_in(rt: "Runner", row: dict, sessions: Any) -> None:
    task, lane = row["task_id"], row["id"]
    role = rt.roles.roles.get(row["role"])
    if role is None:
        raise RuntimeError(f"unknown role '{row['role']}'")
    lanes_db.set_lane_state(rt.store, task, lane, "running", runner_id=rt.id, attempts=row["attempts"] + 1)
    lane_git = LaneGit(rt, row, role.name)
    # the worktree is made while the first model call runs; tools wait for it (a command lane needs it at once)
    lane_git.start(WORKTREE_AFTER_S if role.engine != "command" and not row.get("feedback") else 0.0)
    notes: list[str] = []
    if row.get("feedback"):
        notes.append(row["feedback"])
        if row["conflict_returns"] and rt.sync_lane is not None:
            notes.extend(await rt.sync_lane(row, (await lane_git.ready()).path))
        lanes_db.update_lane(rt.store, task, lane, feedback=None)
    ctx = _ctx(rt, row, role, lane_path(rt.ws, task, lane))
    journal = Journal(rt.store, task, lane)
    skills = _skills(rt, role, row["goal"])
    system = prompts.lane_system(role, team=rt.settings.name, task=task, lane=lane, goal=row["goal"],
                                 kind=row["kind"], brief=_brief(rt, task), skills=skills)
    kickoff = prompts.lane_kickoff(row["goal"])
    max_checks = rt.settings.policy.max_check_retries
    while True:
        outcome = await run_engine(rt, row, role, ctx, journal, notes, system, kickoff, lane_git, sessions)
        notes = []
        await lane_git.settle()
        tree = lane_git.tree
        fresh = lanes_db.get_lane(rt.store, task, lane)
        if not outcome.finish:  # failed or stopped before finish: keep what was done, hand it to a human
            await _commit(rt, tree.path, fresh, role.name, f"{lane}: work in progress ({outcome.status})")
            end_lane(rt, fresh, outcome.status if outcome.status in ("failed", "blocked") else "failed",
                     outcome.error or "the lane ended without finish")
            return
        packet = None
        if role.engine == "command":  # a valid packet the command wrote itself wins when the command succeeded
            own = await asyncio.to_thread(lambda: handoffs.read_own(tree.path, task, lane,
                                                                   last=_last_packet(tree, fresh)))
            if own is not None and own.packet is not None and outcome.status == "done":
                packet = own.packet
                outcome = LaneOutcome(packet.meta.status, {"status": packet.meta.status,
                                                           "summary": packet.section("Summary")}, outcome.error)
            else:
                outcome.finish["artifacts"] = [*outcome.finish.get("artifacts", []),
                                               *await _diff_stat(rt, tree, fresh, role.name)]
                if own is not None:  # its text stays in the commit _diff_stat just made; the packet says which
                    # a valid packet of a run that failed or timed out is not the run's last word: its exit is
                    why = None if own.packet is None else "the command timed out" if outcome.timed_out else \
                        outcome.finish["summary"].split("\n", 1)[0].rstrip(".")
                    risk = handoffs.set_aside(rt.store, fresh, own, await asyncio.to_thread(head, tree.path), why)
                    outcome.finish["open_risks"] = [*outcome.finish.get("open_risks", []), risk]
        if packet is None:
            packet = handoffs.from_finish(fresh, role.name, outcome.finish,
                                          to=handoffs.next_role(rt.store, fresh, role), skills=[s.name for s in skills])
            handoffs.write(tree.path, packet)  # a few KB: a thread hop would only queue the lane behind others
        sha = await _commit(rt, tree.path, fresh, role.name, f"{lane}: {packet.title}\n\n{packet.section('Summary')}")
        lanes_db.update_lane(rt.store, task, lane, packet_path=handoffs.packet_rel(task, lane),
                             head_commit=sha or fresh["head_commit"])
        if outcome.status in ("failed", "blocked"):
            end_lane(rt, fresh, outcome.status, outcome.error or f"the agent finished with status {outcome.status}")
            return
        # a lane brought up to date with the target after a conflict must not finish with the markers in
        failed = await check_markers(rt, fresh, tree.path, journal) if fresh["conflict_returns"] else None
        checks = fresh["checks"] if fresh["checks"] is not None else list(role.checks)
        if failed is None and checks and row["kind"] != "consult":
            lanes_db.set_lane_state(rt.store, task, lane, "checking")
            failed = await run_checks(rt, fresh, checks, tree.path, journal)
        if failed is not None:
            n = fresh["check_failures"] + 1
            lanes_db.update_lane(rt.store, task, lane, check_failures=n)
            if n > max_checks:
                end_lane(rt, fresh, "failed", f"check `{failed[0]}` still failing after {max_checks} retries")
                return
            notes = [prompts.check_failed(failed[0], failed[1], n, max_checks)]
            lanes_db.set_lane_state(rt.store, task, lane, "running")
            continue
        break
    if not rt.holds(task):  # the task went to another runner while this one was stalled: its hand-off is theirs
        return
    with rt.store.tx():  # the hand-off is one commit: what goes back to whoever asked, and the lane's next state
        fresh = lanes_db.get_lane(rt.store, task, lane)
        _on_finished(rt, fresh, packet)
        if row["kind"] == "consult":
            lanes_db.set_lane_state(rt.store, task, lane, "done")
        elif role.review_by and role.review_by in rt.roles:
            from cowork.runner.review import start_review

            start_review(rt, fresh, role.review_by)
        elif outcome.status == "needs-review":
            end_lane(rt, fresh, "blocked", "the agent asked for review and its role has no review_by: a human decides")
        else:
            enqueue(rt, fresh)


async def _diff_stat(rt: "Runner", tree, row: dict, role: str) -> list[str]:
    """The lane's changes as `git diff --stat` lines (its work is committed first)."""
    await _commit(rt, tree.path, row, role, f"{row['id']}: command output")
    base = row["base_commit"] or tree.base_commit
    stat = await asyncio.to_thread(diff_stat, rt.ws, tree.branch, base)
    return [f"`{line.strip()}`" for line in stat.splitlines() if line.strip()]


async def run_checks(rt: "Runner", row: dict, checks: list[str], cwd, journal: Journal) -> tuple[str, str] | None:
    """Run each check in the worktree (a journal step each). Returns (check, output) of the first failure."""
    task, lane = row["task_id"], row["id"]
    for check in checks:
        step = journal.start("check", check, {"cwd": str(cwd)})
        t0 = time.monotonic()
        limit = rt.settings.policy.check_timeout_s
        # the agent wrote the code a check runs: it gets the environment `run` gets, without the team's keys
        proc = await asyncio.create_subprocess_exec("sh", "-c", check, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    start_new_session=True,
                                                    env=child_env(keep=rt.settings.policy.pass_env))
        with tracked(rt.ws.state_dir, proc.pid, f"check `{check}` of {task}/{lane}"):
            out = await communicate_bounded(proc, limit)
        code = proc.returncode
        if out is None:
            out, code = f"(timed out after {limit:g}s: policy.check_timeout_s)".encode(), -1
        text = out.decode("utf-8", "replace")[-8000:]
        journal.finish(step, {"exit": code, "output": text[-2000:]}, ok=code == 0)
        kind = "check.passed" if code == 0 else "check.failed"
        rt.store.event(kind, f"{task}/{lane}: `{check}` exit {code} ({time.monotonic() - t0:.1f}s)", actor="runner",
                       task=task, lane=lane, role=row["role"], data={"check": check, "exit": code,
                                                                      "output": text[-1000:]})
        if code != 0:
            return check, text
    return None


MARKERS_CHECK = "no conflict markers left"


async def check_markers(rt: "Runner", row: dict, cwd, journal: Journal) -> tuple[str, str] | None:
    """Whether the lane's own changes (since it left the target) add conflict markers: a check of its own, journalled
    and reported as the role's checks are. Returns (check, output) when they do."""
    from cowork.gitops.mergetree import conflict_markers

    task, lane = row["task_id"], row["id"]
    step = journal.start("check", MARKERS_CHECK, {"cwd": str(cwd)})
    found = await asyncio.to_thread(conflict_markers, cwd, f"refs/heads/{rt.settings.merge.target}...HEAD")
    text = ("conflict markers (<<<<<<< ======= >>>>>>>) are still in these files, at file:line:\n"
            + "\n".join(found[:50]) + ("\n..." if len(found) > 50 else "")
            + "\nEdit each one to keep both sides' intent and remove the markers.") if found else ""
    journal.finish(step, {"exit": 1 if found else 0, "output": text[-2000:]}, ok=not found)
    rt.store.event("check.failed" if found else "check.passed",
                   f"{task}/{lane}: {MARKERS_CHECK}" + (f": {len(found)} found" if found else ""), actor="runner",
                   task=task, lane=lane, role=row["role"], data={"check": MARKERS_CHECK, "exit": 1 if found else 0,
                                                                 "output": text[-1000:]})
    return (MARKERS_CHECK, text) if found else None


def enqueue(rt: "Runner", row: dict) -> None:
    from cowork.gitops import merge

    merge.enqueue(rt.store, row["task_id"], row["id"])  # the lane's state becomes merge-queue with its entry
    rt.wake()


def end_lane(rt: "Runner", row: dict, state: str, why: str) -> None:
    """End a lane as failed or blocked, and escalate it (one commit: a lane never ends with nobody told)."""
    with rt.store.tx():
        lanes_db.set_lane_state(rt.store, row["task_id"], row["id"], state, detail=why[:300], error=why)
        escalate(rt, row, why)
        _on_finished(rt, lanes_db.get_lane(rt.store, row["task_id"], row["id"]), None)
    rt.wake()


def escalate(rt: "Runner", row: dict, why: str) -> None:
    """Tell the role's `escalate_to` (a role or human) that the lane needs help: an event and a message."""
    role = rt.roles.roles.get(row["role"])
    to = getattr(role, "escalate_to", "human") or "human"
    body = f"Lane {row['task_id']}/{row['id']} ({row['role']}) needs help: {why}"
    rt.store.event("lane.escalated", body, actor="runner", task=row["task_id"], lane=row["id"], role=row["role"],
                   data={"to": to})
    try:
        from cowork.team import messages
    except ImportError:
        return
    messages.post(rt.store, kind="escalate", from_role=row["role"], to_role=to, body=body, task=row["task_id"],
                  from_lane=row["id"])


def _on_finished(rt: "Runner", row: dict, packet) -> None:
    try:
        from cowork.team import messages
    except ImportError:
        return
    hook = getattr(messages, "on_lane_finished", None)
    if hook is not None:
        hook(rt.store, row, packet)
