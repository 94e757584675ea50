"""End to end: the real `cowork mc` in tmux beside a real detached runner driven by the scripted model server.

The test reads the screen with `tmux capture-pane`, pauses everything with `p` + Enter, sees the PAUSED banner and
the lanes held, resumes, and sees the lanes merge. tmux runs on a private socket that is always killed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowork.store import Store
from tests.support.scripted_server import delay, tool_call
from tests.support.team import DEV, PLANNER, WRITER, make_team

ROOT = Path(__file__).resolve().parents[1]
COWORK = ROOT / ".venv" / "bin" / "cowork"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


def finish(summary: str):
    return tool_call("finish", status="done", summary=summary, checklist=[{"item": summary, "done": True}])


@pytest.fixture
def scripted(tmp_path):
    """The scripted server as a subprocess: each lane's first reply takes 2 s, so there is time to pause."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"scripts": {
        "Goal: Write a.txt": [delay(2.0, tool_call("write_file", path="a.txt", content="a\n")), finish("a")],
        "Goal: Write b.txt": [delay(2.0, tool_call("write_file", path="b.txt", content="b\n")), finish("b")],
    }}))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.scripted_server", "--script", str(script)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY "), line
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)


class Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def __call__(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        return out.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "mc")

    def wait_for(self, predicate, what: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen was:\n{text}")
            time.sleep(0.2)


def lane_line(screen: str, lane: str) -> str:
    return next((line for line in screen.splitlines() if f"/{lane} " in line and "│" not in line), "")


def test_mission_control_in_tmux_pauses_a_running_task(tmp_path, scripted, monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("COWORK_ROOT", raising=False)
    root = make_team(tmp_path / "repo", scripted, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: Two lanes\n---\n```yaml\nlanes:\n"
                    "  - {id: a, role: dev, goal: Write a.txt}\n"
                    "  - {id: b, role: writer, goal: Write b.txt}\n```\n")
    store = Store(root / ".cowork" / "state.db")
    tmux = Tmux(f"cowork-test-{os.getpid()}")
    try:
        # mission control first, on an empty team; then the task starts beside it
        # A detached pane can start at 80x24 and grow a moment later, with COLUMNS/LINES left from the first size
        # (Textual believes them): wait for the real size and drop the stale variables.
        tmux("new-session", "-d", "-s", "mc", "-x", "160", "-y", "50",
             'while [ "$(stty size)" != "50 160" ]; do sleep 0.05; done; unset COLUMNS LINES; '
             f"{COWORK} mc -C {root} --poll 0.1; sleep 60")
        tmux.wait_for(lambda s: "cowork delegate" in s, "the empty state")
        assert tmux("display", "-p", "-t", "mc", "#{window_width}x#{window_height}").strip() == "160x50"
        run = subprocess.run([str(COWORK), "run", str(plan), "--yes", "--detach", "-C", str(root)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        task = store.scalar("SELECT id FROM tasks")
        tmux.wait_for(lambda s: "running" in lane_line(s, "a") and "running" in lane_line(s, "b"),
                      "both lanes running")

        tmux("send-keys", "-t", "mc", "p")
        tmux.wait_for(lambda s: "Pause all lanes?" in s, "the pause question")
        tmux("send-keys", "-t", "mc", "-l", "e2e freeze")
        tmux("send-keys", "-t", "mc", "Enter")
        screen = tmux.wait_for(lambda s: "PAUSED" in s, "the PAUSED banner")
        assert "e2e freeze" in screen
        flag = store.flag("pause")
        assert flag is not None and flag["value"]["reason"] == "e2e freeze"
        # the runner holds both lanes before their next step, and mission control shows it
        tmux.wait_for(lambda s: "paused" in lane_line(s, "a") and "paused" in lane_line(s, "b"),
                      "both lanes paused")
        assert not (root / "a.txt").exists()

        tmux("send-keys", "-t", "mc", "p")
        tmux.wait_for(lambda s: "Unpause all lanes?" in s, "the unpause question")
        tmux("send-keys", "-t", "mc", "Enter")
        screen = tmux.wait_for(lambda s: "merged" in lane_line(s, "a") and "merged" in lane_line(s, "b"),
                               "both lanes merged", timeout=90)
        assert "PAUSED" not in screen
        assert store.flag("pause") is None
        assert store.scalar("SELECT state FROM tasks WHERE id=?", (task,)) == "done"
        assert "merge.done" in screen  # the timeline saw the merges
    finally:
        tmux("kill-server")
        for row in store.all("SELECT pid FROM runners WHERE state='running'"):
            try:
                os.kill(row["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        store.close()
