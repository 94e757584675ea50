"""Git helpers, lane worktrees, agent commit attribution and the merge lock, on real repositories and stores."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cowork.config import load_settings
from cowork.errors import BadInput, CoworkError
from cowork.gitops.git import (
    GitError, current_branch, git, head, human_identity, is_clean, read_trailers, ref_exists, with_trailers,
)
from cowork.gitops.lock import LockLost, LockTimeout, MergeLock, lock_row
from cowork.gitops.worktrees import (
    changed_files, commit_all, create_lane_worktree, diff_stat, lane_branch, remove_lane_worktree,
)
from cowork.store import Store
from cowork.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def make_team(path: Path, *, identity: bool = True, files: dict[str, str] | None = None) -> Workspace:
    """A git repo on main with a minimal cowork.toml and one commit (not `cowork init`: just what gitops needs)."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    if identity:
        git("config", "user.name", "Ada Human", cwd=path)
        git("config", "user.email", "ada@example.com", cwd=path)
    git("config", "commit.gpgsign", "false", cwd=path)
    (path / "cowork.toml").write_text('name = "test"\n')
    for name, text in (files or {"README.md": "# test\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    env = {} if identity else {"GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.com",
                               "GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.com"}
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path, env=env)
    return Workspace(path.resolve())


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return make_team(tmp_path / "repo")


@pytest.fixture
def store(ws) -> Store:
    s = Store(ws.db_path)
    yield s
    s.close()


# -- git helper -------------------------------------------------------------------------------------------------


def test_git_error_carries_command_code_and_stderr(ws):
    with pytest.raises(GitError) as err:
        git("rev-parse", "--verify", "no-such-branch", cwd=ws.root)
    assert err.value.cmd == ["git", "rev-parse", "--verify", "no-such-branch"]
    assert err.value.returncode == 128
    assert "no-such-branch" in err.value.stderr or "fatal" in err.value.stderr
    assert git("rev-parse", "--verify", "no-such-branch", cwd=ws.root, check=False) == ""
    assert ref_exists(ws.root, "refs/heads/main") and not ref_exists(ws.root, "refs/heads/nope")
    assert current_branch(ws.root) == "main" and len(head(ws.root)) == 40


def test_git_ignores_a_leaked_git_dir(ws, tmp_path, monkeypatch):
    other = make_team(tmp_path / "other", files={"other.txt": "different history\n"})
    monkeypatch.setenv("GIT_DIR", str(other.root / ".git"))  # as inside a hook of another repository
    assert head(ws.root) == git("rev-parse", "HEAD", cwd=ws.root) != head(other.root)


def test_trailers_are_appended_and_merged(ws):
    text = with_trailers("Subject\n\nBody.\n\nCo-authored-by: X <x@example.com>\n",
                         {"Cowork-Task": "t1", "Cowork-Lane": "multi\nline"}, cwd=ws.root)
    assert read_trailers(text, cwd=ws.root) == [
        ("Co-authored-by", "X <x@example.com>"), ("Cowork-Task", "t1"), ("Cowork-Lane", "multi line")]


# -- worktrees ----------------------------------------------------------------------------------------------------


def test_lane_worktree_is_created_then_reused_without_losing_commits(ws):
    tip = head(ws.root)
    lt = create_lane_worktree(ws, "t1", "impl")
    assert lt.created and lt.branch == "cowork/t1/impl" == lane_branch("t1", "impl")
    assert lt.path == ws.worktrees_dir / "t1" / "impl" and lt.base_commit == tip
    assert current_branch(lt.path) == "cowork/t1/impl"
    (lt.path / "work.py").write_text("x = 1\n")
    sha = commit_all(lt.path, "add work", role="dev")

    # main moves on; the resumed lane keeps its branch, its commit and where it started
    (ws.root / "other.txt").write_text("o\n")
    git("add", "other.txt", cwd=ws.root)
    git("commit", "-q", "-m", "other", cwd=ws.root)
    again = create_lane_worktree(ws, "t1", "impl")
    assert not again.created and again.path == lt.path and again.base_commit == tip
    assert head(lt.path) == sha

    # the worktree directory vanished (a crash, a cleanup): it comes back with the branch's commits
    git("worktree", "remove", "--force", str(lt.path), cwd=ws.root)
    back = create_lane_worktree(ws, "t1", "impl")
    assert back.created and head(back.path) == sha and (back.path / "work.py").read_text() == "x = 1\n"

    # the user's checkout never sees any of it
    assert is_clean(ws.root) and (ws.state_dir / ".gitignore").read_text().strip().endswith("*")
    assert changed_files(ws, lt.branch, "main") == ["work.py"]
    assert "work.py" in diff_stat(ws, lt.branch, "main")


