"""Provider verification of the consumer Pacts in ``specs/pacts/`` (what the SDK expects,
written by ``tests/test_pacts_consumer.py``): Pact's verifier replays every interaction
against a live orchestra in front of the fake llama-server, after putting the server into
the interaction's provider state by driving it over HTTP. A failure prints the verifier's
own report: each interaction, and for each mismatch the path, what the pact expects and
what the server sent."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import trio
from pact import Verifier

from .harness import open_stack

os.environ.setdefault("PACT_DO_NOT_TRACK", "true")  # no usage statistics sent by Pact's FFI

PACT_DIR = Path(__file__).resolve().parent.parent / "specs" / "pacts"
PROVIDER = "orchestra"
HANG = "[[hang:1]] a task that holds its slot until it is cancelled"
"""A prompt the fake engine answers with one token, then nothing until the task is cancelled."""
QUEUE_CAPACITY = 2
START_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0


@contextlib.contextmanager
def live_orchestra(tmp: Path) -> Iterator[str]:
    """orchestra in front of the fake engine (one slot, nothing waiting inside it, room for
    :data:`QUEUE_CAPACITY` waiting tasks), in a Trio run on a thread of its own; its URL.
    The fake engine says it serves ``tmp/fake.gguf``, which the models state registers."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        async with open_stack(
            slots=1,
            model_path=str(tmp / "fake.gguf"),
            shutdown_grace_s=0.0,
            adapter={"engine_backlog": 0},
            admission={"queue_capacity": QUEUE_CAPACITY},
        ) as stack:
            state.update(url=stack.running.urls[0], token=trio.lowlevel.current_trio_token())
            state["stop"] = trio.Event()
            ready.set()
            await state["stop"].wait()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="orchestra-provider", daemon=True)
    thread.start()
    assert ready.wait(START_TIMEOUT_S), "orchestra did not start in time"
    if "url" not in state:
        raise RuntimeError("orchestra did not start") from state.get("error")
    try:
        yield state["url"]
    finally:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(state["stop"].set, trio_token=state["token"])
        thread.join(START_TIMEOUT_S)
        assert not thread.is_alive(), "orchestra did not stop in time"
        if "error" in state:
            raise state["error"]


class ProviderStates:
    """Puts the live server into a pact's provider states, over its HTTP API, and undoes
    each afterwards (the verifier calls :meth:`__call__` with ``setup`` and ``teardown``)."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.to_cancel: list[str] = []
        self.failures: list[str] = []
        """What went wrong setting up a state. A handler that raises makes the verifier
        retry it, with backoff, for minutes; so the error is kept and the interaction goes
        on (and fails), and the test shows the error."""

    def __call__(self, state: str, action: str, parameters: dict[str, Any] | None) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT_S) as http:
                if action == "teardown":
                    for task_id in self.to_cancel:
                        http.post(f"/v1/tasks/{task_id}/cancel").raise_for_status()
                    self.to_cancel.clear()
                elif state:  # "" is Pact's set-up before each interaction: nothing to do
                    setup = self.SETUPS.get(state)
                    if setup is None:
                        raise LookupError(f"no such provider state: {state!r}")
                    # pact-python passes the state's parameters under "parameters"
                    setup(self, http, (parameters or {}).get("parameters") or {})
        except Exception as exc:
            self.failures.append(f"{action} of {state!r} {parameters}: {exc!r}")

    def submit(self, http: httpx.Client, **body: Any) -> str:
        response = http.post("/v1/tasks", json=body)
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        self.to_cancel.append(task_id)
        return task_id

    def hang(self, http: httpx.Client, task_id: str | None = None) -> str:
        """A task that holds the engine's slot, once it streamed its first token."""
        body: dict[str, Any] = {"prompt": HANG, "max_tokens": 64}
        if task_id is not None:
            body["task_id"] = task_id
        task_id = self.submit(http, **body)
        with http.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
            for line in response.iter_lines():
                if line == "event: token":
                    break
        return task_id

    def nothing(self, http: httpx.Client, params: dict[str, Any]) -> None:
        """A fresh server: the queue is empty."""

    def task_completed(self, http: httpx.Client, params: dict[str, Any]) -> None:
        body = {"prompt": "Once upon a time", "max_tokens": 4, "seed": 1}
        task_id = self.submit(http, task_id=params["task_id"], **body)
        response = http.get(f"/v1/tasks/{task_id}/stream")  # read to its end
        assert "event: end" in response.text, response.text

    def task_running(self, http: httpx.Client, params: dict[str, Any]) -> None:
        self.hang(http, params["task_id"])

    def queue_full(self, http: httpx.Client, params: dict[str, Any]) -> None:
        self.hang(http)
        for _ in range(QUEUE_CAPACITY):
            self.submit(http, prompt="waiting", max_tokens=4)

    def model_in_catalog(self, http: httpx.Client, params: dict[str, Any]) -> None:
        path = self.tmp / "fake.gguf"  # the file the fake engine says it serves
        path.write_bytes(b"GGUF" + hashlib.sha256(b"fake").digest() * 2)
        entry = {"id": params["id"], "path": str(path)}
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        response = http.post("/v1/catalog/models", json=entry)
        assert response.status_code in (200, 201), response.text

    def artifact_exists(self, http: httpx.Client, params: dict[str, Any]) -> None:
        body = {"content": params["content"], "kind": params["kind"]}
        response = http.post("/v1/artifacts", json=body)
        assert response.status_code in (200, 201), response.text

    SETUPS: ClassVar[dict[str, Callable[[ProviderStates, httpx.Client, dict[str, Any]], None]]] = {
        "the queue has room": nothing,
        "a task has completed": task_completed,
        "a task is running": task_running,
        "the queue is full": queue_full,
        "a model is in the catalog": model_in_catalog,
        "an artifact exists": artifact_exists,
    }


def pact_files() -> list[Path]:
    return sorted(PACT_DIR.glob("*.json"))


def test_there_are_pacts_to_verify() -> None:
    assert pact_files(), f"no pact files in {PACT_DIR}"


@pytest.mark.parametrize("pact_file", pact_files(), ids=lambda path: path.stem)
def test_orchestra_honours_the_pact(pact_file: Path, tmp_path: Path) -> None:
    with live_orchestra(tmp_path) as url:
        states = ProviderStates(url, tmp_path)
        verifier = (
            Verifier(PROVIDER, host=httpx.URL(url).host)
            .add_transport(url=url)
            .add_source(pact_file)
            .state_handler(states, teardown=True)
            .set_coloured_output(enabled=False)
            .set_error_on_empty_pact(enabled=True)
        )
        try:
            verifier.verify()
        except RuntimeError:
            report = verifier.output(strip_ansi=True)
            report += "".join(f"\nprovider state failed: {failure}" for failure in states.failures)
            pytest.fail(f"orchestra does not honour {pact_file.name}:\n{report}", pytrace=False)
        finally:
            # pact-python 4.2 shuts its state-callback server down but never closes its
            # listening socket (a ResourceWarning, an error under filterwarnings = error).
            callback = getattr(getattr(verifier, "_state_handler", None), "_server", None)
            if callback is not None:
                callback.server_close()
        assert not states.failures, states.failures
