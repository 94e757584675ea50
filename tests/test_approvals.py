"""Approvals through the real gateway and store: approve, reject with a reason, time out, survive a restart."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cowork.errors import BadInput
from cowork.runner import control
from cowork.store import lanes as lanes_db
from cowork.team import approvals
from cowork.team import messages as msgs
from tests.support.lanectx import TeamEnv

ROLES = {
    "dev": {"tools": ["read_file", "write_file", "run", "tell", "list_files"], "run_allow": ["echo *"],
            "approvals": {"block": ["run", "write_file", "tell"]}, "escalate_to": "lead"},
    "ops": {"tools": ["run", "write_file"], "run_allow": ["echo *"], "approvals": {"notify": ["write_file"]}},
    "lead": {"tools": ["read_file"]},
}
TOML = """
[policy]
approval_timeout_s = 60
[policy.approvals]
list_files = "block"
"""


@pytest.fixture
def env(tmp_path):
    return TeamEnv(tmp_path, ROLES, TOML)


def decide_in_thread(env, fn, *, after: float = 0.0):
    """Decide the first pending approval from another connection (as `cowork approve` in another process would)."""
    result = {}

    def work():
        st = env.new_store()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = approvals.pending(st)
            if rows:
                time.sleep(after)
                result["lane_state"] = lanes_db.get_lane(st, rows[0]["task_id"], rows[0]["lane_id"])["state"]
                result["row"] = rows[0]
                fn(st, rows[0]["id"])
                return
            time.sleep(0.01)

    t = threading.Thread(target=work)
    t.start()
    return t, result


def call(g, name, **args):
    return asyncio.run(g.call(name, args))


def test_a_blocked_command_waits_for_approval_then_runs(env):
    g = env.gateway("dev")
    t, seen = decide_in_thread(env, lambda st, i: approvals.approve(st, i, by="human:ann", note="go"))
    r = call(g, "run", command="echo approved-run")
    t.join()
    assert r.ok and "approved-run" in r.content
    assert seen["lane_state"] == "waiting-approval" and seen["row"]["action"] == {"command": "echo approved-run"}
    assert seen["row"]["role"] == "dev" and seen["row"]["task_id"] == "t1" and seen["row"]["lane_id"] == "l1"
    assert lanes_db.get_lane(env.store, "t1", "l1")["state"] == "running"
    kinds = [e["kind"] for e in env.events(lane="l1")]
    assert kinds.index("approval.requested") < kinds.index("approval.decided") < kinds.index("tool.call")
    assert approvals.get(env.store, seen["row"]["id"])["decided_by"] == "human:ann"


def test_a_rejection_reason_reaches_the_agent(env):
    g = env.gateway("dev")
    t, _ = decide_in_thread(env, lambda st, i: approvals.reject(st, i, by="human:ann", reason="use the staging box"))
    r = call(g, "run", command="echo deploy")
    t.join()
    assert not r.ok and "rejected by human:ann: use the staging box" in r.content
    assert lanes_db.get_lane(env.store, "t1", "l1")["state"] == "running"


def test_the_action_shows_the_diff_the_message_and_why(env):
    g = env.gateway("dev")
    (g.ctx.worktree / "app.py").write_text("x = 1\ny = 2\n")
    t, seen = decide_in_thread(env, lambda st, i: approvals.approve(st, i, by="human:ann"))
    assert call(g, "write_file", path="app.py", content="x = 1\ny = 3\n", why="fix y").ok
    t.join()
    diff = seen["row"]["action"]["diff"]
    assert "--- a/app.py" in diff and "-y = 2" in diff and "+y = 3" in diff and seen["row"]["why"] == "fix y"
    # no `why` argument: the agent's last words before the call are shown
    env.store.execute("INSERT INTO steps(task_id, lane_id, seq, kind, name, output, state, started_at) VALUES "
                      "('t1','l1',1,'model','m','{\"message\": {\"content\": \"I will tell the lead.\"}}','done',0)")
    t, seen = decide_in_thread(env, lambda st, i: approvals.approve(st, i, by="human:ann"))
    assert call(g, "tell", role="lead", note="the full text of the note").ok
    t.join()
    assert seen["row"]["action"] == {"to": "lead", "text": "the full text of the note"}
    assert seen["row"]["why"] == "I will tell the lead."


def test_team_policy_tier_applies_when_the_role_says_nothing(env):
    g = env.gateway("dev")
    t, seen = decide_in_thread(env, lambda st, i: approvals.approve(st, i, by="human:ann"))
    assert call(g, "list_files").ok
    t.join()
    assert seen["row"]["tool"] == "list_files"


def test_notify_runs_then_tells_humans(env):
    g = env.gateway("ops", lane="o1")
    assert call(g, "write_file", path="notes.txt", content="hello\n").ok
    assert approvals.pending(env.store) == []
    note = msgs.inbox(env.store)[-1]
    assert note["kind"] == "notify" and note["to_role"] == "human" and "+hello" in note["body"]


def test_timeout_escalates_and_pauses_the_lane(env):
    env.settings.policy.approval_timeout_s = 0.2
    g = env.gateway("dev")
    r = call(g, "run", command="echo never")
    assert not r.ok and "expired" in r.content and "lead" in r.content
    row = env.store.one("SELECT * FROM approvals")
    assert row["state"] == "expired"
    assert control.paused(env.store, "t1", "l1")["key"] == "pause:t1/l1"
    assert lanes_db.get_lane(env.store, "t1", "l1")["state"] == "paused"
    esc = msgs.inbox(env.store, role="lead")
    assert esc and esc[-1]["kind"] == "escalate" and "expired" in esc[-1]["body"]
    assert env.events("approval.expired")


def test_expire_overdue_without_a_waiting_lane(env):
    env.add_lane("dev")
    aid = approvals.request(env.store, task="t1", lane="l1", role="dev", tool="run", action={"command": "echo x"},
                            why="because", timeout_s=60)
    assert approvals.expire_overdue(env.store, env.settings, env.roles) == []
    assert approvals.expire_overdue(env.store, env.settings, env.roles, at=time.time() + 61) == [aid]
    assert approvals.get(env.store, aid)["state"] == "expired"
    assert msgs.inbox(env.store, role="lead")[-1]["kind"] == "escalate"


def test_expiry_escalation_and_pause_land_together_or_not_at_all(env):
    """An expired approval, its escalation and its lane's pause are one commit: a reader never sees the approval
    expired while its lane still runs, and a failure half-way (here the database refuses the escalation message)
    leaves the approval pending for the next round, not expired with nobody told."""
    env.add_lane("dev")
    aid = approvals.request(env.store, task="t1", lane="l1", role="dev", tool="run", action={"command": "echo x"},
                            why="because", timeout_s=60)
    env.store.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    later = time.time() + 61
    with pytest.raises(Exception, match="disk full"):
        approvals.expire_overdue(env.store, env.settings, env.roles, at=later)
    assert approvals.get(env.store, aid)["state"] == "pending"
    assert control.paused(env.store, "t1", "l1") is None and not env.events("approval.expired")
    env.store.execute("DROP TRIGGER refuse")
    assert approvals.expire_overdue(env.store, env.settings, env.roles, at=later) == [aid]
    assert approvals.get(env.store, aid)["state"] == "expired" and control.paused(env.store, "t1", "l1")
    assert msgs.inbox(env.store, role="lead")[-1]["kind"] == "escalate"


def test_an_approval_survives_a_restart(env):
    """The runner dies while waiting; a new one (new Store, new Gateway) re-issues the call and gets the decision."""
    g1 = env.gateway("dev")

    async def killed():
        task = asyncio.ensure_future(g1.call("run", {"command": "echo after-restart"}))
        while not approvals.pending(env.store):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(killed())
    assert lanes_db.get_lane(env.store, "t1", "l1")["state"] == "waiting-approval"
    (aid,) = [a["id"] for a in approvals.pending(env.store)]
    approvals.approve(env.new_store(), aid, by="human:ann")
    env.store.close()
    st2 = env.new_store()
    g2 = env.gateway("dev", store=st2)
    r = asyncio.run(g2.call("run", {"command": "echo after-restart"}))
    assert r.ok and "after-restart" in r.content
    assert st2.scalar("SELECT count(*) FROM approvals") == 1
    assert lanes_db.get_lane(st2, "t1", "l1")["state"] == "running"
    # the decision was used: the same call again asks again
    t, seen = decide_in_thread(env, lambda st, i: approvals.reject(st, i, by="human:ann", reason="once is enough"))
    assert "once is enough" in asyncio.run(g2.call("run", {"command": "echo after-restart"})).content
    t.join()
    assert seen["row"]["id"] != aid


def _held_then_killed(env, args: dict):
    """A journalled write_file call of lane t1/l1 waiting for its approval when its runner dies (the step stays
    `started`, the approval pending). Returns the approval id."""
    from cowork.runner.journal import Journal

    Journal(env.store, "t1", "l1").start("tool", "write_file", {"id": "call-1", "args": args})
    g1 = env.gateway("dev")

    async def killed():
        task = asyncio.ensure_future(g1.call("write_file", args))
        while not approvals.pending(env.store):
            await asyncio.sleep(0.01)
        task.cancel()  # nothing of the gateway runs after this, as after kill -9
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(killed())
    (row,) = approvals.pending(env.store)
    assert row["step_seq"] == 1
    return row["id"]


def _resumed(env):
    """What a new runner does first with the lane: a new store, its journal recovered. Returns (store, steps)."""
    from cowork.runner.journal import Journal

    st = env.new_store()
    journal = Journal(st, "t1", "l1")
    journal.recover()
    return st, [(s.name, s.state) for s in journal.steps]


def test_a_call_held_at_its_approval_is_run_again_and_a_rejection_given_meanwhile_reaches_the_agent(env):
    args = {"path": "notes.txt", "content": "hello\n"}
    aid = _held_then_killed(env, args)
    approvals.reject(env.new_store(), aid, by="human:ann", reason="not in notes.txt")  # no runner alive
    st, steps = _resumed(env)
    assert steps == [("write_file", "started")]  # not `interrupted`: it never reached its tool, so it runs again
    r = asyncio.run(env.gateway("dev", store=st).call("write_file", args))
    assert not r.ok and "rejected by human:ann: not in notes.txt" in r.content
    assert not (env.root / ".cowork" / "worktrees" / "t1" / "l1" / "notes.txt").exists()
    assert [(a["id"], a["state"]) for a in st.all("SELECT id, state FROM approvals")] == [(aid, "rejected")]


@pytest.mark.parametrize("decided", [None, "approved"])
def test_an_approval_for_an_action_that_changed_before_the_rerun_is_withdrawn_not_used(env, decided):
    """The file changed under the held call: its diff is not what #1 showed. #1 (pending, or even approved) does
    not cover the new diff: the call asks again and #1 is closed, so nothing stale is left to approve or expire."""
    args = {"path": "notes.txt", "content": "hello\n"}
    aid = _held_then_killed(env, args)
    if decided:
        approvals.approve(env.new_store(), aid, by="human:ann")
    (env.root / ".cowork" / "worktrees" / "t1" / "l1" / "notes.txt").write_text("someone else's\n")
    st, _ = _resumed(env)
    g = env.gateway("dev", store=st)

    async def rerun():
        task = asyncio.ensure_future(g.call("write_file", args))
        while not [a for a in approvals.pending(env.store) if a["id"] != aid]:
            await asyncio.sleep(0.01)
        (new,) = approvals.pending(env.store)  # #1 is closed as #2 is asked, in one commit
        approvals.approve(env.new_store(), new["id"], by="human:ann")
        return new, await task

    new, r = asyncio.run(rerun())
    assert r.ok and new["id"] != aid and "-someone else's" in new["action"]["diff"]
    old = approvals.get(st, aid)
    assert old["state"] == (decided or "withdrawn") and old["used_at"] is not None
    (closed,) = env.events("approval.withdrawn")
    assert f"approval #{aid}" in closed["summary"] and f"now waits on #{new['id']}" in closed["summary"]
    assert approvals.pending(st) == []


