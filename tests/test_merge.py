"""The merge queue, merging, conflicts, merge checks, the target moving under the merger, revert, the user's
checkout, concurrent mergers (threads and processes) and the merge commands, on real repositories and stores."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from cowork.config import TeamSettings, load_settings
from cowork.errors import BadInput
from cowork.gitops.git import current_branch, git, head, is_clean, read_trailers
from cowork.gitops.lock import lock_row
from cowork.gitops.merge import blocked_by, enqueue, lock_status, merge_lane, merge_next, process_queue, queue, revert
from cowork.gitops.worktrees import commit_all, create_lane_worktree
from cowork.store import Store
from cowork.workspace import Workspace
from tests.test_gitops import make_team

ROOT = Path(__file__).resolve().parents[1]
LINES = 40
MARKERS = ("<<<<<<<", ">>>>>>>", "=======")


def numbered(edits: dict[int, str] | None = None) -> str:
    edits = edits or {}
    return "".join(edits.get(i, f"line {i}") + "\n" for i in range(LINES))


@dataclass
class Team:
    ws: Workspace
    store: Store
    settings: TeamSettings

    def lane(self, task: str, lane: str, files: dict[str, str], role: str = "dev") -> str:
        """A lane row and branch whose one commit writes `files`. Returns the branch tip."""
        self.store.execute("INSERT OR IGNORE INTO tasks(id, title, state, created_at, updated_at) "
                           "VALUES (?,?,'running',0,0)", (task, task))
        self.store.execute("INSERT INTO lanes(task_id, id, role, goal, state, branch, created_at, updated_at) "
                           "VALUES (?,?,?,?,'in-review',?,0,0)", (task, lane, role, f"goal of {lane}",
                                                                 f"cowork/{task}/{lane}"))
        lt = create_lane_worktree(self.ws, task, lane, base=self.settings.merge.target)
        for name, text in files.items():
            (lt.path / name).write_text(text)
        return commit_all(lt.path, f"{lane}: edit", role=role) or head(lt.path)

    def main(self) -> str:
        return head(self.ws.root, "refs/heads/main")

    def show(self, path: str, rev: str = "main") -> str:
        return git("show", f"{rev}:{path}", cwd=self.ws.root)

    def row(self, task: str, lane: str) -> dict:
        return self.store.one("SELECT * FROM lanes WHERE task_id=? AND id=?", (task, lane))

    def commit_on_main(self, name: str, text: str) -> str:
        (self.ws.root / name).write_text(text)
        git("add", name, cwd=self.ws.root)
        git("commit", "-q", "-m", f"human edits {name}", cwd=self.ws.root)
        return self.main()


@pytest.fixture
def team(tmp_path) -> Team:
    ws = make_team(tmp_path / "repo", files={"README.md": "# test\n", "shared.txt": numbered()})
    store = Store(ws.db_path)
    yield Team(ws, store, load_settings(ws.config_path))
    store.close()


def no_markers(team: Team) -> None:
    tracked = git("ls-tree", "-r", "--name-only", "main", cwd=team.ws.root).splitlines()
    for name in tracked:
        text = team.show(name)
        assert not any(line.startswith(MARKERS) for line in text.splitlines()), name


# -- merging ------------------------------------------------------------------------------------------------------


def test_clean_merge_records_trailers_lane_queue_and_events(team):
    old = team.main()
    tip = team.lane("t1", "impl", {"feature.py": "print('hi')\n"})
    qid = enqueue(team.store, "t1", "impl")
    assert enqueue(team.store, "t1", "impl") == qid  # idempotent while waiting
    assert [(e["task"], e["lane"], e["role"], e["state"]) for e in queue(team.store)] == [("t1", "impl", "dev", "waiting")]
    assert team.row("t1", "impl")["state"] == "merge-queue"

    res = merge_next(team.ws, team.store, team.settings, None, holder="runner-1")
    assert res.status == "merged" and res.ok and res.commit == team.main() and res.attempts == 1
    assert git("rev-parse", f"{res.commit}^1", f"{res.commit}^2", cwd=team.ws.root).splitlines() == [old, tip]
    body = git("log", "-1", "--format=%B", "main", cwd=team.ws.root)
    assert body.startswith("Merge t1/impl (dev)\n\ngoal of impl")
    assert read_trailers(body, cwd=team.ws.root) == [
        ("Cowork-Task", "t1"), ("Cowork-Lane", "impl"), ("Cowork-Role", "dev"),
        ("Cowork-Handoff", "handoffs/t1/impl.md")]
    who = git("log", "-1", "--format=%an <%ae>|%cn", "main", cwd=team.ws.root)
    assert who == "merger (cowork) <merger@cowork.local>|Ada Human"
    # `git log` answers who did what
    found = git("log", "--format=%H", "--grep=Cowork-Lane: impl", "main", cwd=team.ws.root)
    assert found == res.commit

    row = team.row("t1", "impl")
    assert row["state"] == "merged" and row["merge_commit"] == res.commit
    assert team.store.one("SELECT state, merge_commit FROM merge_queue WHERE id=?", (qid,)) == {
        "state": "merged", "merge_commit": res.commit}
    done = team.store.events(kinds=["merge.done"])[-1]
    assert done["data"]["commit"] == res.commit and done["data"]["files"] == ["feature.py"]
    assert done["lane_id"] == "impl" and done["role"] == "dev"
    assert queue(team.store) == [] and lock_status(team.store)["holder"] is None
    assert merge_next(team.ws, team.store, team.settings, None, holder="runner-1") is None

    # the user's clean checkout of main was fast-forwarded with it
    assert (team.ws.root / "feature.py").read_text() == "print('hi')\n"
    assert is_clean(team.ws.root) and current_branch(team.ws.root) == "main"
    assert res.notes and "fast-forwarded" in res.notes[0]


def test_conflict_returns_files_and_leaves_main_untouched(team):
    team.lane("t1", "impl", {"shared.txt": numbered({7: "lane's line 7"})})
    before = team.commit_on_main("shared.txt", numbered({7: "human's line 7"}))
    enqueue(team.store, "t1", "impl")
    res = merge_next(team.ws, team.store, team.settings, None, holder="r")
    assert res.status == "conflict" and res.conflicts == ["shared.txt"] and res.commit is None
    assert team.main() == before and team.show("shared.txt") == numbered({7: "human's line 7"}).rstrip("\n")
    merge_wt = team.ws.worktrees_dir / "_merge"
    assert is_clean(merge_wt) and "<<<<<<<" not in (merge_wt / "shared.txt").read_text()
    assert is_clean(team.ws.root)
    row = team.row("t1", "impl")
    assert row["state"] == "blocked" and row["conflict_returns"] == 1 and "shared.txt" in row["feedback"]
    assert blocked_by(row["feedback"]) == "conflict"
    ev = team.store.events(kinds=["merge.conflict"])[-1]
    assert ev["data"]["files"] == ["shared.txt"] and ev["data"]["tip"] == before
    assert team.store.scalar("SELECT state FROM merge_queue") == "conflict"


def test_a_lane_that_committed_conflict_markers_never_reaches_main(team):
    """Markers committed unresolved on the lane (an agent that finished without resolving a conflict) are refused
    like a conflict, naming the file and lines; main stays as it was."""
    before = team.main()
    team.lane("t1", "impl", {"shared.txt": "top\n<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> refs/heads/main\n",
                             "clean.txt": "ok  \n",  # trailing whitespace is no marker
                             "LICENSE.md": "License\n=======\n\nMIT\n"})  # nor is a heading's underline
    res = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")
    assert res.status == "conflict" and res.conflicts == ["shared.txt"] and team.main() == before
    assert "shared.txt:2, shared.txt:4, shared.txt:6" in res.output
    row = team.row("t1", "impl")
    assert row["state"] == "blocked" and blocked_by(row["feedback"]) == "conflict" and "shared.txt:2" in row["feedback"]
    assert is_clean(team.ws.worktrees_dir / "_merge")

    team.lane("t1", "docs", {"LICENSE.md": "License\n=======\n\nMIT\n"})  # alone, it merges
    assert merge_lane(team.ws, team.store, team.settings, "t1", "docs", role="dev", holder="r").status == "merged"


def test_failing_merge_checks_leave_main_untouched(team):
    old = team.main()
    team.lane("t1", "impl", {"feature.py": "x = 1\n"})
    team.settings.merge.checks = ["test -f feature.py",
                                  "echo checking $COWORK_TASK/$COWORK_LANE; echo test_merge_conflict FAILED; exit 3"]
    res = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")
    assert res.status == "checks_failed" and team.main() == old
    assert "checking t1/impl" in res.output and "$ echo checking" in res.output
    assert team.row("t1", "impl")["state"] == "blocked" and "exit 3" in team.row("t1", "impl")["feedback"]
    # check output may say anything ("conflict" here): the runner reads why from the feedback's prefix
    assert blocked_by(team.row("t1", "impl")["feedback"]) == "checks"
    assert team.store.events(kinds=["check.failed"])[-1]["data"]["exit"] == 3

    team.settings.merge.checks, team.settings.merge.checks_timeout_s = ["sleep 30"], 0.3
    res = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")
    assert res.status == "checks_failed" and "timed out" in res.output and team.main() == old

    team.settings.merge.checks = ["test -f feature.py", 'test "$COWORK_MERGE_TARGET" = main']
    res = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")
    assert res.status == "merged" and team.show("feature.py") == "x = 1"


def test_main_moving_under_the_merger_is_retried_on_the_new_tip(team, tmp_path):
    team.lane("t1", "impl", {"feature.py": "x = 1\n"})
    marker = tmp_path / "moved-once"
    # the merge check plays a person committing to main while the merge is being checked (once)
    team.settings.merge.checks = [
        f"[ -f {marker} ] || (touch {marker} && git -C {team.ws.root} commit -q --allow-empty -m concurrent)"]
    res = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")
    assert res.status == "merged" and res.attempts == 2
    first_parent = git("log", "-1", "--format=%s", f"{res.commit}^1", cwd=team.ws.root)
    assert first_parent == "concurrent" and team.show("feature.py") == "x = 1"
    assert team.store.events(kinds=["merge.done"])[-1]["data"]["attempts"] == 2


def test_already_contained_and_empty_lanes_merge_as_nothing(team):
    team.lane("t1", "impl", {"feature.py": "x = 1\n"})
    enqueue(team.store, "t1", "impl")
    first = merge_next(team.ws, team.store, team.settings, holder="r")
    enqueue(team.store, "t1", "impl")
    again = merge_next(team.ws, team.store, team.settings, holder="r")
    assert again.status == "nothing" and again.commit == first.commit and team.main() == first.commit
    third = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")  # by hand
    row = team.row("t1", "impl")
    assert third.status == "nothing" and row["state"] == "merged" and row["merge_commit"] == first.commit

    git("branch", "cowork/t1/idle", "main", cwd=team.ws.root)  # a lane that committed nothing
    res = merge_lane(team.ws, team.store, team.settings, "t1", "idle", role="dev", holder="r")
    assert res.status == "nothing" and res.commit is None and team.main() == first.commit


def test_queue_drain_survives_a_missing_branch_and_a_dead_merger(team):
    team.lane("t1", "a", {"a.txt": "a\n"})
    team.lane("t1", "b", {"b.txt": "b\n"})
    enqueue(team.store, "t1", "ghost")  # no branch
    enqueue(team.store, "t1", "a")
    enqueue(team.store, "t1", "b")
    # a merger died half-way through "a": its entry says merging, its lock lease is long gone
    team.store.execute("UPDATE merge_queue SET state='merging' WHERE lane_id='a'")
    results = process_queue(team.ws, team.store, team.settings, holder="r")
    assert [(r.lane, r.status) for r in results] == [("ghost", "failed"), ("a", "merged"), ("b", "merged")]
    assert "no branch" in results[0].output
    assert team.show("a.txt") == "a" and team.show("b.txt") == "b" and queue(team.store) == []

    # the only entry is one a dead merger left half-done: merge_next still picks it up
    team.lane("t1", "d", {"d.txt": "d\n"})
    enqueue(team.store, "t1", "d")
    team.store.execute("UPDATE merge_queue SET state='merging' WHERE lane_id='d'")
    assert merge_next(team.ws, team.store, team.settings, holder="r").status == "merged"
    assert team.show("d.txt") == "d" and queue(team.store) == []


# -- the user's checkout -------------------------------------------------------------------------------------------


def test_dirty_user_checkout_is_left_alone_and_told_how_to_update(team):
    old = team.main()
    team.lane("t1", "impl", {"feature.py": "x = 1\n"})
    (team.ws.root / "README.md").write_text("# my unsaved thoughts\n")
    res = merge_lane(team.ws, team.store, team.settings, "t1", "impl", role="dev", holder="r")
    assert res.status == "merged" and team.main() == res.commit != old
    # files untouched, HEAD detached where it was so `git status` still tells the truth
    assert (team.ws.root / "README.md").read_text() == "# my unsaved thoughts\n"
    assert not (team.ws.root / "feature.py").exists()
    assert current_branch(team.ws.root) is None and head(team.ws.root) == old
    assert git("status", "--porcelain", cwd=team.ws.root) == "M README.md"
    assert len(res.notes) == 1 and "git checkout main" in res.notes[0]
    assert team.store.events(kinds=["merge.done"])[-1]["data"]["notes"] == res.notes
    told = team.store.events(kinds=["checkout.detached"])  # the timeline says so too (delegate's progress shows it)
    assert [e["summary"] for e in told] == res.notes and told[0]["task_id"] == "t1"
    from cowork.views import team_status

    assert "git checkout main" in team_status(team.ws, team.store, team.settings)["checkout"]  # and `cowork status`
    # following the advice brings the merge in and keeps the edit
    git("checkout", "-q", "main", cwd=team.ws.root)
    assert (team.ws.root / "feature.py").exists() and "unsaved" in (team.ws.root / "README.md").read_text()
    assert team_status(team.ws, team.store, team.settings)["checkout"] is None


def test_checkout_that_would_lose_an_untracked_file_or_is_elsewhere_is_not_touched(team):
    team.lane("t1", "a", {"notes.txt": "from the lane\n"})
    (team.ws.root / "notes.txt").write_text("my untracked notes\n")
    res = merge_lane(team.ws, team.store, team.settings, "t1", "a", role="dev", holder="r")
    assert res.status == "merged" and (team.ws.root / "notes.txt").read_text() == "my untracked notes\n"
    assert current_branch(team.ws.root) is None and "git checkout main" in res.notes[0]

    (team.ws.root / "notes.txt").unlink()
    git("checkout", "-q", "-b", "mine", "main", cwd=team.ws.root)
    team.lane("t1", "b", {"b.txt": "b\n"})
    res = merge_lane(team.ws, team.store, team.settings, "t1", "b", role="dev", holder="r")
    assert res.status == "merged" and res.notes == [] and current_branch(team.ws.root) == "mine"
    assert not (team.ws.root / "b.txt").exists()


# -- revert ---------------------------------------------------------------------------------------------------------


def test_revert_a_lane_then_the_rest_of_its_task(team):
    for name in ("a", "b", "c"):
        team.lane("t1", name, {f"{name}.txt": f"{name}\n"})
        enqueue(team.store, "t1", name)
    merged = {r.lane: r.commit for r in process_queue(team.ws, team.store, team.settings, holder="r")}
    assert len(merged) == 3

    res = revert(team.ws, team.store, team.settings, "t1/b", by="human:ada")
    assert res.status == "reverted" and res.reverted == [merged["b"]] and team.main() == res.commit
    files = git("ls-tree", "--name-only", "main", cwd=team.ws.root).splitlines()
    assert "b.txt" not in files and {"a.txt", "c.txt"} <= set(files)
    trailers = read_trailers(git("log", "-1", "--format=%B", "main", cwd=team.ws.root), cwd=team.ws.root)
    assert ("Cowork-Revert-Of", merged["b"]) in trailers and ("Cowork-By", "human:ada") in trailers
    assert not (team.ws.root / "b.txt").exists()  # the clean checkout followed
    with pytest.raises(BadInput, match="already reverted"):
        revert(team.ws, team.store, team.settings, "t1/b", by="human:ada")
    states = {r["id"]: r["state"] for r in team.store.all("SELECT id, state FROM lanes WHERE task_id='t1'")}
    assert states == {"a": "merged", "b": "reverted", "c": "merged"}  # lanes and status tell the truth
    [into] = [e for e in team.store.events(kinds=["lane.state"]) if e["data"]["state"] == "reverted"]
    assert into["lane_id"] == "b" and into["actor"] == "human:ada" and res.commit[:9] in into["summary"]

    res = revert(team.ws, team.store, team.settings, "t1", by="human:ada")
    assert res.reverted == [merged["c"], merged["a"]]  # newest first, b already done
    assert {r["state"] for r in team.store.all("SELECT state FROM lanes WHERE task_id='t1'")} == {"reverted"}
    assert set(git("ls-tree", "--name-only", "main", cwd=team.ws.root).splitlines()).isdisjoint({"a.txt", "c.txt"})
    ev = team.store.events(kinds=["merge.reverted"])
    assert [e["data"]["lanes"] for e in ev] == [["b"], ["c", "a"]] and ev[-1]["actor"] == "human:ada"
    for bad in ("t9", "t1/zzz", "a/b/c"):
        with pytest.raises(BadInput):
            revert(team.ws, team.store, team.settings, bad, by="human:ada")
    assert lock_row(team.store) is None


def test_revert_that_conflicts_with_later_work_changes_nothing(team):
    team.lane("t1", "a", {"shared.txt": numbered({3: "lane a"})})
    merge_lane(team.ws, team.store, team.settings, "t1", "a", role="dev", holder="r")
    before = team.commit_on_main("shared.txt", numbered({3: "human fixed lane a"}))
    res = revert(team.ws, team.store, team.settings, "t1/a", by="human:ada")
    assert res.status == "conflict" and res.conflicts == ["shared.txt"] and team.main() == before
    assert is_clean(team.ws.worktrees_dir / "_merge")
    no_markers(team)


# -- many mergers at once (chaos) ------------------------------------------------------------------------------------

# lanes 0-3 edit lines far apart (all merge); lanes 4-7 edit the same line (exactly one can merge)
CHAOS_LINES = {0: 2, 1: 10, 2: 30, 3: 37, 4: 20, 5: 20, 6: 20, 7: 20}

_MERGER = textwrap.dedent("""
    import json, sys
    from cowork.config import load_settings
    from cowork.gitops.merge import merge_next
    from cowork.store import Store
    from cowork.workspace import Workspace
    ws = Workspace(__import__("pathlib").Path(sys.argv[1]))
    store = Store(ws.db_path)
    res = merge_next(ws, store, load_settings(ws.config_path), holder=sys.argv[2], wait_s=120)
    print(json.dumps(res.as_dict() if res else None))
