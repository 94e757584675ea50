"""The packets of a team: finding them, the generated index, checking them (all, or changed since a git ref),
and writing a skeleton for a new lane."""
from __future__ import annotations

import re
from pathlib import Path

from cowork import frontmatter, handoff, plan
from cowork.errors import BadInput, Problem, ValidationFailed
from cowork.gitops.git import GitError, git, toplevel
from cowork.workspace import Workspace

TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
NOT_PACKETS = {"brief.md", "plan.md", "summary.md", "README.md"}


def packet_paths(ws: Workspace, task: str | None = None) -> list[Path]:
    """Every lane packet (handoffs/<task>/<lane>.md), sorted by task then lane."""
    if not ws.handoffs_dir.is_dir():
        return []
    dirs = [ws.task_dir(task)] if task else sorted(p for p in ws.handoffs_dir.iterdir() if p.is_dir())
    return [p for d in dirs if d.is_dir() for p in sorted(d.glob("*.md")) if p.name not in NOT_PACKETS]


def resolve(ws: Workspace, ref: str) -> Path:
    """A packet named by a path, or by TASK/LANE.

    Raises:
        BadInput: no such packet.
    """
    direct = Path(ref)
    for candidate in (direct, ws.root / direct):
        if candidate.is_file():
            return candidate
    parts = ref.strip("/").removesuffix(".md").split("/")
    if len(parts) == 2:
        path = ws.task_dir(parts[0]) / f"{parts[1]}.md"
        if path.is_file():
            return path
    raise BadInput(f"no handoff packet '{ref}'", hint="give a path or TASK/LANE; `cowork handoff list` shows them all")


def entry(ws: Workspace, path: Path) -> dict:
    """One row of the generated index; an invalid packet is listed with its problems instead of its fields."""
    rel = ws.rel(path)
    row: dict = {"path": rel, "task": path.parent.name, "lane": path.stem}
    try:
        packet = handoff.load(path, rel)
    except ValidationFailed as exc:
        return {**row, "valid": False, "problems": [p.as_dict() for p in exc.problems]}
    items = packet.checklist()
    return {**row, "valid": True, "task": packet.meta.task, "lane": packet.meta.lane, "from": packet.meta.from_,
            "to": packet.meta.to, "status": packet.meta.status, "title": packet.title,
            "checklist": {"done": sum(1 for d, _ in items if d), "total": len(items)}, "cost": packet.meta.cost.model_dump()}


def check_file(ws: Workspace, path: Path) -> list[Problem]:
    """Every problem with one file: a lane packet, or a plan.md (checked for shape only, not against roles)."""
    rel = ws.rel(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Problem("file not found", file=rel)]
    except UnicodeDecodeError:
        return [Problem("not UTF-8 text", file=rel)]
    try:
        if path.name == "plan.md":
            plan.parse(text, rel)
            return []
        packet = handoff.parse(text, rel)
    except ValidationFailed as exc:
        return exc.problems
    problems = []
    inside = path.resolve().parent.parent == ws.handoffs_dir.resolve()
    if inside:
        doc = frontmatter.split(text, rel)[0]
        if packet.meta.task != path.parent.name:
            problems.append(doc.problem(("task",), f"task '{packet.meta.task}' does not match the folder '{path.parent.name}'",
                                        f"packets live in handoffs/<task>/<lane>.md; set task: {path.parent.name}"))
        if packet.meta.lane != path.stem:
            problems.append(doc.problem(("lane",), f"lane '{packet.meta.lane}' does not match the file name '{path.name}'",
                                        f"each lane writes its own file; set lane: {path.stem}"))
    return problems


def _checkable(rel: str) -> bool:
    return handoff.is_packet_path(rel) or (rel.startswith("handoffs/") and rel.count("/") == 2
                                           and rel.endswith("/plan.md"))