def test_an_approval_whose_call_is_not_run_again_is_withdrawn_on_resume(env):
    """The engine recorded the held call as not run (the lane was stopped): nothing will wait on #1 again."""
    from cowork.runner.journal import Journal

    aid = _held_then_killed(env, {"path": "notes.txt", "content": "hello\n"})
    journal = Journal(env.store, "t1", "l1")
    journal.finish(journal.steps[-1], {"content": "not run: the lane stopped before this call ran"}, ok=False)
    st, steps = _resumed(env)
    assert steps == [("write_file", "failed")] and approvals.pending(st) == []
    assert approvals.get(st, aid)["state"] == "withdrawn"
    with pytest.raises(BadInput, match="already withdrawn"):
        approvals.approve(st, aid, by="human:ann")
    assert approvals.expire_overdue(st, env.settings, env.roles, at=time.time() + 10**6) == []
    assert control.paused(st, "t1", "l1") is None


def test_a_lane_ended_while_waiting_withdraws_its_approval(env):
    g = env.gateway("dev")

    def cancel_lane(st, aid):
        lanes_db.set_lane_state(st, "t1", "l1", "cancelled")

    t, seen = decide_in_thread(env, cancel_lane)
    r = call(g, "run", command="echo never")
    t.join()
    assert not r.ok and "cancelled while waiting for approval" in r.content
    assert approvals.pending(env.store) == [] and approvals.get(env.store, seen["row"]["id"])["state"] == "withdrawn"