""")


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_chaos_eight_concurrent_mergers(team, how):
    for i, line in CHAOS_LINES.items():
        team.lane("t1", f"l{i}", {"shared.txt": numbered({line: f"edited by l{i}"}), f"own{i}.txt": f"{i}\n"})
    for i in CHAOS_LINES:
        enqueue(team.store, "t1", f"l{i}")

    results: list[dict] = []
    if how == "threads":
        def work(i: int) -> None:
            res = merge_next(team.ws, team.store, team.settings, holder=f"thread-{i}", wait_s=120)
            results.append(res.as_dict() if res else None)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join(180) for t in threads]
    else:
        procs = [subprocess.Popen([sys.executable, "-c", _MERGER, str(team.ws.root), f"proc-{i}"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))

    assert len(results) == 8 and all(results)
    merged = [r for r in results if r["status"] == "merged"]
    conflicts = [r for r in results if r["status"] == "conflict"]
    assert len(merged) == 5 and len(conflicts) == 3
    assert {r["lane"] for r in merged} >= {"l0", "l1", "l2", "l3"}
    assert all(r["conflicts"] == ["shared.txt"] and r["lane"] in {"l4", "l5", "l6", "l7"} for r in conflicts)
    no_markers(team)
    shared = team.show("shared.txt").splitlines()
    for r in merged:  # every successful merge's edits are on main
        i = int(r["lane"][1:])
        assert shared[CHAOS_LINES[i]] == f"edited by l{i}" and team.show(f"own{i}.txt") == str(i)
    for r in conflicts:
        assert f"own{r['lane'][1:]}.txt" not in git("ls-tree", "--name-only", "main", cwd=team.ws.root)
    merges = git("log", "--first-parent", "--merges", "--format=%H", "main", cwd=team.ws.root).splitlines()
    assert sorted(merges) == sorted(r["commit"] for r in merged)
    assert queue(team.store) == [] and lock_row(team.store) is None
    locked = team.store.events(kinds=["merge.locked"])
    assert len(locked) == 8 and len(team.store.events(kinds=["merge.unlocked"])) == 8
    assert is_clean(team.ws.root) and current_branch(team.ws.root) == "main" and head(team.ws.root) == team.main()


# -- the commands ------------------------------------------------------------------------------------------------------


def test_merge_queue_and_revert_commands(team, cli, monkeypatch):
    monkeypatch.chdir(team.ws.root)
    team.lane("t1", "a", {"a.txt": "a\n"})
    team.lane("t1", "b", {"shared.txt": numbered({5: "lane b"})})
    team.lane("t1", "c", {"c.txt": "c\n"})
    team.store.execute("UPDATE lanes SET state='running' WHERE id='c'")
    for name in ("a", "b"):
        enqueue(team.store, "t1", name)
    team.commit_on_main("shared.txt", numbered({5: "human"}))

    q = cli("queue", "--json")
    assert q.code == 0 and q.json()["holder"] is None
    assert [(e["lane"], e["state"]) for e in q.json()["queue"]] == [("a", "waiting"), ("b", "waiting")]
    text = cli("queue")
    assert "merge lock: free" in text.out and "t1/a" in text.out

    one = cli("merge", "--json")  # the oldest queued lane
    assert one.code == 0 and [(r["lane"], r["status"]) for r in one.json()] == [("a", "merged")]
    rest = cli("merge", "--all")
    assert rest.code == 1 and "conflict: t1/b was not merged" in rest.out and "shared.txt" in rest.out
    assert cli("merge").out.strip() == "the merge queue is empty"

    busy = cli("merge", "t1/c")
    assert busy.code == 2 and "running" in busy.err
    team.store.execute("UPDATE lanes SET state='failed', error='check `pytest` still failing' WHERE id='c'")
    failed = cli("merge", "t1/c")  # work that did not pass merges only when a human insists
    assert failed.code == 2 and "t1/c is failed: check `pytest` still failing" in failed.err
    assert "--force" in failed.err and "c.txt" not in git("ls-tree", "--name-only", "main", cwd=team.ws.root)
    team.store.execute("UPDATE lanes SET kind='review' WHERE id='c'")
    review = cli("merge", "t1/c", "--force")
    assert review.code == 2 and "review lane" in review.err
    team.store.execute("UPDATE lanes SET state='in-review', kind='work' WHERE id='c'")
    direct = cli("merge", "t1/c")
    assert direct.code == 0 and "merged t1/c (dev) into main" in direct.out
    team.store.execute("UPDATE lanes SET state='blocked' WHERE id='b'")
    forced = cli("merge", "t1/b", "--force")  # insisting does not get a conflict in, either
    assert forced.code == 1 and "conflict: t1/b was not merged" in forced.out
    assert cli("merge", "t1/c", "--all").code == 2 and cli("merge", "nolane").code == 2
    typo = cli("merge", "t1/nope")
    assert typo.code == 2 and "no such lane" in typo.err and "cowork lanes" in typo.err

    rv = cli("revert", "t1/a", "--json")
    assert rv.code == 0 and rv.json()["status"] == "reverted"
    assert "a.txt" not in git("ls-tree", "--name-only", "main", cwd=team.ws.root)
    who = team.store.events(kinds=["merge.reverted"])[-1]["actor"]
    assert who.startswith("human:")
    again = cli("revert", "t1/a")
    assert again.code == 2 and "already reverted" in again.err
    remerge = cli("merge", "t1/a", "--force")  # the branch is in the history: a merge would change nothing
    assert remerge.code == 2 and "reverted" in remerge.err and "Cowork-Revert-Of" in remerge.err
    assert cli("lanes", "--task", "t1", "--json").json()[0]["state"] == "reverted"
    assert cli("revert", "t1/zzz").code == 2
    assert cli("revert", "t1").code == 0  # what is left of the task: c
    assert "c.txt" not in git("ls-tree", "--name-only", "main", cwd=team.ws.root)


_HOLD = textwrap.dedent("""
    import sys, time
    from cowork.store import Store
    from cowork.gitops.lock import MergeLock
    lock = MergeLock(Store(sys.argv[1]), sys.argv[2], lease_s=60)
    print("HELD" if lock.acquire(timeout=5) else "BUSY", flush=True)
    time.sleep(float(sys.argv[3]))
    lock.release()
