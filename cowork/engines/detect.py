"""Which models cowork can use on this machine, and which one each role will use (and why).

Detection looks only at names of environment variables (never their values), at Ollama and OpenAI-compatible
servers on 127.0.0.1 (short timeouts, loopback only), and at whether the embedded model is installed.
`resolve_model` is the single place that decides a role's model: role `model:` -> `COWORK_MODEL` ->
cowork.toml `[model] name` -> an auto-detected provider -> the embedded offline model.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from cowork.config import TeamSettings, apply_env_overrides
from cowork.engines import local_model
from cowork.errors import CoworkError

OLLAMA_BASE = "http://127.0.0.1:11434"
PORTS = (8000, 8080, 1234, 5000)  # vLLM / llama.cpp / LM Studio / misc OpenAI-compatible servers
TIMEOUT = 0.3
LOCAL_NAMES = {"local", "embedded", local_model.ALIAS, local_model.MODEL}
NO_KEY = "not-needed"  # litellm's openai client insists on some key, even for a local server


@dataclass(frozen=True)
class Provider:
    """A hosted provider: its litellm prefix, the variables that can hold its key, a good default model."""

    name: str
    env: tuple[str, ...]
    default: str


PROVIDERS = (
    Provider("anthropic", ("ANTHROPIC_API_KEY",), "anthropic/claude-sonnet-4-5"),
    Provider("openai", ("OPENAI_API_KEY",), "openai/gpt-4o-mini"),
    Provider("gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "gemini/gemini-2.5-flash"),
    Provider("mistral", ("MISTRAL_API_KEY",), "mistral/mistral-large-latest"),
    Provider("groq", ("GROQ_API_KEY",), "groq/llama-3.3-70b-versatile"),
    Provider("openrouter", ("OPENROUTER_API_KEY",), "openrouter/anthropic/claude-sonnet-4.5"),
    Provider("deepseek", ("DEEPSEEK_API_KEY",), "deepseek/deepseek-chat"),
    Provider("xai", ("XAI_API_KEY",), "xai/grok-4"),
    Provider("together_ai", ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"), "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    Provider("fireworks_ai", ("FIREWORKS_AI_API_KEY",), "fireworks_ai/accounts/fireworks/models/llama-v3p1-70b-instruct"),
    Provider("cohere", ("COHERE_API_KEY", "CO_API_KEY"), "cohere/command-r-plus"),
    Provider("cerebras", ("CEREBRAS_API_KEY",), "cerebras/llama3.1-8b"),
    Provider("perplexity", ("PERPLEXITYAI_API_KEY",), "perplexity/sonar"),
)
_BY_NAME = {p.name: p for p in PROVIDERS}
_BARE = (("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"), ("claude-", "anthropic"),
         ("gemini-", "gemini"), ("mistral-", "mistral"), ("deepseek-", "deepseek"))
_KEYLESS = {"ollama", "ollama_chat", "lm_studio", "hosted_vllm", "llamafile"}

CONFIGURE_HELP = """\
To use a real model, set COWORK_MODEL (or `[model] name` in cowork.toml, or `model:` in a role file):
  Anthropic:  export COWORK_MODEL=anthropic/claude-sonnet-4-5 ANTHROPIC_API_KEY=...
  OpenAI:     export COWORK_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=...
  Ollama:     export COWORK_MODEL=ollama/llama3.1 COWORK_API_BASE=http://127.0.0.1:11434
  any OpenAI-compatible server:
              export COWORK_MODEL=openai/<model> COWORK_API_BASE=http://127.0.0.1:8000/v1
Then `cowork models` shows what each role will use."""


class NoModel(CoworkError):
    """No model is configured, none was detected, and the embedded one is not allowed or not installed."""


# ---------------------------------------------------------------- what is here


@dataclass
class Server:
    """A model server answering on loopback."""

    kind: str  # "ollama" | "openai"
    api_base: str
    models: list[str]
    configured: bool = False  # found at a configured api_base rather than by probing the usual ports

    def model_name(self) -> str | None:
        """The litellm string for this server's first model."""
        if not self.models:
            return None
        return f"{'ollama' if self.kind == 'ollama' else 'openai'}/{self.models[0]}"


