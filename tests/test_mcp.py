"""The tools over MCP (``POST /mcp``), driven by the official ``mcp`` client on Trio: the
handshake, discovery, calls that the same policy allows, refuses and audits, and the
protocol's edges (notifications, unknown methods and tools, GET, Origin, bad bodies)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from .tools_harness import ToolsStack, echo, open_tools_stack

TOKEN = "mcp-test-token"


@asynccontextmanager
async def session(stack: ToolsStack, **headers: str) -> AsyncIterator[ClientSession]:
    url = stack.running.urls[0] + "/mcp"
    async with (
        httpx2_client(headers) as http,
        streamable_http_client(url, http_client=http) as (
            read,
            write,
            *_,
        ),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


def httpx2_client(headers: dict[str, str]) -> Any:
    import httpx2  # the mcp client's own copy of httpx

    return httpx2.AsyncClient(headers=headers, timeout=30)


async def test_the_official_client_discovers_and_calls_the_tools() -> None:
    async with open_tools_stack() as stack:
        stack.target.routes["/echo"] = echo
        async with session(stack) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {"http_fetch", "search"}
            assert tools["http_fetch"].input_schema["required"] == ["url"]
            fetched = await client.call_tool(
                "http_fetch", {"url": stack.target.url("/echo"), "session_id": "mcp-s"}
            )
            assert not fetched.is_error
            answer = fetched.structured_content
            assert answer is not None and answer["status"] == 200
            assert json.loads(fetched.content[0].text)["final_url"] == stack.target.url("/echo")  # type: ignore[union-attr]
            found = await client.call_tool("search", {"query": "trio"})
            assert not found.is_error and found.structured_content
            assert found.structured_content["results"]
            refused = await client.call_tool("http_fetch", {"url": "http://10.0.0.1/"})
            assert refused.is_error
            assert refused.structured_content == {
                "error": {
                    "code": "FORBIDDEN",
                    "message": refused.structured_content["error"]["message"],
                    "policy_label": refused.structured_content["error"]["policy_label"],
                }
            }
            assert refused.structured_content["error"]["policy_label"].startswith("tools.policy.")
            bad = await client.call_tool("http_fetch", {"url": 5})
            assert bad.is_error and "url:" in bad.content[0].text  # type: ignore[union-attr]
            assert await client.send_ping() is not None
        audit = (await stack.stack.client.get("/v1/tools/audit")).json()["calls"]
        decisions = [(row["tool"], row["decision"]) for row in audit]
        assert ("http_fetch", "allowed") in decisions and ("http_fetch", "refused") in decisions
        assert ("search", "allowed") in decisions
        assert any(row["session_id"] == "mcp-s" for row in audit)


async def test_search_is_listed_only_when_configured() -> None:
    unconfigured = {"search": {"searxng_url": ""}}
    async with open_tools_stack(unconfigured) as stack, session(stack) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["http_fetch"]
        with pytest.raises(MCPError, match="unknown tool: 'search'"):
            await client.call_tool("search", {"query": "x"})


async def test_the_token_is_required_and_the_identity_audited() -> None:
    sections = {"auth": {"token": TOKEN, "optional": False}}
    async with open_tools_stack(**sections) as stack:
        url = stack.running.urls[0] + "/mcp"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        async with httpx.AsyncClient() as http:
            missing = await http.post(url, json=body)
            assert missing.status_code == 401
        async with session(stack, Authorization=f"Bearer {TOKEN}") as client:
            await client.call_tool("http_fetch", {"url": stack.target.url("/x")})
        audit = await stack.stack.client.get(
            "/v1/tools/audit", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert [row["who"] for row in audit.json()["calls"]] == ["token"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{", 400, "not valid JSON"),
        (b"[]", 400, "one JSON-RPC 2.0 request"),
        (b'{"jsonrpc": "1.0", "method": "ping", "id": 1}', 400, "one JSON-RPC 2.0 request"),
        (b'{"jsonrpc": "2.0", "method": "ping", "id": true}', 400, "id:"),
        (b'{"jsonrpc": "2.0", "method": "ping", "id": 1, "x": 0}', 400, "x: not a member"),
    ],
)
async def test_a_body_that_is_not_one_request_is_400(body: bytes, status: int, says: str) -> None:
    async with open_tools_stack() as stack:
        url = stack.running.urls[0] + "/mcp"
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        assert answer.status_code == status and says in answer.json()["message"]


async def test_the_protocol_edges() -> None:
    async with open_tools_stack() as stack:
        url = stack.running.urls[0] + "/mcp"
        async with httpx.AsyncClient() as http:

            async def rpc(message: dict[str, Any], **headers: str) -> httpx.Response:
                return await http.post(url, json=message, headers=headers)

            init = await rpc(
                {"jsonrpc": "2.0", "id": "a", "method": "initialize",
                 "params": {"protocolVersion": "2024-01-01", "capabilities": {},
                            "clientInfo": {"name": "t", "version": "0"}}},
            )  # fmt: skip
            assert init.json()["result"]["protocolVersion"] == "2025-11-25"
            assert init.json()["id"] == "a"
            note = await rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert note.status_code == 202 and note.content == b""
            unknown = await rpc({"jsonrpc": "2.0", "id": 2, "method": "resources/list"})
            assert unknown.json()["error"]["code"] == -32601
            no_tool = await rpc(
                {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm"}}
            )
            assert no_tool.json()["error"]["code"] == -32602
            bad_params = await rpc({"jsonrpc": "2.0", "id": 4, "method": "ping", "params": []})
            assert bad_params.status_code == 400 and "params:" in bad_params.json()["message"]
            foreign = await rpc(
                {"jsonrpc": "2.0", "id": 5, "method": "ping"}, Origin="http://evil.example"
            )
            assert foreign.status_code == 403
            version = await rpc(
                {"jsonrpc": "2.0", "id": 6, "method": "ping"}, **{"MCP-Protocol-Version": "1999"}
            )
            assert version.status_code == 400
            same = await rpc(
                {"jsonrpc": "2.0", "id": 7, "method": "ping"}, Origin=stack.running.urls[0]
            )
            assert same.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}
            get = await http.get(url)
            assert get.status_code == 405


async def test_disabled_tools_list_none() -> None:
    async with open_tools_stack({"enabled": False}) as stack, session(stack) as client:
        assert (await client.list_tools()).tools == []
