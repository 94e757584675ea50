"""Turning a lane's `finish` into its handoff packet, and writing it where the lane commits it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cowork import handoff, packets
from cowork.errors import Problem
from cowork.handoff import Cost, Meta, Packet
from cowork.redact import redact
from cowork.workspace import Workspace


def packet_rel(task: str, lane: str) -> str:
    return f"handoffs/{task}/{lane}.md"


def next_role(store, lane_row: dict, role) -> str:
    """Who reads the packet next: the reviewer, else the role of a lane that depends on this one, else human."""
    if lane_row.get("kind") == "review":
        return "human"
    if getattr(role, "review_by", None):
        return role.review_by
    for r in store.all("SELECT role, depends_on FROM lanes WHERE task_id=?", (lane_row["task_id"],)):
        if f'"{lane_row["id"]}"' in (r["depends_on"] or ""):
            return r["role"]
    return "human"


def from_finish(lane_row: dict, role_name: str, finish: dict, *, to: str, status: str | None = None,
                skills: list[str] = (), base: str | None = None) -> Packet:
    """The packet of a lane from its `finish` arguments and its row (branch, base, cost)."""
    goal = " ".join(lane_row["goal"].split())
    title = str(finish.get("title") or (goal if len(goal) <= 80 else goal[:79].rstrip() + "…"))
    meta = Meta(task=lane_row["task_id"], lane=lane_row["id"], **{"from": role_name}, to=to,
                status=status or finish.get("status", "done"), branch=lane_row.get("branch"),
                base=(base or lane_row.get("base_commit") or "")[:12] or None,
                cost=Cost(tokens_in=lane_row.get("tokens_in") or 0, tokens_out=lane_row.get("tokens_out") or 0,
                          usd=round(float(lane_row.get("usd") or 0.0), 6)),
                skills=list(skills))
    sections = {
        "Summary": str(finish.get("summary") or "").strip() or "(no summary given)",
        "Checklist": handoff.checklist(finish.get("checklist") or []),
        "Artifacts": handoff.bullets(finish.get("artifacts")),
        "Decisions": handoff.bullets(finish.get("decisions")),
        "Open risks": handoff.bullets(finish.get("open_risks")),
        "Next": handoff.bullets(finish.get("next")),
    }
    return Packet(meta=meta, title=title, sections=sections)


def write(worktree: Path, packet: Packet) -> Path:
    """Write the packet into the lane's worktree. Returns its path."""
    path = Path(worktree) / packet_rel(packet.meta.task, packet.meta.lane)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(handoff.render(packet)), encoding="utf-8")  # packets are committed
    return path


@dataclass
class OwnPacket:
    """What a command-engine lane left at its packet's path: a valid packet, or the problems that reject it."""

    rel: str
    packet: Packet | None = None
    problems: list[Problem] = field(default_factory=list)


def read_own(worktree: Path, task: str, lane: str, *, last: str | None = None) -> OwnPacket | None:
    """The packet a command-engine lane wrote itself, checked as `cowork handoff validate` checks it (its task and
    lane must be this lane's); None when it wrote none. `last`: the text of the packet the lane's previous run
    committed (it is still in the worktree after a run that wrote none, and tells of that earlier run)."""
    path = Path(worktree) / packet_rel(task, lane)
    if not path.is_file():
        return None
    if last is not None and path.read_text(encoding="utf-8", errors="replace") == last:
        return None
    own = OwnPacket(packet_rel(task, lane))
    own.problems = packets.check_file(Workspace(Path(worktree).resolve()), path)
    if not own.problems:
        own.packet = handoff.load(path, own.rel)
    return own


def set_aside(store, lane_row: dict, own: OwnPacket, commit: str, why: str | None = None) -> str:
    """Record that the lane's own packet was replaced by one cowork built: `handoff.rejected` with the file, the commit
    that keeps its text and its problems (or `why`, when it was valid but not used). Returns the item for the built
    packet's Open risks."""
    task, lane, short = lane_row["task_id"], lane_row["id"], commit[:12]
    problems = [_problem_line(p) for p in own.problems]
    verdict = f"was not used: {why}" if why else "was rejected"
    listed = "" if why else f" ({len(problems)} problem{'s' if len(problems) != 1 else ''}: {'; '.join(problems)})"
    store.event("handoff.rejected", f"{task}/{lane}: the agent's packet {own.rel} {verdict}{listed}; cowork wrote "
                f"one from the command's output and diff, and the agent's text is in commit {short}",
                actor="runner", task=task, lane=lane, role=lane_row["role"],
                data={"path": own.rel, "commit": commit, "reason": why or "invalid",
                      "problems": [p.as_dict() for p in own.problems]})
    risk = (f"the agent's own packet {own.rel} {verdict}, so cowork wrote this one from the command's output and "
            f"diff; the agent's text is in commit {short} (`git show {short}:{own.rel}`)")
    return risk + "".join(f"\n  - {line}" for line in problems)


def _problem_line(p: Problem) -> str:
    """A validation problem of a packet already named: its line, field, message and fix, on one line."""
    where = f"line {p.line}: " if p.line is not None else ""
    return f"{where}{p.field + ': ' if p.field else ''}{p.message}" + (f" (fix: {p.hint})" if p.hint else "")