""")


def _holder(team: Team, name: str, hold_s: float) -> subprocess.Popen:
    """Another process that takes the merge lock (60 s lease), holds it `hold_s` seconds, then releases it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(team.ws.db_path), name, str(hold_s)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def test_queue_marks_a_gone_holder_and_merge_says_whom_it_waits_for(team, cli, monkeypatch):
    monkeypatch.chdir(team.ws.root)
    team.lane("t1", "a", {"a.txt": "a\n"})
    enqueue(team.store, "t1", "a")
    dead = _holder(team, "r-4242-dead", 600)
    try:
        q = cli("queue", "--json").json()
        assert (q["holder"], q["pid"], q["gone"]) == ("r-4242-dead", dead.pid, False)
        assert f"held by r-4242-dead (pid {dead.pid}" in cli("queue").out
    finally:
        dead.kill()
        dead.wait(timeout=10)
    q = cli("queue", "--json").json()
    assert q["holder"] == "r-4242-dead" and q["gone"] is True and q["expired"] is False
    text = cli("queue").out
    assert "holder gone" in text and f"process {dead.pid} has ended" in text and "lease" not in text

    live = _holder(team, "human:bob", 2.5)  # takes the dead holder's lock at once, lets go after 2.5 s
    try:
        one = cli("merge", "--json")
    finally:
        live.kill()
        live.wait(timeout=10)
    assert one.code == 0 and [(r["lane"], r["status"]) for r in one.json()] == [("a", "merged")]
    assert f"waiting for the merge lock: held by human:bob (pid {live.pid}" in one.err
    assert one.err.count("waiting for the merge lock") == 1
    reclaimed = [e["data"] for e in team.store.events(kinds=["merge.locked"]) if e["data"].get("reclaimed_from")]
    assert reclaimed == [{"lock": "merge", "holder": "human:bob", "lease_until": reclaimed[0]["lease_until"],
                          "reclaimed_from": "r-4242-dead", "reclaimed_because": f"its process {dead.pid} is gone"}]


