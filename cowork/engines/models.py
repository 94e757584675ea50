"""The one place cowork calls a model: litellm with the role's (or the team's) model, key, base and fallbacks.

litellm is imported lazily, after `LITELLM_LOCAL_MODEL_COST_MAP=True`, so nothing phones home and the CLI starts
fast. Retries are not litellm's job here (`num_retries=0`): `complete` tries a model again on passing trouble (429,
5xx, a timeout, a lost connection; see `cowork.engines.retry`), with backoff, then moves to the next fallback;
`complete_text` (cheap steps) retries the same way and has no fallbacks.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from cowork.config import ModelSettings, TeamSettings
from cowork.engines import retry
from cowork.errors import CoworkError
from cowork.procs import pid_alive


class ModelError(CoworkError):
    """Every configured model failed (or none is configured)."""


@dataclass
class ModelChoice:
    """The model a lane calls, with its connection details and fallbacks."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    fallbacks: list[str] = field(default_factory=list)
    timeout_s: float = 120.0
    is_local: bool = False  # the embedded model: served through local_model.constrained_tool_call
    label: str = ""  # how to show the model to people (the embedded one is labelled weak)
    source: str = ""  # where the choice came from (role, COWORK_MODEL, cowork.toml, detected, embedded fallback)
    attempts: int = ModelSettings.model_fields["attempts"].default  # tries per model on a transient error
    backoff_s: float = ModelSettings.model_fields["backoff_s"].default
    max_backoff_s: float = ModelSettings.model_fields["max_backoff_s"].default


@dataclass
class Completion:
    """One model reply as a plain OpenAI-style assistant message, with what it cost."""

    message: dict
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0


def resolve(settings: TeamSettings, role: Any = None) -> ModelChoice:
    """The model a role calls: its `model:`, COWORK_MODEL, cowork.toml `[model]`, a detected provider, or the
    embedded model (see `cowork.engines.detect.resolve_model`, the one resolver).

    Raises:
        ModelError: when no model is configured or found, or the chosen one's API key is missing.
    """
    from cowork.engines import detect

    try:
        r = detect.resolve_model(settings, role)
    except detect.NoModel as exc:
        raise ModelError(exc.message, hint=exc.hint or "see `cowork models`") from None
    if not r.key_ok and not r.fallbacks:
        raise ModelError(f"model {r.name} ({r.source}) needs an API key: {r.key_note}",
                         hint="export the variable where cowork runs, or pick another model with COWORK_MODEL; "
                              "`cowork models` shows what is available")
    m = settings.model
    return ModelChoice(model=r.name, api_base=r.api_base, api_key=r.api_key, fallbacks=r.fallbacks,
                       timeout_s=r.timeout_s, is_local=r.is_local, label=r.label, source=r.source,
                       attempts=m.attempts, backoff_s=m.backoff_s, max_backoff_s=m.max_backoff_s)


_litellm = None
_unpriced: set[str] = set()  # models litellm has no price for (asked once per process)


def litellm():
    """The litellm module, imported on first use with the local cost map and no telemetry.

    Importing it builds about 400,000 long-lived objects. With the cyclic collector on, each full collection during
    the import walks all of them again (about 0.5 s of a 2 s import here), and every later full collection in a
    busy runner does too (100-300 ms pauses of every lane). So the import runs with the collector off and what it
    built is then frozen out of later collections (`gc.freeze`); objects freed by reference counting still are.
    """
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import gc

        was_enabled = gc.isenabled()
        gc.disable()
        try:
            import litellm as _mod
        finally:
            if was_enabled:
                gc.enable()
        gc.freeze()
        _mod.suppress_debug_info = True
        _mod.telemetry = False
        # litellm's own warnings are about its internals (its logging worker moving between event loops when a
        # planner's loop is followed by a runner's): cowork reports every failure of a call itself
        import logging

        logging.getLogger("LiteLLM").setLevel(logging.ERROR)
        if os.environ.get("COWORK_OPENAI_FASTPATH", "1") != "0":
            from cowork.engines import openai_fastpath

            openai_fastpath.install()  # skips the SDK's per-message request walk, where it provably changes nothing
        _litellm = _mod
    return _litellm


