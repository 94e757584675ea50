"""Telling processes apart where there is no /proc (macOS, BSD): `ps` answers instead, so a runner killed with
SIGKILL still has its leftover commands stopped by the next one, and a reused pid is still never touched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cowork import procs


@pytest.fixture(params=["proc", "ps"])
def source(request, tmp_path, monkeypatch):
    """Each test runs against /proc and against `ps`, as on a system without /proc."""
    if request.param == "ps":
        monkeypatch.setattr(procs, "PROC", str(tmp_path / "no-proc"))
    return request.param


def test_a_process_is_known_by_its_start(source):
    me = procs.start_token(os.getpid())
    assert me is not None and me == procs.start_token(os.getpid())
    assert me.startswith("ps:") == (source == "ps")
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert procs.pid_alive(child.pid) and procs.start_token(child.pid) is not None
        child.kill()
        time.sleep(0.2)  # killed, not reaped: a zombie counts as dead
        assert not procs.pid_alive(child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert not procs.pid_alive(child.pid) and procs.start_token(child.pid) is None


def test_a_dead_runners_commands_are_stopped_and_a_live_ones_kept(source, tmp_path):
    state = tmp_path / "state"
    (state / "procs").mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    left = subprocess.Popen(["sleep", "31.3"], start_new_session=True)  # a check its runner left behind
    kept = subprocess.Popen(["sleep", "31.4"], start_new_session=True)  # one whose runner (this process) lives
    try:
        for proc, owner in ((left, gone.pid), (kept, os.getpid())):
            (state / "procs" / f"{proc.pid}.json").write_text(json.dumps({
                "pgid": proc.pid, "start": procs.start_token(proc.pid), "owner": owner,
                "owner_start": procs.start_token(owner) or "gone", "what": f"sleep of {owner}"}))
        stopped = procs.stop_orphans(state)
        assert stopped == [f"sleep of {gone.pid} (process group {left.pid})"]
        assert left.wait(timeout=10) == -9 and kept.poll() is None
        assert sorted(p.name for p in (state / "procs").iterdir()) == [f"{kept.pid}.json"]
    finally:
        for proc in (left, kept):
            proc.kill()
            proc.wait(timeout=10)


def test_a_reused_pid_is_never_killed(source, tmp_path):
    """A note whose process group leader is not the process noted (another start time) is dropped, not acted on."""
    state = tmp_path / "state"
    (state / "procs").mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    other = subprocess.Popen(["sleep", "31.5"], start_new_session=True)
    try:
        (state / "procs" / f"{other.pid}.json").write_text(json.dumps({
            "pgid": other.pid, "start": "ps:Thu Jan  1 00:00:00 1970", "owner": gone.pid, "owner_start": "x",
            "what": "an old check"}))
        assert procs.stop_orphans(state) == [] and other.poll() is None
        assert not list((state / "procs").iterdir())
    finally:
        other.kill()
        other.wait(timeout=10)
