"""The lane a tool runs for (LaneCtx) and what a tool returns (ToolResult). Re-exported by cowork.tools.gateway."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cowork.config import TeamSettings
from cowork.roles import Role, RoleSet
from cowork.store import Store
from cowork.workspace import Workspace


@dataclass
class LaneCtx:
    """Everything a tool needs to know about the lane calling it."""

    ws: Workspace
    store: Store
    settings: TeamSettings
    roles: RoleSet
    role: Role
    task_id: str
    lane_id: str
    worktree: Path
    depth: int = 0
    kind: str = "work"

    @property
    def actor(self) -> str:
        return self.role.name


@dataclass
class ToolResult:
    """A tool's answer. `content` goes back to the model as the tool message; `data` is for the engine."""

    ok: bool
    content: str
    data: dict | None = None
