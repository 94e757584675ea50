"""Commands for the merge queue: `cowork merge`, `cowork revert`, `cowork queue`."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import JsonOpt, RootOpt, console, emit, store, workspace
from cowork.errors import EXIT_FAILURE, BadInput

# a lane still at work has nothing final to merge
_BUSY = {"queued", "running", "waiting-approval", "paused", "checking"}
# a lane that ended without passing: merged only when a human says so (--force)
_UNFINISHED = {"failed", "blocked", "cancelled"}


def _settings(ws):
    from cowork.config import load_settings

    return load_settings(ws.config_path, display=ws.rel(ws.config_path))


def _by(ws) -> str:
    from cowork.team.messages import human_id

    return human_id(ws.root)


def _say(text: str) -> None:
    console(markup=False).print(text)


def _waiting(info: dict) -> None:
    """Say who holds the merge lock while this command waits for it (on stderr: --json output stays clean)."""
    where = f" (pid {info['pid']} on {info['host']})" if info.get("pid") else ""
    since = time.strftime("%H:%M:%S", time.localtime(info["acquired_at"]))
    left = max(0.0, info["lease_until"] - time.time())
    print(f"waiting for the merge lock: held by {info['holder']}{where} since {since}, lease {left:.0f}s left "
          "(see `cowork queue`)", file=sys.stderr, flush=True)


def _show_result(r: dict) -> None:
    name = f"{r['task']}/{r['lane']}" if r.get("task") else "?"
    if r["status"] == "merged":
        _say(f"merged {name} ({r['role']}) into {r['target']} as {r['commit'][:9]}"
             + (f" after {r['attempts']} attempts" if r["attempts"] > 1 else ""))
    elif r["status"] == "nothing":
        _say(f"nothing to merge for {name}: {r['output']}")
    elif r["status"] == "conflict":
        _say(f"conflict: {name} was not merged; {r['target']} is unchanged. {r['output']}")
    elif r["status"] == "checks_failed":
        _say(f"merge checks failed for {name}; {r['target']} is unchanged:\n{r['output'][-3000:]}")
    else:
        _say(f"could not merge {name}: {r['output']}")
    for note in r.get("notes") or []:
        _say(f"  note: {note}")


def _restore(st, row: dict, result) -> None:
    """A forced merge that did not go in leaves the lane as the human found it (failed, blocked or cancelled), not
    handed back to its role: forcing was a human's call, and so is what comes next."""
    from cowork.store.lanes import set_lane_state

    set_lane_state(st, row["task_id"], row["id"], row["state"], actor="merger",
                   detail=f"forced merge not done ({result.status}); left {row['state']}", error=row["error"],
                   feedback=row["feedback"], conflict_returns=row["conflict_returns"],
                   check_failures=row["check_failures"])


def _reclose(ws, st, settings, task: str, by: str) -> None:
    """A task that ended failed and whose last unmerged work lane a human just merged is done after all: its
    summary is written again and its state follows."""
    from types import SimpleNamespace

    from cowork.runner.summary import ENDED_OK, close_task
    from cowork.store.lanes import get_task, list_lanes

    rows = list_lanes(st, task)
    work = [r for r in rows if r["kind"] in ("work", "delegated")]
    if (get_task(st, task) or {}).get("state") != "failed" or not work or any(r["state"] not in ENDED_OK
                                                                             for r in work):
        return
    state = close_task(SimpleNamespace(ws=ws, store=st, settings=settings, id=by), task, rows)
    _say(f"task {task}: {state} (every work lane merged; summary.md written again)")