_settled = False


def settle_heap() -> None:
    """Freeze what the process's first model call built, once (call it after a reply came back).

    litellm imports much more on its first call than at import: about 270 modules here (its MCP, proxy and
    telemetry types among them), 68,000 objects. Left to the cyclic collector, every full collection walks them
    again: a 75-95 ms pause of every lane, measured in the middle of a 16-lane fan-out. Frozen like the import's
    objects, they are only ever freed by reference counting, and a full collection walks only what lanes build.
    """
    global _settled
    if not _settled:
        _settled = True
        import gc

        gc.freeze()


# ---------------------------------------------------------------- the order requests leave in

SEND_HOLD_MAX_S = 0.05  # the longest one request's preparation may keep the next lane's waiting
_send_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()
_no_send_hook: set[str] = set()  # models whose litellm path never said "sending now": not queued


@contextlib.asynccontextmanager
async def send_turn(model: str) -> AsyncIterator[Callable[..., None] | None]:
    """One lane at a time prepares a model request; the next starts once this one is about to go out.

    litellm prepares a request in steps that yield to the event loop (a worker thread for the parameter mapping,
    then the connection). When many lanes call at once (a fan-out's start, replies that arrive together), the loop
    runs every lane's first step, then every lane's second, and so on: the first request leaves only after all of
    them are built, and each burst of replies costs every lane the whole burst. In turn, lane k's request leaves
    after k preparations.

    Yields the callback to pass litellm as `logger_fn`: litellm calls it just before the request goes out (and
    again with the reply), which hands the turn on. The turn also passes after `SEND_HOLD_MAX_S` and when the call
    ends; a model whose calls succeed without ever calling it is not queued again in this process.
    """
    if model in _no_send_hook:
        yield None
        return
    loop = asyncio.get_running_loop()
    lock = _send_locks.get(loop)
    if lock is None:
        lock = _send_locks[loop] = asyncio.Lock()
    await lock.acquire()
    state = {"held": True, "hooked": False}

    def hand_on() -> None:
        if state["held"]:
            state["held"] = False
            lock.release()

    loop_thread = threading.get_ident()

    def sending(*_: Any) -> None:  # litellm's logger_fn: called from the loop, or from its worker thread
        state["hooked"] = True
        if threading.get_ident() == loop_thread:
            hand_on()
        else:
            loop.call_soon_threadsafe(hand_on)

    timer = loop.call_later(SEND_HOLD_MAX_S, hand_on)
    try:
        yield sending
        if not state["hooked"]:  # answered without ever saying "sending now" (a failed call proves nothing)
            _no_send_hook.add(model)
    finally:
        timer.cancel()
        hand_on()


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else ""


def _message_dict(msg: Any) -> dict:
    out: dict = {"role": "assistant", "content": getattr(msg, "content", None)}
    calls = getattr(msg, "tool_calls", None) or []
    if calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.function.name, "arguments": c.function.arguments or ""}}
                             for c in calls]
    return out