def test_commit_all_asks_the_index_only_when_add_is_not_conclusive(ws):
    lt = create_lane_worktree(ws, "t1", "idx")
    assert commit_all(lt.path, "nothing", role="dev") is None
    (lt.path / "README.md").write_text("staged then undone\n")
    git("add", "README.md", cwd=lt.path)
    # the file goes back to HEAD's text while the index still holds the change: `add` stages the undo
    (lt.path / "README.md").write_text(git("show", "HEAD:README.md", cwd=lt.path) + "\n")
    assert commit_all(lt.path, "undo", role="dev") is None and head(lt.path) == lt.base_commit
    (lt.path / "a.txt").write_text("a\n")
    git("add", "a.txt", cwd=lt.path)                       # staged earlier (by an agent's own `git add`)
    sha = commit_all(lt.path, "t: title\n\n# Summary\nbody", role="dev", trailers={"Cowork-Lane": "idx\nx"})
    assert sha == head(lt.path) and len(sha) == 40
    body = git("log", "-1", "--format=%B", cwd=lt.path)
    assert "# Summary" in body and body.rstrip().endswith("Cowork-Lane: idx x")
    assert git("log", "-1", "--format=%an", cwd=lt.path) == "dev (cowork)"


def test_lane_worktree_errors_are_clear(ws):
    with pytest.raises(BadInput, match="names no commit"):
        create_lane_worktree(ws, "t1", "a", base="no-such-branch")
    squatter = ws.worktrees_dir / "t1" / "b"
    squatter.mkdir(parents=True)
    (squatter / "note.txt").write_text("mine")
    with pytest.raises(CoworkError, match="not a git worktree"):
        create_lane_worktree(ws, "t1", "b")
    assert (squatter / "note.txt").read_text() == "mine"


def test_remove_lane_worktree_keeps_work(ws):
    lt = create_lane_worktree(ws, "t1", "impl")
    (lt.path / "a.txt").write_text("dirty\n")
    with pytest.raises(CoworkError, match="cannot remove"):
        remove_lane_worktree(ws, "t1", "impl")
    commit_all(lt.path, "a", role="dev")
    with pytest.raises(CoworkError, match="not on main"):
        remove_lane_worktree(ws, "t1", "impl", delete_branch=True)
    assert not lt.path.exists() and ref_exists(ws.root, "refs/heads/cowork/t1/impl")  # worktree gone, branch kept
    git("merge", "-q", "--no-edit", "cowork/t1/impl", cwd=ws.root)
    remove_lane_worktree(ws, "t1", "impl", delete_branch=True)
    assert not ref_exists(ws.root, "refs/heads/cowork/t1/impl") and not (ws.worktrees_dir / "t1").exists()


def test_parallel_lane_worktrees(ws):
    errors: list[BaseException] = []

    def make(i: int) -> None:
        try:
            lt = create_lane_worktree(ws, "t1", f"l{i}")
            (lt.path / f"f{i}.txt").write_text(str(i))
            commit_all(lt.path, f"f{i}", role="dev")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors
    assert all(changed_files(ws, f"cowork/t1/l{i}", "main") == [f"f{i}.txt"] for i in range(6))


# -- commit attribution ------------------------------------------------------------------------------------------


def _who(cwd, rev="HEAD") -> list[str]:
    return git("log", "-1", "--format=%an <%ae>%n%cn <%ce>", rev, cwd=cwd).splitlines()


def test_agent_commit_author_is_the_role_and_committer_the_human(ws):
    lt = create_lane_worktree(ws, "t1", "impl")
    assert commit_all(lt.path, "nothing yet", role="dev") is None
    (lt.path / "x.md").write_text("x\n")
    message = "# Add x\n\n## Why\nbecause\n"
    sha = commit_all(lt.path, message, role="dev", trailers={"Cowork-Task": "t1", "Cowork-Lane": "impl"})
    assert _who(lt.path, sha) == ["dev (cowork) <dev@cowork.local>", "Ada Human <ada@example.com>"]
    body = git("log", "-1", "--format=%B", sha, cwd=lt.path)
    assert body.startswith("# Add x\n\n## Why\nbecause")  # markdown headings are not stripped as comments
    assert read_trailers(body, cwd=lt.path) == [("Cowork-Task", "t1"), ("Cowork-Lane", "impl")]


