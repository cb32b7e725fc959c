"""Pool reload against the real llama-server: onto another catalog model, onto a broken one
(rolled back, the pool stays ready), and onto a file that fails verification (refused
before anything is touched)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.catalog import Catalog
from orchestra.engine import cache as engine_cache
from orchestra.errors import CatalogError

from .engine import Owned, open_owned

RELOAD = "/v1/pools/default/reload"
SMOL = "SmolLM2-135M-Instruct.Q4_1"


def cached_model() -> Path:
    model = engine_cache.installed_model()
    assert model is not None
    return model


async def register(owned: Owned, **entry: Any) -> dict[str, Any]:
    response = await owned.client.post("/v1/catalog/models", json=entry)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def reload(owned: Owned, **body: Any) -> httpx.Response:
    return await owned.client.post(RELOAD, json=body, timeout=180)


async def test_reload_onto_another_model_finishes_work_and_keeps_the_queue(tmp_path: Path) -> None:
    copy = tmp_path / "smol-copy.gguf"
    try:
        os.link(cached_model(), copy)  # the same bytes under another path, without a copy
    except OSError:  # the cache is on another file system
        copy.write_bytes(cached_model().read_bytes())
    async with open_owned() as owned:
        await register(owned, id="smol-copy", path=str(copy), sha256=engine_cache.MODEL_SHA256)
        old_pid = owned.pid
        running = await owned.submit(prompt="Count: 1, 2, 3,", max_tokens=48, temperature=0)
        in_engine = await owned.submit(prompt="Say hi.", max_tokens=8, temperature=0)
        queued = await owned.submit(prompt="Name a colour.", max_tokens=8, temperature=0)
        await owned.wait_state(running, "running")

        response = await reload(owned, model_ref="smol-copy", deadline_ms=120_000)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["outcome"] == "reloaded"
        assert report["model"] == {
            "id": "smol-copy",
            "digest": f"sha256:{engine_cache.MODEL_SHA256}",
        }
        assert report["previous_model"]["id"] == SMOL
        assert report["drain"]["finished"] == 2 and report["drain"]["cancelled"] == 0
        assert report["drain"]["queued"] == 1
        for task_id in (running, in_engine):  # in flight when the reload began: finished
            assert (await owned.stream(task_id))[-1].event == "end"
        assert (await owned.stream(queued))[-1].event == "end"  # waited, then ran on the new one

        assert owned.pid != old_pid
        assert owned.supervisor.statistics().model_path == str(copy)
        health = await owned.health()
        assert health["ready"] and health["model_id"] == "smol-copy" and not health["draining"]
        models = {m["id"]: m for m in (await owned.client.get("/v1/models")).json()["data"]}
        assert models["smol-copy"]["loaded"] and not models[SMOL]["loaded"]
        assert models["smol-copy"]["trust_state"] == "verified"
        served = await owned.client.post(
            f"/v1/catalog/models/{SMOL}/state", json={"state": "retired"}
        )
        assert served.status_code == 200  # no longer served, so it may be retired
        refused = await owned.client.post(
            "/v1/catalog/models/smol-copy/state", json={"state": "retired"}
        )
        assert refused.status_code == 409 and refused.json()["code"] == "CONFLICT"


async def test_reload_onto_a_broken_model_rolls_back_and_the_pool_stays_ready(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 4096)
    async with open_owned() as owned:
        await register(owned, id="broken", path=str(broken))
        before = await owned.health()

        response = await reload(owned, model_ref="broken", deadline_ms=10_000)
        assert response.status_code == 422, response.text
        error = response.json()
        assert error["code"] == "MODEL_LOAD_FAILED" and error["retriable"] is False
        assert error["details"]["rolled_back_to"] == {"id": SMOL, "digest": before["model_digest"]}

        after = await owned.health()  # the reload answers once the old model serves again
        assert after["ready"] and after["state"] == "ready"
        assert (after["model_id"], after["model_digest"]) == (SMOL, before["model_digest"])
        assert owned.supervisor.statistics().model_path == str(cached_model())
        assert await owned.text(prompt="Hello", max_tokens=4, temperature=0)


async def test_reload_onto_a_file_that_fails_verification_touches_nothing(tmp_path: Path) -> None:
    impostor = tmp_path / "impostor.gguf"
    impostor.write_bytes(b"GGUF" + b"\x01" * 4096)
    async with open_owned() as owned:
        await register(owned, id="impostor", path=str(impostor), sha256="ab" * 32)
        pid = owned.pid
        response = await reload(owned, model_ref="impostor")
        assert response.status_code == 409, response.text
        assert "does not match its registered sha256" in response.json()["message"]
        assert owned.pid == pid
        health = await owned.health()
        assert health["ready"] and not health["draining"]
        entry = (await owned.client.get("/v1/catalog/models/impostor")).json()
        assert entry["trust_state"] == "mismatch"
        unknown = await reload(owned, model_ref="nothing-like-it")
        assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"


async def test_a_catalog_failure_during_a_reload_is_a_500_and_the_pool_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def disk_full(self: Catalog, model_id: str) -> None:
        raise CatalogError(f"cannot write {tmp_path}/catalog.sqlite3: database or disk is full")

    async with open_owned() as owned:
        await register(owned, id="other", path=str(cached_model()))
        pid = owned.pid
        monkeypatch.setattr(Catalog, "verify", disk_full)
        response = await reload(owned, model_ref="other")
        assert response.status_code == 500, response.text
        assert response.json()["code"] == "INTERNAL"
        assert "disk is full" in response.json()["message"]
        assert owned.pid == pid and (await owned.health())["ready"]
        assert await owned.text(prompt="Hello", max_tokens=4, temperature=0)