def cost_of(resp: Any, model: str, tokens_in: int, tokens_out: int, settings: TeamSettings | None) -> float:
    """USD for one reply: `[prices]` in cowork.toml when it names the model, else litellm's price, else 0 (the same
    order as `cowork.team.budgets.price`)."""
    # litellm prices the reply itself while handling it (asking again costs milliseconds a call); its first failure
    # for a model also gives that model a zero entry, so litellm stops searching its table on every reply
    usd = (getattr(resp, "_hidden_params", None) or {}).get("response_cost")
    if usd is None and model not in _unpriced:
        lm = litellm()
        try:
            usd = lm.completion_cost(completion_response=resp, model=model)
        except Exception as exc:  # an unknown model: litellm raises rather than returning 0
            _unpriced.add(model)
            if isinstance(exc, lm.ModelNotMappedError):  # not a reply litellm failed to read
                _price_at_zero(model)
    price = settings.price_for(model) if settings is not None else None
    if price is not None:
        return (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / 1_000_000
    return float(usd or 0.0)


def _price_at_zero(model: str) -> None:
    """Give litellm a price of 0 for a model it could not price (cowork prices it from `[prices]` in `cost_of`).

    Without an entry litellm searches its whole price table again on every reply before giving up: about 1 ms of
    the loop all lanes share, per call (measured: 4.3 ms a call unpriced, 3.3 ms with the entry).
    """
    lm = litellm()
    if model in lm.model_cost or model.split("/", 1)[-1] in lm.model_cost:
        return  # litellm has an entry after all: never overwrite a real price
    try:
        lm.register_model({model: {
            "input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "cache_creation_input_token_cost": 0.0,
            "cache_read_input_token_cost": 0.0, "litellm_provider": _provider(model) or "openai", "mode": "chat"}})
    except Exception:  # noqa: BLE001 - a quicker lookup is not worth failing a reply for
        pass


def cheap_choice(settings: TeamSettings) -> ModelChoice | None:
    """The model for cheap steps (summaries, classification): `[model] cheap` in cowork.toml, or None."""
    from cowork.config import api_key_for

    m = settings.model
    if not m.cheap:
        return None
    return ModelChoice(model=m.cheap, api_base=m.api_base, api_key=api_key_for(m), timeout_s=min(m.timeout_s, 30.0),
                       label=m.cheap, source="cowork.toml [model] cheap", attempts=m.attempts, backoff_s=m.backoff_s,
                       max_backoff_s=m.max_backoff_s)


def complete_text(choice: ModelChoice, messages: list[dict], *, max_tokens: int = 400,
                  settings: TeamSettings | None = None,
                  on_retry: Callable[[str, str, int, float], None] | None = None) -> Completion:
    """One plain-text reply, blocking and without tools or fallbacks: for short cheap steps. Passing trouble is
    tried again as `complete` does (`choice.attempts` tries, `retry.next_wait` between them).

    Args:
        on_retry: called as (model, error text naming the server, tries so far, wait in seconds) before each wait.

    Raises:
        ModelError: the provider failed; the caller decides whether the step matters.
    """
    tries = 0
    while True:
        tries += 1
        try:
            resp = litellm().completion(model=choice.model, api_base=choice.api_base, api_key=choice.api_key,
                                        messages=messages, max_tokens=max_tokens, timeout=choice.timeout_s,
                                        num_retries=0)
            if not resp.choices or resp.choices[0].message is None:
                raise retry.EmptyReply("the provider's reply had no message")
            content = resp.choices[0].message.content or ""
            settle_heap()
            break
        except Exception as exc:  # noqa: BLE001 - any provider failure becomes one clear error
            wait = retry.next_wait(exc, tries, choice)
            if wait is None:
                raise ModelError(f"{choice.model} failed: {retry.describe(exc, choice.api_base)}"
                                 + (f" ({tries} tries)" if tries > 1 else "")) from None
            if on_retry is not None:
                on_retry(choice.model, retry.describe(exc, choice.api_base), tries, wait)
        time.sleep(wait)
    usage = getattr(resp, "usage", None)
    t_in, t_out = getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0
    return Completion(message={"role": "assistant", "content": content},
                      model=choice.model, tokens_in=t_in, tokens_out=t_out,
                      usd=cost_of(resp, choice.model, t_in, t_out, settings))


async def complete(choice: ModelChoice, messages: list[dict], tools: list[dict] | None = None, *,
                   settings: TeamSettings | None = None,
                   on_fallback: Callable[[str, str, Exception], None] | None = None,
                   on_retry: Callable[[str, str, int, float], None] | None = None,
                   hold: Callable[[], Awaitable[None]] | None = None) -> Completion:
    """Call the model, then each fallback in order on a provider error. A transient error (429, 5xx, a timeout, a
    lost connection) is tried again first, up to `choice.attempts` tries a model, after a backoff (`retry.backoff`).
    The tries all belong to the caller's one journal step: no reply came, so a runner killed meanwhile sends the
    call again on resume.

    Args:
        on_fallback: called as (failed_model, next_model, error) before moving on.
        on_retry: called as (model, error text naming the server, tries so far, wait in seconds) before each wait.
        hold: the lane's pause (returns once it is not paused), let in during each backoff: no retry is sent
            while the lane is paused, and a pause set meanwhile shows at once.

    Raises:
        ModelError: when every model failed; names each one, its server and its error.
    """
    if choice.is_local:
        return await complete_local(choice, messages, tools)
    lm = litellm()
    models = [choice.model, *choice.fallbacks]
    errors: list[str] = []
    failures: list[tuple[str, Exception, str | None]] = []
    for i, model in enumerate(models):
        same = _provider(model) == _provider(choice.model)
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "num_retries": 0, "timeout": choice.timeout_s}
        if tools:
            kwargs["tools"] = tools
        if same and choice.api_base:
            kwargs["api_base"] = choice.api_base
        if same and choice.api_key:
            kwargs["api_key"] = choice.api_key
        tries = 0
        while True:
            tries += 1
            try:
                async with send_turn(model) as sending:
                    if sending is not None:
                        kwargs["logger_fn"] = sending
                    resp = await lm.acompletion(**kwargs)
                choices = resp.choices
                if not choices or choices[0].message is None:
                    raise retry.EmptyReply("the provider's reply had no message (choices: "
                                           f"{'[]' if not choices else 'no message'})")
                message = _message_dict(choices[0].message)
            except Exception as exc:  # provider errors of every kind: another try if it may pass, else the next model
                failure = exc
            else:
                settle_heap()
                usage = getattr(resp, "usage", None)
                t_in = int(getattr(usage, "prompt_tokens", 0) or 0)
                t_out = int(getattr(usage, "completion_tokens", 0) or 0)
                return Completion(message, model, t_in, t_out, cost_of(resp, model, t_in, t_out, settings))
            wait = retry.next_wait(failure, tries, choice)
            if wait is None:
                break
            if on_retry is not None:
                on_retry(model, retry.describe(failure, kwargs.get("api_base")), tries, wait)
            await retry.wait(wait, hold)
        errors.append(f"{model}: {retry.describe(failure, kwargs.get('api_base'))}"
                      + (f" ({tries} tries)" if tries > 1 else ""))
        failures.append((model, failure, kwargs.get("api_base")))
        if i + 1 < len(models) and on_fallback is not None:
            on_fallback(model, models[i + 1], failure)
    raise ModelError("every model failed: " + "; ".join(errors), hint=failure_hint(choice, failures))


