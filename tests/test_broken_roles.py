"""A team with one broken role file: the commands that watch and control the team go on, naming the file and line
once on stderr; the commands that would start agents refuse, naming the file and line, before writing anything."""
from __future__ import annotations

import pytest

from cowork.runner import control
from cowork.store import Store
from cowork.store import lanes as lanes_db
from cowork.team import approvals

WHERE = "roles/writer.yaml:3:1: colour: unknown key 'colour'"


@pytest.fixture
def broken(team):
    """The `cowork init` team, with writer.yaml broken, and task t1: lane impl (dev) waiting on two approvals.
    Returns (workspace, store, [approval ids])."""
    (team.roles_dir / "writer.yaml").write_text("name: writer\nmandate: Writes the docs.\ncolour: blue\n")
    store = Store.for_workspace(team)
    lanes_db.create_task(store, "t1", "Add a login page", state="running")
    lanes_db.add_lane(store, "t1", "impl", "dev", "build the login page")
    lanes_db.set_lane_state(store, "t1", "impl", "waiting-approval")
    ids = [approvals.request(store, task="t1", lane="impl", role="dev", tool="run", action={"command": c},
                             why="clean build", timeout_s=3600) for c in ("rm -rf build", "make")]
    yield team, store, ids
    store.close()


def warned_once(r) -> bool:
    return r.err.count("warning:") == 1 and r.err.count(WHERE) == 1 and "roles/writer.yaml has problems" in r.err


def test_watching_and_controlling_the_team_go_on_with_one_warning(broken, cli):
    team, store, (first, second) = broken
    for args in (["pause", "--reason", "runaway"], ["lanes"], ["status"], ["log"], ["approvals"], ["budget"],
                 ["approve", first, "--note", "ok"], ["reject", second, "--reason", "not now"], ["unpause"]):
        r = cli(*args)
        assert r.code == 0 and warned_once(r), (args, r.out, r.err)
        if args == ["pause", "--reason", "runaway"]:
            assert control.paused(store)["reason"] == "runaway"
    assert control.paused(store) is None
    assert [approvals.get(store, i)["state"] for i in (first, second)] == ["approved", "rejected"]
    lanes = cli("lanes", "--json")  # the warning stays on stderr: stdout is still the JSON
    assert lanes.code == 0 and [row["lane"] for row in lanes.json()] == ["impl"] and warned_once(lanes)
    assert [a["id"] for a in cli("approvals", "--json").json()["pending"]] == []


def test_the_warning_comes_without_loading_the_roles_while_no_file_changed(broken, cli):
    """Each watch command loaded every role file (about 0.1 s of a cold `cowork lanes`): while cowork.toml, the role
    files and the COWORK_* variables stay as they were, the warning is said again from .cowork/roles-seen.json
    without importing the role model, and any change is seen by the next command."""
    import os
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    team, store, _ = broken
    writer = team.roles_dir / "writer.yaml"
    for path in [team.config_path, *team.roles_dir.glob("*.yaml")]:  # not just written: their stat can be trusted
        os.utime(path, ns=(time.time_ns() - 10**10,) * 2)
    assert warned_once(cli("lanes", "-C", team.root))
    assert (team.state_dir / "roles-seen.json").is_file()
    cold = subprocess.run([sys.executable, "-c", "import sys; from cowork.cli.app import main; "
                           f"main(['lanes', '-C', {str(team.root)!r}]); "
                           "print(sorted({'cowork.roles', 'cowork.config', 'ruamel.yaml'} & set(sys.modules)))"],
                          capture_output=True, text=True)
    assert warned_once(SimpleNamespace(err=cold.stderr)) and cold.stdout.splitlines()[-1] == "[]", cold
    writer.write_text("name: writer\nmandate: Writes the docs.\n")                      # fixed
    assert "warning:" not in cli("status", "-C", team.root).err
    writer.write_text("name: writer\nmandate: Writes the docs.\ncolour: blue\n")         # broken again
    assert warned_once(cli("log", "-C", team.root))
    (team.roles_dir / "ops.yml").write_text("name: ops\nmandate: Runs the servers.\nescalate_to: nobody\n")
    r = cli("lanes", "-C", team.root)                                                   # a new file
    assert "roles/ops.yml:3:1: escalate_to: unknown role 'nobody'" in r.err and WHERE in r.err, r.err


def test_starting_agents_is_refused_naming_the_file_and_line(broken, cli):
    team, store, _ = broken
    tasks = store.scalar("SELECT count(*) FROM tasks")
    for args in (["delegate", "Document the login page"], ["say", "@reviewer", "review the docs"]):
        r = cli(*args)
        assert r.code == 2 and WHERE in r.err and "warning:" not in r.err, (args, r.err)
    assert store.scalar("SELECT count(*) FROM tasks") == tasks and not list(team.handoffs_dir.glob("t*"))
    posted = cli("say", "@team", "standup moved")  # a message that starts nothing goes on
    assert posted.code == 0 and warned_once(posted)


def test_no_runner_is_started_for_an_orphaned_task(broken, cli):
    """Its runner is gone and a new one would stop at once on the broken file: `wait` and `resume --detach` say so
    instead of starting runners that die where nobody looks."""
    team, store, _ = broken
    store.execute("UPDATE tasks SET updated_at=0 WHERE id='t1'")  # running, and no runner holds it
    r = cli("wait", "t1", "--timeout", "2")
    assert r.code == 2 and "task t1 has no live runner" in r.err and WHERE in r.err, r.err
    r = cli("resume", "--detach")
    assert r.code == 2 and WHERE in r.err and "resuming" not in r.out, (r.out, r.err)
    assert not list(team.logs_dir.glob("runner-*.log"))
