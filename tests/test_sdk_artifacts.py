"""The SDK's artifact calls (``put_artifact``, ``get_artifact``, ``read_artifact``,
``list_artifacts``, ``lineage``, ``tag_artifact``, ``delete_artifact``) and a task's
``artifact`` option, async and sync, against a live server (fake engine), and exactly
(``httpx.MockTransport``) for answers a server cannot be made to give."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from orchestra.sdk import (
    Artifact,
    ArtifactPage,
    AsyncClient,
    ChatMessage,
    Client,
    End,
    ErrorCode,
    KeepArtifact,
    Lineage,
    LineageNode,
    ParseError,
    ServerError,
    TaskRequest,
    Token,
)
from orchestra.sdk._artifacts import keep_artifact

from .harness import open_stack

SMALL = {"max_artifact_bytes": 64, "max_total_bytes": 100}
"""A registry small enough to fill: 64 bytes an artifact, 100 in all."""


def sha(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


async def refused(call: Any) -> ServerError:
    """The :class:`ServerError` that awaiting ``call`` raises."""
    with pytest.raises(ServerError) as caught:
        await call
    return caught.value


# -- put, get, read ------------------------------------------------------------------------


async def test_text_and_bytes_round_trip_and_a_second_put_merges() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        text = "héllo, wörld\n"
        kept = await client.put_artifact(
            text, kind="plan", tags=["b", "a", "b"], session_id="s1", meta={"n": 1}
        )
        assert kept.id == sha(text.encode()) and kept.size_bytes == len(text.encode())
        assert (kept.kind, kept.media_type) == ("plan", "text/plain; charset=utf-8")
        assert (kept.tags, kept.parents, kept.session_id, kept.task_id) == (
            ("a", "b"),
            (),
            "s1",
            None,
        )
        assert kept.meta == {"n": 1} and kept.content_url == f"/v1/artifacts/{kept.id}?raw=1"
        assert await client.get_artifact(kept.id) == kept
        assert await client.read_artifact(kept.id) == text.encode()

        binary = bytes(range(256))  # not UTF-8
        blob = await client.put_artifact(binary, kind="x-blob")
        assert (blob.id, blob.media_type, blob.size_bytes) == (
            sha(binary),
            "application/octet-stream",
            256,
        )
        assert await client.read_artifact(blob.id) == binary
        png = await client.put_artifact(b"\x89PNG\r\n", kind="x-image", media_type="image/png")
        assert png.media_type == "image/png"
        assert await client.read_artifact(png.id) == b"\x89PNG\r\n"

        # the same bytes again, as bytes this time: the same artifact, tags and parents merged,
        # the first put's kind, media type and meta kept
        again = await client.put_artifact(
            text.encode(), kind="text", tags=["c"], parents=[blob.id], meta={"n": 2}
        )
        assert again.id == kept.id and again.created_at == kept.created_at
        assert (again.kind, again.media_type, again.meta) == ("plan", kept.media_type, {"n": 1})
        assert (again.tags, again.parents) == (("a", "b", "c"), (blob.id,))


async def test_the_sync_client_has_every_artifact_call() -> None:
    async with open_stack() as stack:
        url = stack.running.urls[0]

        def use() -> tuple[Any, ...]:
            with Client(url) as client:
                first = client.put_artifact(b"first", kind="text", tags=["t"])
                second = client.put_artifact("second", kind="diff", parents=[first.id])
                page = client.list_artifacts(tag="t")
                tagged = client.tag_artifact(second.id, add=["new"], remove=["none"])
                with pytest.raises(ServerError) as conflict:
                    client.delete_artifact(first.id)
                return (
                    client.get_artifact(second.id),
                    client.read_artifact(first.id),
                    page,
                    client.lineage(second.id),
                    tagged.tags,
                    conflict.value.code,
                    client.delete_artifact(first.id, cascade=True),
                    (first.id, second.id),
                )

        (
            got,
            content,
            page,
            lineage,
            tags,
            code,
            deleted,
            (first, second),
        ) = await trio.to_thread.run_sync(use)
        assert isinstance(got, Artifact) and got.parents == (first,) and content == b"first"
        assert [a.id for a in page.artifacts] == [first] and page.next_cursor is None
        assert lineage.ancestors == (LineageNode(id=first, kind="text", depth=1, parents=()),)
        assert (tags, code, deleted) == (("new",), ErrorCode.CONFLICT, (first, second))


# -- listing and paging --------------------------------------------------------------------


async def test_list_filters_and_pages_newest_first() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        root = await client.put_artifact("root", kind="plan", tags=["keep"], task_id="t-1")
        made = [root]
        for i in range(4):
            made.append(
                await client.put_artifact(
                    f"child {i}",
                    kind="summary" if i % 2 else "diff",
                    tags=["keep"] if i < 2 else [],
                    parents=[root.id],
                    session_id="s-1" if i == 3 else None,
                )
            )
        newest_first = [a.id for a in reversed(made)]
        whole = await client.list_artifacts()
        assert isinstance(whole, ArtifactPage) and whole.next_cursor is None
        assert [a.id for a in whole.artifacts] == newest_first

        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await client.list_artifacts(limit=2, cursor=cursor)
            assert len(page.artifacts) <= 2
            seen += [a.id for a in page.artifacts]
            pages += 1
            if (cursor := page.next_cursor) is None:
                break
        assert seen == newest_first and pages == 3

        async def ids(**filters: Any) -> list[str]:
            return [a.id for a in (await client.list_artifacts(**filters)).artifacts]

        assert await ids(kind="summary") == [made[4].id, made[2].id]
        assert await ids(tag="keep") == [made[2].id, made[1].id, root.id]
        assert await ids(session_id="s-1") == [made[4].id]
        assert await ids(task_id="t-1") == [root.id]
        assert await ids(parent=root.id) == newest_first[:-1]
        assert await ids(kind="trace") == []

        bad = await refused(client.list_artifacts(cursor="not-a-cursor"))
        assert (bad.code, bad.status) == (ErrorCode.INVALID_PARAMS, 400)
        too_many = await refused(client.list_artifacts(limit=1000))
        assert too_many.code is ErrorCode.INVALID_PARAMS and "limit" in too_many.message


# -- lineage, tags, delete -----------------------------------------------------------------


async def test_lineage_tags_and_delete() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        a = await client.put_artifact("a", kind="text")
        b = await client.put_artifact("b", kind="plan", parents=[a.id])
        c = await client.put_artifact("c", kind="diff", parents=[b.id])

        middle = await client.lineage(b.id)
        assert isinstance(middle, Lineage) and middle.id == b.id and not middle.truncated
        assert middle.ancestors == (LineageNode(id=a.id, kind="text", depth=1, parents=()),)
        assert middle.descendants == (LineageNode(id=c.id, kind="diff", depth=1, parents=(b.id,)),)
        last = await client.lineage(c.id)
        assert [(n.id, n.depth) for n in last.ancestors] == [(b.id, 1), (a.id, 2)]
        assert last.descendants == ()

        tagged = await client.tag_artifact(b.id, add=["x", "y"])
        assert tagged.tags == ("x", "y")
        untagged = await client.tag_artifact(b.id, add=["z"], remove=["x", "absent"])
        assert untagged.tags == ("y", "z") and (await client.get_artifact(b.id)).tags == ("y", "z")

        conflict = await refused(client.delete_artifact(a.id))
        assert (conflict.code, conflict.status) == (ErrorCode.CONFLICT, 409)
        assert conflict.details is not None and conflict.details["children"] == [b.id]
        assert await client.delete_artifact(c.id) == (c.id,)
        assert await client.delete_artifact(a.id, cascade=True) == (a.id, b.id)
        for gone in (a, b, c):
            missing = await refused(client.get_artifact(gone.id))
            assert (missing.code, missing.status) == (ErrorCode.NOT_FOUND, 404)
        assert (await client.list_artifacts()).artifacts == ()


# -- errors --------------------------------------------------------------------------------


async def test_refusals_are_mapped_to_server_errors() -> None:
    async with open_stack(artifacts=SMALL) as stack, AsyncClient(stack.running.urls[0]) as client:
        unknown = "sha256:" + "0" * 64
        for call in (
            client.get_artifact(unknown),
            client.read_artifact(unknown),
            client.lineage(unknown),
            client.tag_artifact(unknown, add=["x"]),
            client.delete_artifact(unknown),
        ):
            missing = await refused(call)
            assert (missing.code, missing.status) == (ErrorCode.NOT_FOUND, 404)

        orphan = await refused(client.put_artifact("x", kind="text", parents=[unknown]))
        assert (orphan.code, orphan.status) == (ErrorCode.INVALID_PARAMS, 400)
        assert any("parents" in p for p in orphan.problems)
        bad_kind = await refused(client.put_artifact("x", kind="novel"))
        assert bad_kind.code is ErrorCode.INVALID_PARAMS and "kind" in bad_kind.message
        bad_id = await refused(client.get_artifact("not-an-id"))
        assert (bad_id.code, bad_id.status) == (ErrorCode.INVALID_PARAMS, 400)

        # a parent made from the artifact: a cycle
        a = await client.put_artifact("a", kind="text")
        b = await client.put_artifact("b", kind="text", parents=[a.id])
        cycle = await refused(client.put_artifact("a", kind="text", parents=[b.id]))
        assert (cycle.code, cycle.status) == (ErrorCode.CONFLICT, 409)

        large = await refused(client.put_artifact(b"x" * 65, kind="text"))
        assert (large.code, large.status, large.retriable) == (
            ErrorCode.ARTIFACT_TOO_LARGE,
            413,
            False,
        )
        assert large.details == {"size_bytes": 65, "max_artifact_bytes": 64}

        await client.put_artifact("y" * 60, kind="text")  # 62 of 100 bytes used
        full = await refused(client.put_artifact("z" * 60, kind="text"))
        assert (full.code, full.status) == (ErrorCode.STORAGE_FULL, 507)
        assert full.details == {"size_bytes": 60, "used_bytes": 62, "max_total_bytes": 100}
        # the same content again costs nothing: not refused
        assert (await client.put_artifact("y" * 60, kind="text", tags=["t"])).tags == ("t",)


async def test_wrong_arguments_are_type_errors_before_anything_is_sent() -> None:
    client, sent = mock(lambda request: httpx.Response(500))
    with pytest.raises(TypeError):
        await client.put_artifact(42, kind="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await client.put_artifact("x", kind="text", tags="one")
    with pytest.raises(TypeError):
        await client.tag_artifact("sha256:00", add="one")
    with pytest.raises(TypeError):
        TaskRequest(prompt="x", artifact={"kind": "summary", "tag": ["misspelt"]})
    with pytest.raises(TypeError):
        TaskRequest(prompt="x", artifact=("summary", ["x"]))  # type: ignore[arg-type]
    assert sent == []


def test_the_artifact_option_takes_a_value_a_kind_or_a_mapping() -> None:
    want = KeepArtifact("summary", ("a", "b"))
    assert keep_artifact(want) == want
    assert keep_artifact({"kind": "summary", "tags": ["a", "b"]}) == want
    assert keep_artifact("summary") == KeepArtifact("summary", ())
    assert keep_artifact(KeepArtifact("plan", ["x"])) == KeepArtifact("plan", ("x",))  # type: ignore[arg-type]
    assert keep_artifact(None) is None
    assert TaskRequest(prompt="x", artifact="plan").artifact == KeepArtifact("plan")


# -- answers outside the contract (exact) --------------------------------------------------

BODY: dict[str, Any] = {
    "id": sha(b"hi"),
    "kind": "text",
    "media_type": "text/plain; charset=utf-8",
    "size_bytes": 2,
    "created_at": "2026-01-01T00:00:00.000Z",
    "tags": [],
    "parents": [],
    "session_id": None,
    "task_id": None,
    "meta": {},
    "content_url": f"/v1/artifacts/{sha(b'hi')}?raw=1",
}


def mock(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[AsyncClient, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return handler(request)

    return AsyncClient("http://mock", transport=httpx.MockTransport(record)), sent


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in BODY.items() if k != "size_bytes"},
        {**BODY, "size_bytes": "2"},
        {**BODY, "tags": "ab"},  # a string is not a list of tags
        {**BODY, "parents": [1]},
        {**BODY, "meta": []},
    ],
)
async def test_an_artifact_outside_the_contract_is_a_parse_error(broken: dict[str, Any]) -> None:
    client, _ = mock(lambda request: httpx.Response(200, json=broken))
    with pytest.raises(ParseError) as caught:
        await client.get_artifact(sha(b"hi"))
    assert "not the contract's shape" in str(caught.value) and caught.value.status == 200


async def test_the_requests_on_the_wire_and_content_checked_against_its_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("raw") == "1":
            return httpx.Response(200, content=b"not hi")
        if request.url.path.endswith("/lineage"):
            return httpx.Response(200, json={"id": BODY["id"], "ancestors": [], "descendants": []})
        if request.method == "GET" and request.url.path == "/v1/artifacts":
            return httpx.Response(200, json={"artifacts": [BODY]})  # no next_cursor
        return httpx.Response(201, json=BODY)

    client, sent = mock(handler)
    await client.put_artifact(b"hi", kind="text", media_type="text/x-hi", meta={"k": [1]})
    await client.put_artifact("hi", kind="text", tags=["t"], parents=[BODY["id"]], task_id="t")
    assert [request.read() for request in sent] == [
        b'{"kind":"text","content_base64":"aGk=","media_type":"text/x-hi","meta":{"k":[1]}}',
        b'{"kind":"text","content":"hi","tags":["t"],"parents":["%s"],"task_id":"t"}'
        % BODY["id"].encode(),
    ]
    with pytest.raises(ParseError) as corrupt:
        await client.read_artifact(BODY["id"])
    assert sha(b"not hi") in str(corrupt.value)
    assert sent[-1].url.raw_path == f"/v1/artifacts/sha256%3A{BODY['id'][7:]}?raw=1".encode()
    with pytest.raises(ParseError):
        await client.lineage(BODY["id"])  # no truncated
    with pytest.raises(ParseError):
        await client.list_artifacts(kind="text", limit=5)
    assert sent[-1].url.params == httpx.QueryParams({"kind": "text", "limit": "5"})
    await client.tag_artifact(BODY["id"], add=["a"])
    assert sent[-1].read() == b'{"add":["a"],"remove":[]}'


# -- a task that keeps its output ----------------------------------------------------------


async def test_a_task_with_artifact_carries_its_id_in_the_end_event_and_status() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        request = TaskRequest(
            prompt="hi", max_tokens=3, artifact={"kind": "summary", "tags": ["run-1"]}
        )
        handle = await client.submit(request)
        async with client.stream(handle.task_id) as events:
            got = [event async for event in events]
        end = got[-1]
        assert isinstance(end, End) and end.artifact_id is not None and end.artifact_error is None
        text = "".join(e.text for e in got if isinstance(e, Token))
        assert await client.read_artifact(end.artifact_id) == text.encode()
        kept = await client.get_artifact(end.artifact_id)
        assert (kept.kind, kept.tags, kept.task_id) == ("summary", ("run-1",), handle.task_id)
        assert kept.id == sha(text.encode())
        assert (await client.status(handle.task_id)).artifact_id == end.artifact_id

        done = await client.complete("hello", max_tokens=4, artifact="plan", session_id="s")
        assert done.artifact_id is not None and done.artifact_error is None
        assert await client.read_artifact(done.artifact_id) == done.text.encode()
        assert (await client.get_artifact(done.artifact_id)).session_id == "s"
        plain = await client.complete("hi", max_tokens=2)
        assert plain.artifact_id is None and plain.artifact_error is None
        assert (await client.status(plain.task_id)).artifact_id is None

        chat = await client.chat(
            [ChatMessage("user", "Hi")], max_tokens=3, artifact=KeepArtifact("x-chat", ("c",))
        )
        assert chat.artifact_id is not None
        assert await client.read_artifact(chat.artifact_id) == chat.text.encode()
        assert (await client.get_artifact(chat.artifact_id)).kind == "x-chat"

        bad = await refused(client.submit(TaskRequest(prompt="hi", artifact="novel")))
        assert bad.code is ErrorCode.INVALID_PARAMS and "artifact" in bad.message


async def test_an_output_too_large_to_keep_completes_with_artifact_error() -> None:
    async with open_stack(artifacts=SMALL) as stack, AsyncClient(stack.running.urls[0]) as client:
        done = await client.complete("hi", max_tokens=40, artifact="summary")
        assert len(done.text.encode()) > SMALL["max_artifact_bytes"]
        assert done.artifact_id is None and done.tokens_out == 40
        assert done.artifact_error is not None and "ARTIFACT_TOO_LARGE" in done.artifact_error
        assert (await client.status(done.task_id)).artifact_error == done.artifact_error
        assert (await client.list_artifacts()).artifacts == ()
