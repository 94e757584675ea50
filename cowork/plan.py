"""Plans: the lanes of a task as a DAG, written as markdown with one fenced YAML block of lanes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cowork import frontmatter
from cowork.errors import Problem, ValidationFailed
from cowork.yamlpos import Located, duplicate_key_problems, dump_yaml, load_yaml_text, pydantic_problems

SCHEMA = "plan/v1"
LANE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_BLOCK = re.compile(r"^```ya?ml\s*$")


class LaneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    role: str
    goal: str
    depends_on: list[str] = Field(default_factory=list)
    checks: list[str] | None = None


class PlanMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cowork: Literal["plan/v1"] = SCHEMA
    task: str | None = None
    title: str


class Plan(BaseModel):
    meta: PlanMeta
    lanes: list[LaneSpec]
    notes: str = ""

    def lane(self, lane_id: str) -> LaneSpec:
        return next(lane for lane in self.lanes if lane.id == lane_id)

    def order(self) -> list[str]:
        """Lane ids in a dependency-respecting order (the plan must be valid)."""
        done: list[str] = []
        pending = [lane.id for lane in self.lanes]
        while pending:
            for lid in pending:
                if all(d in done for d in self.lane(lid).depends_on):
                    done.append(lid)
                    pending.remove(lid)
                    break
            else:  # pragma: no cover - validate() rejects cycles
                raise ValueError("cycle")
        return done


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in graph.get(n, []):
            if d not in graph:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if not state.get(d):
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for node in graph:
        if not state.get(node):
            found = visit(node)
            if found:
                return found
    return None


def validate_lanes(lanes: list[LaneSpec], doc: Located | None, roles: set[str] | None, prefix: tuple = ("lanes",),
                   file: str = "<plan>") -> list[Problem]:
    """Every problem with a list of lanes: ids, roles, dependencies and cycles."""

    def prob(path: tuple, msg: str, hint: str | None = None) -> Problem:
        return doc.problem(prefix + path, msg, hint) if doc else Problem(msg, file=file,
                                                                         field=".".join(map(str, prefix + path)), hint=hint)

    problems = []
    seen: dict[str, int] = {}
    if not lanes:
        problems.append(prob((), "a plan needs at least one lane"))
    for i, lane in enumerate(lanes):
        if not LANE_ID.match(lane.id):
            problems.append(prob((i, "id"), f"lane id '{lane.id}' is not valid",
                                 "use lower-case letters, digits and '-', at most 40 characters"))
        if lane.id in seen:
            problems.append(prob((i, "id"), f"duplicate lane id '{lane.id}' (also lane #{seen[lane.id] + 1})"))
        seen.setdefault(lane.id, i)
        if roles is not None and lane.role not in roles:
            problems.append(prob((i, "role"), f"unknown role '{lane.role}'", "known roles: " + ", ".join(sorted(roles))))
        if not lane.goal.strip():
            problems.append(prob((i, "goal"), "goal is empty"))
    ids = {lane.id for lane in lanes}
    for i, lane in enumerate(lanes):
        for j, dep in enumerate(lane.depends_on):
            if dep not in ids:
                problems.append(prob((i, "depends_on", j), f"lane '{lane.id}' depends on unknown lane '{dep}'"))
            elif dep == lane.id:
                problems.append(prob((i, "depends_on", j), f"lane '{lane.id}' depends on itself"))
    cycle = find_cycle({lane.id: [d for d in lane.depends_on if d != lane.id] for lane in lanes})
    if cycle:
        idx = next(i for i, lane in enumerate(lanes) if lane.id == cycle[0])
        problems.append(prob((idx, "depends_on"), "dependency cycle: " + " -> ".join(cycle),
                             "remove one of these dependencies"))
    return problems


FRONT_HINT = "start the file with a line '---', then `title: ...`, then '---'; the lanes follow in a ```yaml block"


def parse(text: str, file: str = "<plan>", roles: set[str] | None = None) -> Plan:
    """Parse and validate a plan file.

    Args:
        roles: known role names; None skips the role check.

    Raises:
        ValidationFailed: every problem, with file and line.
    """
    try:
        front, body, body_line = frontmatter.split(text, file)
    except ValidationFailed as exc:  # say what a plan's front matter holds: a hand-written plan starts here
        raise ValidationFailed([Problem(**{**p.as_dict(), "hint": FRONT_HINT})
                                if p.message == "missing YAML front matter" else p for p in exc.problems]) from None
    version = _version_problems(front)
    twice = duplicate_key_problems(front)  # YAML would keep the last value without a word
    try:
        meta = PlanMeta.model_validate(front.data)
    except ValidationError as exc:
        problems = pydantic_problems(exc, front)
        if version:  # said once, in our words, not as pydantic's "Input should be 'plan/v1'"
            problems = version + [p for p in problems if p.field != "cowork"]
        raise ValidationFailed(twice + problems) from None
    if twice:
        raise ValidationFailed(twice)
    lines = body.splitlines()
    start = next((i for i, line in enumerate(lines) if _BLOCK.match(line.strip())), None)
    if start is None:
        raise ValidationFailed([Problem("no ```yaml block with the lanes", file=file, line=body_line,
                                        hint="add a fenced ```yaml block with `lanes:`, each lane an `id`, a `role` "
                                             "and a `goal` (and `depends_on`), as in the README's hand-written plan")])
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
    if end is None:
        raise ValidationFailed([Problem("the ```yaml block is not closed", file=file, line=body_line + start)])
    doc = load_yaml_text("\n".join(lines[start + 1:end]), file, line_offset=body_line + start)
    data = doc.data
    if not isinstance(data, dict) or "lanes" not in data:
        raise ValidationFailed([Problem("the yaml block must have a `lanes:` list", file=file, line=body_line + start + 1)])
    extra = [k for k in data if k != "lanes"]
    if extra:
        raise ValidationFailed([doc.problem((extra[0],), f"unknown key '{extra[0]}'", "the block holds only `lanes:`")])
    if not isinstance(data["lanes"], list):
        raise ValidationFailed([doc.problem(("lanes",), "`lanes` must be a list")])
    lanes, problems = [], duplicate_key_problems(doc)
    for i, raw in enumerate(data["lanes"]):
        try:
            lanes.append(LaneSpec.model_validate(raw))
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, doc, prefix=("lanes", i)))
    if not problems:
        problems = validate_lanes(lanes, doc, roles, file=file)
    if problems:
        raise ValidationFailed(problems)
    notes = "\n".join(lines[end + 1:]).strip()
    return Plan(meta=meta, lanes=lanes, notes=notes)


def _version_problems(front: Located) -> list[Problem]:
    """The plan format named in `cowork:` must be one this cowork reads: a plan written for another format is refused,
    not read as if it were this one."""
    version = front.data.get("cowork", SCHEMA)
    if version == SCHEMA:
        return []
    return [front.problem(("cowork",), f"unknown plan format '{version}'; this version of cowork reads {SCHEMA}",
                          f"set `cowork: {SCHEMA}`, or upgrade cowork if a newer one wrote this plan")]


def load(path: Path, roles: set[str] | None = None, display: str | None = None) -> Plan:
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationFailed([Problem("file not found", file=display)]) from None
    return parse(text, display, roles)


def render(plan: Plan) -> str:
    """A plan as reviewable markdown: a table for people, the yaml block for cowork."""
    rows = ["| lane | role | depends on | goal |", "| --- | --- | --- | --- |"]
    for lane in plan.lanes:
        goal = " ".join(lane.goal.split()).replace("|", "\\|")
        rows.append(f"| {lane.id} | {lane.role} | {', '.join(lane.depends_on) or '-'} | {goal} |")
    lanes = [lane.model_dump(exclude_none=True, exclude_defaults=False) for lane in plan.lanes]
    for lane in lanes:
        if not lane.get("depends_on"):
            lane.pop("depends_on", None)
    block = dump_yaml({"lanes": lanes})
    body = f"# {plan.meta.title}\n\n" + "\n".join(rows) + f"\n\n```yaml\n{block}```\n"
    if plan.notes:
        body += f"\n{plan.notes.strip()}\n"
    return frontmatter.join(plan.meta.model_dump(exclude_none=True), body)
