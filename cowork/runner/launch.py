"""Starting runners (in this process, or detached), waiting for tasks, and adopting orphaned ones."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from cowork.errors import CoworkError
from cowork.runner import lease
from cowork.runner.tasks import TaskState, task_state


def run_here(ws, tasks: list[str] | None = None, *, reclaim: bool = False) -> dict[str, str]:
    """Run a runner in this process until its tasks end. Returns {task: final state}."""
    from cowork.runner.runner import Runner

    return asyncio.run(Runner(ws, tasks=tasks, reclaim=reclaim).run())


def start_detached(ws, tasks: list[str] | None = None, *, reclaim: bool = False) -> int:
    """Start `python -m cowork.runner` in its own session, logging to .cowork/logs/. Returns its pid."""
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
        CoworkError: on timeout.
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
            start_detached(ws, reclaim=True)
            last_adopt = time.monotonic()
        if deadline is not None and now > deadline:
            raise CoworkError(f"task {task} still {st.state} after {timeout:g}s")
        time.sleep(poll_s)
