"""Several models (``[models.ID]``), loaded on demand, against the fake engine started as
llama-server: routing, loads, unloads, evictions, and the races each one invites, every
race driven by the gates in the fake's model files (never by timing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestra.sdk import AsyncClient

from .harness import make_config
from .models_harness import ModelFile, fake_binary, free_ports, open_models

TWO = {"a": {"memory_mb": 300}, "b": {"memory_mb": 300, "aliases": ["bee"]}}


async def test_task_for_a_cold_model_waits_for_its_load(tmp_path: Path) -> None:
    async with open_models(tmp_path, TWO, placement={"memory_budget_mb": 1000}) as stack:
        assert stack.residency("a") == "unloaded"
        task = await stack.submit("a")
        assert task["predicted_start_ms"] >= 1000  # it counts the load
        view = await stack.end_of(task["task_id"])
        assert view["state"] == "completed"
        assert stack.residency("a") == "loaded"
        assert stack.residency("b") == "unloaded"
        listed = (await stack.client.get("/v1/models")).json()["data"]
        by_id = {m["id"]: m for m in listed}
        assert by_id["a"]["residency"] == "loaded" and by_id["a"]["pool"] == "a"
        assert by_id["b"]["residency"] == "unloaded" and by_id["b"]["aliases"] == ["bee"]
        assert by_id["a"]["default"] is True and by_id["b"]["default"] is False


async def test_alias_and_default_route_and_unknown_is_404(tmp_path: Path) -> None:
    async with open_models(
        tmp_path, TWO, default_model="bee", placement={"memory_budget_mb": 1000}
    ) as stack:
        task = await stack.submit("bee")
        assert (await stack.end_of(task["task_id"]))["state"] == "completed"
        assert stack.residency("b") == "loaded"
        response = await stack.client.post("/v1/tasks", json={"prompt": "x"})
        assert response.status_code == 202
        assert stack.models.find(response.json()["task_id"]) is stack.models.pool("b").queue
        response = await stack.client.post("/v1/tasks", json={"prompt": "x", "model_ref": "zz"})
        assert response.status_code == 404
        error = response.json()
        assert error["code"] == "NOT_FOUND" and "a, b" in error["message"]
        response = await stack.client.post(
            "/v1/chat/completions",
            json={"model": "zz", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 404 and response.json()["error"]["param"] == "model"


async def test_many_tasks_for_one_cold_model_start_one_load(tmp_path: Path) -> None:
    async with open_models(
        tmp_path, TWO, {"a": {"gate": True}}, placement={"memory_budget_mb": 1000},
        admission={"queue_capacity": 100},
    ) as stack:  # fmt: skip
        tasks = [await stack.submit("a") for _ in range(20)]
        await stack.wait_residency("a", "loading")
        stack.files["a"].open_gate()
        for task in tasks:
            assert (await stack.end_of(task["task_id"]))["state"] == "completed"
        assert [kind for kind, _ in stack.files["a"].lives()] == ["start"]


async def test_swap_under_a_budget_for_one_waits_for_the_exit(tmp_path: Path) -> None:
    async with open_models(tmp_path, TWO, placement={"memory_budget_mb": 400}) as stack:
        first = await stack.submit("a")
        assert (await stack.end_of(first["task_id"]))["state"] == "completed"
        second = await stack.submit("b")
        assert (await stack.end_of(second["task_id"]))["state"] == "completed"
        assert stack.residency("a") == "unloaded" and stack.residency("b") == "loaded"
        # a's process exited before b's started: the log files interleave in time
        a_exit = stack.files["a"].lives()
        assert [kind for kind, _ in a_exit] == ["start", "exit"]
        metrics = (await stack.client.get("/metrics")).text
        assert 'orchestra_model_evictions_total{model="a"} 1.0' in metrics


async def test_a_long_task_is_never_evicted(tmp_path: Path) -> None:
    async with open_models(tmp_path, TWO, placement={"memory_budget_mb": 400}) as stack:
        long = await stack.submit("a", prompt="[[hang:1]] long", max_tokens=8)
        await stack.wait_token(long["task_id"])
        other = await stack.submit("b")
        view = (await stack.client.get(f"/v1/tasks/{other['task_id']}")).json()
        assert view["state"] == "queued"
        assert stack.residency("a") == "loaded" and stack.residency("b") == "unloaded"
        await stack.client.post(f"/v1/tasks/{long['task_id']}/cancel")
        assert (await stack.end_of(other["task_id"]))["state"] == "completed"
        assert stack.residency("a") == "unloaded"


async def test_a_failed_load_ends_its_hundred_waiters_and_leaves_others_serving(
    tmp_path: Path,
) -> None:
    async with open_models(
        tmp_path, TWO, {"a": {"gate": True}}, placement={"memory_budget_mb": 1000},
        admission={"queue_capacity": 100},
    ) as stack:  # fmt: skip
        served = await stack.submit("b")
        assert (await stack.end_of(served["task_id"]))["state"] == "completed"
        waiting = [await stack.submit("a") for _ in range(100)]
        await stack.wait_residency("a", "loading")
        stack.files["a"].crash_loading()
        for task in waiting:
            view = await stack.end_of(task["task_id"])
            assert view["state"] == "failed" and view["error_code"] == "MODEL_LOAD_FAILED"
        assert stack.residency("a") == "failed" and stack.residency("b") == "loaded"
        again = await stack.submit("b")
        assert (await stack.end_of(again["task_id"]))["state"] == "completed"
        listed = {m["id"]: m for m in (await stack.client.get("/v1/models")).json()["data"]}
        assert listed["a"]["residency"] == "failed" and "did not load" in listed["a"]["error"]


async def test_a_bad_file_fails_its_load_and_the_next_task_tries_again(tmp_path: Path) -> None:
    async with open_models(tmp_path, TWO, placement={"memory_budget_mb": 1000}) as stack:
        stack.files["a"].path.write_text("not a gguf")
        task = await stack.submit("a")
        view = await stack.end_of(task["task_id"])
        assert view["error_code"] == "MODEL_LOAD_FAILED"
        stack.files["a"].write()
        task = await stack.submit("a")
        assert (await stack.end_of(task["task_id"]))["state"] == "completed"


async def test_idle_unload_racing_an_arrival_serves_it_on_the_next_load(tmp_path: Path) -> None:
    models = {"a": {"memory_mb": 300, "idle_unload_s": 0.05}}
    async with open_models(tmp_path, models, placement={"memory_budget_mb": 1000}) as stack:
        first = await stack.submit("a")
        assert (await stack.end_of(first["task_id"]))["state"] == "completed"
        stack.files["a"].write(gate=True)  # the next load waits for the test
        await stack.wait_residency("a", "unloading", "unloaded")
        late = await stack.submit("a")  # arrives while it unloads (or just after)
        await stack.wait_residency("a", "loading")
        stack.files["a"].open_gate()
        assert (await stack.end_of(late["task_id"]))["state"] == "completed"
        kinds = [kind for kind, _ in stack.files["a"].lives()]
        assert kinds == ["start", "exit", "start"]


async def test_load_and_unload_by_hand_and_force(tmp_path: Path) -> None:
    async with open_models(tmp_path, TWO, placement={"memory_budget_mb": 1000}) as stack:
        response = await stack.client.post("/v1/models/bee/load", json={})
        assert response.status_code == 200, response.text
        assert response.json()["residency"] == "loaded" and response.json()["load_ms"] >= 0
        task = await stack.submit("b", prompt="[[hang:1]] x", max_tokens=8)
        await stack.wait_token(task["task_id"])
        response = await stack.client.post("/v1/models/b/unload?force=true", json={})
        assert response.status_code == 200, response.text
        assert response.json()["residency"] == "unloaded" and response.json()["cancelled"] == 1
        view = await stack.end_of(task["task_id"])
        assert view["state"] == "cancelled"
        response = await stack.client.post("/v1/models/zz/load", json={})
        assert response.status_code == 404


async def test_a_model_larger_than_the_budget_is_refused_at_admission(tmp_path: Path) -> None:
    # It does not fit beside the keep_loaded model, which never leaves.
    models = {"kept": {"memory_mb": 800, "keep_loaded": True}, "big": {"memory_mb": 300}}
    async with open_models(tmp_path, models, placement={"memory_budget_mb": 1000}) as stack:
        await stack.wait_residency("kept", "loaded")
        response = await stack.client.post("/v1/tasks", json={"prompt": "x", "model_ref": "big"})
        assert response.status_code == 503
        error = response.json()
        assert error["code"] == "MODEL_TOO_LARGE" and "800 MiB of keep_loaded" in error["message"]
        assert error["details"] == {"memory_mb": 300, "budget_mb": 1000}


@pytest.mark.parametrize("embeddings", [True, False])
async def test_embeddings_through_the_pool(tmp_path: Path, embeddings: bool) -> None:
    models = {"e": {"memory_mb": 100, "embeddings": embeddings}}
    async with open_models(tmp_path, models, placement={"memory_budget_mb": 1000}) as stack:
        response = await stack.client.post(
            "/v1/embeddings", json={"model": "e", "input": ["one two", "three"]}
        )
        if not embeddings:
            assert response.status_code == 400
            assert response.json()["error"]["param"] == "model"
            return
        assert response.status_code == 200, response.text
        body = response.json()
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert body["model"] == "e" and body["usage"]["prompt_tokens"] > 0
        assert "X-Task-Id" in response.headers


async def test_a_verified_catalog_model_is_served_by_its_id(tmp_path: Path) -> None:
    models = {"a": {"memory_mb": 300}}
    async with open_models(tmp_path, models, placement={"memory_budget_mb": 4000}) as stack:
        extra = tmp_path / "extra.gguf"
        extra.write_text("GGUF{}")  # the fake's settings: loads at once
        digest = hashlib.sha256(extra.read_bytes()).hexdigest()
        unverified = tmp_path / "unverified.gguf"
        unverified.write_text("GGUF{}")
        for entry in (
            {"id": "extra", "path": str(extra), "sha256": digest},
            {"id": "unverified", "path": str(unverified)},
        ):
            response = await stack.client.post("/v1/catalog/models", json=entry)
            assert response.status_code == 201, response.text
        listed = {m["id"]: m for m in (await stack.client.get("/v1/models")).json()["data"]}
        assert listed["extra"]["pool"] is None  # registered, not verified yet
        response = await stack.client.post("/v1/catalog/models/extra/verify", json={})
        assert response.status_code == 200 and response.json()["trust_state"] == "verified"
        listed = {m["id"]: m for m in (await stack.client.get("/v1/models")).json()["data"]}
        assert listed["extra"]["pool"] == "extra" and listed["extra"]["residency"] == "unloaded"
        assert listed["unverified"]["pool"] is None  # not verified: not served
        task = await stack.submit("extra")
        assert (await stack.end_of(task["task_id"]))["state"] == "completed"
        response = await stack.client.post(
            "/v1/tasks", json={"prompt": "x", "model_ref": "unverified"}
        )
        assert response.status_code == 404


async def test_the_embedded_sdk_serves_several_models(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path)
    tables = {}
    for name in ("a", "b"):
        ModelFile(tmp_path / f"{name}.gguf").write()
        tables[name] = {"binary": str(binary), "path": str(tmp_path / f"{name}.gguf")}
    config = make_config(
        f"http://127.0.0.1:{free_ports(2)}",
        models=tables,
        default_model="b",
        placement={"memory_budget_mb": 4000},
    )
    async with AsyncClient.embedded(config, default_model="a") as client:
        first = await client.complete("hello", max_tokens=3)
        other = await client.complete("hello", max_tokens=3, model="b")
        assert first.text and other.text
        listed = {m.id: m for m in await client.models()}
        assert listed["a"].residency == "loaded" and listed["b"].residency == "loaded"
        assert listed["b"].default and not listed["a"].default
        unloaded = await client.unload_model("a")
        assert unloaded.residency == "unloaded"


async def test_a_load_that_takes_too_long_fails_with_its_reason(tmp_path: Path) -> None:
    models = {"a": {"memory_mb": 300, "start_timeout_s": 0.5}}
    async with open_models(
        tmp_path, models, {"a": {"gate": True}}, placement={"memory_budget_mb": 1000}
    ) as stack:
        task = await stack.submit("a")  # the gate never opens
        view = await stack.end_of(task["task_id"])
        assert view["error_code"] == "MODEL_LOAD_FAILED"
        assert "did not load within" in (stack.models.state("a").error or "")
        assert stack.models.pool("a").supervisor.statistics().pid is None  # it was stopped