def failure_hint(choice: ModelChoice, failures: list[tuple[str, Exception, str | None]]) -> str:
    """What to do when every model failed: the fix for the first failure a person can act on, and where the model
    was chosen (a user who set COWORK_MODEL was told to look in cowork.toml)."""
    where = f"the model comes from {choice.source}; " if choice.source else ""
    for model, exc, _base in failures:
        if "LLM Provider NOT provided" in str(exc):  # litellm's words for a model string without a known provider
            return (f"litellm knows no provider for '{model}': write it as PROVIDER/MODEL, e.g. "
                    "anthropic/claude-sonnet-4-5, openai/gpt-4o-mini or ollama/llama3.1 "
                    f"(https://docs.litellm.ai/docs/providers); {where}`cowork models` shows what each role uses")
    for model, exc, base in failures:
        if retry.unreachable(exc) is not None:
            at = retry.where(base) or "the provider"
            return (f"nothing answered at {at}: start the model server, or point COWORK_API_BASE (or `[model] "
                    f"api_base` in cowork.toml, or `api_base:` in the role file) at one that runs; {where}"
                    "`cowork models` checks a server on this machine")
    return (f"{where}check the model's name, its provider's API key and api_base; `cowork models` shows what each "
            "role uses")


# ---------------------------------------------------------------- the embedded model (owner: detect/demo)

