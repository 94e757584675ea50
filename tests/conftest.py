"""Shared fixtures: an isolated HOME and environment for every test, real git repositories, the CLI in-process."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# before anything imports litellm: its price map stays the bundled one, no test fetches it from the internet
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

ROOT = Path(__file__).resolve().parents[1]
COWORK_BIN = ROOT / ".venv" / "bin" / "cowork"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """A fresh HOME per test, no COWORK_* variables, and no git config from the machine."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in list(os.environ):
        if key.startswith("COWORK_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _no_runner_left(tmp_path):
    """A detached runner a test started (`--detach`, `resume --detach`) never outlives it, even when the test fails
    before its task ends: it is stopped as a user would stop it (SIGTERM, then SIGKILL)."""
    yield
    import signal
    import time

    mine = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cowork.runner" in argv and any(str(tmp_path).encode() in a for a in argv):
            mine.append(int(proc.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while mine and time.monotonic() < deadline:
            mine = [p for p in mine if Path(f"/proc/{p}").exists() and _not_zombie(p)]
            time.sleep(0.05)


def _not_zombie(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # our child (start_detached from the test's process): reap it
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def git(cwd: Path | str, *args: str) -> str:
    """Run git in `cwd`, failing the test with git's message if it fails."""
    proc = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout.strip()


def make_repo(path: Path) -> Path:
    """A real git repository on branch main with a local identity and one commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test Person")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    (path / "README.md").write_text("# test repo\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository (not yet a team) at tmp_path/repo."""
    return make_repo(tmp_path / "repo")


@pytest.fixture
def team(repo, monkeypatch):
    """`cowork init` run in a fresh repository; the current directory is its root. Returns the Workspace."""
    from cowork.init import init_team
    from cowork.workspace import Workspace

    init_team(repo)
    monkeypatch.chdir(repo)
    return Workspace(repo.resolve())


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run `cowork ARGS...` in-process through cowork.cli.app.main; returns CliResult(code, out, err)."""
    from cowork.cli.app import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def server():
    """A scripted OpenAI-compatible model server on 127.0.0.1 (tests/support/scripted_server.py), stopped after."""
    from tests.support.scripted_server import ScriptedServer

    with ScriptedServer() as s:
        yield s
