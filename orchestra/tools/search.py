"""``search``'s network side: one query to the configured SearXNG instance.

``GET <searxng_url>/search?q=<query>&format=json`` (SearXNG's JSON API; its
``search.formats`` setting must list ``json``, or it answers 403). The instance is the
operator's and trusted, so the private-address rule does not apply to it; the call is
audited like every other. Its answer is read up to :data:`MAX_ANSWER_BYTES`; each result
becomes a :class:`SearchHit` (``title``, ``url``, ``snippet`` from SearXNG's ``content``,
``engine``), results without a URL are skipped.

Failures are :class:`~orchestra.errors.Refusal` ``TOOL_FAILED`` (unreachable, not 200, not
SearXNG's JSON); the time limit is the caller's. Cancellation: raises
:exc:`trio.Cancelled`, the connection closed on the way out.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any, Final, cast

import attrs
import httpx

from orchestra.errors import ErrorCode, Refusal

MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024
"""SearXNG's answer is read up to this much; a longer one fails the search."""


@attrs.frozen(kw_only=True)
class SearchHit:
    """One result."""

    title: str
    url: str
    snippet: str
    engine: str | None = None
    """The search engine SearXNG took it from, when it says."""

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Searched:
    """SearXNG's answer, before any redaction."""

    status: int
    hits: tuple[SearchHit, ...]
    bytes: int


def search_url(base_url: str, query: str) -> str:
    """The URL of the SearXNG query for ``query``."""
    return str(httpx.URL(base_url.rstrip("/") + "/search", params={"q": query, "format": "json"}))


def _hits(document: Any, limit: int) -> tuple[SearchHit, ...]:
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise ValueError("it has no results list")
    hits = []
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("url"), str):
            continue
        engine = result.get("engine")
        hits.append(
            SearchHit(
                title=str(result.get("title") or ""),
                url=result["url"],
                snippet=str(result.get("content") or ""),
                engine=engine if isinstance(engine, str) else None,
            )
        )
        if len(hits) == limit:
            break
    return tuple(hits)


async def search(base_url: str, query: str, limit: int) -> Searched:
    """Ask SearXNG at ``base_url`` for ``query``; at most ``limit`` hits. Raises
    :class:`Refusal` ``TOOL_FAILED``."""
    url = search_url(base_url, query)
    body = bytearray()
    try:
        async with (
            httpx.AsyncClient(trust_env=False, timeout=None, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            status = response.status_code
            if status != 200:
                hint = ""
                if status == 403:
                    hint = " (does its settings.yml list json in search.formats?)"
                raise Refusal(
                    ErrorCode.TOOL_FAILED,
                    f"SearXNG at {base_url} answered {status}{hint}",
                    retriable=status >= 500,
                )
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise Refusal(
                            ErrorCode.TOOL_FAILED,
                            f"SearXNG's answer is over {MAX_ANSWER_BYTES} bytes",
                        )
    except httpx.RequestError as exc:
        raise Refusal(
            ErrorCode.TOOL_FAILED,
            f"cannot reach SearXNG at {base_url}: {str(exc) or type(exc).__name__}",
            retriable=True,
        ) from None
    try:
        hits = _hits(json.loads(body), limit)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Refusal(ErrorCode.TOOL_FAILED, f"SearXNG's answer is not its JSON ({exc})") from None
    return Searched(status=status, hits=hits, bytes=len(body))
