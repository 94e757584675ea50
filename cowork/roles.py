"""Roles: one YAML file per role in roles/, loaded into a typed model and validated with located errors."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from cowork.config import NoBoolNumbers
from cowork.errors import Problem, ValidationFailed
from cowork.yamlpos import Located, duplicate_key_problems, dump_yaml, load_yaml_file, pydantic_problems

# Tools every llm lane can be granted. MCP tools are written "server.tool" and checked against cowork.toml.
BUILTIN_TOOLS = {
    "read_file": "read a file in the lane's worktree",
    "write_file": "write a file in the lane's worktree",
    "list_files": "list files in the lane's worktree",
    "search": "search the worktree's files for text",
    "run": "run a shell command matching the role's run_allow",
    "git_diff": "show the lane's changes so far",
    "ask": "ask another role a question and wait for the answer",
    "tell": "post a note to a role or the whole team",
    "delegate": "add a lane for another role to this task",
    "inbox": "read messages that arrived for this lane",
}
# Actions that are not tools but can be forbidden (or granted) by name.
ACTIONS = {"merge", "approve", "unpause", "change_roles", "push"}
# Every lane always has `finish`; the planner gets `submit_plan`. Neither is listed in a role.
IMPLICIT_TOOLS = {"finish", "submit_plan", "answer"}

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class _Strict(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid")


class Approvals(_Strict):
    """Approval tiers by tool name; anything not listed falls back to cowork.toml policy, then `auto`."""

    auto: list[str] = Field(default_factory=list)
    notify: list[str] = Field(default_factory=list)
    block: list[str] = Field(default_factory=list)


class RoleBudget(_Strict):
    usd_per_task: float | None = Field(None, ge=0)
    usd_per_day: float | None = Field(None, ge=0)
    tokens_per_task: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)
    max_steps: int | None = Field(None, ge=1)


class Role(_Strict):
    """One member of the team."""

    name: str = Field(description="lower-case id, e.g. dev")
    mandate: str = Field(description="one sentence: what this role is for")
    model: str | None = Field(None, description="litellm model string; omitted -> cowork.toml default")
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    fallbacks: list[str] = Field(default_factory=list, description="models tried in order on provider errors")
    engine: Literal["llm", "command"] = "llm"
    command: list[str] = Field(
        default_factory=list, description="engine: command only; argv, '{goal}' is replaced by the lane's goal"
    )
    timeout_minutes: float | None = Field(
        None, gt=0, description="engine: command only; minutes one run of the command may take (time paused not "
                                "counted) before it is stopped and the lane fails; omitted -> [policy] "
                                "command_timeout_minutes"
    )
    tools: list[str] = Field(default_factory=list)
    run_allow: list[str] = Field(default_factory=list, description="glob patterns of commands `run` may execute")
    approvals: Approvals = Field(default_factory=Approvals)
    cannot: list[str] = Field(default_factory=list, description="tools or actions this role may never use")
    can: list[str] = Field(default_factory=list, description="extra actions granted, e.g. merge")
    checks: list[str] = Field(default_factory=list, description="commands that must pass before the lane merges")
    review_by: str | None = Field(None, description="role that reviews this role's lanes before merge")
    budget: RoleBudget = Field(default_factory=RoleBudget)
    escalate_to: str = "human"
    skills: list[str] = Field(default_factory=list, description="skill names always given to this role")

    @field_validator("mandate")
    @classmethod
    def _mandate_nonempty(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("mandate is empty; write one sentence saying what this role is for")
        return v

    def allows(self, tool: str) -> bool:
        """Whether the role may call `tool` at all (before approvals). `cannot` always wins."""
        if tool in self.cannot:
            return False
        if tool in IMPLICIT_TOOLS:
            return True
        return tool in self.tools or tool in self.can

    def tier(self, tool: str, policy: dict[str, str] | None = None) -> str:
        """auto | notify | block for `tool`: the role's own tiers, then team policy, then auto."""
        for tier in ("block", "notify", "auto"):
            if tool in getattr(self.approvals, tier):
                return tier
        return (policy or {}).get(tool, "auto")

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(exclude_defaults=True, exclude_none=True))