@pytest.mark.parametrize("corrupt", ["UPDATE approvals SET action='{not json' WHERE id=?",
                                     "UPDATE approvals SET state='maybe' WHERE id=?",
                                     "UPDATE approvals SET action='[1,2]' WHERE id=?"])
def test_malformed_approvals_fail_closed(env, corrupt):
    g = env.gateway("dev")

    async def go():
        task = asyncio.ensure_future(g.call("run", {"command": "echo danger"}))
        while not approvals.pending(env.store):
            await asyncio.sleep(0.01)
        aid = approvals.pending(env.store)[0]["id"]
        env.store.execute(corrupt, (aid,))
        if "state=" not in corrupt:
            env.store.execute("UPDATE approvals SET state='approved' WHERE id=?", (aid,))
        return await task

    r = asyncio.run(go())
    assert not r.ok and "rejected by cowork: the approval record was malformed" in r.content
    assert "[exit code" not in r.content


def test_deciding_twice_or_without_reason_is_bad_input(env):
    env.add_lane("dev")
    aid = approvals.request(env.store, task="t1", lane="l1", role="dev", tool="run", action={"command": "echo x"},
                            why=None, timeout_s=60)
    with pytest.raises(BadInput):
        approvals.reject(env.store, aid, by="human:ann", reason="  ")
    approvals.approve(env.store, aid, by="human:ann")
    with pytest.raises(BadInput, match="already approved"):
        approvals.reject(env.store, aid, by="human:bob", reason="too late")
    with pytest.raises(BadInput, match="no approval #999"):
        approvals.approve(env.store, 999, by="human:ann")