@dataclass
class Detection:
    """Everything usable on this machine. `keys` maps each provider variable name to whether it is set."""

    keys: dict[str, bool]
    servers: list[Server]
    embedded: bool
    embedded_reason: str

    def providers_with_keys(self) -> list[Provider]:
        return [p for p in PROVIDERS if any(self.keys.get(v) for v in p.env)]

    def as_dict(self) -> dict:
        return {"keys": [{"provider": p.name, "env": v, "set": self.keys.get(v, False)}
                         for p in PROVIDERS for v in p.env],
                "servers": [s.__dict__ for s in self.servers],
                "embedded": {"available": self.embedded, "detail": self.embedded_reason,
                             "label": local_model.DISPLAY_NAME}}


def is_loopback(url: str | None) -> bool:
    host = (urlsplit(url).hostname or "") if url else ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def refused(url: str | None, timeout: float = 0.5) -> bool:
    """Whether a server on this machine at `url` (a loopback address) provably is not there: connecting is refused.
    A server that is busy still accepts the connection (the kernel does), and anything else that goes wrong says
    nothing for sure, so only a refusal counts."""
    import socket

    parts = urlsplit(url or "")
    if not is_loopback(url) or not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _get_json(url: str, timeout: float) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    with opener.open(url, timeout=timeout) as resp:
        return json.load(resp)


def _ollama(root: str, timeout: float, configured: bool) -> Server | None:
    try:
        tags = _get_json(f"{root}/api/tags", timeout)
        return Server("ollama", root, [m["name"] for m in tags["models"] if m.get("name")], configured)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None


def probe(api_base: str, *, timeout: float = TIMEOUT, configured: bool = False) -> Server | None:
    """The server at `api_base` (loopback only, else None): an OpenAI-compatible `/v1/models`, or Ollama's
    `/api/tags` (asked first on Ollama's port, 11434)."""
    if not is_loopback(api_base):
        return None
    base = api_base.rstrip("/")
    root = base[:-3] if base.endswith("/v1") else base
    if urlsplit(root).port == 11434 and (found := _ollama(root, timeout, configured)):
        return found
    try:
        data = _get_json(f"{root}/v1/models", timeout)
        models = [m["id"] for m in data["data"] if isinstance(m, dict) and m.get("id")]
        return Server("openai", f"{root}/v1", models, configured)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return _ollama(root, timeout, configured) if urlsplit(root).port != 11434 else None


def probe_servers(extra: tuple[str, ...] = (), ports: tuple[int, ...] = PORTS,
                  timeout: float = TIMEOUT) -> list[Server]:
    """Ollama, the usual OpenAI-compatible ports, and any configured loopback api_base, probed in parallel."""
    bases = [(OLLAMA_BASE, False)] + [(f"http://127.0.0.1:{p}/v1", False) for p in ports]
    bases += [(b, True) for b in extra if b and is_loopback(b)]
    with ThreadPoolExecutor(max_workers=min(8, len(bases))) as pool:
        found = list(pool.map(lambda b: probe(b[0], timeout=timeout, configured=b[1]), bases))
    out: list[Server] = []
    for server in found:
        # the embedded model's own server is reported as "embedded", not as a provider
        if server and server.models != [local_model.ALIAS] and all(s.api_base != server.api_base for s in out):
            out.append(server)
    return out


