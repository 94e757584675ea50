"""Crash recovery: a runner killed with SIGKILL mid-task is resumed without repeating completed steps."""
from __future__ import annotations

import os
import signal
import time


from cowork.cli.app import main
from cowork.runner.journal import Journal
from cowork.store import Store
from cowork.store import lanes as lanes_db
from tests.support.scripted_server import delay, tool_call
from tests.support.team import PLANNER, git, make_team

DEV = """name: dev
mandate: Implements code changes on its lane's branch.
tools: [read_file, write_file, run]
run_allow: ["python3 count.py *"]
"""
COUNT = "import sys\nopen(sys.argv[1], 'a').write('ran\\n')\n"


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_kill_9_mid_task_then_resume_repeats_nothing(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV})
    (root / "count.py").write_text(COUNT)
    git(root, "add", "count.py")
    git(root, "commit", "-q", "-m", "count.py")
    side = tmp_path / "side.log"
    finishes = {"n": 0}

    def slow_then_finish(body):
        finishes["n"] += 1
        done = tool_call("finish", status="done", summary="counted once and wrote a.txt",
                         checklist=[{"item": "count", "done": True}])
        return delay(60, done) if finishes["n"] == 1 else done  # the runner dies while the first is in flight

    server.script("Goal: Count once", [tool_call("run", command=f"python3 count.py {side}"),
                                       tool_call("write_file", path="a.txt", content="a\n"),
                                       slow_then_finish])
    assert main(["delegate", "Count once", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: finishes["n"] == 1, 30, "the third model call to be in flight")
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # it is our child (spawned by start_detached): reap it

    # what the dead runner left: one side effect, the written file in the lane's worktree, a call in flight
    assert side.read_text() == "ran\n"
    assert (root / ".cowork" / "worktrees" / task / "work" / "a.txt").read_text() == "a\n"
    commits_before = git(root, "rev-list", f"cowork/{task}/work").split()
    steps = Journal(st, task, "work").steps
    assert [(s.kind, s.state) for s in steps][-1] == ("model", "started")
    assert lanes_db.get_lane(st, task, "work")["state"] == "running"

    assert main(["resume", "-C", str(root)]) == 0
    assert side.read_text() == "ran\n"  # the completed `run` was not run again
    assert git(root, "show", "main:a.txt") == "a"
    assert lanes_db.get_task(st, task)["state"] == "done"
    on_main = set(git(root, "rev-list", "main").split())
    assert set(commits_before) <= on_main  # no commit the dead runner made was lost
    steps = Journal(st, task, "work").steps
    assert ("model", "interrupted") in [(s.kind, s.state) for s in steps]
    by_index = {}
    for r in server.requests:
        if r.key == "Goal: Count once":
            by_index[r.index] = by_index.get(r.index, 0) + 1
    assert by_index == {0: 1, 1: 1, 2: 2}  # completed model calls were not re-sent; the interrupted one was
    kinds = [e["kind"] for e in st.events(task=task)]
    assert "runner.recovered" in kinds
    assert sum(1 for e in st.events(task=task, kinds=["tool.call"]) if e["data"]["tool"] == "run") == 1


def test_wait_adopts_a_task_whose_runner_died(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV})
    calls = {"n": 0}

    def first_slow(body):
        calls["n"] += 1
        done = tool_call("finish", status="done", summary="ok", checklist=[])
        return delay(60, done) if calls["n"] == 1 else done

    server.script("Goal: Slow", [first_slow])
    assert main(["delegate", "Slow", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: calls["n"] == 1, 30, "the first model call")
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    from cowork.views import team_status
    from cowork.workspace import Workspace

    assert team_status(Workspace(root), st)["no_runner"] == [task]  # `cowork status`: run `cowork resume`
    assert main(["wait", task, "--timeout", "40", "-C", str(root)]) == 0
    assert calls["n"] == 2
    assert team_status(Workspace(root), st)["no_runner"] == []


SLOW_CHECK = ("import os, sys, time\nif os.path.exists(sys.argv[1]):\n    sys.exit(0)\n"
              "open(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")


def test_kill_9_during_slow_merge_checks_then_resume_takes_the_merge_lock_at_once(tmp_path, server, monkeypatch,
                                                                                 capsys):
    """The runner dies holding the merge lock (its merge check is slow): the lock's holder is gone, `cowork queue`
    says so, and `cowork resume` takes the lock at once instead of waiting out its 120 s lease."""
    import sys

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    check, marker = tmp_path / "slow_check.py", tmp_path / "check.pid"
    check.write_text(SLOW_CHECK)  # slow the first time only
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV},
                     extra_toml=f'\n[merge]\nlease_s = 120\nchecks = ["{sys.executable} {check} {marker}"]\n')
    server.script("Goal: Add b", [tool_call("write_file", path="b.txt", content="b\n"),
                                  tool_call("finish", status="done", summary="wrote b.txt", checklist=[])])
    assert main(["delegate", "Add b", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    _wait_for(lambda: marker.exists() and marker.read_text(), 60, "the merge check to start")
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the check outlives its runner; end it
    except ProcessLookupError:
        pass

    capsys.readouterr()
    assert main(["queue", "-C", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"holder gone: r-{pid}-" in out and f"process {pid} has ended" in out
    started = time.monotonic()
    assert main(["resume", "-C", str(root)]) == 0
    assert time.monotonic() - started < 60  # well inside the dead runner's 120 s lease
    assert git(root, "show", "main:b.txt") == "b"
    (reclaim,) = [e for e in st.events(kinds=["merge.locked"]) if e["data"].get("reclaimed_from")]
    assert reclaim["data"]["reclaimed_from"].startswith(f"r-{pid}-")
    assert reclaim["data"]["reclaimed_because"] == f"its process {pid} is gone"


SLOW = "import os, sys, time\nopen(sys.argv[1], 'a').write(f'{os.getpid()}\\n')\ntime.sleep(30)\n"


def _running_slowly(tmp_path, server, monkeypatch) -> tuple:
    """A detached task whose lane is inside a slow `run` command (its pid in side.log): (root, store, task, side)."""
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    dev = DEV.replace('run_allow: ["python3 count.py *"]', 'run_allow: ["python3 slow.py *"]')
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": dev})
    (root / "slow.py").write_text(SLOW)
    git(root, "add", "slow.py")
    git(root, "commit", "-q", "-m", "slow.py")
    side = tmp_path / "side.log"
    server.script("Goal: Run slowly", [tool_call("run", command=f"python3 slow.py {side}"),
                                       tool_call("finish", status="done", summary="checked", checklist=[])])
    assert main(["delegate", "Run slowly", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: side.exists() and side.read_text().strip(), 30, "the slow command to start")
    return root, st, task, side


def test_a_tool_call_cut_by_the_kill_is_reported_as_interrupted_not_rerun(tmp_path, server, monkeypatch):
    root, st, task, side = _running_slowly(tmp_path, server, monkeypatch)
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        os.kill(int(side.read_text().split()[0]), signal.SIGKILL)  # the command outlives its runner; end it
    except ProcessLookupError:
        pass
    assert main(["resume", "-C", str(root)]) == 0
    assert len(side.read_text().split()) == 1  # the interrupted command was not run again
    steps = Journal(st, task, "work").steps
    assert [s.state for s in steps if s.kind == "tool" and s.name == "run"] == ["interrupted"]
    second = [r for r in server.requests if r.key == "Goal: Run slowly" and r.index == 1]
    assert second and "may or may not have taken effect" in second[0].text
    assert lanes_db.get_task(st, task)["state"] == "done"


PIDS_MCP = '''
import os
import sys
from mcp.server.mcpserver import MCPServer

with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
server = MCPServer("kv")
VALUES = {}


@server.tool()
def put(key: str, value: str) -> str:
    """Remember a value."""
    VALUES[key] = value
    return "ok"


server.run("stdio")
'''


def test_a_killed_runner_leaves_no_mcp_server_behind_and_its_resume_starts_one_afresh(tmp_path, server, monkeypatch):
    """A lane's MCP server lives in the runner's lane; kill -9 of the runner closes the server's stdin, so the
    server ends too (nothing orphaned), and the resumed lane starts its own."""
    import sys

    from cowork.procs import pid_alive

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    script, pids = tmp_path / "kv_server.py", tmp_path / "kv-pids.txt"
    script.write_text(PIDS_MCP)
    ops = "name: ops\nmandate: Keeps the team's key-value notes.\ntools: [kv.put]\n"
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "ops": ops},
                     extra_toml=f'\n[mcp.kv]\ncommand = ["{sys.executable}", "{script}", "{pids}"]\n')
    calls = {"n": 0}

    def slow_then_put_again(body):
        calls["n"] += 1
        again = tool_call("kv__put", key="b", value="2")
        return delay(60, again) if calls["n"] == 1 else again  # the runner dies while the first is in flight

    server.script("Goal: Note things", [tool_call("kv__put", key="a", value="1"), slow_then_put_again,
                                        tool_call("finish", status="done", summary="noted", checklist=[])])
    assert main(["delegate", "Note things", "--to", "ops", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: calls["n"] == 1, 30, "the second model call to be in flight")
    before = [int(p) for p in pids.read_text().split()]  # the listing server (gone) and the lane's (running)
    assert len(before) == 2 and pid_alive(before[1])
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    _wait_for(lambda: not pid_alive(before[1]), 10, "the lane's MCP server to end with its runner")

    assert main(["resume", "-C", str(root)]) == 0
    assert lanes_db.get_task(st, task)["state"] == "done"
    after = [int(p) for p in pids.read_text().split()]
    assert len(after) == 4 and not [p for p in after if pid_alive(p)]  # a new listing and lane server, both ended
    puts = [e["data"]["ok"] for e in st.events(task=task, kinds=["tool.call"]) if e["data"]["tool"] == "kv.put"]
    assert puts == [True, True]


def test_a_stalled_runner_that_lost_its_task_stops_its_lanes_and_writes_nothing(tmp_path, server, monkeypatch):
    """A runner stalled past its lease (a suspended laptop; SIGSTOP here) whose task another runner took meanwhile
    finds out at its next heartbeat: it stops the task's lanes without writing their state, and the new holder
    alone finishes the task (one summary, no failure)."""
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV})
    calls = {"n": 0}

    def reply(body):
        calls["n"] += 1
        wrote = any(m.get("role") == "tool" for m in body["messages"])
        r = (tool_call("finish", status="done", summary="wrote a.txt", checklist=[]) if wrote
             else tool_call("write_file", path="a.txt", content="a\n"))
        return delay(4, r) if calls["n"] == 1 else r  # the first runner's call is in flight when it stalls

    server.script("Goal: Write a", [reply] * 6)
    assert main(["delegate", "Write a", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: calls["n"] == 1, 30, "the first model call")
    first = st.one("SELECT id, pid FROM runners WHERE state='running'")
    os.kill(first["pid"], signal.SIGSTOP)
    try:  # a minute passes, as far as the leases can tell: its heartbeat and lease are stale
        st.execute("UPDATE runners SET heartbeat_at=heartbeat_at-60 WHERE id=?", (first["id"],))
        st.execute("UPDATE locks SET lease_until=0 WHERE holder=?", (first["id"],))
        assert main(["resume", "--detach", "-C", str(root)]) == 0
        _wait_for(lambda: st.scalar("SELECT holder FROM locks WHERE name=?", (f"task:{task}",)) != first["id"],
                  30, "the second runner to take the task")
    finally:
        os.kill(first["pid"], signal.SIGCONT)
    assert main(["wait", task, "--timeout", "40", "-C", str(root)]) == 0
    os.waitpid(first["pid"], 0)  # it let the task go and, owning nothing, ended
    kinds = [e["kind"] for e in st.events(task=task)]
    assert "runner.lost" in kinds and "task.failed" not in kinds and kinds.count("task.done") == 1
    assert calls["n"] == 3  # the stalled runner sent nothing more: its one call, then the new holder's two
    summaries = git(root, "log", "--format=%s", "main", "--", f"handoffs/{task}/summary.md").splitlines()
    assert len(summaries) == 1 and git(root, "show", "main:a.txt") == "a"


def _slow_once(mark) -> str:
    """A check command that, the first time, notes its shell's pid in `mark`/pid and sleeps 60 s; later, passes."""
    return f"test -f {mark}/ran || {{ touch {mark}/ran; echo $$ > {mark}/pid; sleep 60; }}"


def test_a_check_left_running_by_a_killed_runner_is_stopped_by_the_next(tmp_path, server, monkeypatch):
    """Checks run in sessions of their own, so kill -9 of the runner leaves one running in the lane's worktree; the
    runner that resumes the lane stops it before it runs the check again."""
    from cowork.procs import pid_alive

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    mark = tmp_path / "marks"
    mark.mkdir()
    dev = DEV + f'checks: ["{_slow_once(mark)}"]\n'
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": dev})
    server.script("Goal: Check", [tool_call("write_file", path="a.txt", content="a\n"),
                                  tool_call("finish", status="done", summary="ok", checklist=[])])
    assert main(["delegate", "Check", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: (mark / "pid").is_file() and (mark / "pid").read_text().strip(), 30, "the check to start")
    check = int((mark / "pid").read_text())
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert pid_alive(check)  # the check outlived its runner
    assert main(["resume", "-C", str(root)]) == 0
    assert lanes_db.get_task(st, task)["state"] == "done"
    assert not pid_alive(check)
    cleanup = st.events(kinds=["runner.cleanup"])
    assert len(cleanup) == 1 and f"check `test -f {mark}/ran" in cleanup[0]["summary"]
    assert not list((root / ".cowork" / "procs").glob("*.json"))


def test_sigterm_stops_a_runner_cleanly_and_resume_goes_on_at_once(tmp_path, server, monkeypatch):
    """SIGTERM (a shutdown, `kill`) stops the detached runner's lanes, their commands with them, and gives its
    leases back: nothing is left running, and `cowork resume` continues at once."""
    from cowork.procs import pid_alive

    root, st, task, side = _running_slowly(tmp_path, server, monkeypatch)
    runner = st.one("SELECT id, pid FROM runners WHERE state='running'")
    os.kill(runner["pid"], signal.SIGTERM)
    t0 = time.time()
    _, status = os.waitpid(runner["pid"], 0)
    assert time.time() - t0 < 10 and os.WEXITSTATUS(status) == 1  # its task was not done: exit 1
    assert not pid_alive(int(side.read_text().split()[0]))  # the command went with it
    assert st.scalar("SELECT state FROM runners WHERE id=?", (runner["id"],)) == "stopped"
    assert st.scalar("SELECT holder FROM locks WHERE name=?", (f"task:{task}",)) is None
    assert [e["data"]["tasks"] for e in st.events(kinds=["runner.stopped"])] == [[task]]
    assert main(["resume", "-C", str(root)]) == 0
    assert lanes_db.get_task(st, task)["state"] == "done" and len(side.read_text().split()) == 1


WRITER_BLOCKED = """name: dev
mandate: Implements code changes on its lane's branch.
tools: [read_file, write_file]
approvals: {block: [write_file]}
"""


def _killed_while_waiting_for_approval(tmp_path, server, timeout_s: float, then: list):
    """A lane held at approval #1 for write_file, and its runner killed with kill -9; the model's next replies are
    `then`. Returns (root, store, task)."""
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": WRITER_BLOCKED},
                     extra_toml=f"\n[policy]\napproval_timeout_s = {timeout_s}\n")
    server.script("Goal: Write a", [tool_call("write_file", path="a.txt", content="a\n"), *then])
    assert main(["delegate", "Write a", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: lanes_db.get_lane(st, task, "work")["state"] == "waiting-approval", 30, "approval #1")
    pid = st.scalar("SELECT pid FROM runners WHERE state='running'")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert [(a["id"], a["state"]) for a in st.all("SELECT id, state FROM approvals")] == [(1, "pending")]
    return root, st, task


def _approvals(st) -> list[tuple]:
    return [(a["id"], a["state"], a["used_at"] is not None) for a in st.all("SELECT * FROM approvals ORDER BY id")]


def test_an_approval_given_while_the_runner_was_dead_lets_the_resumed_call_run(tmp_path, server, monkeypatch):
    """kill -9 while a lane waits for approval #1; `cowork approve 1` with no runner alive; `cowork resume`: the
    interrupted call runs again as it was, finds #1 approved, and writes. The model is not asked again for it."""
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    finish = tool_call("finish", status="done", summary="wrote a.txt", checklist=[])
    root, st, task = _killed_while_waiting_for_approval(tmp_path, server, 3600, [finish])
    assert main(["approve", "1", "-C", str(root)]) == 0
    assert main(["resume", "-C", str(root)]) == 0
    assert lanes_db.get_task(st, task)["state"] == "done"
    assert git(root, "show", "main:a.txt") == "a"
    assert _approvals(st) == [(1, "approved", True)]  # no #2: the resumed call found #1
    steps = [(s.kind, s.name, s.state) for s in Journal(st, task, "work").steps]
    assert ("tool", "write_file", "done") in steps and ("tool", "write_file", "interrupted") not in steps
    sent = [r.index for r in server.requests if r.key == "Goal: Write a"]
    assert sent == [0, 1]  # one model call for the write, one after it: the kill cost no model call


def test_a_resumed_lane_waits_on_its_own_pending_approval_and_nothing_goes_stale(tmp_path, server, monkeypatch):
    """QA's case: kill -9 while #1 is pending, resume. Asked again, the model would write something else (#2 beside
    a #1 nobody waits on, which later expired and paused the lane). The resumed lane waits on #1 itself; approving
    #1 lets it go on, and no approval is left pending to expire."""
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    again = tool_call("write_file", path="a.txt", content="a, again\n")
    finish = tool_call("finish", status="done", summary="wrote a.txt", checklist=[])
    root, st, task = _killed_while_waiting_for_approval(tmp_path, server, 20, [again, finish])
    assert main(["resume", "--detach", "-C", str(root)]) == 0
    resumed = lambda: lanes_db.get_lane(st, task, "work")  # noqa: E731
    _wait_for(lambda: resumed()["attempts"] == 2 and resumed()["state"] == "waiting-approval", 30,
              "the resumed lane to wait")
    time.sleep(1.0)  # the resumed lane is at its approval: it asks nothing new
    assert _approvals(st) == [(1, "pending", False)]
    assert [r.index for r in server.requests if r.key == "Goal: Write a"] == [0]  # the model was not asked again
    assert main(["approve", "1", "-C", str(root)]) == 0
    _wait_for(lambda: len(_approvals(st)) == 2, 30, "the next write's approval")  # a new call: a new approval
    assert _approvals(st) == [(1, "approved", True), (2, "pending", False)]
    assert main(["approve", "2", "-C", str(root)]) == 0
    assert main(["wait", task, "--timeout", "60", "-C", str(root)]) == 0
    assert git(root, "show", "main:a.txt") == "a, again"
    assert _approvals(st) == [(1, "approved", True), (2, "approved", True)]
    assert not st.events(kinds=["approval.expired"]) and not st.flags("pause")


def test_sigterm_during_a_merge_check_abandons_the_merge_and_the_lane_keeps_its_place(tmp_path, server, monkeypatch):
    """The merger runs in a thread, out of reach of cancellation: SIGTERM must still end its merge check at once,
    leave main as it was and the lane queued, and let the next runner merge it."""
    from cowork.procs import pid_alive

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    mark = tmp_path / "marks"
    mark.mkdir()
    check = _slow_once(mark)
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV},
                     extra_toml=f"[merge]\nchecks = [{check!r}]\n".replace("'", '"'))
    server.script("Goal: Merge slowly", [tool_call("write_file", path="a.txt", content="a\n"),
                                         tool_call("finish", status="done", summary="ok", checklist=[])])
    assert main(["delegate", "Merge slowly", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    _wait_for(lambda: (mark / "pid").is_file() and (mark / "pid").read_text().strip(), 30, "the merge check")
    before = git(root, "rev-parse", "main")
    runner = st.one("SELECT pid FROM runners WHERE state='running'")
    os.kill(runner["pid"], signal.SIGTERM)
    t0 = time.time()
    os.waitpid(runner["pid"], 0)
    assert time.time() - t0 < 10 and not pid_alive(int((mark / "pid").read_text()))
    assert git(root, "rev-parse", "main") == before and lanes_db.get_lane(st, task, "work")["state"] == "merge-queue"
    assert st.scalar("SELECT state FROM merge_queue") == "waiting"
    assert st.scalar("SELECT holder FROM locks WHERE name='merge'") is None
    assert main(["resume", "-C", str(root)]) == 0
    assert git(root, "show", "main:a.txt") == "a" and lanes_db.get_task(st, task)["state"] == "done"
