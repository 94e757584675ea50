"""Team settings: `cowork.toml` parsed into a typed model, with COWORK_* environment overrides."""
from __future__ import annotations

import os
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from cowork import tomlpos
from cowork.errors import Problem, ValidationFailed

Tier = Literal["auto", "notify", "block"]


def _numeric(annotation: Any) -> bool:
    """True for int, float and their unions with None (not bool, and not a container of numbers)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_numeric(a) for a in get_args(annotation))
    return annotation in (int, float)


class NoBoolNumbers(BaseModel):
    """A base that refuses `true`/`false` where a number is meant: pydantic's lax mode would read them as 1 and 0,
    so `max_check_retries = true` would quietly mean one retry."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_not_number", "Input should be a number, not a boolean ({value})",
                                      {"value": str(value).lower()})
        return value


class _Strict(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    """Which model to call. `name` is any litellm model string."""

    name: str | None = None
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    fallbacks: list[str] = Field(default_factory=list)
    cheap: str | None = Field(None, description="model for cheap steps: summaries, classification")
    timeout_s: float = Field(120.0, gt=0)
    attempts: int = Field(3, ge=1, le=10, description="tries of one model on a transient error (429, 5xx, timeout, "
                                                      "lost connection) before its next fallback")
    backoff_s: float = Field(1.0, ge=0, description="the wait before the second try; doubled for each later one, "
                                                    "with jitter")
    max_backoff_s: float = Field(20.0, ge=0, description="the longest wait between tries, a provider's Retry-After "
                                                         "included")


class BudgetSettings(_Strict):
    """The team's caps. Bounded like a role's `budget:` (roles.RoleBudget): a negative cap would block every lane
    before its first call, which nobody means; 0 is allowed and stops work at once."""

    usd_per_task: float | None = Field(5.0, ge=0)
    usd_per_day: float | None = Field(20.0, ge=0)
    tokens_per_task: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)
    wrap_up_at: float = Field(0.8, ge=0.0, le=1.0, description="fraction of a cap at which the agent is told to wrap up")