def changed_since(ws: Workspace, ref: str) -> list[Path]:
    """Packets and plans changed on this branch since `ref` (`git diff REF...HEAD`), plus uncommitted ones.

    Raises:
        BadInput: `ref` is not a commit git knows.
    """
    top = toplevel(ws.root) or ws.root
    try:
        git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=top)
    except GitError:
        raise BadInput(f"unknown git ref '{ref}'", hint="fetch it first (e.g. `git fetch origin main`) or name a branch or commit") from None
    names = git("diff", "--name-only", "--no-renames", f"{ref}...HEAD", "--", cwd=top).splitlines()
    names += git("diff", "--name-only", "--no-renames", "HEAD", "--", cwd=top).splitlines()
    names += git("ls-files", "--others", "--exclude-standard", cwd=top).splitlines()
    out, seen = [], set()
    for name in names:
        path = (top / name).resolve()
        if path in seen or not path.is_file():
            continue  # deleted packets need no check
        seen.add(path)
        if _checkable(ws.rel(path)):
            out.append(path)
    return sorted(out)


def expand(ws: Workspace, paths: list[str]) -> list[Path]:
    """Files to check for the given paths: a directory means every packet and plan under it."""
    out = []
    for raw in paths:
        path = Path(raw) if Path(raw).exists() else ws.root / raw
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.md") if p.name not in {"brief.md", "summary.md", "README.md"})
        elif path.exists():
            out.append(path)
        else:
            raise BadInput(f"{raw}: no such file or directory")
    return out


def validate(ws: Workspace, paths: list[Path]) -> list[Problem]:
    problems = []
    for path in paths:
        problems += check_file(ws, path)
    return problems


def skeleton(task: str, lane: str, from_: str, to: str | None = None, status: str = "done",
             title: str | None = None) -> handoff.Packet:
    """A valid packet with placeholder text in every section, for a person or agent to fill in."""
    meta = handoff.Meta.model_validate({"task": task, "lane": lane, "from": from_, "to": to, "status": status,
                                        "branch": f"cowork/{task}/{lane}"})
    return handoff.Packet(meta=meta, title=title or f"{task}: {lane}", sections={
        "Summary": "TODO: what was done and why, in a few sentences.",
        "Checklist": "- [ ] TODO: one line per item of the goal; [x] when done, with a reason when deferred",
        "Artifacts": "- TODO: files, commits, tests, links",
        "Decisions": "- TODO: choices made and alternatives rejected",
        "Open risks": "- TODO: what could still go wrong; what was not verified",
        "Next": "- TODO: what the next lane or person should do",
    })


def write_new(ws: Workspace, task: str, lane: str, from_: str, to: str | None = None, status: str = "done",
              title: str | None = None, known_roles: set[str] | None = None) -> Path:
    """Write a skeleton packet at handoffs/<task>/<lane>.md, refusing to overwrite one.

    Raises:
        BadInput: bad ids, an unknown role, a bad status, or the packet exists.
    """
    if not TASK_ID.match(task):
        raise BadInput(f"task id '{task}' is not valid", hint="use letters, digits, '.', '-' or '_'")
    if not plan.LANE_ID.match(lane):
        raise BadInput(f"lane id '{lane}' is not valid", hint="use lower-case letters, digits and '-', at most 40 characters")
    if status not in handoff.Status.__args__:  # type: ignore[attr-defined]
        raise BadInput(f"status '{status}' is not valid", hint="one of: " + ", ".join(handoff.Status.__args__))  # type: ignore[attr-defined]
    if known_roles is not None:
        for flag, who in (("--from", from_), ("--to", to)):
            if who and who != "human" and who not in known_roles:
                raise BadInput(f"{flag}: unknown role '{who}'", hint="known roles: " + ", ".join(sorted(known_roles | {"human"})))
    path = ws.task_dir(task) / f"{lane}.md"
    if path.exists():
        raise BadInput(f"{ws.rel(path)} already exists", hint="edit it, or pick another lane name")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(handoff.render(skeleton(task, lane, from_, to, status, title)), encoding="utf-8")
    return path