def test_agent_commit_trailers_are_cowork_s_own_paragraph(ws):
    """An agent's summary may hold a markdown rule and "Key: value" lines of its own, even one posing as a cowork
    trailer: the commit's trailers, as git itself parses them, are exactly the ones cowork added."""
    lt = create_lane_worktree(ws, "t1", "impl")
    (lt.path / "y.md").write_text("y\n")
    message = "impl: add y\n\nDone.\n\n---\n\nStatus: done\nCowork-Lane: someone-else\n"
    sha = commit_all(lt.path, message, role="dev", trailers={"Cowork-Task": "t1", "Cowork-Lane": "impl"})
    parsed = git("log", "-1", "--format=%(trailers:only,unfold)", sha, cwd=lt.path).strip().splitlines()
    assert parsed == ["Cowork-Task: t1", "Cowork-Lane: impl"]
    body = git("log", "-1", "--format=%B", sha, cwd=lt.path)
    assert read_trailers(body, cwd=lt.path) == [("Cowork-Task", "t1"), ("Cowork-Lane", "impl")]
    assert "Status: done\nCowork-Lane: someone-else\n\nCowork-Task: t1" in body  # the agent's words kept as written


def test_agent_commit_without_any_git_identity_uses_cowork(tmp_path, monkeypatch):
    ws = make_team(tmp_path / "anon", identity=False)
    for var in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    assert human_identity(ws.root) is None
    lt = create_lane_worktree(ws, "t1", "impl")
    (lt.path / "x").write_text("x")
    sha = commit_all(lt.path, "x", role="reviewer")
    assert _who(lt.path, sha) == ["reviewer (cowork) <reviewer@cowork.local>", "cowork <cowork@cowork.local>"]


# -- the merge lock ----------------------------------------------------------------------------------------------


def test_lock_contention_between_threads_has_one_holder(ws, store):
    inside, peak, taken = [0], [0], []
    guard = threading.Lock()

    def worker(i: int) -> None:
        for _ in range(3):
            with MergeLock(store, f"w{i}", lease_s=5, wait_s=30):
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                taken.append(i)
                time.sleep(0.01)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert peak[0] == 1 and len(taken) == 12
    assert lock_row(store) is None
    kinds = [e["kind"] for e in store.events(kinds=["merge.locked", "merge.unlocked"])]
    assert kinds == ["merge.locked", "merge.unlocked"] * 12


def test_expired_lease_is_reclaimed_and_the_old_holder_knows(ws, store):
    a = MergeLock(store, "a", lease_s=0.3, heartbeat=False)
    b = MergeLock(store, "b", lease_s=5, heartbeat=False)
    assert a.acquire() and not b.acquire(timeout=0.05)
    with pytest.raises(LockTimeout, match="held by a"):
        with MergeLock(store, "c", wait_s=0.05):
            pass
    time.sleep(0.35)  # a stops renewing, as a dead holder would
    assert b.acquire(timeout=1)
    with pytest.raises(LockLost):
        a.heartbeat()
    assert a.release() is False and lock_row(store)["holder"] == "b"
    locked = store.events(kinds=["merge.locked"])[-1]
    assert locked["actor"] == "b" and locked["data"]["reclaimed_from"] == "a"
    assert b.release() is True and lock_row(store) is None


def test_heartbeat_keeps_the_lease(ws, store):
    with MergeLock(store, "a", lease_s=0.3) as a:
        time.sleep(1.0)  # three lease lengths: only the heartbeat thread keeps it
        assert not MergeLock(store, "b", heartbeat=False).acquire()
        a.check()
    assert lock_row(store) is None


_HOLDER = textwrap.dedent("""
    import json, sys, time
    from cowork.store import Store
    from cowork.gitops.lock import MergeLock
    db, name, rounds, hold, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    store = Store(db)
    for _ in range(rounds):
        lock = MergeLock(store, name, lease_s=float(sys.argv[6]), wait_s=60)
        with lock:
            start = time.time()
            if hold < 0:
                print("HELD", flush=True)
                time.sleep(600)
            time.sleep(hold)
            end = time.time()
        with open(out, "a") as f:
            f.write(json.dumps([name, start, end]) + "\\n")
""")


def _spawn(ws, name, rounds, hold, out, lease=5.0):
    return subprocess.Popen([sys.executable, "-c", _HOLDER, str(ws.db_path), name, str(rounds), str(hold), str(out),
                             str(lease)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_lock_contention_between_processes(ws, store, tmp_path):
    out = tmp_path / "intervals.jsonl"
    procs = [_spawn(ws, f"p{i}", 3, 0.02, out) for i in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    spans = sorted((s, e) for _, s, e in map(json.loads, out.read_text().splitlines()))
    assert len(spans) == 12
    assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:]))  # never two holders