def detect(env: Mapping[str, str] | None = None, *, api_bases: tuple[str, ...] = (),
           ports: tuple[int, ...] = PORTS, timeout: float = TIMEOUT) -> Detection:
    """What this machine offers: provider keys in `env` (names only), loopback servers, the embedded model."""
    env = os.environ if env is None else env
    keys = {v: bool(env.get(v)) for p in PROVIDERS for v in p.env}
    ok, reason = local_model.local_available()
    return Detection(keys, probe_servers(tuple(api_bases), ports, timeout), ok, reason)


_cache: dict[tuple, tuple[float, list[Server]]] = {}


def _servers_cached(ttl: float = 30.0) -> list[Server]:
    hit = _cache.get(PORTS)
    if hit and time.monotonic() - hit[0] < ttl:
        return hit[1]
    servers = probe_servers()
    _cache[PORTS] = (time.monotonic(), servers)
    return servers


# ---------------------------------------------------------------- which model a role uses


def provider_of(model: str) -> str | None:
    """The litellm provider prefix of a model string (also for bare names such as gpt-4o)."""
    if "/" in model:
        return model.split("/", 1)[0]
    return next((prov for prefix, prov in _BARE if model.startswith(prefix)), None)


def key_status(model: str, api_base: str | None, key_from: str | None, env: Mapping[str, str],
               key_env: str | None = None) -> tuple[bool, str]:
    """(ok, note): whether the key `model` needs is there. Notes name variables, never values.

    Args:
        key_from: the variable an explicit key was read from, if one was found.
        key_env: the variable the configuration names for the key (checked even when empty).
    """
    if key_from:
        return True, f"key from ${key_from}"
    if is_loopback(api_base):
        return True, f"${key_env} is not set; a local server may not need one" if key_env else \
            "no key needed (local server)"
    if key_env:
        return False, f"${key_env} is not set"
    prov = provider_of(model)
    if prov in _KEYLESS:
        return True, "no key needed"
    spec = _BY_NAME.get(prov or "")
    if spec is None:
        return True, f"provider {prov!r}: cowork cannot tell which key it needs" if prov else "provider unknown"
    found = [v for v in spec.env if env.get(v)]
    if found:
        return True, f"${found[0]} is set"
    return False, " or ".join(f"${v}" for v in spec.env) + " is not set"


@dataclass
class ResolvedModel:
    """The model one role will call, where the decision came from, and whether its key is present."""

    name: str
    api_base: str | None
    api_key: str | None = field(repr=False)
    fallbacks: list[str]
    source: str
    is_local: bool
    label: str
    key_ok: bool = True
    key_note: str = ""
    timeout_s: float = 120.0

    def as_dict(self) -> dict:
        """For `--json`: everything but the key itself."""
        out = {k: v for k, v in self.__dict__.items() if k != "api_key"}
        out["api_key_set"] = bool(self.api_key) and self.api_key != NO_KEY
        return out

    def require_key(self) -> None:
        """Raise a plain error (not a provider traceback) when the model's key is missing."""
        if not self.key_ok:
            raise CoworkError(f"model {self.name} ({self.source}) needs an API key: {self.key_note}",
                              hint="export the variable in the shell that runs cowork, or pick another model "
                                   "with COWORK_MODEL; `cowork models` shows what is available")


def _embedded(source: str, timeout_s: float) -> ResolvedModel:
    ok, reason = local_model.local_available()
    if not ok:
        raise NoModel(f"{source}, but the embedded model is not available: {reason}", hint=local_model.INSTALL_HINT)
    return ResolvedModel(local_model.MODEL, None, NO_KEY, [], source, True, local_model.DISPLAY_NAME,
                         True, "no key needed (embedded)", timeout_s)


