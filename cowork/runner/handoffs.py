"""Turning a lane's `finish` into its handoff packet, and writing it where the lane commits it."""
from __future__ import annotations

from pathlib import Path

from cowork import handoff
from cowork.redact import redact
from cowork.handoff import Cost, Meta, Packet


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


def read_own(worktree: Path, task: str, lane: str) -> Packet | None:
    """A packet a command-engine lane wrote itself, if it is valid for this lane."""
    path = Path(worktree) / packet_rel(task, lane)
    if not path.is_file():
        return None
    try:
        packet = handoff.load(path)
    except Exception:  # invalid: cowork writes its own instead
        return None
    return packet if packet.meta.task == task and packet.meta.lane == lane else None
