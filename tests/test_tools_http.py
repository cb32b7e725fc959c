"""The tools' routes through the real service (the fake engine, orchestra on loopback, and
a test server that the tests' policy alone lets the tools reach): answers and envelopes,
strict bodies and query strings, the caller's identity in the audit, the audit's pages,
tools disabled, and no secret anywhere in the service's log."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from .harness import Stack, open_stack
from .tools_harness import Answer, Target, captured_logs, echo, policy, redirect, searxng

TOKEN = "orchestra-bearer-token-5b8e1d"
AGENT_SECRET = "agent-secret-9c4f2a7e1b"


@pytest.fixture
async def target(nursery: trio.Nursery) -> Target:
    server = Target()
    server.routes["/echo"] = echo
    server.routes["/search"] = searxng
    await nursery.start(server.serve)
    return server


@asynccontextmanager
async def tools_stack(
    target: Target, tools: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[Stack]:
    table = {"policy": policy(target.port), **(tools or {})}
    async with open_stack(tools=table, **sections) as stack:
        yield stack


async def test_a_fetch_answers_as_documented(target: Target) -> None:
    async with tools_stack(target) as stack:
        answer = await stack.client.post(
            "/v1/tools/http_fetch",
            json={"url": target.url("/echo"), "headers": {"X-Hello": "there"}, "session_id": "s-1"},
            headers={"X-Correlation-Id": "fetch-1"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Correlation-Id"] == "fetch-1"
        body = answer.json()
        assert set(body) == {
            "status", "headers", "body", "truncated", "final_url", "bytes", "time_ms",
            "redirects", "content_type",
        }  # fmt: skip
        assert body["status"] == 200 and body["content_type"] == "application/json"
        assert '"x-hello": "there"' in body["body"]
        audit = (await stack.client.get("/v1/tools/audit")).json()
    (row,) = audit["calls"]
    assert row["correlation_id"] == "fetch-1" and row["session_id"] == "s-1"
    assert row["who"] == "anonymous" and row["decision"] == "allowed"
    assert audit["next_cursor"] is None


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("body", "status", "code", "label"),
    [
        ({"url": "https://example.com/"}, 403, "FORBIDDEN", "tools.policy.ports"),
        ({"url": "http://127.0.0.2:{port}/"}, 403, "FORBIDDEN", "tools.policy.allow_private"),
        ({"url": "http://127.0.0.1:{port}/slow", "timeout_ms": 100}, 504, "TOOL_TIMEOUT", None),
        ({"url": "http://127.0.0.1:{closed}/"}, 502, "TOOL_FAILED", None),
        ({"url": "relative/path"}, 400, "INVALID_PARAMS", None),
    ],
)
async def test_refusals_and_failures_are_the_envelope(
    target: Target, body: dict[str, Any], status: int, code: str, label: str | None
) -> None:
    target.routes["/slow"] = Answer(hang=True)
    closed = closed_port()
    body = {**body, "url": body["url"].format(port=target.port, closed=closed)}
    table = {"policy": {**policy(target.port), "ports": [target.port, closed]}}
    async with tools_stack(target, table) as stack:
        answer = await stack.client.post("/v1/tools/http_fetch", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["code"] == code and error.get("policy_label") == label
    assert error["correlation_id"] == answer.headers["X-Correlation-Id"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "url: required"),
        ({"url": ""}, "url: must be a non-empty string"),
        ({"url": "https://example.com/", "method": "POST"}, 'method: must be "GET" or "HEAD"'),
        ({"url": "https://example.com/", "headers": ["A: b"]}, "headers: must be an object"),
        (
            {"url": "https://example.com/", "headers": {"A B": "c"}},
            "headers: 'A B' is not an HTTP header name",
        ),
        (
            {"url": "https://example.com/", "headers": {"A": "line\nbreak"}},
            "headers: A: must be visible ASCII",
        ),
        ({"url": "https://example.com/", "headers": {"A": 1}}, "headers: A: must be a string"),
        ({"url": "https://example.com/", "max_bytes": 0}, "max_bytes: must be at least 1"),
        ({"url": "https://example.com/", "max_bytes": 1.5}, "max_bytes: must be an integer"),
        ({"url": "https://example.com/", "timeout_ms": True}, "timeout_ms: must be an integer"),
        (
            {"url": "https://example.com/", "session_id": ".."},
            "session_id: must be null or 1 to 128",
        ),
        ({"url": "https://example.com/", "colour": "blue"}, "colour: unknown field"),
    ],
)
async def test_a_bad_fetch_body_names_the_field(
    target: Target, body: dict[str, Any], problem: str
) -> None:
    async with tools_stack(target) as stack:
        answer = await stack.client.post("/v1/tools/http_fetch", json=body)
        audit = (await stack.client.get("/v1/tools/audit")).json()
    assert answer.status_code == 400
    assert any(p.startswith(problem) for p in answer.json()["problems"]), answer.json()
    assert audit["calls"] == []  # never reached the tools


async def test_search_through_the_service(target: Target) -> None:
    async with tools_stack(target, {"search": {"searxng_url": target.base}}) as stack:
        answer = await stack.client.post(
            "/v1/tools/search", json={"query": "lan wiki", "max_results": 2}
        )
        bad = await stack.client.post("/v1/tools/search", json={"query": "", "max_results": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query"] == "lan wiki" and len(body["results"]) == 2
    assert set(body["results"][0]) == {"title", "url", "snippet", "engine"}
    assert bad.status_code == 400 and len(bad.json()["problems"]) == 2


async def test_search_unconfigured_is_404_naming_the_key(target: Target) -> None:
    async with tools_stack(target) as stack:
        answer = await stack.client.post("/v1/tools/search", json={"query": "q"})
    assert answer.status_code == 404 and "tools.search.searxng_url" in answer.json()["message"]


async def test_disabled_tools_answer_404_on_every_route(target: Target) -> None:
    async with tools_stack(target, {"enabled": False}) as stack:
        answers = [
            await stack.client.post("/v1/tools/http_fetch", json={"url": target.url("/")}),
            await stack.client.post("/v1/tools/search", json={"query": "q"}),
            await stack.client.get("/v1/tools/audit"),
            await stack.client.post("/v1/tools/http_fetch", json={"bad": "body"}),
        ]
    assert [a.status_code for a in answers] == [404] * 4
    assert all("tools.enabled" in a.json()["message"] for a in answers)
    assert target.connections == 0


async def test_the_audit_pages_and_filters(target: Target) -> None:
    target.routes["/r"] = redirect("/echo")
    async with tools_stack(target, {"search": {"searxng_url": target.base}}) as stack:
        post = stack.client.post
        await post("/v1/tools/http_fetch", json={"url": target.url("/echo"), "task_id": "t-1"})
        await post("/v1/tools/http_fetch", json={"url": "ftp://example.com/", "task_id": "t-1"})
        await post("/v1/tools/search", json={"query": "q", "session_id": "s-2"})
        await post("/v1/tools/http_fetch", json={"url": target.url("/r"), "session_id": "s-2"})
        get = stack.client.get
        first = (await get("/v1/tools/audit", params={"limit": 3})).json()
        second = (
            await get("/v1/tools/audit", params={"limit": 3, "cursor": first["next_cursor"]})
        ).json()
        by = {
            name: (await get("/v1/tools/audit", params=params)).json()["calls"]
            for name, params in {
                "search": {"tool": "search"},
                "refused": {"decision": "refused"},
                "t-1": {"task_id": "t-1"},
                "s-2": {"session_id": "s-2", "tool": "http_fetch"},
                "who": {"who": "anonymous"},
            }.items()
        }
        bad = await get(
            "/v1/tools/audit",
            params=[
                ("limit", "0"),
                ("cursor", "x"),
                ("decision", "maybe"),
                ("tool", "a"),
                ("tool", "b"),
                ("colour", "blue"),
            ],
        )
    assert [c["id"] for c in first["calls"]] == [4, 3, 2] and first["next_cursor"] == "2"
    assert [c["id"] for c in second["calls"]] == [1] and second["next_cursor"] is None
    assert [c["id"] for c in by["search"]] == [3]
    assert [(c["id"], c["rule"]) for c in by["refused"]] == [(2, "tools.policy.schemes")]
    assert [c["id"] for c in by["t-1"]] == [2, 1]
    assert [c["id"] for c in by["s-2"]] == [4]
    assert len(by["who"]) == 4
    assert bad.status_code == 400
    assert sorted(p.split(":")[0] for p in bad.json()["problems"]) == [
        "colour",
        "cursor",
        "decision",
        "limit",
        "tool",
    ]


async def test_the_audit_names_who_called(target: Target) -> None:
    sections = {"auth": {"token": TOKEN, "optional": False, "trust_proxy_auth": True}}
    async with tools_stack(target, **sections) as stack:
        url = {"url": target.url("/")}
        with_token = {"Authorization": f"Bearer {TOKEN}"}
        await stack.client.post("/v1/tools/http_fetch", json=url, headers=with_token)
        await stack.client.post(
            "/v1/tools/http_fetch", json=url, headers={"X-Forwarded-User": "ann"}
        )
        refused = await stack.client.post("/v1/tools/http_fetch", json=url)
        calls = (await stack.client.get("/v1/tools/audit", headers=with_token)).json()["calls"]
    assert refused.status_code == 401
    assert [c["who"] for c in calls] == ["proxy:ann", "token"]


async def test_no_secret_reaches_the_service_log(target: Target) -> None:
    """The whole log of a service that fetched with secrets (allowed, refused, failed) has
    neither the agent's secrets nor orchestra's own token."""
    target.routes["/leak"] = Answer(
        headers=(("Content-Type", "text/plain"),), body=f"echo {AGENT_SECRET}".encode()
    )
    closed = closed_port()
    tools = {
        "policy": {**policy(target.port), "ports": [target.port, closed]},
        "secrets": {"patterns": ["pw=[a-z0-9]{6,}"]},
    }
    sections = {"auth": {"token": TOKEN, "optional": False}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with captured_logs() as logged:
        async with tools_stack(target, tools, **sections) as stack:
            for url in (
                target.url("/leak?pw=hunter22"),
                f"http://127.0.0.2:{target.port}/?pw=hunter22",
                f"http://127.0.0.1:{closed}/pw=hunter22",
            ):
                body = {"url": url, "headers": {"X-Api-Key": AGENT_SECRET}}
                answer = await stack.client.post("/v1/tools/http_fetch", json=body, headers=headers)
                assert AGENT_SECRET not in answer.text and "hunter22" not in answer.text
            calls = (await stack.client.get("/v1/tools/audit", headers=headers)).json()["calls"]
    assert [c["decision"] for c in calls] == ["failed", "refused", "allowed"]
    text = logged.getvalue()
    assert text.count('"logger": "orchestra.tools"') == 3
    for secret in (AGENT_SECRET, TOKEN, "hunter22"):
        assert secret not in text, secret