def test_revert_in_a_team_with_no_commits_is_bad_input_not_a_git_error(tmp_path, cli, monkeypatch):
    """`cowork init --git-init` makes no commit: reverting there says so plainly, with exit 2."""
    monkeypatch.chdir(tmp_path)
    assert cli("init", "--git-init").code == 0
    res = cli("revert", "t1-x/docs")
    assert res.code == 2 and "has no commits yet" in res.err and "Traceback" not in res.err
    assert "bad revision" not in res.err


def test_a_move_cut_short_between_the_ref_and_the_checkout_is_finished_by_the_next_mover(team):
    """A merger killed after moving main but before fast-forwarding the user's clean checkout leaves it showing the
    merge undone (index and files at the old commit). The next move of main, under the lock, finishes it first."""
    from cowork.gitops import checkout

    old = team.main()
    tip = team.lane("t1", "a", {"a.txt": "a\n"})
    plan = checkout.before_move(team.ws, "main", old)  # what the merger does ...
    git("update-ref", "refs/heads/main", tip, old, cwd=team.ws.root)  # ... then it is killed after the move
    assert plan.clean and "a.txt" in git("status", "--porcelain", cwd=team.ws.root)  # the merge looks undone
    team.lane("t1", "b", {"b.txt": "b\n"})
    res = merge_lane(team.ws, team.store, team.settings, "t1", "b", role="dev", holder="r")
    assert res.status == "merged" and is_clean(team.ws.root) and current_branch(team.ws.root) == "main"
    assert (team.ws.root / "a.txt").read_text() == "a\n" and (team.ws.root / "b.txt").read_text() == "b\n"
    assert "was interrupted" in team.store.events(kinds=["checkout.repaired"])[-1]["summary"]

    # a checkout the user changed meanwhile is theirs: left as it is
    old = team.main()
    tip = team.lane("t1", "c", {"c.txt": "c\n"})
    checkout.before_move(team.ws, "main", old)
    git("update-ref", "refs/heads/main", tip, old, cwd=team.ws.root)
    (team.ws.root / "README.md").write_text("mine\n")
    assert checkout.finish_interrupted(team.ws, "main") == []
    assert (team.ws.root / "README.md").read_text() == "mine\n" and not (team.ws.root / "c.txt").exists()
