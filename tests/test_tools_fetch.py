"""``http_fetch`` against a real server on loopback, through :class:`orchestra.tools.Tools`:
every rule refused and allowed, redirects checked hop by hop, DNS rebinding, TLS with SNI,
size and time limits, the policy hook, secrets kept out of the answer, the log and the
audit, and a cancelled call still audited.

The tests' policy (:func:`tests.tools_harness.policy`) reaches 127.0.0.1 on the test
server's port and nothing else; names resolve through a stub, never through DNS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from orchestra.config import parse_config
from orchestra.errors import ErrorCode, Refusal
from orchestra.tools import AuditQuery, FetchRequest, FetchResult, Tools

from . import tools_hooks
from .tools_harness import (
    Answer,
    Certificate,
    Seen,
    StubResolver,
    Target,
    captured_logs,
    echo,
    make_certificate,
    policy,
    read_all,
    redirect,
    text,
)


@pytest.fixture
async def target(nursery: trio.Nursery) -> Target:
    server = Target()
    await nursery.start(server.serve)
    return server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"), "tls.test")


async def open_tools(
    tmp_path: Path,
    target: Target,
    *,
    resolver: StubResolver | None = None,
    ssl_context: Any = None,
    **tables: Any,
) -> Tools:
    rules = tables.pop("policy", {})
    config = parse_config({"tools": {"policy": policy(target.port, **rules), **tables}})
    return await Tools.open(
        config.tools,
        tmp_path / "data",
        resolver=resolver or StubResolver(),
        ssl_context=ssl_context,
    )


async def refusal(tools: Tools, url: str, **fields: Any) -> Refusal:
    with pytest.raises(Refusal) as refused:
        await tools.http_fetch(FetchRequest(url=url, **fields), who="token")
    return refused.value


async def last_audit(tools: Tools) -> dict[str, Any]:
    page = await tools.audit(AuditQuery(limit=1))
    return page.entries[0].as_json()


# -- allowed ---------------------------------------------------------------------------------


async def test_a_fetch_answers_status_headers_body_and_figures(
    tmp_path: Path, target: Target
) -> None:
    target.routes["/page"] = text("<p>hello</p>", "text/html; charset=utf-8")
    tools = await open_tools(tmp_path, target)
    result = await tools.http_fetch(FetchRequest(url=target.url("/page?x=1")), who="token")
    assert result.status == 200 and result.body == "<p>hello</p>" and not result.truncated
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.content_type == "text/html; charset=utf-8"
    assert result.final_url == target.url("/page?x=1") and result.redirects == ()
    assert result.bytes == 12 and result.time_ms >= 0
    (seen,) = target.seen
    assert seen.method == "GET" and seen.path == "/page?x=1"
    assert seen.headers["host"] == f"127.0.0.1:{target.port}"
    assert seen.headers["user-agent"].startswith("orchestra/")
    row = await last_audit(tools)
    assert row["decision"] == "allowed" and row["status"] == 200 and row["bytes"] == 12
    assert row["who"] == "token" and row["tool"] == "http_fetch" and row["rule"] is None


async def test_head_reads_no_body(tmp_path: Path, target: Target) -> None:
    target.routes["/img"] = Answer(headers=(("Content-Type", "image/png"),), body=b"\x89PNG")
    tools = await open_tools(tmp_path, target)
    result = await tools.http_fetch(FetchRequest(url=target.url("/img"), method="HEAD"))
    assert result.status == 200 and result.body == "" and result.bytes == 0
    assert result.content_type == "image/png"  # HEAD reads no body: no type to refuse
    assert target.seen[0].method == "HEAD"


async def test_an_error_status_is_an_answer_not_a_failure(tmp_path: Path, target: Target) -> None:
    target.routes["/gone"] = Answer(404, body=b"not here")
    tools = await open_tools(tmp_path, target)
    result = await tools.http_fetch(FetchRequest(url=target.url("/gone")))
    assert result.status == 404 and result.body == "not here"
    assert (await last_audit(tools))["decision"] == "allowed"


async def test_the_body_is_decoded_in_its_charset(tmp_path: Path, target: Target) -> None:
    target.routes["/latin"] = Answer(
        headers=(("Content-Type", "text/plain; charset=iso-8859-1"),), body="café".encode("latin-1")
    )
    tools = await open_tools(tmp_path, target)
    assert (await tools.http_fetch(FetchRequest(url=target.url("/latin")))).body == "café"


# -- refused before anything is sent ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "path_or_url", "fields", "label"),
    [
        ({"schemes": ["https"]}, "/", {}, "tools.policy.schemes"),
        ({"methods": ["GET"]}, "/", {"method": "HEAD"}, "tools.policy.methods"),
        ({"allowed_domains": ["wiki.lan"]}, "/", {}, "tools.policy.allowed_domains"),
        ({"allowed_domains": ["*.0.0.1"]}, "/", {}, "tools.policy.allowed_domains"),
        ({"denied_domains": ["127.0.0.1"]}, "/", {}, "tools.policy.denied_domains"),
        ({"ports": [443]}, "/", {}, "tools.policy.ports"),
        ({}, "/", {"headers": {"Host": "elsewhere.example"}}, "tools.policy.headers"),
        ({"allowed_networks": []}, "/", {}, "tools.policy.allow_private"),
        ({}, "http://127.0.0.2:{port}/", {}, "tools.policy.allow_private"),
        ({}, "http://10.0.0.1:{port}/", {}, "tools.policy.allow_private"),
        ({}, "http://[::ffff:127.0.0.2]:{port}/", {}, "tools.policy.allow_private"),
        ({}, "http://[::1]:{port}/", {}, "tools.policy.allow_private"),
        (
            {"allow_private": True, "ports": [80]},
            "http://169.254.169.254/latest/meta-data/",
            {},
            "tools.policy.allow_private",
        ),
        (
            {"allow_private": True},
            "http://[::ffff:169.254.169.254]:{port}/",
            {},
            "tools.policy.allow_private",
        ),
    ],
)
async def test_a_rule_refuses_before_anything_is_sent(
    tmp_path: Path,
    target: Target,
    rules: dict[str, Any],
    path_or_url: str,
    fields: dict[str, Any],
    label: str,
) -> None:
    tools = await open_tools(tmp_path, target, policy=rules)
    url = target.url(path_or_url) if path_or_url.startswith("/") else path_or_url
    refused = await refusal(tools, url.format(port=target.port), **fields)
    assert refused.code is ErrorCode.FORBIDDEN and refused.policy_label == label
    assert label in refused.message
    assert target.connections == 0
    row = await last_audit(tools)
    assert row["decision"] == "refused" and row["rule"] == label and row["status"] is None


@pytest.mark.parametrize(
    "rules",
    [
        {"allowed_domains": ["127.0.0.1"]},
        {"denied_domains": ["*.example.com"]},
        {"allow_private": True, "allowed_networks": []},
        {"allowed_networks": ["127.0.0.0/8"]},
        {"methods": ["GET"]},
    ],
)
async def test_the_same_rules_let_through_what_they_allow(
    tmp_path: Path, target: Target, rules: dict[str, Any]
) -> None:
    tools = await open_tools(tmp_path, target, policy=rules)
    assert (await tools.http_fetch(FetchRequest(url=target.url("/ok")))).status == 200


async def test_an_ipv4_mapped_address_reaches_the_ipv4_address_it_is(
    tmp_path: Path, target: Target
) -> None:
    tools = await open_tools(tmp_path, target)
    result = await tools.http_fetch(FetchRequest(url=f"http://[::ffff:127.0.0.1]:{target.port}/m"))
    assert result.body == "hello from /m"
    assert target.seen[0].headers["host"] == f"[::ffff:7f00:1]:{target.port}"


async def test_a_url_that_is_not_one_is_invalid_params(tmp_path: Path, target: Target) -> None:
    tools = await open_tools(tmp_path, target)
    refused = await refusal(tools, "not a url")
    assert refused.code is ErrorCode.INVALID_PARAMS and refused.param == "url"
    assert refused.problems == (
        "url: must not hold spaces or control characters (percent-encode them)",
    )
    assert (await last_audit(tools))["error_code"] == "INVALID_PARAMS"


# -- names: resolved once, every address checked, connected to what was checked --------------


async def test_a_name_resolving_to_a_private_address_is_refused(
    tmp_path: Path, target: Target
) -> None:
    resolver = StubResolver(
        {"intranet.test": [["10.1.2.3"]], "mixed.test": [["127.0.0.1", "10.1.2.3"]]}
    )
    tools = await open_tools(tmp_path, target, resolver=resolver)
    for name in ("intranet.test", "mixed.test"):
        refused = await refusal(tools, f"http://{name}:{target.port}/")
        assert refused.policy_label == "tools.policy.allow_private"
        assert f"{name} (10.1.2.3) is private" in refused.message
    assert target.connections == 0


async def test_dns_rebinding_cannot_take_a_fetch_elsewhere(tmp_path: Path, target: Target) -> None:
    """The name resolves once per hop; the connection goes to the address that was checked
    (the system could not even resolve ``rebind.test``), and an answer that changes for the
    next call, or the next hop, is checked anew and refused."""
    resolver = StubResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    tools = await open_tools(tmp_path, target, resolver=resolver)
    url = f"http://rebind.test:{target.port}/first"
    result = await tools.http_fetch(FetchRequest(url=url))
    assert result.body == "hello from /first" and result.final_url == url
    assert resolver.calls == ["rebind.test"]
    assert target.seen[0].headers["host"] == f"rebind.test:{target.port}"
    refused = await refusal(tools, url)
    assert refused.policy_label == "tools.policy.allow_private" and "10.0.0.1" in refused.message
    assert len(target.seen) == 1


async def test_a_redirect_is_resolved_and_checked_again(tmp_path: Path, target: Target) -> None:
    resolver = StubResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    target.routes["/hop"] = redirect("/final")
    tools = await open_tools(tmp_path, target, resolver=resolver)
    refused = await refusal(tools, f"http://rebind.test:{target.port}/hop")
    assert refused.policy_label == "tools.policy.allow_private"
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert [seen.path for seen in target.seen] == ["/hop"]


async def test_the_next_checked_address_is_tried_when_one_refuses_connections(
    tmp_path: Path, target: Target
) -> None:
    resolver = StubResolver({"two.test": [["127.0.0.3", "127.0.0.1"]]})
    tools = await open_tools(
        tmp_path, target, resolver=resolver, policy={"allowed_networks": ["127.0.0.0/8"]}
    )
    result = await tools.http_fetch(FetchRequest(url=f"http://two.test:{target.port}/"))
    assert result.status == 200


async def test_upstream_failures_are_tool_failed(tmp_path: Path, target: Target) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    tools = await open_tools(tmp_path, target, policy={"ports": [target.port, closed_port]})
    unknown = await refusal(tools, f"http://nowhere.test:{target.port}/")
    assert (
        unknown.code is ErrorCode.TOOL_FAILED and "cannot resolve nowhere.test" in unknown.message
    )
    refused = await refusal(tools, f"http://127.0.0.1:{closed_port}/")
    assert refused.code is ErrorCode.TOOL_FAILED and "cannot connect" in refused.message
    assert refused.retriable
    row = await last_audit(tools)
    assert row["decision"] == "failed" and row["error_code"] == "TOOL_FAILED"


# -- redirects --------------------------------------------------------------------------------


async def test_redirects_are_followed_and_listed(tmp_path: Path, target: Target) -> None:
    target.routes["/a"] = redirect("/b", 301)
    target.routes["/b"] = redirect(target.url("/c"), 303)
    target.routes["/c"] = redirect("d?x=1", 307)
    tools = await open_tools(tmp_path, target)
    result = await tools.http_fetch(FetchRequest(url=target.url("/a")))
    assert result.body == "hello from /d?x=1" and result.final_url == target.url("/d?x=1")
    assert result.redirects == (target.url("/b"), target.url("/c"), target.url("/d?x=1"))


async def test_more_redirects_than_allowed_are_refused(tmp_path: Path, target: Target) -> None:
    for n in range(1, 5):
        target.routes[f"/{n}"] = redirect(f"/{n - 1}")
    tools = await open_tools(tmp_path, target, policy={"max_redirects": 3})
    assert (await tools.http_fetch(FetchRequest(url=target.url("/3")))).redirects[-1].endswith("/0")
    refused = await refusal(tools, target.url("/4"))
    assert refused.policy_label == "tools.policy.max_redirects"
    assert "tools.policy.max_redirects is 3" in refused.message


async def test_a_redirect_to_a_private_address_is_refused_before_connecting(
    tmp_path: Path, target: Target, nursery: trio.Nursery
) -> None:
    private = Target(host="127.0.0.2")
    await nursery.start(private.serve)
    target.routes["/to-private"] = redirect(private.url("/secret"))
    target.routes["/to-lan"] = redirect(f"http://10.0.0.1:{target.port}/")
    target.routes["/to-metadata"] = redirect("http://169.254.169.254/latest/meta-data/")
    tools = await open_tools(tmp_path, target, policy={"ports": [target.port, private.port, 80]})
    for path in ("/to-private", "/to-lan", "/to-metadata"):
        refused = await refusal(tools, target.url(path))
        assert refused.policy_label == "tools.policy.allow_private", refused
    await trio.testing.wait_all_tasks_blocked()
    assert private.connections == 0


async def test_a_redirect_to_a_refused_scheme_or_domain_is_refused(
    tmp_path: Path, target: Target
) -> None:
    target.routes["/ftp"] = redirect("ftp://files.example.com/x")
    target.routes["/away"] = redirect(f"http://elsewhere.test:{target.port}/")
    tools = await open_tools(tmp_path, target, policy={"allowed_domains": ["127.0.0.1"]})
    assert (await refusal(tools, target.url("/ftp"))).policy_label == "tools.policy.schemes"
    assert (
        await refusal(tools, target.url("/away"))
    ).policy_label == "tools.policy.allowed_domains"


async def test_secret_headers_go_to_the_same_origin_only(tmp_path: Path, target: Target) -> None:
    resolver = StubResolver({"other.test": [["127.0.0.1"]]})
    target.routes["/same"] = redirect("/echo")
    target.routes["/cross"] = redirect(f"http://other.test:{target.port}/echo")
    target.routes["/echo"] = echo
    tools = await open_tools(tmp_path, target, resolver=resolver)
    headers = {"Authorization": "Bearer 0123456789abcdef", "X-Plain": "kept"}
    await tools.http_fetch(FetchRequest(url=target.url("/same"), headers=headers))
    await tools.http_fetch(FetchRequest(url=target.url("/cross"), headers=headers))
    first, same, _, cross = target.seen
    assert first.headers["authorization"] == same.headers["authorization"]
    assert "authorization" not in cross.headers and cross.headers["x-plain"] == "kept"


# -- content types, size, time ----------------------------------------------------------------


async def test_a_refused_content_type_is_refused_without_reading_the_body(
    tmp_path: Path, target: Target
) -> None:
    # The body never comes: reading it would hang until the time limit.
    target.routes["/img"] = Answer(
        headers=(("Content-Type", "image/png"),), body=b"\x89PN", stall=True
    )
    target.routes["/none"] = Answer(headers=(), body=b"?")
    tools = await open_tools(tmp_path, target)
    with trio.fail_after(5):
        refused = await refusal(tools, target.url("/img"))
    assert refused.policy_label == "tools.policy.content_types" and "image/png" in refused.message
    refused = await refusal(tools, target.url("/none"))
    assert "of no declared type" in refused.message
    everything = await open_tools(tmp_path, target, policy={"content_types": ["*/*"]})
    assert (await everything.http_fetch(FetchRequest(url=target.url("/none")))).body == "?"


@pytest.mark.parametrize(
    ("size", "policy_max", "asked", "read", "truncated"),
    [
        (5000, 1 << 20, 1000, 1000, True),
        (5000, 2000, 10**9, 2000, True),  # asking for more is capped to the policy
        (1000, 1 << 20, 1000, 1000, False),  # exactly the limit: all of it
        (999, 1000, None, 999, False),
        (70_000, 65_537, None, 65_537, True),  # across several reads
    ],
)
async def test_the_body_stops_at_the_byte_limit(
    tmp_path: Path,
    target: Target,
    size: int,
    policy_max: int,
    asked: int | None,
    read: int,
    truncated: bool,
) -> None:
    target.routes["/big"] = Answer(body=b"x" * size)
    tools = await open_tools(tmp_path, target, policy={"max_response_bytes": policy_max})
    result = await tools.http_fetch(FetchRequest(url=target.url("/big"), max_bytes=asked))
    assert (result.bytes, len(result.body), result.truncated) == (read, read, truncated)


async def test_a_limit_cuts_a_character_in_two_as_a_replacement(
    tmp_path: Path, target: Target
) -> None:
    target.routes["/utf8"] = text("aé")  # 3 bytes
    tools = await open_tools(tmp_path, target)
    result = await tools.http_fetch(FetchRequest(url=target.url("/utf8"), max_bytes=2))
    assert result.body == "a\ufffd" and result.truncated


@pytest.mark.parametrize("answer", [Answer(body=b"part", stall=True), Answer(hang=True)])
async def test_the_time_limit_covers_the_whole_call(
    tmp_path: Path, target: Target, answer: Answer
) -> None:
    target.routes["/slow"] = answer
    tools = await open_tools(tmp_path, target, policy={"max_time_ms": 300})
    with trio.fail_after(5):
        refused = await refusal(tools, target.url("/slow"))
    assert refused.code is ErrorCode.TOOL_TIMEOUT and refused.retriable
    assert refused.policy_label == "tools.policy.max_time_ms" and "300 ms" in refused.message
    with trio.fail_after(5):
        own = await refusal(tools, target.url("/slow"), timeout_ms=100)
    assert own.code is ErrorCode.TOOL_TIMEOUT and own.policy_label is None
    assert "100 ms (timeout_ms)" in own.message
    row = await last_audit(tools)
    assert row["decision"] == "failed" and row["error_code"] == "TOOL_TIMEOUT"


# -- TLS --------------------------------------------------------------------------------------


async def test_tls_names_the_host_while_connecting_to_the_checked_address(
    tmp_path: Path, nursery: trio.Nursery, certificate: Certificate
) -> None:
    server = Target(ssl_context=certificate.server_context())
    await nursery.start(server.serve)
    resolver = StubResolver({"tls.test": [["127.0.0.1"]], "impostor.test": [["127.0.0.1"]]})
    tools = await open_tools(
        tmp_path, server, resolver=resolver, ssl_context=certificate.client_context()
    )
    result = await tools.http_fetch(FetchRequest(url=f"https://tls.test:{server.port}/secure"))
    assert result.body == "hello from /secure"
    assert server.snis == ["tls.test"]
    assert server.seen[0].headers["host"] == f"tls.test:{server.port}"
    refused = await refusal(tools, f"https://impostor.test:{server.port}/")
    assert refused.code is ErrorCode.TOOL_FAILED and "CERTIFICATE_VERIFY_FAILED" in refused.message
    assert server.snis == ["tls.test", "impostor.test"] and len(server.seen) == 1


# -- the hook ---------------------------------------------------------------------------------


@pytest.fixture
def seen_by_hook() -> list[Any]:
    tools_hooks.SEEN.clear()
    return tools_hooks.SEEN


@pytest.mark.parametrize("hook", ["allow", "allow_async"])
async def test_a_hook_that_returns_none_lets_the_call_go_on(
    tmp_path: Path, target: Target, seen_by_hook: list[Any], hook: str
) -> None:
    tools = await open_tools(tmp_path, target, policy={"hook": f"tests.tools_hooks:{hook}"})
    request = FetchRequest(
        url=target.url("/x"), headers={"X-A": "1"}, session_id="s-1", task_id="t-1"
    )
    assert (await tools.http_fetch(request, who="proxy:ann")).status == 200
    (call,) = seen_by_hook
    assert (call.tool, call.method, call.url, call.hop) == (
        "http_fetch",
        "GET",
        target.url("/x"),
        0,
    )
    assert dict(call.headers) == {"X-A": "1"} and call.query is None
    assert (call.who, call.session_id, call.task_id) == ("proxy:ann", "s-1", "t-1")
    with pytest.raises(TypeError):
        call.headers["X-B"] = "2"  # type: ignore[index]


async def test_a_hook_sees_every_redirect_and_may_refuse_one(
    tmp_path: Path, target: Target, seen_by_hook: list[Any]
) -> None:
    target.routes["/go"] = redirect("/blocked")
    tools = await open_tools(tmp_path, target, policy={"hook": "tests.tools_hooks:refuse_blocked"})
    refused = await refusal(tools, target.url("/go"))
    assert refused.policy_label == "tools.policy.hook"
    assert refused.message == "refused by the policy hook: no blocked pages for agents"
    assert [call.hop for call in seen_by_hook] == [0, 1]
    assert [seen.path for seen in target.seen] == ["/go"]
    assert (await last_audit(tools))["rule"] == "tools.policy.hook"


async def test_an_async_hook_may_refuse(
    tmp_path: Path, target: Target, seen_by_hook: list[Any]
) -> None:
    tools = await open_tools(tmp_path, target, policy={"hook": "tests.tools_hooks:refuse_async"})
    refused = await refusal(tools, target.url("/"), session_id="s-9")
    assert (
        refused.message == "refused by the policy hook: token may not use http_fetch in session s-9"
    )
    assert target.connections == 0


async def test_a_rewritten_call_is_what_is_sent(
    tmp_path: Path, target: Target, seen_by_hook: list[Any]
) -> None:
    tools = await open_tools(tmp_path, target, policy={"hook": "tests.tools_hooks:rewrite_path"})
    result = await tools.http_fetch(FetchRequest(url=target.url("/old")))
    assert result.body == "hello from /new" and result.final_url == target.url("/new")
    assert [seen.path for seen in target.seen] == ["/new"]


@pytest.mark.parametrize(
    ("hook", "label"),
    [
        ("rewrite_to_private", "tools.policy.allow_private"),
        ("rewrite_to_post", "tools.policy.methods"),
    ],
)
async def test_a_rewritten_call_is_checked_by_the_policy_again(
    tmp_path: Path, target: Target, seen_by_hook: list[Any], hook: str, label: str
) -> None:
    tools = await open_tools(tmp_path, target, policy={"hook": f"tests.tools_hooks:{hook}"})
    assert (await refusal(tools, target.url("/"))).policy_label == label
    assert target.connections == 0


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ("raises", "the policy hook failed (RuntimeError); the call is refused"),
        ("returns_junk", "the policy hook returned str, not None, a ToolCall or a Refuse"),
    ],
)
async def test_a_broken_hook_refuses_the_call(
    tmp_path: Path, target: Target, seen_by_hook: list[Any], hook: str, message: str
) -> None:
    tools = await open_tools(tmp_path, target, policy={"hook": f"tests.tools_hooks:{hook}"})
    with captured_logs() as logged:
        refused = await refusal(tools, target.url("/"))
    assert refused.policy_label == "tools.policy.hook" and refused.message.startswith(message)
    assert target.connections == 0
    if hook == "raises":
        assert "the hook's own bug" in logged.getvalue()  # its traceback is in the log


async def test_credentials_a_hook_adds_are_secrets_too(
    tmp_path: Path, target: Target, seen_by_hook: list[Any]
) -> None:
    target.routes["/echo"] = echo
    tools = await open_tools(tmp_path, target, policy={"hook": "tests.tools_hooks:add_credentials"})
    with captured_logs() as logged:
        result = await tools.http_fetch(FetchRequest(url=target.url("/echo")))
    assert target.seen[0].headers["authorization"] == f"Bearer {tools_hooks.HOOK_SECRET}"
    assert tools_hooks.HOOK_SECRET not in result.body and "[redacted]" in result.body
    assert tools_hooks.HOOK_SECRET not in logged.getvalue()


# -- secrets ----------------------------------------------------------------------------------

TOKEN = "tok-7f3a9c2e51d84b06"
API_KEY = "key-c0ffee9a7b6d5e4f"
COOKIE = "session-3e1f5a7c9b2d"
PATTERN_SECRET = "sk-abcdefghijklmnopqrst"
SECRETS = (TOKEN, API_KEY, COOKIE, PATTERN_SECRET)
SECRET_TABLE = {"patterns": ["sk-[a-z]{20}"]}


def _secret_routes(target: Target) -> None:
    target.routes["/echo"] = echo
    target.routes["/leak"] = Answer(
        headers=(
            ("Content-Type", "text/plain"),
            ("X-Api-Key", API_KEY),
            ("X-Note", PATTERN_SECRET),
        ),
        body=f"the key is {PATTERN_SECRET}, the token {TOKEN}, the cookie {COOKIE}".encode(),
    )
    target.routes["/moved"] = redirect(f"/echo?k={PATTERN_SECRET}")


def _secret_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {TOKEN}",
        "x-api-key": API_KEY,
        "Cookie": f"sid={COOKIE}; theme=dark",
    }


async def _calls_with_secrets(tools: Tools, target: Target) -> list[FetchResult | Refusal]:
    answers: list[FetchResult | Refusal] = []
    for url in (
        target.url("/echo"),
        target.url("/leak"),
        target.url(f"/moved?token={TOKEN}"),
        f"http://127.0.0.2:{target.port}/?key={PATTERN_SECRET}",  # refused
        f"http://nowhere.test:{target.port}/{PATTERN_SECRET}",  # failed
    ):
        try:
            answers.append(await tools.http_fetch(FetchRequest(url=url, headers=_secret_headers())))
        except Refusal as refusal:
            answers.append(refusal)
    return answers


def _as_text(answer: FetchResult | Refusal) -> str:
    if isinstance(answer, Refusal):
        return json.dumps([answer.message, *answer.problems])
    return json.dumps(answer.as_json())


async def test_secrets_never_reach_the_log_or_the_audit(tmp_path: Path, target: Target) -> None:
    """Secrets in headers and matches of the patterns, in URLs and answers, allowed,
    refused or failed: the whole log and every byte of the audit's files are searched."""
    _secret_routes(target)
    for redact_output in (True, False):
        data = tmp_path / str(redact_output)
        with captured_logs() as logged:
            tools = await open_tools(
                data, target, secrets={**SECRET_TABLE, "redact_output": redact_output}
            )
            answers = await _calls_with_secrets(tools, target)
            rows = (await tools.audit(AuditQuery())).entries
        log_text = logged.getvalue()
        audit_bytes = await trio.to_thread.run_sync(read_all, data / "data")
        assert [row.decision for row in rows] == [
            "failed",
            "refused",
            "allowed",
            "allowed",
            "allowed",
        ]
        assert log_text.count('"logger": "orchestra.tools"') == 5
        for secret in SECRETS:
            assert secret not in log_text, secret
            assert secret.encode() not in audit_bytes, secret
        assert "[redacted]" in log_text and b"[redacted]" in audit_bytes
        # What the agent sent did reach the server.
        assert target.seen[0].headers["authorization"] == f"Bearer {TOKEN}"
        target.seen.clear()
        shown = "".join(_as_text(answer) for answer in answers)
        if redact_output:
            assert not any(secret in shown for secret in SECRETS)
        else:
            assert all(secret in shown for secret in SECRETS)


