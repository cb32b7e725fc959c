"""The artifact routes through the running service (fake engine), and a task that keeps
its output as an artifact, on both faces (the OpenAI face with the official client)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import openai
import pytest

from orchestra.artifacts import artifact_id

from .harness import Stack, open_stack


async def post(stack: Stack, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await stack.client.post("/v1/artifacts", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_put_get_raw_and_the_same_content_again() -> None:
    async with open_stack() as stack:
        made = await post(
            stack, {"kind": "plan", "content": "step 1\nstep 2\n", "tags": ["b", "a"]}
        )
        assert made["id"] == artifact_id(b"step 1\nstep 2\n")
        assert made["size_bytes"] == 14 and made["tags"] == ["a", "b"]
        assert made["media_type"] == "text/plain; charset=utf-8"
        again = await post(
            stack, {"kind": "summary", "content": "step 1\nstep 2\n", "tags": ["c"]}, 200
        )
        assert again["id"] == made["id"] and again["kind"] == "plan"
        assert again["tags"] == ["a", "b", "c"]
        meta = await stack.client.get(f"/v1/artifacts/{made['id']}")
        assert meta.status_code == 200 and meta.json()["tags"] == ["a", "b", "c"]
        raw = await stack.client.get(made["content_url"])
        assert raw.content == b"step 1\nstep 2\n"
        assert raw.headers["content-type"] == "text/plain; charset=utf-8"
        assert raw.headers["etag"] == f'"{made["id"]}"'
        accepted = await stack.client.get(
            f"/v1/artifacts/{made['id']}", headers={"Accept": "text/plain"}
        )
        assert accepted.content == b"step 1\nstep 2\n"


async def test_bytes_with_a_media_type_round_trip() -> None:
    payload = bytes(range(256)) * 3
    async with open_stack() as stack:
        made = await post(
            stack,
            {
                "kind": "x-image",
                "content_base64": base64.b64encode(payload).decode(),
                "media_type": "image/png",
                "meta": {"width": 16},
                "session_id": "s-1",
                "task_id": "t-1",
            },
        )
        assert made["id"] == "sha256:" + hashlib.sha256(payload).hexdigest()
        assert made["meta"] == {"width": 16} and made["session_id"] == "s-1"
        raw = await stack.client.get(f"/v1/artifacts/{made['id']}", headers={"Accept": "image/png"})
        assert raw.content == payload and raw.headers["content-type"] == "image/png"
        listed = await stack.client.get("/v1/artifacts", params={"session_id": "s-1"})
        assert [a["id"] for a in listed.json()["artifacts"]] == [made["id"]]


async def test_bad_puts_are_refused_naming_the_field() -> None:
    async with open_stack(artifacts={"max_artifact_bytes": 8, "max_total_bytes": 12}) as stack:
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"content": "x"}, 400, "kind: required"),
            ({"kind": "essay", "content": "x"}, 400, "kind:"),
            ({"kind": "text"}, 400, "content:"),
            ({"kind": "text", "content": "x", "content_base64": "eA=="}, 400, "content:"),
            ({"kind": "text", "content_base64": "not base64!"}, 400, "content_base64"),
            ({"kind": "text", "content": "x", "parents": [artifact_id(b"ghost")]}, 400, "parents"),
            ({"kind": "text", "content": "x", "tags": ["-bad"]}, 400, "tags"),
            ({"kind": "text", "content": "x", "colour": 1}, 400, "colour: unknown field"),
            ({"kind": "text", "content": "123456789"}, 413, "max_artifact_bytes"),
        ]
        for body, status, says in cases:
            answer = await post(stack, body, status)
            assert says in answer["message"], (body, answer)
        await post(stack, {"kind": "text", "content": "12345678"})
        full = await post(stack, {"kind": "text", "content": "abcdefgh"}, 507)
        assert full["code"] == "STORAGE_FULL"
        assert full["details"] == {"size_bytes": 8, "used_bytes": 8, "max_total_bytes": 12}
        too_large = await post(stack, {"kind": "text", "content": "123456789"}, 413)
        assert too_large["code"] == "ARTIFACT_TOO_LARGE"
        missing = await stack.client.get(f"/v1/artifacts/{artifact_id(b'nope')}")
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        not_an_id = await stack.client.get("/v1/artifacts/sha256:XYZ")
        assert not_an_id.status_code == 400
        unknown_query = await stack.client.get("/v1/artifacts", params={"colour": "red"})
        assert unknown_query.status_code == 400


async def test_lineage_tags_listing_and_delete() -> None:
    async with open_stack() as stack:
        plan = await post(stack, {"kind": "plan", "content": "the plan"})
        diff = await post(stack, {"kind": "diff", "content": "+1", "parents": [plan["id"]]})
        summary = await post(
            stack, {"kind": "summary", "content": "did it", "parents": [diff["id"], plan["id"]]}
        )
        lineage = (await stack.client.get(f"/v1/artifacts/{summary['id']}/lineage")).json()
        assert [(n["id"], n["depth"]) for n in lineage["ancestors"]] == sorted(
            [(plan["id"], 1), (diff["id"], 1)], key=lambda n: n[0]
        )
        down = (await stack.client.get(f"/v1/artifacts/{plan['id']}/lineage")).json()
        assert {n["id"] for n in down["descendants"]} == {diff["id"], summary["id"]}
        assert not down["ancestors"] and down["truncated"] is False
        loop = await post(
            stack, {"kind": "plan", "content": "the plan", "parents": [summary["id"]]}, 409
        )
        assert loop["code"] == "CONFLICT"

        tagged = await stack.client.post(
            f"/v1/artifacts/{diff['id']}/tags", json={"add": ["reviewed"], "remove": []}
        )
        assert tagged.json()["tags"] == ["reviewed"]
        by_tag = await stack.client.get("/v1/artifacts", params={"tag": "reviewed"})
        assert [a["id"] for a in by_tag.json()["artifacts"]] == [diff["id"]]
        by_parent = await stack.client.get("/v1/artifacts", params={"parent": plan["id"]})
        assert {a["id"] for a in by_parent.json()["artifacts"]} == {diff["id"], summary["id"]}
        first = (await stack.client.get("/v1/artifacts", params={"limit": 2})).json()
        assert [a["id"] for a in first["artifacts"]] == [summary["id"], diff["id"]]
        rest = await stack.client.get("/v1/artifacts", params={"cursor": first["next_cursor"]})
        assert [a["id"] for a in rest.json()["artifacts"]] == [plan["id"]]
        assert rest.json()["next_cursor"] is None

        refused = await stack.client.delete(f"/v1/artifacts/{plan['id']}")
        assert refused.status_code == 409
        assert set(refused.json()["details"]["children"]) == {diff["id"], summary["id"]}
        deleted = await stack.client.delete(
            f"/v1/artifacts/{plan['id']}", params={"cascade": "true"}
        )
        assert deleted.status_code == 200
        assert set(deleted.json()["deleted"]) == {plan["id"], diff["id"], summary["id"]}
        gone = await stack.client.get(f"/v1/artifacts/{summary['id']}")
        assert gone.status_code == 404


async def test_a_task_keeps_its_output_and_says_so_in_end_and_status() -> None:
    async with open_stack() as stack:
        submitted = await stack.submit(
            prompt="Tell me",
            max_tokens=6,
            session_id="sess-a",
            artifact={"kind": "summary", "tags": ["from-task"]},
        )
        task_id = submitted["task_id"]
        events = await stack.stream(task_id)
        end = events[-1]
        assert end.event == "end"
        text = "".join(e.data["t"] for e in events if e.event == "token")
        assert end.data["artifact_id"] == artifact_id(text.encode())
        status = (await stack.client.get(f"/v1/tasks/{task_id}")).json()
        assert status["artifact_id"] == end.data["artifact_id"]
        artifact = (await stack.client.get(f"/v1/artifacts/{status['artifact_id']}")).json()
        assert artifact["task_id"] == task_id and artifact["session_id"] == "sess-a"
        assert artifact["kind"] == "summary" and artifact["tags"] == ["from-task"]
        raw = await stack.client.get(artifact["content_url"])
        assert raw.text == text


async def test_a_task_whose_output_does_not_fit_completes_and_says_why() -> None:
    async with open_stack(artifacts={"max_artifact_bytes": 2}) as stack:
        submitted = await stack.submit(prompt="Tell me", max_tokens=6, artifact={"kind": "text"})
        end = (await stack.stream(submitted["task_id"]))[-1]
        assert end.event == "end" and "artifact_id" not in end.data
        assert end.data["artifact_error"].startswith("ARTIFACT_TOO_LARGE")
        status = (await stack.client.get(f"/v1/tasks/{submitted['task_id']}")).json()
        assert status["state"] == "completed" and status["artifact_error"]


@pytest.mark.parametrize(
    ("artifact", "says"),
    [
        ({"tags": []}, "artifact.kind: required"),
        ({"kind": "novel"}, "artifact.kind:"),
        ({"kind": "text", "tags": "x"}, "artifact.tags:"),
        ({"kind": "text", "colour": 1}, "artifact.colour: unknown field"),
        ("summary", "artifact: must be an object"),
    ],
)
async def test_a_bad_artifact_field_is_refused(artifact: Any, says: str) -> None:
    async with open_stack() as stack:
        response = await stack.client.post("/v1/tasks", json={"prompt": "x", "artifact": artifact})
        assert response.status_code == 400
        assert says in response.json()["message"]


async def test_the_openai_face_keeps_output_with_the_official_client() -> None:
    async with open_stack() as stack:
        base = stack.running.urls[0] + "/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="none", max_retries=0) as client:
            answer = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=5,
                extra_body={"artifact": {"kind": "text", "tags": ["chat"]}},
            )
            text = answer.choices[0].message.content or ""
            kept = (answer.model_extra or {})["artifact_id"]
            assert kept == artifact_id(text.encode())
            stream = await client.completions.create(
                model="default",
                prompt="once upon",
                max_tokens=5,
                stream=True,
                extra_body={"artifact": {"kind": "x-story"}},
            )
            pieces, last = [], None
            async for chunk in stream:
                pieces.append(chunk.choices[0].text if chunk.choices else "")
                last = chunk
            assert last is not None
            streamed = (last.model_extra or {})["artifact_id"]
            assert streamed == artifact_id("".join(pieces).encode())
        raw = await stack.client.get(f"/v1/artifacts/{streamed}", params={"raw": "1"})
        assert raw.text == "".join(pieces)
        meta = (await stack.client.get(f"/v1/artifacts/{kept}")).json()
        assert meta["tags"] == ["chat"] and meta["task_id"]