def test_cli_lists_approves_and_rejects(env, cli):
    env.add_lane("dev")
    a1 = approvals.request(env.store, task="t1", lane="l1", role="dev", tool="run", action={"command": "echo one"},
                           why="needed", timeout_s=3600)
    a2 = approvals.request(env.store, task="t1", lane="l1", role="dev", tool="tell",
                           action={"to": "lead", "text": "hello lead"}, why=None, timeout_s=3600)
    root = str(env.root)
    listed = cli("approvals", "--json", "-C", root)
    assert listed.code == 0 and [a["id"] for a in listed.json()["pending"]] == [a1, a2]
    assert listed.json()["awaiting_approval"] == []
    text = cli("approvals", "-C", root).out
    assert "$ echo one" in text and "why: needed" in text and "to lead: hello lead" in text
    assert cli("reject", str(a1), "-C", root).code == 2          # --reason is required
    assert cli("reject", str(a1), "--reason", "no", "-C", root).code == 0
    assert cli("approve", str(a2), "--note", "ok", "-C", root).code == 0
    again = cli("approve", str(a2), "-C", root)
    assert again.code == 2 and "already approved" in again.err
    # what is wrong comes first: an id that does not exist, or a decision already made, not "needs --reason"
    typo = cli("reject", "999", "-C", root)
    assert typo.code == 2 and "no approval #999" in typo.err and "--reason" not in typo.err
    decided = cli("reject", str(a2), "-C", root)
    assert decided.code == 2 and "already approved" in decided.err and "needs --reason" not in decided.err
    assert cli("approvals", "--json", "-C", root).json() == {"pending": [], "awaiting_approval": []}