async def test_the_answer_is_redacted_field_by_field(tmp_path: Path, target: Target) -> None:
    _secret_routes(target)
    tools = await open_tools(tmp_path, target, secrets=SECRET_TABLE)
    leak = await tools.http_fetch(FetchRequest(url=target.url("/leak"), headers=_secret_headers()))
    assert leak.body == "the key is [redacted], the token [redacted], the cookie [redacted]"
    assert leak.headers["x-api-key"] == "[redacted]" and leak.headers["x-note"] == "[redacted]"
    moved = await tools.http_fetch(FetchRequest(url=target.url("/moved")))
    assert moved.final_url == target.url("/echo?k=[redacted]")
    assert moved.redirects == (target.url("/echo?k=[redacted]"),)
    assert target.seen[-1].path == f"/echo?k={PATTERN_SECRET}"  # the real URL was fetched
    echoed = await tools.http_fetch(
        FetchRequest(url=target.url("/echo"), headers=_secret_headers())
    )
    headers = json.loads(echoed.body)["headers"]
    assert headers["authorization"] == headers["cookie"] == headers["x-api-key"] == "[redacted]"


# -- cancellation, disabled -------------------------------------------------------------------


async def test_a_cancelled_call_is_audited(tmp_path: Path, target: Target) -> None:
    arrived = trio.Event()

    def hang(seen: Seen) -> Answer:
        arrived.set()
        return Answer(hang=True)

    target.routes["/hang"] = hang
    tools = await open_tools(tmp_path, target)
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            await tools.http_fetch(FetchRequest(url=target.url("/hang"), session_id="s-c"))

        nursery.start_soon(call)
        await arrived.wait()
        nursery.cancel_scope.cancel()
    row = await last_audit(tools)
    assert (row["decision"], row["error_code"], row["session_id"]) == ("failed", "CANCELLED", "s-c")
    assert tools.statistics().failed == 1


async def test_disabled_tools_refuse_everything_and_keep_no_audit(
    tmp_path: Path, target: Target
) -> None:
    tools = await open_tools(tmp_path, target, enabled=False)
    assert not tools.enabled
    refused = await refusal(tools, target.url("/"))
    assert refused.code is ErrorCode.NOT_FOUND and "tools.enabled" in refused.message
    with pytest.raises(Refusal):
        await tools.audit(AuditQuery())
    assert not await trio.Path(tmp_path / "data").exists()


async def test_statistics_count_calls_by_decision(tmp_path: Path, target: Target) -> None:
    tools = await open_tools(tmp_path, target)
    await tools.http_fetch(FetchRequest(url=target.url("/")))
    await refusal(tools, "ftp://example.com/")
    await refusal(tools, f"http://nowhere.test:{target.port}/")
    stats = tools.statistics()
    assert (stats.allowed, stats.refused, stats.failed) == (1, 1, 1)
