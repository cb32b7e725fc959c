"""The :class:`Tools` facade: the agents' tools, each call limited, redacted and audited.

::

    Tools
    ├── http_fetch(FetchRequest)   Fetcher (orchestra.tools.fetch) behind the Policy,
    │                              the hook, the resolver; one deadline for the whole call
    ├── search(SearchRequest)      SearXNG (orchestra.tools.search), one deadline
    ├── audit(AuditQuery)          a page of the audit (orchestra.tools.audit)
    └── statistics()               calls by decision

Every call, whatever becomes of it, is written to the audit and logged as one line
(logger ``orchestra.tools``) before its answer is given, with every secret redacted
(:mod:`orchestra.tools.redact`): ``allowed`` (sent and answered), ``refused`` (the
policy, the hook, a bad URL, search not configured) or ``failed`` (upstream broke or timed
out, or the call was cancelled).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import attrs
import trio

from orchestra.config import ToolsConfig
from orchestra.errors import AuditError, ErrorCode, Refusal
from orchestra.obs import logs
from orchestra.tools.audit import AuditEntry, AuditLog, AuditPage, AuditQuery, rfc3339_ms
from orchestra.tools.calls import (
    FetchRequest,
    FetchResult,
    SearchRequest,
    SearchResult,
    ToolsStatistics,
)
from orchestra.tools.fetch import Fetched, Fetcher, Progress
from orchestra.tools.hook import HOOK_LABEL, Hook, ToolCall, consult, load_hook
from orchestra.tools.policy import Policy, label
from orchestra.tools.redact import REDACTED, Scrubber, Secrets
from orchestra.tools.resolve import Resolver, SystemResolver
from orchestra.tools.search import SearchHit, search, search_url

T = TypeVar("T")

log = logging.getLogger("orchestra.tools")

AUDIT_GRACE_S: Final = 5.0
"""How long a cancelled call may still take to write its audit row."""
_REFUSED: Final = frozenset({ErrorCode.FORBIDDEN, ErrorCode.INVALID_PARAMS, ErrorCode.NOT_FOUND})


def _disabled() -> Refusal:
    return Refusal(
        ErrorCode.NOT_FOUND, "the tools are disabled here (set tools.enabled = true to serve them)"
    )


@attrs.define
class _Counts:
    allowed: int = 0
    refused: int = 0
    failed: int = 0


class Tools:
    """The agents' tools of one service (see the module docstring).

    Make one with :meth:`open`; it holds no open connection or file between calls and
    needs no closing. Every method may be called from any number of tasks at once.

    Cancellation: a cancelled call raises :exc:`trio.Cancelled` once its connection is
    closed and its audit row written (the write is shielded, for up to
    :data:`AUDIT_GRACE_S`); its row says ``failed`` / ``CANCELLED``.
    """

    def __init__(
        self,
        config: ToolsConfig,
        audit: AuditLog | None,
        *,
        hook: Hook | None,
        resolver: Resolver,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        """Not for direct use: call :meth:`open`."""
        self._config = config
        self._audit = audit
        self._hook = hook
        self._policy = Policy.from_config(config.policy)
        self._secrets = Secrets.from_config(config.secrets)
        self._fetcher = Fetcher(self._policy, self._secrets, resolver, hook, ssl_context)
        self._counts = _Counts()

    @classmethod
    async def open(
        cls,
        config: ToolsConfig,
        data_dir: Path,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Tools:
        """The tools ``config`` describes, their audit in ``data_dir``
        (``tools-audit.sqlite3``, created when missing; not opened at all when
        ``config.enabled`` is false).

        ``resolver`` turns names into addresses (default: the system's); ``ssl_context``
        checks servers' certificates (default: httpx's, on certifi's CA bundle, made on the
        first https call). The
        secret patterns are added to the process's log redactor. Raises
        :class:`~orchestra.errors.ConfigError` when the policy hook cannot be imported and
        :class:`~orchestra.errors.AuditError` when the audit cannot be opened.
        """
        hook = load_hook(config.policy.hook)
        for pattern in config.secrets.patterns:
            logs.redactor.add_pattern(pattern)
        if not config.enabled:
            return cls(config, None, hook=hook, resolver=SystemResolver(), ssl_context=None)
        audit = await AuditLog.open(data_dir, max_rows=config.audit_max_rows)
        return cls(
            config, audit, hook=hook, resolver=resolver or SystemResolver(), ssl_context=ssl_context
        )

    @property
    def enabled(self) -> bool:
        """``tools.enabled``: false, and every call is refused with NOT_FOUND."""
        return self._config.enabled

    @property
    def config(self) -> ToolsConfig:
        """The ``[tools]`` tables these tools were opened with."""
        return self._config

    @property
    def policy(self) -> Policy:
        """``[tools.policy]``, compiled."""
        return self._policy

    def statistics(self) -> ToolsStatistics:
        """Calls since start, by decision."""
        counts = self._counts
        return ToolsStatistics(allowed=counts.allowed, refused=counts.refused, failed=counts.failed)

    def require_enabled(self) -> None:
        """Raise Refusal(NOT_FOUND), saying which key to set, when the tools are disabled."""
        if not self.enabled:
            raise _disabled()

    # -- http_fetch ----------------------------------------------------------------------------

    async def http_fetch(
        self, request: FetchRequest, *, who: str = "anonymous", correlation_id: str | None = None
    ) -> FetchResult:
        """Fetch ``request.url`` behind the policy (:mod:`orchestra.tools.fetch` says how).

        Returns the answer, whatever its HTTP status (redacted when
        ``tools.secrets.redact_output``). Raises :class:`Refusal`: ``FORBIDDEN`` (a rule of
        the policy or the hook; ``policy_label`` ``tools.policy.<rule>``),
        ``INVALID_PARAMS`` (not an absolute URL with a host), ``NOT_FOUND`` (tools
        disabled), ``TOOL_FAILED`` (DNS, connection, TLS, a broken answer) or
        ``TOOL_TIMEOUT`` (the time limit). ``max_bytes`` and ``timeout_ms`` above the
        policy's are lowered to the policy's.
        """
        self.require_enabled()
        fetcher = self._fetcher
        policy = self._policy
        max_bytes = min(request.max_bytes or policy.max_response_bytes, policy.max_response_bytes)
        own_limit = request.timeout_ms is not None and request.timeout_ms < policy.max_time_ms
        timeout_ms = request.timeout_ms if own_limit and request.timeout_ms else policy.max_time_ms
        call = ToolCall(
            tool="http_fetch",
            method=request.method,
            url=request.url,
            headers=request.headers,
            who=who,
            session_id=request.session_id,
            task_id=request.task_id,
        )
        scrubber = self._secrets.for_call(call.headers)
        progress = Progress(url=request.url, method=request.method)
        started = trio.current_time()

        async def run() -> FetchResult:
            with trio.move_on_after(timeout_ms / 1000):
                fetched = await fetcher.fetch(
                    call, scrubber, max_bytes=max_bytes, progress=progress
                )
                return self._fetch_result(fetched, scrubber, started)
            which = "timeout_ms" if own_limit else "tools.policy.max_time_ms"
            raise Refusal(
                ErrorCode.TOOL_TIMEOUT,
                f"{progress.url} did not answer in time: the call took more than "
                f"{timeout_ms} ms ({which})",
                retriable=True,
                policy_label=None if own_limit else label("max_time_ms"),
            )

        return await self._audited(call, scrubber, progress, started, correlation_id, run)

    def _fetch_result(self, fetched: Fetched, scrubber: Scrubber, started: float) -> FetchResult:
        redact = self._secrets.redact_output
        text = fetched.text()
        headers: dict[str, str] = {}
        for name, value in fetched.headers:
            if redact:
                value = REDACTED if self._secrets.is_secret(name) else scrubber.scrub(value)
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        final_url, redirects = fetched.final_url, list(fetched.redirects)
        content_type = fetched.content_type
        if redact:
            text, final_url = scrubber.scrub(text), scrubber.scrub(final_url)
            redirects = scrubber.scrub_all(redirects)
            content_type = None if content_type is None else scrubber.scrub(content_type)
        return FetchResult(
            status=fetched.status,
            headers=headers,
            body=text,
            truncated=fetched.truncated,
            final_url=final_url,
            bytes=len(fetched.body),
            time_ms=_elapsed_ms(started),
            redirects=tuple(redirects),
            content_type=content_type,
        )

    # -- search --------------------------------------------------------------------------------

    async def search(
        self, request: SearchRequest, *, who: str = "anonymous", correlation_id: str | None = None
    ) -> SearchResult:
        """Ask the configured SearXNG for ``request.query`` (:mod:`orchestra.tools.search`).

        Raises :class:`Refusal`: ``NOT_FOUND`` (tools disabled, or no
        ``tools.search.searxng_url``), ``FORBIDDEN`` (the hook), ``TOOL_FAILED``,
        ``TOOL_TIMEOUT`` (``tools.search.timeout_ms``)."""
        self.require_enabled()
        config = self._config.search
        base = config.searxng_url
        url = search_url(base, request.query) if base else ""
        call = ToolCall(
            tool="search",
            method="GET",
            url=url,
            query=request.query,
            who=who,
            session_id=request.session_id,
            task_id=request.task_id,
        )
        scrubber = self._secrets.for_call()
        progress = Progress(url=url, method="GET")
        started = trio.current_time()
        limit = min(request.max_results or config.max_results, config.max_results)
        hook = self._hook

        async def run() -> SearchResult:
            if not base:
                raise Refusal(
                    ErrorCode.NOT_FOUND,
                    "search is not configured here: set tools.search.searxng_url to the URL of "
                    "your SearXNG instance",
                )
            with trio.move_on_after(config.timeout_ms / 1000):
                asked = call if hook is None else await consult(hook, call)
                query = asked.query
                if not query:
                    raise Refusal(
                        ErrorCode.FORBIDDEN,
                        "the policy hook rewrote the search to one without a query",
                        policy_label=HOOK_LABEL,
                    )
                progress.url = search_url(base, query)
                searched = await search(base, query, limit)
                progress.status, progress.bytes = searched.status, searched.bytes
                return self._search_result(query, searched.hits, scrubber, started)
            raise Refusal(
                ErrorCode.TOOL_TIMEOUT,
                f"SearXNG at {base} did not answer within {config.timeout_ms} ms "
                f"(tools.search.timeout_ms)",
                retriable=True,
            )

        return await self._audited(call, scrubber, progress, started, correlation_id, run)

    def _search_result(
        self, query: str, hits: tuple[SearchHit, ...], scrubber: Scrubber, started: float
    ) -> SearchResult:
        if self._secrets.redact_output:
            query = scrubber.scrub(query)
            hits = tuple(
                attrs.evolve(
                    hit,
                    title=scrubber.scrub(hit.title),
                    url=scrubber.scrub(hit.url),
                    snippet=scrubber.scrub(hit.snippet),
                )
                for hit in hits
            )
        return SearchResult(query=query, results=hits, time_ms=_elapsed_ms(started))

    # -- the audit -----------------------------------------------------------------------------

    async def audit(self, query: AuditQuery) -> AuditPage:
        """A page of the audit, newest first. Raises Refusal(NOT_FOUND) when the tools are
        disabled, :class:`AuditError` when the database fails."""
        self.require_enabled()
        assert self._audit is not None
        return await self._audit.page(query)

    async def _audited(
        self,
        call: ToolCall,
        scrubber: Scrubber,
        progress: Progress,
        started: float,
        correlation_id: str | None,
        run: Callable[[], Awaitable[T]],
    ) -> T:
        """``run()``, then its audit row and log line; its refusal, redacted, re-raised."""
        outcome: T | Refusal
        try:
            outcome = await run()
        except Refusal as refusal:
            outcome = refusal
        except BaseException as exc:  # cancelled, or a bug: audited, then on its way
            code = ErrorCode.CANCELLED if isinstance(exc, trio.Cancelled) else ErrorCode.INTERNAL
            with trio.move_on_after(AUDIT_GRACE_S, shield=True):
                try:
                    await self._note(call, scrubber, progress, started, correlation_id, code)
                except AuditError:
                    log.exception("the tools' audit failed while a call was cancelled")
            raise
        if isinstance(outcome, Refusal):
            if self._secrets.redact_output:
                outcome = attrs.evolve(
                    outcome,
                    message=scrubber.scrub(outcome.message),
                    problems=tuple(scrubber.scrub_all(outcome.problems)),
                )
            await self._note(call, scrubber, progress, started, correlation_id, outcome)
            raise outcome
        await self._note(call, scrubber, progress, started, correlation_id, None)
        return outcome

    async def _note(
        self,
        call: ToolCall,
        scrubber: Scrubber,
        progress: Progress,
        started: float,
        correlation_id: str | None,
        outcome: Refusal | ErrorCode | None,
    ) -> None:
        """Write the call's audit row and log line (``outcome`` None: allowed)."""

        def clean(text: str | None) -> str | None:
            return None if not text else logs.redactor.scrub(scrubber.scrub(text))

        rule = error_code = error = None
        if outcome is None:
            decision = "allowed"
        elif isinstance(outcome, ErrorCode):
            decision, error_code = "failed", str(outcome)
            error = "cancelled" if outcome is ErrorCode.CANCELLED else "internal error"
        else:
            decision = "refused" if outcome.code in _REFUSED else "failed"
            rule, error_code, error = outcome.policy_label, str(outcome.code), outcome.message
        setattr(self._counts, decision, getattr(self._counts, decision) + 1)
        entry = AuditEntry(
            at=rfc3339_ms(time.time()),
            who=call.who,
            tool=call.tool,
            decision=decision,
            method=call.method,
            url=clean(call.url),
            session_id=call.session_id,
            task_id=call.task_id,
            rule=rule,
            status=progress.status,
            bytes=progress.bytes if progress.status is not None else None,
            time_ms=_elapsed_ms(started),
            error_code=error_code,
            error=clean(error),
            correlation_id=correlation_id,
        )
        assert self._audit is not None
        await self._audit.record(entry)
        log.info(
            "%s %s %s: %s%s",
            call.tool,
            entry.method,
            entry.url or "-",
            decision,
            f" by {rule}" if rule else f" ({error_code})" if error_code else "",
            extra={
                "who": entry.who,
                "tool": entry.tool,
                "decision": decision,
                "rule": rule,
                "method": entry.method,
                "url": entry.url,
                "status": entry.status,
                "bytes": entry.bytes,
                "time_ms": entry.time_ms,
                "session_id": entry.session_id,
                "task_id": entry.task_id,
                "error_code": error_code,
            },
        )


def _elapsed_ms(started: float) -> float:
    return round((trio.current_time() - started) * 1000, 1)