@dataclass
class RoleSet:
    """All roles of a team, with the file each came from and any warnings.

    Loaded with `strict=False`, a role whose file has problems is not in `roles` but in `broken` (by its file's
    name), and `problems` holds every problem found; a strict load raises them instead.
    """

    roles: dict[str, Role] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    broken: dict[str, list[Problem]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __contains__(self, name: str) -> bool:
        return name in self.roles

    def __getitem__(self, name: str) -> Role:
        return self.roles[name]

    def names(self) -> list[str]:
        return sorted(self.roles)

    def named(self) -> set[str]:
        """Every role with a file, loaded or broken."""
        return set(self.roles) | set(self.broken)

    def require(self, names: Iterable[str] | None = None) -> None:
        """Go on only if the named roles (every role when None) loaded.

        Raises:
            ValidationFailed: the problems of their files, with file, line and field.
        """
        if names is None:
            problems = self.problems
        else:
            problems = [p for name in dict.fromkeys(names) for p in self.broken.get(name, [])]
        if problems:
            raise ValidationFailed(problems)

    def notice(self) -> str | None:
        """One warning naming every broken role file and where, for a command that goes on without them."""
        if not self.broken:
            return None
        files = sorted({p.file for ps in self.broken.values() for p in ps if p.file})
        lines = [f"warning: {', '.join(files)} {'has' if len(files) == 1 else 'have'} problems, so "
                 f"{'role' if len(self.broken) == 1 else 'roles'} {', '.join(sorted(self.broken))} "
                 f"{'is' if len(self.broken) == 1 else 'are'} left out; commands that start agents refuse "
                 "until fixed (`cowork roles validate`):"]
        lines += [f"  {p.render().splitlines()[0]}" for ps in self.broken.values() for p in ps]
        return "\n".join(lines)


_STOP = set(
    "a an and the of to for in on with by or is are be it its this that as at from into keeps keep all any "
    "each our their them they who what when which while your you we".split()
)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP and len(w) > 2}


def overlap(a: str, b: str) -> float:
    """Jaccard similarity of two mandates' content words."""
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


def _check_role(role: Role, doc: Located, mcp_servers: set[str]) -> list[Problem]:
    problems = []
    if not NAME_RE.match(role.name):
        problems.append(doc.problem(("name",), f"'{role.name}' is not a valid role name",
                                    "use lower-case letters, digits, '-' or '_', starting with a letter"))
    elif role.name == "human":
        problems.append(doc.problem(("name",), "'human' names the people on the team (`escalate_to: human`, "
                                    "`tell(role='human')`), not a role", "give the role another name"))
    for i, tool in enumerate(role.tools):
        if tool in BUILTIN_TOOLS or tool in IMPLICIT_TOOLS:
            continue
        if "." in tool and tool.split(".", 1)[0] in mcp_servers:
            continue
        if "." in tool:
            hint = f"declare [mcp.{tool.split('.', 1)[0]}] in cowork.toml, or remove it"
        else:
            hint = "known tools: " + ", ".join(sorted(BUILTIN_TOOLS))
        problems.append(doc.problem(("tools", i), f"unknown tool '{tool}'", hint))
    for i, item in enumerate(role.cannot):
        if item in role.tools or item in role.can:
            problems.append(doc.problem(("cannot", i), f"'{item}' is both granted and forbidden",
                                        f"remove '{item}' from tools/can or from cannot"))
    for tier in ("auto", "notify", "block"):
        for i, tool in enumerate(getattr(role.approvals, tier)):
            if tool not in role.tools and tool not in role.can and tool not in IMPLICIT_TOOLS:
                problems.append(doc.problem(("approvals", tier, i), f"'{tool}' has an approval tier but is not in tools",
                                            f"add '{tool}' to tools or drop it here"))
    if role.engine == "command" and not role.command:
        problems.append(doc.problem(("engine",), "engine: command needs a `command` argv",
                                    'e.g. command: ["claude", "-p", "{goal}"]'))
    if role.engine == "llm" and role.command:
        problems.append(doc.problem(("command",), "`command` is only used with engine: command"))
    if role.engine == "llm" and role.timeout_minutes is not None:
        problems.append(doc.problem(("timeout_minutes",), "`timeout_minutes` is only used with engine: command",
                                    "an llm lane is bounded by budget.max_steps and its budget caps; remove it"))
    if "run" in role.tools and not role.run_allow:
        problems.append(doc.problem(("run_allow",), "tool `run` is granted but run_allow is empty, so nothing could run",
                                    'add patterns such as "uv run pytest*"'))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", role.mandate) if s.strip()]
    if len(sentences) > 1:
        problems.append(doc.problem(("mandate",), "mandate should be one sentence", "keep details in skills"))
    return problems


