"""Handoff packets: markdown with YAML front matter, the single source of truth between agents and for reviewers."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cowork import frontmatter
from cowork.errors import Problem, ValidationFailed
from cowork.yamlpos import duplicate_key_problems, pydantic_problems

SCHEMA = "handoff/v1"
SECTIONS = ["Summary", "Checklist", "Artifacts", "Decisions", "Open risks", "Next"]
Status = Literal["done", "blocked", "needs-review", "failed"]
_CHECK = re.compile(r"^\s*[-*]\s+\[( |x|X)\]\s+(.*)$")


class Cost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0


class Meta(BaseModel):
    """The front matter of a packet."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cowork: Literal["handoff/v1"] = SCHEMA
    task: str
    lane: str
    from_: str = Field(alias="from")
    to: str | None = None
    status: Status
    branch: str | None = None
    base: str | None = None
    cost: Cost = Field(default_factory=Cost)
    skills: list[str] = Field(default_factory=list)


class Packet(BaseModel):
    """A handoff packet: front matter plus a title and the required sections (each kept as markdown text)."""

    meta: Meta
    title: str
    sections: dict[str, str] = Field(default_factory=dict)

    def section(self, name: str) -> str:
        return self.sections.get(name, "")

    def checklist(self) -> list[tuple[bool, str]]:
        """The Checklist section's items as (done, text)."""
        items = []
        for line in self.section("Checklist").splitlines():
            m = _CHECK.match(line)
            if m:
                items.append((m.group(1) != " ", m.group(2).strip()))
        return items


def bullets(items: list[str] | str | None) -> str:
    """Markdown bullets from a list (a string is kept as it is)."""
    if not items:
        return ""
    if isinstance(items, str):
        return items.strip()
    return "\n".join(f"- {str(i).strip()}" for i in items if str(i).strip())


def checklist(items: list) -> str:
    """Checklist markdown from [(done, text)] / [{"done":..,"item":..}] / ["[x] text"] items."""
    out = []
    for it in items or []:
        if isinstance(it, dict):
            done, text = bool(it.get("done")), str(it.get("item") or it.get("text") or "")
        elif isinstance(it, (list, tuple)):
            done, text = bool(it[0]), str(it[1])
        else:
            m = re.match(r"^\s*(?:[-*]\s+)?\[( |x|X)\]\s*(.*)$", str(it))
            done, text = (m.group(1) != " ", m.group(2)) if m else (False, str(it))
        text = " ".join(text.split())
        if text:
            out.append(f"- [{'x' if done else ' '}] {text}")
    return "\n".join(out)


def render(packet: Packet) -> str:
    """Stable, diff-friendly markdown for a packet."""
    front = packet.meta.model_dump(by_alias=True, exclude_none=True)
    if not front.get("skills"):
        front.pop("skills", None)
    parts = [f"# {packet.title.strip()}\n"]
    names = SECTIONS + [n for n in packet.sections if n not in SECTIONS]
    for name in names:
        text = packet.sections.get(name, "").strip("\n")
        parts.append(f"\n## {name}\n" + (f"{text}\n" if text else ""))
    return frontmatter.join(front, "".join(parts))


def parse(text: str, file: str = "<packet>") -> Packet:
    """Parse and validate a packet.

    Raises:
        ValidationFailed: front matter errors with their line (a key written twice among them), and every missing
            section.
    """
    doc, body, body_line = frontmatter.split(text, file)
    problems = duplicate_key_problems(doc)  # YAML would keep the last value without a word
    meta = None
    try:
        meta = Meta.model_validate(doc.data)
    except ValidationError as exc:
        # keep going: the body's problems are reported together with the front matter's
        problems += pydantic_problems(exc, doc, hints={"extra": "allowed fields: " + ", ".join(
            f.alias or n for n, f in Meta.model_fields.items())})
    title, found = frontmatter.sections(body)
    if not title:
        problems.append(Problem("missing '# Title' line after the front matter", file=file, line=body_line))
    body_end = body_line + max(0, len(body.splitlines()) - 1)
    for k, name in enumerate(SECTIONS):
        if name not in found:
            # point at where the section belongs: before the next required one present, else the end of the file
            after = next((found[n][1] for n in SECTIONS[k + 1:] if n in found), None)
            problems.append(Problem(f"missing required section '## {name}'", file=file,
                                    line=body_line + after if after is not None else body_end,
                                    hint="required sections, in order: " + ", ".join(SECTIONS)))
    if "Summary" in found and not found["Summary"][0].strip():
        problems.append(Problem("section '## Summary' is empty", file=file, line=body_line + found["Summary"][1]))
    if problems or meta is None:
        raise ValidationFailed(problems)
    return Packet(meta=meta, title=title or "", sections={k: v[0] for k, v in found.items()})


def load(path: Path, display: str | None = None) -> Packet:
    display = display or str(path)
    try:
        return parse(path.read_text(encoding="utf-8"), display)
    except FileNotFoundError:
        raise ValidationFailed([Problem("file not found", file=display)]) from None


def is_packet_path(path: Path | str) -> bool:
    """Whether a repo-relative path is a lane packet (handoffs/<task>/<lane>.md, not brief/plan/summary/README)."""
    parts = Path(path).parts
    return (len(parts) == 3 and parts[0] == "handoffs" and parts[2].endswith(".md")
            and parts[2] not in {"brief.md", "plan.md", "summary.md", "README.md"})
