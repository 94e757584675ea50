"""Skills: markdown know-how in roles/skills/*.md, given to the lanes whose role and goal they fit.

Front matter: `roles: [dev, reviewer]` (or `all`) and `triggers: [words]`. A skill applies to a lane when it names
the lane's role (or the role lists it in `skills:`) and one of its triggers appears in the goal, or it has none.
A role's own `skills:` are always given, triggers or not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cowork import frontmatter
from cowork.errors import ValidationFailed


@dataclass
class Skill:
    name: str
    text: str
    path: Path
    roles: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def load_skill(path: Path) -> Skill:
    """One skill file; a file without front matter applies to every role with no triggers."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("---"):
        doc, body, _ = frontmatter.split(text.lstrip(), str(path))
        data = doc.data or {}
    else:
        data, body = {}, text
    return Skill(name=str(data.get("name") or path.stem), text=body.strip(), path=path,
                 roles=_as_list(data.get("roles", "all")), triggers=_as_list(data.get("triggers")))


def load_skills(skills_dir: Path) -> list[Skill]:
    """Every skill in `skills_dir`, by name. Files with broken front matter are skipped (see `problems`)."""
    out = []
    for path in sorted(skills_dir.glob("*.md")) if skills_dir.is_dir() else []:
        try:
            out.append(load_skill(path))
        except ValidationFailed:
            continue
    return out


def _triggered(skill: Skill, goal: str) -> bool:
    if not skill.triggers:
        return True
    low = goal.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(t.lower())}", low) for t in skill.triggers if t.strip())


def for_lane(ws, role, goal: str) -> list[Skill]:
    """The skills a lane of `role` working on `goal` gets, in name order."""
    out = []
    for skill in load_skills(ws.skills_dir):
        if skill.name in (role.skills or []):
            out.append(skill)
        elif ("all" in skill.roles or role.name in skill.roles) and _triggered(skill, goal):
            out.append(skill)
    return sorted(out, key=lambda s: s.name)
