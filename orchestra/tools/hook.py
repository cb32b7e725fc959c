"""The policy hook (``tools.policy.hook = "module:function"``): what the configuration
cannot say, in Python.

The hook is imported at start (an import that fails is a configuration error naming
``tools.policy.hook``) and then called for every tool call that the policy allows, once
before the call is sent and again before each redirect is followed::

    def hook(call: ToolCall) -> ToolCall | Refuse | None: ...
    async def hook(call: ToolCall) -> ToolCall | Refuse | None: ...

- ``call`` (:class:`ToolCall`, frozen) says what is about to happen: ``tool``
  (``"http_fetch"`` or ``"search"``), ``method``, ``url``, ``headers`` (a read-only
  mapping, the values the agent sent: secrets included, so never log them), ``query``
  (search only), ``who`` (the authenticated identity: ``token``, ``anonymous`` or
  ``proxy:<user>``), ``session_id``, ``task_id``, and ``hop`` (0 for the call itself, *n*
  for its *n*-th redirect).
- Return ``None`` to let it go on; a rewritten call (``attrs.evolve(call, url=...,
  headers=...)``: only ``method``, ``url``, ``headers`` and, for search, ``query`` are
  taken from it), which the policy then checks again from the start; or
  ``Refuse("why")``, which answers 403 with ``policy_label`` ``tools.policy.hook`` and the
  reason in the message.
- A hook that raises, or returns anything else, refuses the call too (fail closed); its
  traceback goes to the log.
- A sync hook runs on the event loop and must not block; one that needs I/O is async (and
  may use ``trio.to_thread.run_sync``). Its time counts against the call's time limit; a
  call cancelled meanwhile cancels an async hook with it.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeAlias

import attrs

from orchestra.config.checks import import_ref
from orchestra.errors import ConfigError, ErrorCode, Refusal
from orchestra.tools.policy import label

log = logging.getLogger("orchestra.tools")

HOOK_LABEL: Final = label("hook")


def _frozen_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(headers))


def _names(headers: Mapping[str, str]) -> str:
    return repr(sorted(headers))  # the names only: the values may be secrets


@attrs.frozen(kw_only=True)
class ToolCall:
    """One tool call as the policy hook sees it (see the module docstring)."""

    tool: str
    """``http_fetch`` or ``search``."""
    method: str
    """``GET`` or ``HEAD`` (``GET`` for a search)."""
    url: str
    """The URL about to be fetched (for a search, the SearXNG query's)."""
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_headers, repr=_names)
    """The request headers the agent sent (a search sends none)."""
    query: str | None = None
    """The search's query; None for ``http_fetch``."""
    who: str = "anonymous"
    """The authenticated identity: ``token``, ``anonymous``, ``proxy:<user>``."""
    session_id: str | None = None
    task_id: str | None = None
    hop: int = 0
    """0 for the call itself; n before its n-th redirect is followed."""


@attrs.frozen
class Refuse:
    """What a hook returns to refuse a call: 403, ``policy_label`` ``tools.policy.hook``,
    ``reason`` in the message."""

    reason: str


HookResult: TypeAlias = ToolCall | Refuse | None
Hook: TypeAlias = Callable[[ToolCall], HookResult | Awaitable[HookResult]]
"""A policy hook: sync or async, see the module docstring."""


def load_hook(ref: str) -> Hook | None:
    """The hook ``ref`` (``module:function``) names, imported now; None for ``""``.
    Raises :class:`ConfigError` naming ``tools.policy.hook`` when it cannot be had."""
    if not ref:
        return None
    try:
        hook: Hook = import_ref(ref)
    except ValueError as exc:
        raise ConfigError([f"tools.policy.hook: {exc}"]) from None
    return hook


def _refused(message: str) -> Refusal:
    return Refusal(ErrorCode.FORBIDDEN, message, policy_label=HOOK_LABEL)


async def consult(hook: Hook, call: ToolCall) -> ToolCall:
    """Ask ``hook`` about ``call``: the call to go on with (``call`` itself, or the rewrite
    the hook returned, with the fields a rewrite may change taken from it). Raises
    :class:`Refusal` (``tools.policy.hook``) when the hook refuses, raises or returns
    something else; raises :exc:`trio.Cancelled` when cancelled inside an async hook."""
    try:
        answer: Any = hook(call)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:  # a hook's bug refuses the call: fail closed
        log.exception("the tools' policy hook raised; the call is refused")
        raise _refused(
            f"the policy hook failed ({type(exc).__name__}); the call is refused"
        ) from None
    if answer is None:
        return call
    if isinstance(answer, Refuse):
        raise _refused(f"refused by the policy hook: {answer.reason}")
    if isinstance(answer, ToolCall):
        return attrs.evolve(
            call,
            method=answer.method,
            url=answer.url,
            headers=answer.headers,
            query=answer.query if call.query is not None else None,
        )
    raise _refused(
        f"the policy hook returned {type(answer).__name__}, not None, a ToolCall or a "
        f"Refuse; the call is refused"
    )