class PriceSettings(_Strict):
    """USD per million tokens for one model. It wins over litellm's own price, so it serves models litellm does not
    price (local, self-hosted, brand new) and rates litellm does not know (a negotiated discount)."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


class MergeSettings(_Strict):
    target: str = "main"
    checks: list[str] = Field(default_factory=list)
    auto: bool = True
    lease_s: float = Field(60.0, gt=0, description="a merge lock's lease; at 0 or less it would expire as taken")
    checks_timeout_s: float = Field(900.0, gt=0, description="seconds each merge check may run before it fails")


class PolicySettings(_Strict):
    auto_approve_plans: bool = False
    approvals: dict[str, Tier] = Field(default_factory=dict, description="tool name -> tier, for every role")
    approval_timeout_s: float = Field(4 * 3600, gt=0)
    max_lanes_per_task: int = Field(12, ge=1)
    max_delegation_depth: int = Field(3, ge=0, description="0: no role may ask or delegate")
    max_check_retries: int = Field(3, ge=0)
    check_timeout_s: float = Field(600.0, gt=0, description="one run of a role's check, before it counts as failed")
    max_review_rounds: int = Field(3, ge=1, description="reviews that may send a lane back before a human decides")
    max_conflict_returns: int = Field(2, ge=0)
    max_steps_per_lane: int = Field(60, ge=1)
    max_consecutive_failures: int = Field(3, ge=1)
    max_repeated_calls: int = Field(4, ge=2, description="a call counts itself, so 1 would trip on every call")
    ask_timeout_s: float = Field(900.0, gt=0)
    run_timeout_s: float = Field(600.0, gt=0)
    command_timeout_minutes: float | None = Field(None, gt=0, description="one run of an engine: command role's "
                                                  "command (time paused not counted), unless the role sets "
                                                  "timeout_minutes; None: no limit")
    pass_env: list[str] = Field(default_factory=list, description="variables named like keys, tokens, secrets or "
                                "passwords that `run`, a role's checks and the merge checks get all the same (a test "
                                "suite that needs a key); their values stay masked in what cowork writes")


class McpServer(_Strict):
    command: list[str] = Field(min_length=1, description="the server's argv: program, then its arguments")
    env: dict[str, str] = Field(default_factory=dict)
    tools: list[str] | None = None
    timeout_s: float = Field(300.0, gt=0, description="one tool call; a server that takes longer is stopped and the "
                                                      "lane's next call starts it again")


class TeamSettings(_Strict):
    name: str = "team"
    planner: str = "planner"
    concurrency: int = Field(4, ge=1, le=256)
    model: ModelSettings = Field(default_factory=ModelSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    prices: dict[str, PriceSettings] = Field(default_factory=dict)
    merge: MergeSettings = Field(default_factory=MergeSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    mcp: dict[str, McpServer] = Field(default_factory=dict)

    def price_for(self, model: str) -> PriceSettings | None:
        """`[prices."MODEL"]`, looked up as written and without its provider prefix ("openai/gpt-4o" finds
        "gpt-4o"); None when cowork.toml gives no price for it."""
        return self.prices.get(model) or self.prices.get(model.split("/", 1)[-1])


ENV_OVERRIDES = {
    "COWORK_MODEL": ("model", "name"),
    "COWORK_API_BASE": ("model", "api_base"),
    "COWORK_API_KEY_ENV": ("model", "api_key_env"),
    "COWORK_CONCURRENCY": ("concurrency",),
    "COWORK_MERGE_TARGET": ("merge", "target"),
}


def apply_env_overrides(data: dict, env: dict[str, str]) -> dict:
    """Write the COWORK_* overrides set in `env` into raw settings `data` (in place; returned for convenience)."""
    for var, dotted in ENV_OVERRIDES.items():
        if env.get(var):
            node = data
            for part in dotted[:-1]:
                node = node.setdefault(part, {})
            node[dotted[-1]] = env[var]
    return data


def load_settings(path: Path, env: dict[str, str] | None = None, display: str | None = None) -> TeamSettings:
    """Read cowork.toml and apply COWORK_* overrides from `env` (default os.environ).

    Raises:
        ValidationFailed: with file, line and field for every problem.
    """
    env = os.environ if env is None else env
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationFailed([Problem("file not found", file=display, hint="run `cowork init`")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # before Python 3.14 the position is only in the message: "... (at line 3, column 7)"
        msg = str(exc)
        pos = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
        line, column = (int(pos.group(1)), int(pos.group(2))) if pos else (getattr(exc, "lineno", None), None)
        raise ValidationFailed([Problem(f"invalid TOML: {msg[:pos.start()] if pos else msg}", file=display, line=line,
                                        column=column, hint="see https://toml.io for the syntax")]) from None
    apply_env_overrides(data, env)
    try:
        return TeamSettings.model_validate(data)
    except ValidationError as exc:
        spots = tomlpos.positions(text)
        overrides = {dotted: var for var, dotted in ENV_OVERRIDES.items() if env.get(var)}
        raise ValidationFailed([_env_problem(err, overrides, env) or _problem(err, spots, display)
                                for err in exc.errors()]) from None


def _env_problem(err: dict, overrides: dict[tuple, str], env) -> Problem | None:
    """A pydantic error about a value a COWORK_* variable set, naming the variable (no line of the file holds it);
    None when the value came from the file."""
    loc = tuple(map(str, err["loc"]))
    var = next((v for dotted, v in overrides.items() if loc[:len(dotted)] == dotted), None)
    if var is None:
        return None
    return Problem(f"{err['msg']} (set by the environment variable {var}={env[var]!r})", field=".".join(loc),
                   hint=f"fix or unset {var}; it overrides cowork.toml")


def _problem(err: dict, spots: dict[tuple, tomlpos.Spot], display: str) -> Problem:
    """One pydantic error as a Problem at the line of its key, or of its table when the key is missing."""
    loc = tuple(err["loc"])
    spot = tomlpos.where(spots, loc)
    msg = f"unknown key '{loc[-1]}'" if err["type"] == "extra_forbidden" else err["msg"]
    hint = None
    if spot is not None:
        msg, hint = _misplaced(loc, err["type"], spot, tomlpos.first_header_line(spots)) or (msg, None)
    return Problem(msg, file=display, line=spot.line if spot else None, field=".".join(map(str, loc)), hint=hint)


# Tables whose keys the user names, each holding a table: what one entry is.
_NAMED_TABLES = {"mcp": ("an MCP server table", "command = [...]"),
                 "prices": ("a price table", "input_per_mtok = ..., output_per_mtok = ...")}
# Tables whose keys the user names (tools), where a misplaced top-level key is no unknown key, only a bad value.
_FREE_TABLES = {("policy", "approvals")}


def _misplaced(loc: tuple, kind: str, spot: tomlpos.Spot, first_header: int | None) -> tuple[str, str] | None:
    """Message and hint for a key that TOML put in the wrong table, or None if the error is not that.

    TOML puts every key written after a [table] header into that table, so a top-level key appended at the end of
    cowork.toml (after [mcp], say) is read as an MCP server, and pydantic's words for it ("Input should be a valid
    dictionary or instance of McpServer") say nothing of the cause.
    """
    key, table = str(loc[-1]), loc[:-1]
    under = f"written after {tomlpos.header(spot.table)}" if spot.table and spot.table == table else None
    top_level = key in TeamSettings.model_fields
    move = f"move `{key}` above the first [table] (line {first_header})"
    if len(loc) == 2 and loc[0] in _NAMED_TABLES and kind in ("model_type", "dict_type"):
        what, example = _NAMED_TABLES[loc[0]]
        msg = f"`{key}` is not {what}" + (f"; a key {under} belongs to that table" if under else "")
        if under and top_level:
            return msg, move
        table_hint = f"write it as {tomlpos.header(loc)} with {example}"
        return msg, f"{table_hint}, or, if it is a top-level key, {move}" if under else table_hint
    if under and top_level and (kind == "extra_forbidden" or table in _FREE_TABLES):
        return f"`{key}` is a top-level key, but a key {under} belongs to that table", move
    if under and kind == "extra_forbidden" and len(loc) == 3 and loc[0] in _NAMED_TABLES:  # after [mcp.gh]
        what, entry = _NAMED_TABLES[loc[0]][0], TeamSettings.model_fields[loc[0]].annotation
        keys = ", ".join(get_args(entry)[1].model_fields)
        return (f"unknown key '{key}'; a key {under} belongs to that table",
                f"{what} takes {keys}; move top-level keys above the first [table] (line {first_header})")
    return None


def api_key_for(model: ModelSettings, env: dict[str, str] | None = None) -> str | None:
    """The API key to pass explicitly, if any: COWORK_API_KEY wins, then the named variable."""
    env = os.environ if env is None else env
    if env.get("COWORK_API_KEY"):
        return env["COWORK_API_KEY"]
    if model.api_key_env:
        return env.get(model.api_key_env)
    return None
