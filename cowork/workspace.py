"""Where a team's files live: the repo root, its roles and handoffs, and the git-ignored runtime in .cowork/."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cowork.errors import NotATeam

CONFIG_NAME = "cowork.toml"


@dataclass(frozen=True)
class Workspace:
    """Paths of one team repository."""

    root: Path

    @classmethod
    def find(cls, start: Path | str | None = None) -> "Workspace":
        """The team containing `start` (default: $COWORK_ROOT or the current directory).

        Raises:
            NotATeam: when no parent directory holds a cowork.toml.
        """
        if start is None:
            start = os.environ.get("COWORK_ROOT") or Path.cwd()
        here = Path(start).resolve()
        for candidate in (here, *here.parents):
            if (candidate / CONFIG_NAME).is_file():
                return cls(candidate)
        raise NotATeam(str(here))

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def roles_dir(self) -> Path:
        return self.root / "roles"

    @property
    def skills_dir(self) -> Path:
        return self.root / "roles" / "skills"

    @property
    def handoffs_dir(self) -> Path:
        return self.root / "handoffs"

    @property
    def state_dir(self) -> Path:
        return self.root / ".cowork"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def worktrees_dir(self) -> Path:
        return self.state_dir / "worktrees"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def task_dir(self, task_id: str) -> Path:
        return self.handoffs_dir / task_id

    def rel(self, path: Path) -> str:
        """A path as the user sees it: relative to the repo root when inside it."""
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(path)