import threading as _threading  # noqa: E402

_local_lock = _threading.Lock()
_local_endpoints: dict[str, Any] = {}  # state dir -> LocalEndpoint, so lanes do not re-probe a busy server


def local_endpoint(refresh: bool = False) -> Any:
    """The shared embedded-model server (started on first use), remembered for this process.

    Asked only once per process: `ensure_local_server` probes with a short timeout, and a server busy with
    another lane's request would look dead and get a twin.
    """
    from cowork.engines import detect, local_model

    state = detect.local_state_dir()
    with _local_lock:
        ep = _local_endpoints.get(str(state))
        if ep is None or refresh or not pid_alive(ep.pid):
            ep = _local_endpoints[str(state)] = local_model.ensure_local_server(state)
        return ep


async def complete_local(choice: ModelChoice, messages: list[dict], tools: list[dict] | None = None) -> Completion:
    """One reply from the embedded model: a grammar-constrained call to one of `tools`, as a tool-call message.

    The shared server is started on first use (`detect.local_state_dir()`). A reply the model garbles comes back
    as text without a tool call, so the agent loop nudges and retries instead of failing the lane. The reply's
    `model` is the weak-model label, so the timeline shows which replies came from it.
    """
    import asyncio
    import json
    import uuid

    from cowork.engines import local_model

    label = choice.label or choice.model
    timeout = max(choice.timeout_s, 300.0)  # one request at a time: parallel lanes queue at the server

    def call(endpoint: Any) -> tuple[str | None, dict, dict]:
        if tools:
            return local_model.constrained_tool_call(messages, tools, api_base=endpoint.api_base,
                                                     model=endpoint.model, timeout=timeout)
        resp = litellm().completion(model=endpoint.model, api_base=endpoint.api_base, api_key="local",
                                    messages=local_model.local_messages(messages, []), max_tokens=512,
                                    temperature=0.0, timeout=timeout, num_retries=0)
        usage = resp.usage
        return None, {"text": resp.choices[0].message.content or ""}, {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}

    def run() -> tuple[str | None, dict, dict]:
        try:
            endpoint = local_endpoint()
        except local_model.LocalModelError as exc:  # not installed, or the server would not start
            raise ModelError(f"{local_model.DISPLAY_NAME}: {exc.message}",
                             hint=exc.hint or local_model.INSTALL_HINT) from None
        try:
            return call(endpoint)
        except local_model.LocalModelError:
            raise
        except Exception as exc:  # the server we remembered went away (stopped by another process): once more
            if "Connection" not in type(exc).__name__:
                raise
            return call(local_endpoint(refresh=True))

    try:
        name, args, usage = await asyncio.to_thread(run)
    except ModelError:
        raise
    except local_model.LocalModelError as exc:  # a garbled reply: the agent loop nudges and asks again
        return Completion({"role": "assistant", "content": f"(unusable reply from the embedded model: {exc.message})"},
                          label)
    except Exception as exc:  # timed out or died: a provider error like any other
        log = local_endpoint_log()
        raise ModelError(f"{local_model.DISPLAY_NAME}: {type(exc).__name__}: {str(exc)[:300]}",
                         hint=f"see {log}" if log else None) from None
    t_in, t_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    if name is None:
        return Completion({"role": "assistant", "content": args["text"]}, label, t_in, t_out)
    tool_call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
    return Completion({"role": "assistant", "content": None, "tool_calls": [tool_call]}, label, t_in, t_out)


def local_endpoint_log() -> str | None:
    """The log of the embedded model server this process talks to, if any."""
    ep = next(iter(_local_endpoints.values()), None)
    return ep.log_path if ep is not None else None
