"""``search`` against a fake SearXNG on loopback: results, limits, the operator's instance
reached although private, failures, the time limit, the hook, redaction and the audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from orchestra.config import parse_config
from orchestra.errors import ErrorCode, Refusal
from orchestra.tools import AuditQuery, SearchRequest, Tools

from . import tools_hooks
from .tools_harness import Answer, Target, searxng, text


@pytest.fixture
async def fake_searxng(nursery: trio.Nursery) -> Target:
    server = Target()
    server.routes["/search"] = searxng
    server.routes["/searx/search"] = searxng
    await nursery.start(server.serve)
    return server


async def open_tools(tmp_path: Path, **search: Any) -> Tools:
    tables: dict[str, Any] = {"search": search}
    if "hook" in search:
        tables["policy"] = {"hook": search.pop("hook")}
    if "patterns" in search:
        tables["secrets"] = {"patterns": search.pop("patterns")}
    return await Tools.open(parse_config({"tools": tables}).tools, tmp_path / "data")


async def test_a_search_answers_titles_urls_and_snippets(
    tmp_path: Path, fake_searxng: Target
) -> None:
    tools = await open_tools(tmp_path, searxng_url=fake_searxng.base)
    result = await tools.search(SearchRequest(query="trio nurseries"), who="token")
    assert result.query == "trio nurseries"
    assert [hit.as_json() for hit in result.results] == [
        {
            "title": f"Result {i} for trio nurseries",
            "url": f"https://example.org/{i}",
            "snippet": f"snippet {i} about trio nurseries",
            "engine": "duckduckgo" if i % 2 else "wikipedia",
        }
        for i in range(3)
    ]
    (seen,) = fake_searxng.seen  # 127.0.0.1, private: the operator's instance is trusted
    assert urlsplit(seen.path).path == "/search"
    assert parse_qs(urlsplit(seen.path).query) == {"q": ["trio nurseries"], "format": ["json"]}
    row = (await tools.audit(AuditQuery(tool="search"))).entries[0]
    assert (row.decision, row.status, row.who, row.method) == ("allowed", 200, "token", "GET")
    assert row.url == f"{fake_searxng.base}/search?q=trio+nurseries&format=json"


async def test_max_results_only_lowers_the_configured_limit(
    tmp_path: Path, fake_searxng: Target
) -> None:
    tools = await open_tools(tmp_path, searxng_url=fake_searxng.base, max_results=2)
    assert len((await tools.search(SearchRequest(query="q", max_results=1))).results) == 1
    assert len((await tools.search(SearchRequest(query="q", max_results=50))).results) == 2


async def test_a_base_url_with_a_path_is_kept(tmp_path: Path, fake_searxng: Target) -> None:
    tools = await open_tools(tmp_path, searxng_url=fake_searxng.url("/searx/"))
    assert len((await tools.search(SearchRequest(query="q"))).results) == 3
    assert urlsplit(fake_searxng.seen[0].path).path == "/searx/search"


async def test_search_without_searxng_is_not_found_saying_which_key(tmp_path: Path) -> None:
    tools = await open_tools(tmp_path)
    with pytest.raises(Refusal) as refused:
        await tools.search(SearchRequest(query="q"))
    assert refused.value.code is ErrorCode.NOT_FOUND
    assert "tools.search.searxng_url" in refused.value.message
    row = (await tools.audit(AuditQuery())).entries[0]
    assert (row.decision, row.error_code, row.url) == ("refused", "NOT_FOUND", None)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            Answer(403, body=b"forbidden"),
            "answered 403 (does its settings.yml list json in search.formats?)",
        ),
        (Answer(500, body=b"oops"), "answered 500"),
        (text("<html>", "text/html"), "is not its JSON"),
        (text('{"answers": []}', "application/json"), "is not its JSON (it has no results list)"),
    ],
)
async def test_a_broken_searxng_is_tool_failed(
    tmp_path: Path, fake_searxng: Target, answer: Answer, message: str
) -> None:
    fake_searxng.routes["/search"] = answer
    tools = await open_tools(tmp_path, searxng_url=fake_searxng.base)
    with pytest.raises(Refusal) as refused:
        await tools.search(SearchRequest(query="q"))
    assert refused.value.code is ErrorCode.TOOL_FAILED and message in refused.value.message
    assert (await tools.audit(AuditQuery())).entries[0].decision == "failed"


async def test_an_unreachable_searxng_is_tool_failed(tmp_path: Path) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    tools = await open_tools(tmp_path, searxng_url=f"http://127.0.0.1:{port}")
    with pytest.raises(Refusal) as refused:
        await tools.search(SearchRequest(query="q"))
    assert refused.value.code is ErrorCode.TOOL_FAILED and refused.value.retriable


async def test_a_slow_searxng_times_out(tmp_path: Path, fake_searxng: Target) -> None:
    fake_searxng.routes["/search"] = Answer(hang=True)
    tools = await open_tools(tmp_path, searxng_url=fake_searxng.base, timeout_ms=200)
    with trio.fail_after(5), pytest.raises(Refusal) as refused:
        await tools.search(SearchRequest(query="q"))
    assert refused.value.code is ErrorCode.TOOL_TIMEOUT
    assert "tools.search.timeout_ms" in refused.value.message


async def test_the_hook_sees_and_may_rewrite_the_query(
    tmp_path: Path, fake_searxng: Target
) -> None:
    tools_hooks.SEEN.clear()
    tools = await open_tools(
        tmp_path, searxng_url=fake_searxng.base, hook="tests.tools_hooks:rewrite_query"
    )
    result = await tools.search(SearchRequest(query="backups", session_id="s"), who="proxy:bo")
    assert result.query == "backups site:wiki.lan"
    assert parse_qs(urlsplit(fake_searxng.seen[0].path).query)["q"] == ["backups site:wiki.lan"]
    (call,) = tools_hooks.SEEN
    assert (call.tool, call.query, call.who, call.session_id) == (
        "search",
        "backups",
        "proxy:bo",
        "s",
    )


async def test_the_hook_may_refuse_a_search(tmp_path: Path, fake_searxng: Target) -> None:
    tools = await open_tools(
        tmp_path, searxng_url=fake_searxng.base, hook="tests.tools_hooks:refuse_async"
    )
    with pytest.raises(Refusal) as refused:
        await tools.search(SearchRequest(query="q"), who="token")
    assert refused.value.policy_label == "tools.policy.hook" and fake_searxng.seen == []


async def test_results_are_redacted(tmp_path: Path, fake_searxng: Target) -> None:
    tools = await open_tools(tmp_path, searxng_url=fake_searxng.base, patterns=["sk-[a-z]{10}"])
    result = await tools.search(SearchRequest(query="leaked sk-abcdefghij"))
    assert result.query == "leaked [redacted]"
    assert all("sk-abcdefghij" not in hit.title + hit.snippet for hit in result.results)
    row = (await tools.audit(AuditQuery())).entries[0]
    assert row.url is not None and "sk-abcdefghij" not in row.url
