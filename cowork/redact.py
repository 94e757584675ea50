"""Mask values that look like secrets before they reach packets, events, messages or memory."""
from __future__ import annotations

import os
import re
from typing import Any

MASK = "[REDACTED]"

_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:(?!-----BEGIN ).)*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}"),          # OpenAI / Anthropic
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),                      # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),                              # AWS access key id
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),                   # Slack
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),                          # Google
    re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"),                       # GitLab
    re.compile(r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),  # JWT
]
# Redaction runs on text agents write, so no pattern may take more than linear time on any input: a key name or a JWT
# starts only where a run of its characters starts (the lookbehinds), not at each of the thousands of word boundaries
# of a run like "a-a-a-...", a URL scheme is short, and a private key block never scans past the next BEGIN.
# key=value / key: value where the key names a secret; keep the key, mask the value
_ASSIGN = re.compile(
    r"(?i)(?<![A-Za-z0-9_-])([A-Za-z0-9_-]*(?:api[_-]?key|secret|token|passwd|password))(\s*[:=]\s*[\"']?)"
    r"([^\s\"',;]{6,})"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._\-+/=]{12,})")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,30}://[^/\s:@]+:)([^@\s/]+)(@)")
_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD)")


_env_cache: tuple[int, list[str]] = (0, [])


def _env_secrets() -> list[str]:
    """Values of secret-looking environment variables, longest first, so they are masked wherever they appear."""
    global _env_cache
    # redact runs on every event: rescan only when the environment changed (hashing it is ~20x cheaper)
    raw = getattr(os.environ, "_data", None)  # CPython's undecoded environ: no per-item decoding
    key = hash(frozenset((raw if isinstance(raw, dict) else os.environ).items()))
    if _env_cache[0] != key:
        vals = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]
        _env_cache = (key, sorted(set(vals), key=len, reverse=True))
    return _env_cache[1]


# Every pattern above needs one of these substrings (case aside): text without any is returned as it is, which
# keeps redaction cheap enough to run on every journal write and event. Keep it a superset when adding a pattern.
_CANDIDATE = re.compile(r"(?i)-----BEGIN|sk-|gh[pousr]_|github_pat_|akia|xox|aiza|glpat-|eyj|bearer|://"
                        r"|key|secret|token|passw")


def redact(text: str) -> str:
    """`text` with anything that looks like a secret replaced by [REDACTED]."""
    if not text:
        return text
    return _redact(text, _env_secrets())


def _redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    if _CANDIDATE.search(text) is None:
        return text
    for pat in _PATTERNS:
        text = pat.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _ASSIGN.sub(lambda m: m.group(1) + m.group(2) + (m.group(3) if m.group(3) == MASK else MASK), text)
    return text


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure, keys included."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, (dict, list, tuple)):
        return _redact_obj(obj, _env_secrets())
    return obj


def _redact_obj(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        return _redact(obj, secrets) if obj else obj
    if isinstance(obj, dict):  # keys too: a model's tool-call arguments can have any keys
        return {(_redact(k, secrets) if isinstance(k, str) and k else k): _redact_obj(v, secrets)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact_obj(v, secrets) for v in obj]
    return obj