def _read_role(path: Path, display: str, mcp_servers: set[str]) -> tuple[Role | None, Located | None, list[Problem]]:
    """One role file: the role when it is valid on its own, the parsed document when the YAML parsed, and its
    problems (cross-role checks happen in `load_roles`)."""
    try:
        doc = load_yaml_file(path, display)
    except ValidationFailed as exc:
        return None, None, exc.problems
    data = doc.data
    if data is None:
        return None, doc, [Problem("the file is empty", file=doc.file, hint="a role needs at least name and mandate")]
    if not isinstance(data, dict):
        return None, doc, [doc.problem((), "a role file must be a mapping of keys to values")]
    data = dict(data)
    data.setdefault("name", path.stem)
    problems = duplicate_key_problems(doc)
    try:
        role = Role.model_validate(data)
    except ValidationError as exc:
        return None, doc, problems + pydantic_problems(exc, doc, hints={
            "mandate": "add `mandate: <one sentence saying what this role is for>`",
            "extra": "see `cowork roles schema` for the allowed keys",
        })
    problems += _check_role(role, doc, mcp_servers)
    return (None if problems else role), doc, problems


def load_role_file(path: Path, display: str | None = None, mcp_servers: set[str] | None = None) -> tuple[Role, Located]:
    """Load and validate one role file (cross-role checks happen in `load_roles`).

    Raises:
        ValidationFailed: the file's problems, with line and field.
    """
    role, doc, problems = _read_role(path, display or str(path), mcp_servers or set())
    if role is None or doc is None:
        raise ValidationFailed(problems)
    return role, doc


def load_roles(roles_dir: Path, root: Path | None = None, mcp_servers: set[str] | None = None,
               overlap_warn: float = 0.5, *, strict: bool = True) -> RoleSet:
    """Load every roles/*.yaml, collecting every problem of every file in one pass: each file's own, and its
    `review_by`/`escalate_to` naming a role with no file or one whose file is broken (read from the file even when
    other keys of it are wrong).

    Args:
        strict: raise on any problem. Otherwise the roles whose files have problems of their own are left out of
            `roles` and listed in `broken`, and every problem is in `problems`.

    Raises:
        ValidationFailed: (strict only) every problem in every file, with file, line and field.
    """
    out = RoleSet()
    files = sorted([*roles_dir.glob("*.yaml"), *roles_dir.glob("*.yml")]) if roles_dir.is_dir() else []
    shown = {path: str(path.relative_to(root)) if root else str(path) for path in files}
    read: dict[str, tuple[Path, Role | None, Located | None]] = {}  # by name: the first file of that name
    own: dict[Path, list[Problem]] = {}
    for path in files:
        role, doc, problems = _read_role(path, shown[path], mcp_servers or set())
        if role is not None and doc is not None and role.name != path.stem:
            problems.append(_name_mismatch(role.name, path, doc))
        if path.stem in read:  # dev.yaml and dev.yml: a role is known by its file's name, which is now ambiguous
            again = f"duplicate role name '{path.stem}' (also in {shown[read[path.stem][0]]})"
            problems.append(doc.problem(("name",), again, "role names must be unique; rename one") if doc is not None
                            else Problem(again, file=shown[path]))
        else:
            read[path.stem] = (path, role, doc)
        own[path] = problems
    broken = {path.stem for path in files if own[path]}
    refs = [(name, path, doc, fld, target) for name, (path, role, doc) in read.items()
            for fld, target in _references(role, doc)]
    for name, path, doc, fld, target in refs:
        if target not in read:
            own[path].append(doc.problem((fld,), f"unknown role '{target}'",
                                         "known roles: " + ", ".join(["human", *sorted(read)])))
            broken.add(name)
    to_broken: dict[Path, list[Problem]] = {}  # not a problem of the naming file's own: it loads without the other
    for name, path, doc, fld, target in refs:
        if target in broken and target != name:
            other = shown[read[target][0]]
            to_broken.setdefault(path, []).append(doc.problem(
                (fld,), f"role '{target}' cannot be used: its file {other} has problems",
                f"fix {other} (its problems are listed with it)"))
    for path in files:
        if path.stem in broken:
            out.broken.setdefault(path.stem, []).extend(own[path])
        elif path == read[path.stem][0] and read[path.stem][1] is not None:
            out.roles[path.stem] = read[path.stem][1]
            out.files[path.stem] = path
    out.problems = [p for path in files for p in sorted(own[path] + to_broken.get(path, []), key=_where)]
    names = sorted(out.roles)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            score = overlap(out.roles[a].mandate, out.roles[b].mandate)
            if score >= overlap_warn:
                out.warnings.append(read[b][2].problem(("mandate",),
                    f"mandate overlaps {score:.0%} with role '{a}'; vague roles cause duplicate work",
                    "sharpen each mandate so every task has one obvious owner"))
    if strict and out.problems:
        raise ValidationFailed(out.problems)
    return out