@app.command()
def merge(lane: Optional[str] = typer.Argument(None, metavar="TASK/LANE",
                                               help="merge this lane now (default: the oldest queued lane)"),
          all_: bool = typer.Option(False, "--all", help="merge every queued lane, oldest first"),
          force: bool = typer.Option(False, "--force", help="merge a lane that failed or was blocked, as it is "
                                                            "(merge checks still run; conflict markers never pass)"),
          root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Merge queued lanes into the merge target by hand, under the merge lock (for teams with merge.auto off)."""
    from cowork.gitops.lock import waiting_notices

    if lane and all_:
        raise BadInput("give either TASK/LANE or --all, not both")
    with waiting_notices(_waiting):
        results = _merge(workspace(root), lane, all_, force)
    data = [r.as_dict() for r in results]

    def show(rows: list[dict]) -> None:
        if not rows:
            _say("the merge queue is empty")
        for r in rows:
            _show_result(r)

    emit(data, as_json, show)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_FAILURE)


def _merge(ws, lane: str | None, all_: bool, force: bool) -> list:
    from cowork.gitops.merge import merge_lane, merge_next, process_queue
    from cowork.store.lanes import get_lane

    st, settings, by = store(ws), _settings(ws), _by(ws)
    if all_:
        results = process_queue(ws, st, settings, holder=by)
    elif lane:
        task, _, lane_id = lane.strip("/").partition("/")
        if not task or not lane_id or "/" in lane_id:
            raise BadInput(f"'{lane}' is not TASK/LANE", hint="e.g. `cowork merge t7-login/implement`")
        row = get_lane(st, task, lane_id)
        if row is not None and row["kind"] in ("review", "consult"):
            raise BadInput(f"lane {task}/{lane_id} is a {row['kind']} lane: it has no work of its own to merge",
                           hint="merge the lane it " + ("reviewed" if row["kind"] == "review" else "answered"))
        if row is not None and row["state"] == "reverted":
            raise BadInput(f"lane {task}/{lane_id} was merged, then reverted: merging its branch again changes "
                           "nothing, as its commits are already in the history",
                           hint=f"to bring the work back, revert the revert commit on {settings.merge.target} "
                                f"(`git log --grep Cowork-Revert-Of {settings.merge.target}` finds it), or "
                                "delegate the change again")
        if row is not None and row["state"] in _BUSY:
            raise BadInput(f"lane {task}/{lane_id} is {row['state']}; it has nothing final to merge yet",
                           hint="wait for it to finish (`cowork lanes`)")
        if row is not None and row["state"] in _UNFINISHED and not force:
            why = (row["error"] or row["detail"] or "").strip().splitlines()
            raise BadInput(f"lane {task}/{lane_id} is {row['state']}" + (f": {why[0][:200]}" if why else "")
                           + "; its work did not pass", hint=f"`cowork merge {task}/{lane_id} --force` merges it as it "
                           "is (the merge checks still run)")
        results = [merge_lane(ws, st, settings, task, lane_id, role=(row or {}).get("role") or "unknown", holder=by)]
        if row is not None and row["state"] in _UNFINISHED and not results[0].ok:
            _restore(st, row, results[0])
        elif row is not None and results[0].status == "merged":
            _reclose(ws, st, settings, task, by)
    else:
        one = merge_next(ws, st, settings, holder=by)
        results = [one] if one is not None else []
    return results


@app.command()
def revert(target: str = typer.Argument(..., metavar="TASK/LANE|TASK", help="a merged lane, or every lane of a task"),
           root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Revert a merged lane (or a whole task) on the merge target, through the merge lock and checks."""
    from cowork.gitops.lock import waiting_notices
    from cowork.gitops.merge import revert as do_revert

    ws = workspace(root)
    with waiting_notices(_waiting):
        res = do_revert(ws, store(ws), _settings(ws), target, by=_by(ws))

    def show(r: dict) -> None:
        if r["status"] == "reverted":
            _say(f"reverted {target} on {r['target']} as {r['commit'][:9]} "
                 f"({len(r['reverted'])} merge{'s' if len(r['reverted']) != 1 else ''}: "
                 + ", ".join(c[:9] for c in r["reverted"]) + ")")
        elif r["status"] == "conflict":
            _say(f"cannot revert {target}: later work conflicts with it; {r['target']} is unchanged. Files:")
            for f in r["conflicts"]:
                _say(f"  {f}")
        elif r["status"] == "checks_failed":
            _say(f"merge checks failed on the revert of {target}; {r['target']} is unchanged:\n{r['output'][-3000:]}")
        else:
            _say(r["output"])
        for note in r["notes"]:
            _say(f"  note: {note}")

    emit(res.as_dict(), as_json, show)
    if not res.ok:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def queue(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Who holds the merge lock, and the lanes waiting to merge (oldest first)."""
    from cowork.gitops.lock import lock_row
    from cowork.gitops.merge import lock_status

    ws = workspace(root)
    st = store(ws)
    status = lock_status(st)
    row = lock_row(st) or {}
    status.update(gone=row.get("gone", False), pid=row.get("pid"), host=row.get("host"))

    def show(s: dict) -> None:
        if s["holder"] is None:
            _say("merge lock: free")
        else:
            since = time.strftime("%H:%M:%S", time.localtime(s["since"]))
            left = s["lease_until"] - time.time()
            if s["gone"]:
                what = f"its process {s['pid']}" if s["pid"] else "its runner"
                _say(f"merge lock: holder gone: {s['holder']} took it at {since} and {what} has ended without "
                     "releasing it; the next merger takes it at once")
            else:
                lease = f"lease expired {-left:.0f}s ago (the next merger reclaims it)" if s["expired"] \
                    else f"lease {left:.0f}s left"
                where = f" (pid {s['pid']} on {s['host']})" if s["pid"] else ""
                _say(f"merge lock: held by {s['holder']}{where} since {since}; {lease}")
        if not s["queue"]:
            _say("merge queue: empty")
            return
        _say(f"merge queue: {len(s['queue'])} lane(s)")
        now = time.time()
        for q in s["queue"]:
            _say(f"  #{q['id']:<4} {q['task']}/{q['lane']:<24} {q['role'] or '?':<12} {q['state']:<8} "
                 f"waiting {now - q['enqueued_at']:.0f}s")

    emit(status, as_json, show)