def test_a_killed_holders_lock_is_reclaimed(ws, store, tmp_path):
    proc = _spawn(ws, "doomed", 1, -1, tmp_path / "x", lease=0.5)
    try:
        assert proc.stdout.readline().strip() == "HELD"
        assert not MergeLock(store, "next", heartbeat=False).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    nxt = MergeLock(store, "next", lease_s=5)
    assert nxt.acquire(timeout=5)
    assert store.events(kinds=["merge.locked"])[-1]["data"]["reclaimed_from"] == "doomed"
    nxt.release()


def test_a_killed_holders_lock_is_taken_at_once_not_after_its_lease(ws, store, tmp_path):
    """kill -9 of the holder: its process is gone from this host, so the next taker does not wait out the lease."""
    proc = _spawn(ws, "doomed", 1, -1, tmp_path / "x", lease=60)
    try:
        assert proc.stdout.readline().strip() == "HELD"
        assert lock_row(store)["gone"] is False and not MergeLock(store, "next", heartbeat=False).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    row = lock_row(store)
    assert row["holder"] == "doomed" and row["pid"] == proc.pid and row["gone"] and not row["expired"]
    nxt = MergeLock(store, "next", lease_s=5)
    assert nxt.acquire()  # one try: no waiting for the 60 s lease
    locked = store.events(kinds=["merge.locked"])[-1]
    assert locked["data"]["reclaimed_from"] == "doomed" and f"process {proc.pid} is gone" in locked["summary"]
    assert lock_row(store)["pid"] == os.getpid() and not lock_row(store)["gone"]
    nxt.release()


def test_only_a_holder_provably_gone_from_this_host_loses_the_lock_early(ws, store, tmp_path):
    from cowork.procs import start_token

    proc = _spawn(ws, "holder", 1, -1, tmp_path / "x", lease=60)
    try:
        assert proc.stdout.readline().strip() == "HELD"
        if start_token(proc.pid) is not None:
            # the pid is alive, but it is not the process that took the lock (another start): that one is gone
            real = store.scalar("SELECT proc_start FROM locks WHERE name='merge'")
            store.execute("UPDATE locks SET proc_start='another-boot:1' WHERE name='merge'")
            assert lock_row(store)["gone"]
            store.execute("UPDATE locks SET proc_start=? WHERE name='merge'", (real,))
            assert not lock_row(store)["gone"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # a holder on another host: its process cannot be seen from here, so only its lease frees the lock
    store.execute("UPDATE locks SET host='elsewhere' WHERE name='merge'")
    assert not lock_row(store)["gone"] and not MergeLock(store, "next", heartbeat=False).acquire()
    store.execute("UPDATE locks SET lease_until=0 WHERE name='merge'")
    assert MergeLock(store, "next", heartbeat=False).acquire()
    assert store.events(kinds=["merge.locked"])[-1]["data"]["reclaimed_because"] == "lease expired"


def test_a_lock_row_without_its_process_is_judged_by_its_runners_row(ws, store):
    """A row taken before locks recorded their process: a runner holder is known by its `runners` row."""
    import socket

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=30)
    store.execute("INSERT INTO runners(id, pid, host, started_at, heartbeat_at) VALUES ('r-old', ?, ?, 0, 0)",
                  (ended.pid, socket.gethostname()))
    store.execute("INSERT INTO locks(name, holder, token, acquired_at, lease_until) VALUES ('merge', 'r-old', 'x', ?, ?)",
                  (time.time(), time.time() + 60))
    assert lock_row(store)["gone"]
    store.execute("UPDATE locks SET holder='human:ann'")  # no runner row, no process recorded: only the lease tells
    assert not lock_row(store)["gone"] and not MergeLock(store, "next", heartbeat=False).acquire()


def test_a_waiting_taker_says_who_holds_the_lock(ws, store, tmp_path):
    proc = _spawn(ws, "slow", 1, 2.5, tmp_path / "x", lease=60)  # holds it 2.5 s, then releases
    try:
        deadline = time.monotonic() + 60
        while (lock_row(store) or {}).get("holder") != "slow":
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.02)
        seen: list[dict] = []
        nxt = MergeLock(store, "next", lease_s=5, on_wait=seen.append)
        assert nxt.acquire(timeout=60)
        nxt.release()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert [(s["holder"], s["pid"]) for s in seen] == [("slow", proc.pid)]  # told once, not on every retry
    (waited,) = store.events(kinds=["merge.lock_wait"])
    assert waited["actor"] == "next" and f"held by slow (pid {proc.pid}" in waited["summary"]


def test_settings_carry_merge_lease_and_check_timeout(ws):
    s = load_settings(ws.config_path)
    assert s.merge.target == "main" and s.merge.lease_s == 60 and s.merge.checks_timeout_s > 0
