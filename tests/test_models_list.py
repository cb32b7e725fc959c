"""``GET /v1/models`` in OpenAI's list shape, read over HTTP, by orchestra's SDK, and by the
official ``openai`` package (sync and async clients) against a live orchestra in front of
the fake llama-server."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
import pytest
import trio

from orchestra.sdk import AsyncClient

from .harness import open_stack
from .test_openapi import fake_server, gguf_file, register, sha256_of

ORCHESTRA_FIELDS = (
    "path",
    "sha256",
    "digest",
    "trust_state",
    "state",
    "size_bytes",
    "registered_at",
    "verified_at",
    "loaded",
    "context",
    # What the Models actor says of it (specs/models.md):
    "aliases",
    "residency",
    "error",
    "memory_mb",
    "memory_source",
    "last_used",
    "idle_s",
    "pool",
    "default",
    "keep_loaded",
    "idle_unload_s",
    "embeddings",
    "running",
    "waiting",
    "load_ms",
)
"""Orchestra's fields beside OpenAI's four in each entry, in order."""
ENTRY_KEYS = ("id", "object", "created", "owned_by", *ORCHESTRA_FIELDS)
TOKEN = "models-list-token"


def gguf(path: Path, body: bytes = b"weights") -> str:
    """A file the catalog accepts as a model; its sha256 hex."""
    content = b"GGUF" + body
    path.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def unix(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp())


@pytest.mark.parametrize(
    ("slots", "admission", "context"),
    [
        (1, {"ctx_limit": 1000, "max_tokens_limit": 500}, 1000),  # admission's limit is lower
        (2, {}, 1024),  # the engine's slot is lower: 2048 split over two slots
    ],
    ids=["ctx_limit", "engine_slot"],
)
async def test_the_list_is_openais_shape_with_orchestras_fields(
    tmp_path: Path, slots: int, admission: dict[str, Any], context: int
) -> None:
    served, spare = tmp_path / "served.gguf", tmp_path / "spare.gguf"
    sha = gguf(served)
    gguf(spare, b"spare weights")
    async with open_stack(slots=slots, model_path=str(served), admission=admission) as stack:
        # the attached engine's model file was adopted, under its name without .gguf
        adopted = (await stack.client.get("/v1/models")).json()
        assert [(m["id"], m["path"], m["loaded"]) for m in adopted["data"]] == [
            ("served", str(served), True)
        ]
        body = {"id": "spare", "path": str(spare), "sha256": None}
        response = await stack.client.post("/v1/catalog/models", json=body)
        assert response.status_code == 201, response.text
        verified = await stack.client.post("/v1/catalog/models/served/verify")
        assert verified.status_code == 200, verified.text

        answer = await stack.client.get("/v1/models")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        listed = answer.json()
        one = (await stack.client.get("/v1/catalog/models/spare")).json()
        async with AsyncClient(stack.running.urls[0]) as client:
            sdk_models = await client.models()

    assert list(listed) == ["object", "data"] and listed["object"] == "list"
    first, second = listed["data"]  # in order of registration (then of id)
    for entry in (first, second):
        assert tuple(entry) == ENTRY_KEYS
        assert entry["object"] == "model" and entry["owned_by"] == "orchestra"
        assert type(entry["created"]) is int
        assert entry["created"] == unix(entry["registered_at"])
    assert first["id"] == "served" and first["path"] == str(served)
    assert (first["loaded"], first["context"]) == (True, context)
    # adopted without an expected sha256: verifying records its digest, trust unverified
    assert (first["sha256"], first["digest"], first["trust_state"]) == (
        None,
        f"sha256:{sha}",
        "unverified",
    )
    assert second["id"] == "spare" and second["sha256"] is None and second["digest"] is None
    assert (second["loaded"], second["context"]) == (False, None)
    assert one == second  # the catalog's own routes show the same body

    assert [m.id for m in sdk_models] == ["served", "spare"]
    assert [(m.loaded, m.context) for m in sdk_models] == [(True, context), (False, None)]
    assert sdk_models[0].created == first["created"]
    assert sdk_models[0].digest == first["digest"]


def served_registered(live: Any) -> tuple[Path, str]:
    """Register the file the fake engine says it serves; its path and sha256."""
    served = Path(live.actors.supervisor.statistics().model_path)
    path = gguf_file(live.tmp, served.name)
    assert path == served
    sha256 = sha256_of(path)
    register(live, "served", path, sha256)
    register(live, "spare", gguf_file(live.tmp, "spare.gguf"))
    return path, sha256


def check_openai_models(models: list[Any], path: Path, sha256: str) -> None:
    """What ``openai``'s ``models.list()`` made of orchestra's answer."""
    assert [type(m) for m in models] == [openai.types.Model, openai.types.Model]
    served, spare = models
    assert (served.id, served.object, served.owned_by) == ("served", "model", "orchestra")
    assert isinstance(served.created, int) and served.created > 0
    # orchestra's fields survive as pydantic extras: in model_extra, and as attributes
    extra = served.model_extra
    assert extra is not None
    assert set(extra) == set(ORCHESTRA_FIELDS)
    assert extra["loaded"] is True and extra["context"] == 2048
    assert served.context == 2048  # type: ignore[attr-defined]
    assert (served.sha256, served.path, served.state) == (  # type: ignore[attr-defined]
        sha256,
        str(path),
        "active",
    )
    assert served.created == unix(extra["registered_at"])
    assert spare.id == "spare" and spare.model_extra is not None
    assert (spare.model_extra["loaded"], spare.model_extra["context"]) == (False, None)


def test_the_official_openai_client_lists_the_models(tmp_path: Path) -> None:
    """The sync ``openai.OpenAI`` client, with orchestra's token as its API key."""
    with fake_server(tmp_path, auth={"token": TOKEN}) as live:
        path, sha256 = served_registered(live)
        with openai.OpenAI(base_url=live.base_url + "/v1", api_key=TOKEN, max_retries=0) as oa:
            page = oa.models.list()
            models = list(page)
            raw = oa.models.with_raw_response.list()
        bad = openai.OpenAI(base_url=live.base_url + "/v1", api_key="wrong", max_retries=0)
        with bad, pytest.raises(openai.PermissionDeniedError) as refused:
            bad.models.list()
    check_openai_models(models, path, sha256)
    assert page.object == "list"  # type: ignore[attr-defined]
    assert raw.http_response.status_code == 200 and raw.headers.get("X-Correlation-Id")
    assert refused.value.status_code == 403


async def test_the_async_openai_client_works_under_trio(tmp_path: Path) -> None:
    """``openai.AsyncOpenAI`` (httpx2 on anyio, which runs on Trio) in a Trio test, against
    a server in this same Trio run."""
    served = tmp_path / "served.gguf"
    sha256 = gguf(served)
    async with open_stack(model_path=str(served), auth={"token": TOKEN}) as stack:
        base_url = stack.running.urls[0] + "/v1"
        async with openai.AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0) as oa:
            with trio.fail_after(10):
                models = [m async for m in oa.models.list()]
                raw = await oa.models.with_raw_response.list()
    assert [(m.id, m.object, m.owned_by) for m in models] == [("served", "model", "orchestra")]
    extra = models[0].model_extra
    assert extra is not None and set(extra) == set(ORCHESTRA_FIELDS)
    assert (extra["loaded"], extra["context"], extra["path"]) == (True, 2048, str(served))
    assert extra["sha256"] is None and sha256  # adopted from the engine: no expected digest
    assert raw.http_response.status_code == 200 and raw.headers.get("X-Correlation-Id")