def team_roles(ws, settings=None, *, strict: bool = True) -> RoleSet:
    """The roles of the team at `ws` (a Workspace), with the MCP servers of its cowork.toml as known tool prefixes.

    Args:
        settings: its TeamSettings, when already loaded.
        strict: as in `load_roles`.

    Raises:
        ValidationFailed: cowork.toml is invalid; or, strict only, a role file is.
    """
    if settings is None:
        from cowork.config import load_settings

        settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    return load_roles(ws.roles_dir, ws.root, set(settings.mcp), strict=strict)


def _where(p: Problem) -> tuple[int, int]:
    return p.line or 0, p.column or 0


def _references(role: Role | None, doc: Located | None) -> list[tuple[str, str]]:
    """(field, role name) of each other role a file names in review_by or escalate_to, read from the file itself
    when other keys of it are wrong."""
    if role is None and (doc is None or not isinstance(doc.data, dict)):
        return []
    found = []
    for fld in ("review_by", "escalate_to"):
        target = getattr(role, fld) if role is not None else doc.data.get(fld)
        if isinstance(target, str) and target and target != "human":
            found.append((fld, target))
    return found


def _name_mismatch(name: str, path: Path, doc: Located) -> Problem:
    """`name:` must be the file's name. Plans, review_by, skills and `--to` know a role by its name, while messages,
    hints and `cowork demo` find its file as roles/<name>.yaml and `name:` defaults to the file name: a role that
    differs would be reachable by one and not the other."""
    return doc.problem(("name",), f"role name '{name}' differs from its file name {doc.file}; a role is known by its "
                                  f"name, and cowork looks for its file as {path.parent.name}/<name>{path.suffix}",
                       f"rename the file to {path.parent.name}/{name}{path.suffix}, or set `name: {path.stem}` "
                       "(or drop `name:`, which defaults to the file name)")


def role_schema() -> dict:
    """JSON Schema for roles/*.yaml, for editors (yaml-language-server)."""
    schema = Role.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cowork role"
    schema["properties"]["tools"]["items"] = {
        "anyOf": [{"enum": sorted(BUILTIN_TOOLS)}, {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$"}]
    }
    return schema


def check_skills(skills_dir: Path, roles: RoleSet, root: Path | None = None) -> list[Problem]:
    """Problems with roles/skills/*.md (front matter `roles: [...]`, `triggers: [...]`) and with roles' `skills:`."""
    from cowork import frontmatter

    problems: list[Problem] = []
    names: set[str] = set()
    for path in sorted(skills_dir.glob("*.md")) if skills_dir.is_dir() else []:
        display = str(path.relative_to(root)) if root else str(path)
        text = path.read_text(encoding="utf-8")
        if not text.lstrip().startswith("---"):
            names.add(path.stem)  # no front matter: applies to every role
            continue
        try:
            doc, _, _ = frontmatter.split(text, display)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
            continue
        data = doc.data
        names.add(str(data.get("name") or path.stem))
        for key in data:
            if key not in {"name", "roles", "triggers", "description"}:
                problems.append(doc.problem((key,), f"unknown key '{key}'", "a skill has roles, triggers, name, description"))
        for key in ("roles", "triggers"):
            value = data.get(key)
            if value is not None and not isinstance(value, (str, list)):
                problems.append(doc.problem((key,), f"`{key}` must be a list of strings"))
        listed = data.get("roles", [])
        for i, role in enumerate([listed] if isinstance(listed, str) else listed if isinstance(listed, list) else []):
            if role != "all" and role not in roles.named():  # a broken role's file has its own problems
                problems.append(doc.problem(("roles", i), f"unknown role '{role}'",
                                            "known roles: " + ", ".join(["all", *sorted(roles.named())])))
    for name, role in roles.roles.items():
        for skill in role.skills:
            if skill not in names:
                doc = load_yaml_file(roles.files[name], str(roles.files[name].relative_to(root)) if root else None)
                problems.append(doc.problem(("skills", role.skills.index(skill)), f"no skill named '{skill}'",
                                            f"add {skills_dir.name}/{skill}.md or remove it"))
    return problems
