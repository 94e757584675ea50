"""Starting runners (in this process, or detached), waiting for tasks, and adopting orphaned ones."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from cowork.errors import BadInput, CoworkError, ValidationFailed
from cowork.runner import lease
from cowork.runner.tasks import TaskState, task_state


class Stopper:
    """Stops a runner running in another thread of this process (the CLI's, on Ctrl-C) as SIGTERM stops a
    detached one: its lanes are cancelled (their commands' process groups killed), its leases given back."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)


def run_here(ws, tasks: list[str] | None = None, *, reclaim: bool = False,
             stopper: Stopper | None = None) -> dict[str, str]:
    """Run a runner in this process until its tasks end. Returns {task: final state}; a task the runner was stopped
    in (SIGTERM or SIGHUP in the main thread, `stopper` from another) is "stopped", and `cowork resume` goes on
    with it at once."""
    import signal
    import threading

    from cowork.runner.runner import Runner

    runner = Runner(ws, tasks=tasks, reclaim=reclaim)

    async def main() -> dict[str, str]:
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        if stopper is not None:
            stopper._loop, stopper._task = loop, me
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, me.cancel)
        try:
            return await runner.run()
        except asyncio.CancelledError:  # run() has cancelled its lanes and given its leases back
            left = [t for t in runner.owned if t not in runner.results]
            runner.store.event("runner.stopped", f"runner {runner.id} was stopped; `cowork resume` continues "
                               + (", ".join(left) or "its tasks"), actor="runner", data={"runner": runner.id,
                                                                                        "tasks": left})
            return {**runner.results, **{t: "stopped" for t in left}}

    return asyncio.run(main())


def start_detached(ws, tasks: list[str] | None = None, *, reclaim: bool = False) -> int:
    """Start `python -m cowork.runner` in its own session, logging to .cowork/logs/. Returns its pid.

    Raises:
        ValidationFailed: a role file (or cowork.toml) is broken: the runner would stop at once, saying so only in
            its log.
    """
    from cowork.roles import team_roles

    team_roles(ws)
    ws.logs_dir.mkdir(parents=True, exist_ok=True)
    log = ws.logs_dir / f"runner-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    argv = [sys.executable, "-m", "cowork.runner", "--root", str(ws.root)]
    for t in tasks or []:
        argv += ["--task", t]
    if reclaim:
        argv.append("--reclaim")
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=str(ws.root), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env={**os.environ, "COWORK_ROOT": str(ws.root)})
    return proc.pid


def adopt_orphans(ws, store) -> list[str]:
    """Start a detached runner for unfinished tasks whose runner died. Returns those task ids."""
    orphans = lease.orphaned(store)
    if orphans:
        start_detached(ws, reclaim=True)
    return orphans


def wait(ws, store, task: str, *, timeout: float | None = None, poll_s: float = 0.25,
         adopt: bool = True) -> TaskState:
    """Block until the task ends; a task left by a dead runner is adopted by a new one.

    Raises:
        CoworkError: on timeout. BadInput: its runner is gone and a role file is broken, so no other can take
            it over.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last_adopt = 0.0
    while True:
        st = task_state(store, task)
        if st.ended:
            return st
        if st.state == "awaiting-approval":  # no runner will start it: waiting would be for ever
            raise CoworkError(f"task {task} waits for its plan to be approved; nothing runs it until then",
                              hint=f"`cowork approve {task}` runs it, `cowork reject {task}` drops it")
        now = time.monotonic()
        if adopt and now - last_adopt > lease.STALE_S and task in lease.orphaned(store):
            try:
                start_detached(ws, reclaim=True)
            except ValidationFailed as exc:
                raise BadInput(f"task {task} has no live runner, and none can start while these are broken:\n"
                               + exc.render(), hint="fix them, then `cowork resume`") from None
            last_adopt = time.monotonic()
        if deadline is not None and now > deadline:
            raise CoworkError(f"task {task} still {st.state} after {timeout:g}s")
        time.sleep(poll_s)
