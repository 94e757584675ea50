"""OpenAI tool schemas for every built-in, team and implicit tool (finish, answer, submit_plan)."""
from __future__ import annotations

import json

_S = {"type": "string"}
_I = {"type": "integer"}
_WHY = {"type": "string", "description": "optional: why this action is needed (shown to a human if it needs approval)"}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or [], "additionalProperties": False}


SCHEMAS: dict[str, tuple[str, dict]] = {
    "read_file": ("Read a text file in your worktree (paths are relative to it). Long files come in pages.",
                  _obj({"path": _S, "offset": {**_I, "description": "first line, 1-based"},
                        "limit": {**_I, "description": "number of lines"}}, ["path"])),
    "write_file": ("Create or overwrite a file in your worktree with the full new content.",
                   _obj({"path": _S, "content": _S, "why": _WHY}, ["path", "content"])),
    "list_files": ("List tracked and new files in your worktree, optionally under a path or matching a glob.",
                   _obj({"path": _S, "pattern": {**_S, "description": "glob, e.g. *.py"}})),
    "search": ("Search your worktree's files for a regular expression (or plain text); returns file:line: text.",
               _obj({"query": _S, "path": {**_S, "description": "limit to this directory or file"}}, ["query"])),
    "run": ("Run one shell command in your worktree. Only commands matching your role's run_allow patterns run; "
            "no chaining with ; && | or redirection unless a pattern allows it.",
            _obj({"command": _S, "why": _WHY}, ["command"])),
    "git_diff": ("Show every change in your worktree since the lane started, including new files.", _obj({})),
    "ask": ("Ask another role a question and wait for its answer (a live lane of that role answers, or a short "
            "consult lane is started).", _obj({"role": _S, "question": _S}, ["role", "question"])),
    "tell": ("Post a note to a role, or to the whole team with role 'team', without waiting.",
             _obj({"role": _S, "note": _S}, ["role", "note"])),
    "delegate": ("Add a lane for another role to this task; its handoff packet comes back to your inbox.",
                 _obj({"role": _S, "goal": _S}, ["role", "goal"])),
    "inbox": ("Read the messages that arrived for you (questions, notes, handoffs).", _obj({})),
    "answer": ("Answer a question another lane asked you (the message id is in the question).",
               _obj({"message_id": _I, "text": _S}, ["message_id", "text"])),
    "finish": (
        "End your lane with a handoff for whoever comes next. Call it once, when the goal is done or cannot be.",
        _obj({
            "status": {"type": "string", "enum": ["done", "blocked", "needs-review", "failed"]},
            "summary": {**_S, "description": "what was done and what the reader must know"},
            "checklist": {"type": "array", "items": _obj({"item": _S, "done": {"type": "boolean"}}, ["item", "done"])},
            "artifacts": {"type": "array", "items": _S, "description": "files, commits, links produced"},
            "decisions": {"type": "array", "items": _S},
            "open_risks": {"type": "array", "items": _S},
            "next": {"type": "array", "items": _S, "description": "what the next role or human should do"},
        }, ["status", "summary"]),
    ),
    "submit_plan": (
        "Submit the plan: lanes with a role, a goal and the lanes each depends on.",
        _obj({
            "title": _S,
            "lanes": {"type": "array", "items": _obj({
                "id": {**_S, "description": "lower-case letters, digits and '-'"},
                "role": _S, "goal": _S,
                "depends_on": {"type": "array", "items": _S},
            }, ["id", "role", "goal"])},
            "notes": _S,
        }, ["title", "lanes"]),
    ),
}

FINISH_STATUSES = ("done", "blocked", "needs-review", "failed")


def spec(name: str, description: str | None = None, parameters: dict | None = None) -> dict:
    """One tool in the OpenAI `tools` format."""
    desc, params = SCHEMAS.get(name, (description or name, parameters or _obj({})))
    return {"type": "function", "function": {"name": name, "description": description or desc,
                                             "parameters": parameters or params}}


def plan_spec(role_names: list[str]) -> dict:
    """`submit_plan` for one team: `role` is an enum of its worker roles and `lanes` needs at least one lane."""
    tool = spec("submit_plan")
    params = json.loads(json.dumps(tool["function"]["parameters"]))  # SCHEMAS is shared: never mutate it
    lanes = params["properties"]["lanes"]
    lanes["minItems"] = 1
    if role_names:
        lanes["items"]["properties"]["role"] = {"type": "string", "enum": sorted(role_names)}
    tool["function"]["parameters"] = params
    return tool


def validate_finish(args: dict) -> str | None:
    """A problem with finish arguments, or None."""
    if args.get("status") not in FINISH_STATUSES:
        return f"finish: status must be one of {', '.join(FINISH_STATUSES)}"
    if not isinstance(args.get("summary"), str) or not args["summary"].strip():
        return "finish: summary is required"
    items = args.get("checklist") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) and "item" in i for i in items):
        return "finish: checklist must be a list of {item, done}"
    for key in ("artifacts", "decisions", "open_risks", "next"):
        val = args.get(key)
        if val is not None and not isinstance(val, (list, str)):
            return f"finish: {key} must be a list of strings"
    return None
