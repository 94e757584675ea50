"""Real lanes for gateway tests: a git repo that is a team, a real store, real worktrees, real lane rows.

`TeamEnv(tmp_path, roles={...}, toml="...")` builds the team; `env.gateway("dev", lane="l1")` adds the lane (a
task row, a lane row in state running, a git worktree on its own branch) and returns a Gateway for it.
"""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import yaml

from cowork.config import load_settings
from cowork.roles import load_roles
from cowork.store import Store
from cowork.store import lanes as lanes_db
from cowork.tools.gateway import Gateway, LaneCtx
from cowork.workspace import Workspace


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


class TeamEnv:
    """A team repository with roles given as dicts (written to roles/*.yaml) and extra cowork.toml text."""

    def __init__(self, tmp_path: Path, roles: dict[str, dict], toml: str = ""):
        self.root = tmp_path / "repo"
        self.root.mkdir(parents=True)
        git(self.root, "init", "-q", "-b", "main")
        git(self.root, "config", "user.name", "Test Person")
        git(self.root, "config", "user.email", "test@example.com")
        (self.root / "cowork.toml").write_text('name = "t"\n' + textwrap.dedent(toml))
        (self.root / "roles").mkdir()
        for name, data in roles.items():
            body = {"name": name, "mandate": f"The {name} role does {name} work.", **data}
            (self.root / "roles" / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
        (self.root / ".gitignore").write_text(".cowork/\n")
        (self.root / "README.md").write_text("# repo\n")
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", "init")
        self.ws = Workspace(self.root)
        self.store = Store(self.ws.db_path)
        self.reload()

    def reload(self) -> None:
        self.settings = load_settings(self.ws.config_path)
        self.roles = load_roles(self.ws.roles_dir, self.root, set(self.settings.mcp))

    def new_store(self) -> Store:
        """Another connection to the same database, as another process would have."""
        return Store(self.ws.db_path)

    def add_lane(self, role: str, lane: str = "l1", task: str = "t1", *, state: str = "running", depth: int = 0,
                 kind: str = "work", parent: str | None = None) -> Path:
        if lanes_db.get_task(self.store, task) is None:
            lanes_db.create_task(self.store, task, f"task {task}", state="running")
        if lanes_db.get_lane(self.store, task, lane) is None:
            lanes_db.add_lane(self.store, task, lane, role, f"goal of {lane}", kind=kind, depth=depth,
                              parent_lane=parent)
        path = self.ws.worktrees_dir / task / lane
        if not path.exists():
            git(self.root, "worktree", "add", "-q", "-b", f"cowork/{task}/{lane}", str(path), "main")
        base = git(path, "rev-parse", "HEAD")
        lanes_db.update_lane(self.store, task, lane, worktree=str(path), base_commit=base)
        if state != "queued":
            lanes_db.set_lane_state(self.store, task, lane, state)
        return path

    def ctx(self, role: str, lane: str = "l1", task: str = "t1", *, store: Store | None = None, **kw) -> LaneCtx:
        path = self.add_lane(role, lane, task, **kw)
        row = lanes_db.get_lane(self.store, task, lane)
        return LaneCtx(ws=self.ws, store=store or self.store, settings=self.settings, roles=self.roles,
                       role=self.roles[role], task_id=task, lane_id=lane, worktree=path, depth=row["depth"],
                       kind=row["kind"])

    def gateway(self, role: str, lane: str = "l1", task: str = "t1", *, store: Store | None = None,
                poll_s: float = 0.02, **kw) -> Gateway:
        g = Gateway(self.ctx(role, lane, task, store=store, **kw))
        g.poll_s = poll_s
        return g

    def events(self, kind: str | None = None, **filters) -> list[dict]:
        return self.store.events(kinds=[kind] if kind else None, limit=100_000, **filters)

    def dump_text(self) -> str:
        """Every text column of every table, for leak checks."""
        out = []
        for (table,) in self.store.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            for row in self.store.all(f"SELECT * FROM {table}"):
                out += [str(v) for v in row.values() if isinstance(v, (str, bytes))]
        return "\n".join(out)