def local_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the shared embedded-model server is recorded: one per user, used by every team on the machine."""
    env = os.environ if env is None else env
    if env.get("COWORK_LOCAL_STATE_DIR"):
        return Path(env["COWORK_LOCAL_STATE_DIR"]).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME") or Path.home()) / ".cache")
    return cache / "cowork"


def is_local_model(name: str | None, api_base: str | None = None) -> bool:
    """Whether a model string (and base) means the embedded model."""
    if not name:
        return False
    if name in ("local", "embedded"):
        return True
    return name in (local_model.ALIAS, local_model.MODEL) and (api_base is None or is_loopback(api_base))


def settings_from_env(env: Mapping[str, str] | None = None) -> TeamSettings:
    """Default team settings with the COWORK_* overrides applied (for use outside a team repo)."""
    env = os.environ if env is None else env
    return TeamSettings.model_validate(apply_env_overrides({}, env))


def _key(env: Mapping[str, str], *names: str | None) -> tuple[str | None, str | None]:
    """(value, variable) of the first of `names` that is set."""
    for var in names:
        if var and env.get(var):
            return env[var], var
    return None, None


def resolve_model(settings: TeamSettings, role: Any = None, env: Mapping[str, str] | None = None, *,
                  allow_local: bool = True, scan: bool = True) -> ResolvedModel:
    """The model `role` (a Role, or None for the team default) will call, and why.

    Order: the role's `model:`, then `COWORK_MODEL`, then cowork.toml `[model] name`, then a provider found here
    (an API key in the environment, Ollama, an OpenAI-compatible server on 127.0.0.1; `scan=False` skips the
    servers), then the embedded model. `settings` comes from `load_settings`, which has applied `COWORK_MODEL`.
    The names `local` and `openai/cowork-local` (without a remote api_base) mean the embedded model.

    Raises:
        NoModel: nothing configured or found, and the embedded model is not allowed or not installed.
    """
    env = os.environ if env is None else env
    team = settings.model
    role_key_env = getattr(role, "api_key_env", None)
    if getattr(role, "model", None):
        name, source = role.model, f"role {role.name}: `model:` in roles/{role.name}.yaml"
        api_base, key_env = getattr(role, "api_base", None), role_key_env
        api_key, key_from = _key(env, role_key_env)
        fallbacks = list(getattr(role, "fallbacks", None) or [])
    elif team.name:
        name = team.name
        source = "COWORK_MODEL" if env.get("COWORK_MODEL") == team.name else "cowork.toml [model] name"
        api_base = getattr(role, "api_base", None) or team.api_base
        key_env = role_key_env or team.api_key_env
        api_key, key_from = _key(env, role_key_env) if role_key_env else _key(env, "COWORK_API_KEY", key_env)
        fallbacks = list(getattr(role, "fallbacks", None) or team.fallbacks)
    else:
        return _auto(settings, env, allow_local, scan)
    if is_local_model(name, api_base):
        if not allow_local:
            raise NoModel(f"the embedded model was asked for ({source}) but is not allowed here")
        return _embedded(source, team.timeout_s)
    ok, note = key_status(name, api_base, key_from, env, key_env)
    if not api_key and is_loopback(api_base):
        api_key = NO_KEY
    label = f"{name} at {api_base}" if api_base else name
    return ResolvedModel(name, api_base, api_key, fallbacks, source, False, label, ok, note, team.timeout_s)


def _auto(settings: TeamSettings, env: Mapping[str, str], allow_local: bool, scan: bool) -> ResolvedModel:
    timeout = settings.model.timeout_s
    for prov in PROVIDERS:
        _, found = _key(env, *prov.env)
        if found:
            return ResolvedModel(prov.default, None, None, [], f"auto-detected: ${found} is set", False,
                                 prov.default, True, f"${found} is set", timeout)
    for server in _servers_cached() if scan else []:
        name = server.model_name()
        if name:
            where = "Ollama" if server.kind == "ollama" else "an OpenAI-compatible server"
            return ResolvedModel(name, server.api_base, NO_KEY, [], f"auto-detected: {where} at {server.api_base}",
                                 False, f"{name} at {server.api_base}", True, "no key needed (local server)",
                                 timeout)
    available, reason = local_model.local_available()
    if allow_local and available:
        return _embedded("embedded fallback: no model configured and no provider found", timeout)
    detail = None if allow_local else "the embedded model is not allowed here"
    raise NoModel(nothing_configured(embedded=available and allow_local, reason=detail or reason))


def nothing_configured(*, embedded: bool = True, reason: str = "") -> str:
    """The plain message for a machine with no model configured, and how to set one."""
    keys = ", ".join(p.env[0] for p in PROVIDERS[:4])
    ports = ", ".join(str(p) for p in PORTS)
    lines = ["No model is configured, and none was found here: no provider API key in the environment "
             f"({keys}, ...), no Ollama at 127.0.0.1:11434, no OpenAI-compatible server on 127.0.0.1 ports {ports}."]
    if embedded:
        lines.append(f"cowork falls back to the embedded {local_model.DISPLAY_NAME}: enough to see a team work "
                     "offline, far too weak for real work.")
    else:
        lines.append(f"The embedded offline model cannot stand in either: {reason}.")
    return "\n".join(lines) + "\n\n" + CONFIGURE_HELP


# ---------------------------------------------------------------- the report behind `cowork models`


def models_report(settings: TeamSettings, roles: dict[str, Any], env: Mapping[str, str] | None = None, *,
                  ports: tuple[int, ...] = PORTS, team_root: str | None = None) -> dict:
    """Providers found here and the model of the team default and of each role, with sources and key status.

    `ok` is false when some role's model cannot be used (its key is missing, or nothing can stand in).
    """
    env = os.environ if env is None else env
    bases = tuple(b for b in [settings.model.api_base, *(getattr(r, "api_base", None) for r in roles.values())] if b)
    found = detect(env, api_bases=bases, ports=ports)
    rows = []
    for name, role in [("(team default)", None), *sorted(roles.items())]:
        try:
            resolved = resolve_model(settings, role, env, scan=True)
            row = {"role": name, **resolved.as_dict()}
            silent = _silent_server(resolved, found.servers)
            if silent:
                row["server_ok"], row["server_note"] = False, silent
        except NoModel as exc:
            row = {"role": name, "error": exc.message, "key_ok": False}
        rows.append(row)
    fallback = any(r.get("is_local") and r.get("source", "").startswith("embedded fallback") or "error" in r
                   for r in rows)
    message = nothing_configured(embedded=found.embedded, reason=found.embedded_reason) if fallback else None
    return {"team": team_root, "providers": found.as_dict(), "models": rows,
            "ok": all(r.get("key_ok") and r.get("server_ok", True) for r in rows), "nothing_configured": fallback,
            "message": message}


def _silent_server(resolved: ResolvedModel, servers: list[Server]) -> str | None:
    """What is wrong when the model's server is on this machine (a loopback api_base, or Ollama's default address)
    and did not answer the probe; None when it answered, or when it is remote (never probed)."""
    if resolved.is_local:
        return None
    base = resolved.api_base
    if not base and provider_of(resolved.name) in ("ollama", "ollama_chat"):
        base = OLLAMA_BASE  # litellm's default for Ollama
    if not is_loopback(base):
        return None

    def root(url: str) -> str:
        url = url.rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    if any(root(s.api_base) == root(base) for s in servers):
        return None
    from cowork.engines.retry import where

    return f"nothing answers at {where(base)} (within {TIMEOUT} s)"


def fallback_notice(settings: TeamSettings, roles: dict[str, Any], env: Mapping[str, str] | None = None) -> str | None:
    """One line to print before work starts when some role falls back to the embedded model, else None."""
    names = []
    for name, role in sorted(roles.items()):
        try:
            if resolve_model(settings, role, env).source.startswith("embedded fallback"):
                names.append(name)
        except NoModel:
            continue
    if not names:
        return None
    return (f"no model is configured: {', '.join(names)} will use the {local_model.DISPLAY_NAME}; "
            "see `cowork models` to set a real one")
