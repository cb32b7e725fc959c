"""What the HTTP face hands the tools and gets back: plain frozen values, no I/O.

:class:`FetchRequest` → :class:`FetchResult` (``POST /v1/tools/http_fetch``),
:class:`SearchRequest` → :class:`SearchResult` (``POST /v1/tools/search``), and
:class:`ToolsStatistics`, the counters :meth:`orchestra.tools.Tools.statistics` reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from orchestra.tools.search import SearchHit


@attrs.frozen(kw_only=True)
class FetchRequest:
    """One ``http_fetch`` call, as the agent asked for it."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=lambda h: repr(sorted(h)))
    """Sent as they are (the values may be secrets: the repr shows the names only)."""
    max_bytes: int | None = None
    """At most this much body; None, or more than the policy's: the policy's."""
    timeout_ms: int | None = None
    """At most this long in all; None, or more than the policy's: the policy's."""
    session_id: str | None = None
    task_id: str | None = None


@attrs.frozen(kw_only=True)
class FetchResult:
    """``http_fetch``'s answer, redacted as ``tools.secrets.redact_output`` says."""

    status: int
    """The last answer's HTTP status (after redirects)."""
    headers: Mapping[str, str]
    """Its headers: lower-case names, repeated ones joined with ``", "``."""
    body: str
    """The body as text (its charset, else UTF-8, undecodable bytes as U+FFFD); empty for
    ``HEAD``."""
    truncated: bool
    """The body went on past the byte limit and was not read further."""
    final_url: str
    bytes: int
    """Body bytes read (before any redaction)."""
    time_ms: float
    redirects: tuple[str, ...]
    """The URLs redirected to, in order."""
    content_type: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": dict(self.headers),
            "body": self.body,
            "truncated": self.truncated,
            "final_url": self.final_url,
            "bytes": self.bytes,
            "time_ms": self.time_ms,
            "redirects": list(self.redirects),
            "content_type": self.content_type,
        }


@attrs.frozen(kw_only=True)
class SearchRequest:
    """One ``search`` call."""

    query: str
    max_results: int | None = None
    """At most this many; None, or more than ``tools.search.max_results``: that many."""
    session_id: str | None = None
    task_id: str | None = None


@attrs.frozen(kw_only=True)
class SearchResult:
    """``search``'s answer."""

    query: str
    """The query SearXNG was asked (a policy hook may have rewritten it)."""
    results: tuple[SearchHit, ...]
    time_ms: float

    def as_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "results": [hit.as_json() for hit in self.results],
            "time_ms": self.time_ms,
        }


@attrs.frozen(kw_only=True)
class ToolsStatistics:
    """Calls since start, by what became of them."""

    allowed: int
    refused: int
    failed: int