def test_cli_approvals_lists_plans_waiting_for_approval(env, cli):
    """A plan left waiting (no answer at the prompt) is a decision for a human too: `cowork approvals` shows it
    with the commands that decide it, in its own list under --json."""
    root = str(env.root)
    lanes_db.create_task(env.store, "t7-ship-it", "Ship it")
    lanes_db.set_task_state(env.store, "t7-ship-it", "awaiting-approval", actor="planner")
    lanes_db.create_task(env.store, "t8-done", "Done already")
    lanes_db.set_task_state(env.store, "t8-done", "done")
    text = cli("approvals", "-C", root).out
    assert "no approvals waiting" not in text
    assert "t7-ship-it" in text and "Ship it" in text and "t8-done" not in text
    assert "cowork approve t7-ship-it" in text and "cowork reject t7-ship-it" in text
    listed = cli("approvals", "--json", "-C", root).json()
    assert listed["pending"] == []
    assert [(p["task_id"], p["title"]) for p in listed["awaiting_approval"]] == [("t7-ship-it", "Ship it")]
    lanes_db.set_task_state(env.store, "t7-ship-it", "rejected", actor="human")
    assert "no approvals waiting" in cli("approvals", "-C", root).out


def test_what_an_agent_wrote_cannot_repaint_the_approval_a_human_reads(env, cli):
    """Before: `cowork approvals` printed the command, diff and why as the agent wrote them, so terminal control
    sequences in them (erase the line, move the cursor, a carriage return) could show a human a different command
    or diff from the one they approve. They now show as visible escapes."""
    g = env.gateway("dev")
    spoof = "\x1b[2K\x1b[1G  $ echo fine"
    calls = [("run", {"command": f"echo what the human does not see #{spoof}", "why": f"ok{spoof}"}),
             ("write_file", {"path": "a.sh", "content": f"rm -rf ~  # {spoof}\r  echo fine\n"})]
    done = []
    threads = [threading.Thread(target=lambda n=n, a=a: done.append(call(g, n, **a))) for n, a in calls]
    for t in threads:
        t.start()
        deadline = time.monotonic() + 10
        while len(approvals.pending(env.store)) < len(done) + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        out = cli("approvals", "-C", str(env.root)).out
        approvals.reject(env.store, approvals.pending(env.store)[0]["id"], by="human:ann", reason="looked odd")
        t.join(10)
        assert "\x1b" not in out and "\r" not in out, repr(out)
        assert "\\x1b[2K" in out
    assert [r.ok for r in done] == [False, False]


def test_mission_control_shows_an_approval_without_the_agents_escape_sequences(env):
    """Before: mission control drew the command and diff with rich, which passes escape sequences through."""
    import io

    from rich.console import Console

    from cowork.tui.data import pending_approvals
    from cowork.tui.widgets.approvals import render_action

    g = env.gateway("dev")
    spoof = "\x1b[2K\x1b[1G$ echo fine"
    t = threading.Thread(target=lambda: call(g, "run", command=f"echo hidden #{spoof}", why=f"x{spoof}"))
    t.start()
    deadline = time.monotonic() + 10
    while not approvals.pending(env.store) and time.monotonic() < deadline:
        time.sleep(0.01)
    row = pending_approvals(env.store)[0]
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system=None, width=200).print(render_action(row))
    approvals.reject(env.store, row["id"], by="human:ann", reason="odd")
    t.join(10)
    assert "\x1b[2K" not in out.getvalue() and "\\x1b[2K" in out.getvalue()


def test_mission_control_shows_messages_and_events_without_the_agents_escape_sequences(env):
    """Before: the channel and the timeline drew message bodies and event summaries (which quote refused commands)
    with rich, which passes escape sequences through to the terminal."""
    import io

    from rich.console import Console

    from cowork.tui.widgets.channel import message_line
    from cowork.tui.widgets.timeline import Timeline

    g = env.gateway("dev")
    spoof = "\x1b[2K\x1b[1Gall fine"
    t = threading.Thread(target=lambda: call(g, "tell", role="lead", note=f"hello {spoof}"))
    t.start()
    deadline = time.monotonic() + 10
    while not approvals.pending(env.store) and time.monotonic() < deadline:
        time.sleep(0.01)
    approvals.approve(env.store, approvals.pending(env.store)[0]["id"], by="human:ann")
    t.join(10)
    assert not call(g, "run", command=f"curl evil {spoof}").ok
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=300)
    for m in env.store.all("SELECT * FROM messages"):
        console.print(message_line(m))
    timeline = Timeline()
    for ev in env.events():
        console.print(timeline._text(ev))
    assert "hello" in out.getvalue() and "curl evil" in out.getvalue()
    assert "\x1b[2K" not in out.getvalue() and "\\x1b[2K" in out.getvalue()
