"""When a failed model call is worth another try, how long to wait first, and how to say what went wrong.

A provider's passing trouble is retried: 408/429, a 5xx (but 501), a timeout, a connection that failed or broke. Its
own verdict on the request is not: 400 (context length, bad request, content policy), 401/403, 404, 422, and a
reply that carried no message. Those go straight to the next fallback, where a retry could only repeat them.

litellm reports some failures on this side as a "500" too (a missing key, a reply it cannot read); those had no HTTP
answer and no broken connection under them, so they are not retried.

Only the failure path comes here: a call that succeeds costs `models.complete` a try/except and nothing more.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

HOLD_POLL_S = 0.1  # how often a backoff asks whether the lane was paused meanwhile


class EmptyReply(Exception):
    """The provider answered 200 without a message (`choices` empty or its message missing)."""


def transient(exc: BaseException) -> bool:
    """Whether `exc` is passing trouble at the provider, worth another try of the same model."""
    if isinstance(exc, EmptyReply) or type(exc).__name__ in ("ContextWindowExceededError",
                                                              "ContentPolicyViolationError"):
        return False  # the provider's answer to this request: the same request gets it again
    if _timed_out(exc):
        return True
    links = _chain(exc)
    if any(_network(link) for link in links):
        return True  # a connection failed or broke before a whole answer came
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status in (408, 429) or (500 <= status < 600 and status != 501)):
        # litellm also calls some failures on this side "500" (a missing key, a reply it cannot read): those
        # came with no HTTP answer, and another try would only repeat them
        return _answered(exc, links)
    return False


# what the HTTP stacks under litellm call a failed or broken connection (openai and anthropic SDKs, httpx, aiohttp)
_NETWORK_CLASSES = {"APIConnectionError", "TransportError", "ClientConnectionError"}


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from, outermost first."""
    links: list[BaseException] = [exc]
    while len(links) < 12:
        nxt = links[-1].__cause__ or links[-1].__context__
        if nxt is None or nxt in links:
            break
        links.append(nxt)
    return links


def _network(link: BaseException) -> bool:
    if isinstance(link, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if type(link).__module__.startswith("litellm"):
        return False  # litellm names many failures of its own "APIConnectionError": trust only what is under it
    return any(c.__name__ in _NETWORK_CLASSES for c in type(link).__mro__)


def _answered(exc: BaseException, links: list[BaseException]) -> bool:
    """Whether the provider sent an HTTP answer (litellm keeps its headers; the HTTP client's error is below)."""
    if getattr(exc, "litellm_response_headers", None) is not None:
        return True
    return any(type(link).__name__.endswith("HTTPStatusError") for link in links)


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or type(exc).__name__ in ("Timeout", "APITimeoutError")


def retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (`retry-after-ms`, `Retry-After` in seconds or as an HTTP date)."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers",
                                                                        None)
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value).timestamp()
            return max(0.0, when - time.time())
    except (TypeError, ValueError, AttributeError):
        return None


def backoff(exc: BaseException, tries: int, *, base_s: float, max_s: float) -> float:
    """The wait before try `tries + 1`: the provider's Retry-After when it sent one, else `base_s` doubled per
    try with jitter (between half and all of it, so lanes that failed together do not return together); never
    more than `max_s`."""
    asked = retry_after(exc)
    if asked is not None:
        return min(max_s, asked)
    ceiling = min(max_s, base_s * 2 ** (tries - 1))
    return ceiling / 2 + random.random() * ceiling / 2


def next_wait(exc: BaseException, tries: int, policy: Any) -> float | None:
    """After `tries` failed tries of one model: the wait before the next try, or None when there is none (the
    error is the provider's verdict, or `policy.attempts` tries are spent). `policy` carries `attempts`,
    `backoff_s` and `max_backoff_s` (a `ModelChoice`; `[model]` in cowork.toml)."""
    if tries >= policy.attempts or not transient(exc):
        return None
    return backoff(exc, tries, base_s=policy.backoff_s, max_s=policy.max_backoff_s)


def reporter(store, where: str, *, actor: str, task: str, lane: str | None = None,
             role: str | None = None) -> Callable[[str, str, int, float], None]:
    """An `on_retry` for `complete` / `complete_text` that records each retry as a `model.retry` event; `where`
    names the call in the event's summary ("t1/impl", "t1 planning")."""

    def on_retry(model: str, error: str, tries: int, wait_s: float) -> None:
        store.event("model.retry", f"{where}: {model} failed ({error[:160]}); try {tries + 1} in {wait_s:.1f}s",
                    actor=actor, task=task, lane=lane, role=role,
                    data={"model": model, "error": error[:500], "attempt": tries, "wait_s": round(wait_s, 3)})

    return on_retry


async def wait(seconds: float, hold: Callable[[], Awaitable[None]] | None) -> None:
    """Sleep `seconds`, letting `hold` (the lane's pause) in every `HOLD_POLL_S`: a pause set meanwhile shows at
    once, its time counts towards the wait, and nothing returns while the lane is paused."""
    if hold is None:
        await asyncio.sleep(seconds)
        return
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, HOLD_POLL_S))
        await hold()
    await hold()


def where(api_base: str | None) -> str:
    """`api_base` as it is safe to show: no user, password, query or fragment (where keys hide)."""
    if not api_base:
        return ""
    parts = urlsplit(api_base)
    if not parts.netloc:
        return api_base.split("?", 1)[0].rsplit("@", 1)[-1]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def unreachable(exc: BaseException) -> BaseException | None:
    """For a call that never got an HTTP answer because the connection failed (refused, unreachable, unknown host):
    the innermost error saying so ("Connect call failed"), not the HTTP clients' wrappings of it."""
    links = _chain(exc)
    if _timed_out(exc) or _answered(exc, links):
        return None  # too slow, or the server answered: whatever it said is the error
    found = [link for link in links if _network(link) or (isinstance(link, OSError) and not _timed_out(link))]
    return found[-1] if found and any(_network(link) for link in links) else None


def describe(exc: BaseException, api_base: str | None) -> str:
    """One line for people: what failed, naming the server asked (never a key)."""
    from cowork.redact import redact

    at = where(api_base)
    cause = unreachable(exc)
    if cause is not None:
        detail = getattr(cause, "strerror", None) or str(cause)
        return redact(f"cannot connect to {at or 'the provider'} ({type(cause).__name__}: {detail})"[:400])
    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    return redact(f"{text} (at {at})" if at else text)
