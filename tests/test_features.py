"""The Gherkin features of ``tests/features/``, bound to a live server with pytest-bdd.

Every scenario starts its own orchestra on loopback, in a Trio run on a thread of its own
(:func:`tests.test_openapi.serve_in_thread`): in front of the fake llama-server
(:func:`tests.harness.open_stack`) or, for the scenarios tagged ``@real_engine``, owning the
cached real llama-server (:func:`tests.engine.open_owned`, one server for the module).
Steps are plain functions that talk HTTP (``requests``) or the SDK to it; they wait for
conditions (a stream event, a state over HTTP, a counter in ``/metrics``), never for time.

Which features are bound: all of ``tests/features/``, or only those under the file or
directory named by ``$LLORCH_BDD_FEATURE_PATH`` (relative to the repository root, or
absolute); a path that names no feature is a collection error saying so. ``scripts/bdd``
is the runner that sets it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests
import trio
from prometheus_client.parser import text_string_to_metric_families
from pytest_bdd import given, parsers, scenarios, then, when

from orchestra import API_VERSION
from orchestra.config import Config
from orchestra.config.checks import split_bind
from orchestra.obs.logs import JsonFormatter
from orchestra.sdk import Client, Retry, TaskRequest

from .harness import SSE, open_stack, parse_sse
from .test_openapi import HANG, Live, hang, owned_server, serve_in_thread, wait_until

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ROOT / "tests" / "features"
FEATURE_PATH_ENV = "LLORCH_BDD_FEATURE_PATH"
"""The file or directory of features to run (default: every feature of :data:`FEATURES`)."""
WAIT_S = 30.0
"""Bound on every wait for a thread of the scenario (a client retrying, a stream read)."""


def selected_features() -> Path:
    """The feature file or directory ``$LLORCH_BDD_FEATURE_PATH`` names, or every feature;
    raises ``pytest.UsageError`` when the path names no ``.feature`` file."""
    raw = os.environ.get(FEATURE_PATH_ENV, "")
    if not raw:
        return FEATURES
    path = Path(raw) if Path(raw).is_absolute() else ROOT / raw
    found = [path] if path.is_file() and path.suffix == ".feature" else []
    if path.is_dir():
        found = sorted(path.rglob("*.feature"))
    if not found:
        raise pytest.UsageError(
            f"{FEATURE_PATH_ENV}={raw!r} names no .feature file (nor a directory holding "
            f"one); the features are under {FEATURES.relative_to(ROOT)}/"
        )
    return path.resolve()


scenarios(str(selected_features()))


# -- the world of a scenario ------------------------------------------------------------------


@attrs.define
class Reader:
    """An SSE stream read a little at a time, over ``requests``."""

    response: requests.Response
    chunks: Iterator[bytes]
    raw: bytes = b""

    @property
    def events(self) -> list[SSE]:
        return parse_sse(self.raw)

    def until(self, predicate: Callable[[list[SSE]], bool]) -> list[SSE]:
        """Read until ``predicate(events so far)`` holds (or the stream ends)."""
        for chunk in self.chunks:
            self.raw += chunk
            if predicate(self.events):
                break
        return self.events

    def to_end(self) -> list[SSE]:
        for chunk in self.chunks:
            self.raw += chunk
        return self.events


@attrs.define
class World:
    """What a scenario has started, sent and seen so far."""

    tmp: Path
    exits: contextlib.ExitStack
    live: Live | None = None
    answer: requests.Response | None = None
    """The latest answer a step kept."""
    task_id: str | None = None
    """The task the scenario is about."""
    reader: Reader | None = None
    held: list[str] = attrs.Factory(list)
    """Tasks holding a slot (or waiting to), that the scenario cancels to free it."""
    waiting: list[str] = attrs.Factory(list)
    """Ordinary tasks waiting in the queue behind them."""
    texts: list[str] = attrs.Factory(list)
    """The generated text of each run, in order."""
    events: list[SSE] = attrs.Factory(list)
    """The events of the task's stream a step read whole (after a cancel: what a reader
    arriving right after the cancel returned saw)."""
    capacity: tuple[int, int] = (0, 0)
    """``(slots_total, queue_capacity)`` as the capabilities said."""
    answers: list[requests.Response] = attrs.Factory(list)
    """Answers kept in order (submissions, task statuses)."""
    caps: dict[str, Any] = attrs.Factory(dict)
    """``GET /v1/capabilities``, as last read."""
    advised_ms: int = 0
    """The ``retry_after_ms`` of a 429 the scenario saw."""
    client: dict[str, Any] = attrs.Factory(dict)
    """The retrying client's thread and what it got."""
    lines: list[dict[str, Any]] = attrs.Factory(list)
    """Log lines, as orchestra writes them (JSON), once captured."""
    slot: int | None = None
    """The engine slot a session's turns ran on."""
    conversation: str = ""
    """A session's conversation so far: its prompts and replies."""

    @property
    def server(self) -> Live:
        assert self.live is not None, "no server started in this scenario"
        return self.live

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.server.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.server.request("POST", path, json=body, **kwargs)

    def submit(self, **body: Any) -> str:
        response = self.post("/v1/tasks", body)
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    def stream(self, task_id: str) -> list[SSE]:
        response = self.get(f"/v1/tasks/{task_id}/stream")
        assert response.status_code == 200, response.text
        return parse_sse(response.content)

    def open_reader(self, task_id: str) -> Reader:
        response = self.get(f"/v1/tasks/{task_id}/stream", stream=True)
        assert response.status_code == 200, response.text
        self.exits.callback(response.close)
        return Reader(response, response.iter_content(chunk_size=None))

    def status(self, task_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get(f"/v1/tasks/{task_id}").json()
        return status

    def state(self, task_id: str) -> str:
        return str(self.status(task_id)["state"])

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = self.get("/v1/pools/default/health").json()
        return health

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` in ``/metrics`` that carry ``labels``."""
        text = self.get("/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with contextlib.ExitStack() as exits:
        yield World(tmp_path, exits)


@pytest.fixture(scope="module")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One orchestra owning the cached real llama-server, for every scenario that needs it."""
    with owned_server(tmp_path_factory.mktemp("bdd-owned")) as live:
        yield live


def text_of(events: list[SSE]) -> str:
    return "".join(e.data["t"] for e in events if e.event == "token")


def kinds(events: list[SSE]) -> list[str]:
    return [e.event for e in events]


def start_fake(
    world: World, *, slots: int = 1, token_delay_s: float = 0.0, **sections: Any
) -> None:
    def open_server() -> Any:
        return open_stack(
            slots=slots, token_delay_s=token_delay_s, shutdown_grace_s=0.0, **sections
        )

    world.live = world.exits.enter_context(serve_in_thread(open_server, world.tmp))


def run_to_end(world: World, **body: Any) -> list[SSE]:
    events = world.stream(world.submit(**body))
    assert kinds(events)[-1] == "end", events[-1]
    return events


# -- servers ------------------------------------------------------------------------------------


@given("orchestra in front of the fake engine")
def _fake(world: World) -> None:
    start_fake(world)


@given(parsers.parse("orchestra in front of the fake engine, which sends a token every {ms:d} ms"))
def _fake_slow(world: World, ms: int) -> None:
    start_fake(world, token_delay_s=ms / 1000)


@given(
    parsers.re(
        r"orchestra in front of the fake engine with (?P<slots>\d+) slots?"
        r"(?: and a queue of (?P<places>\d+) places?)?"
    )
)
def _fake_sized(world: World, slots: str, places: str | None) -> None:
    # A stated queue is the whole of the waiting room: no backlog inside the engine, so
    # exactly slots + places tasks are in flight at most.
    sections: dict[str, Any] = {}
    if places is not None:
        sections = {"admission": {"queue_capacity": int(places)}, "adapter": {"engine_backlog": 0}}
    start_fake(world, slots=int(slots), **sections)


@given("orchestra owning the real llama-server")
def _real(world: World, request: pytest.FixtureRequest) -> None:
    world.live = request.getfixturevalue("real_engine")


# -- start on loopback ------------------------------------------------------------------------


@then("it listens on 127.0.0.1")
def _on_loopback(world: World) -> None:
    assert world.server.base_url.startswith("http://127.0.0.1:"), world.server.base_url


@then(parsers.parse('GET /health answers 200 with the status "{status}"'))
def _health_ok(world: World, status: str) -> None:
    response = world.get("/health")
    assert response.status_code == 200 and response.json()["status"] == status, response.text


@then("GET /v1/capabilities answers 200 with an api_version")
def _caps_ok(world: World) -> None:
    response = world.get("/v1/capabilities")
    assert response.status_code == 200 and response.json()["api_version"], response.text


@then("the default configuration binds to 127.0.0.1 only")
def _default_loopback() -> None:
    assert split_bind(Config().bind_addr)[0] == "127.0.0.1"


# -- submit and stream ------------------------------------------------------------------------


@when(parsers.parse('I submit the prompt "{prompt}" for {n:d} tokens'))
def _submit_prompt(world: World, prompt: str, n: int) -> None:
    world.answer = world.post("/v1/tasks", {"prompt": prompt, "max_tokens": n})


@then("the task is admitted at queue position 0 with its stream URL")
def _admitted(world: World) -> None:
    assert world.answer is not None and world.answer.status_code == 202, world.answer
    body = world.answer.json()
    assert body["queue_position"] == 0
    assert body["stream_url"] == f"/v1/tasks/{body['task_id']}/stream"
    world.task_id = body["task_id"]


@then(parsers.parse("its stream is started, {n:d} tokens, then end"))
def _stream_shape(world: World, n: int) -> None:
    assert world.task_id is not None
    events = world.stream(world.task_id)
    assert kinds(events) == ["started"] + ["token"] * n + ["end"]
    assert [e.id for e in events] == list(range(n + 2))
    world.events = events


@then(parsers.parse("the end event counts {n:d} tokens out"))
def _end_counts(world: World, n: int) -> None:
    assert world.events[-1].data["tokens_out"] == n


# -- cancel -------------------------------------------------------------------------------------


@given(parsers.parse("a task of {n:d} tokens whose stream I am reading"))
def _reading(world: World, n: int) -> None:
    world.task_id = world.submit(prompt="a long story", max_tokens=n)
    world.reader = world.open_reader(world.task_id)


@when(parsers.parse("I have read {n:d} tokens and cancel the task"))
def _cancel_after(world: World, n: int) -> None:
    assert world.reader is not None and world.task_id is not None
    world.reader.until(lambda events: kinds(events).count("token") >= n)
    world.answer = world.post(f"/v1/tasks/{world.task_id}/cancel")
    # What a reader arriving right after the cancel returned sees: the frozen log.
    world.events = world.stream(world.task_id)


@then(parsers.parse('the cancel answers 200 with the state "{state}"'))
def _cancel_answer(world: World, state: str) -> None:
    assert world.answer is not None and world.answer.status_code == 200, world.answer.text
    assert world.answer.json() == {"task_id": world.task_id, "state": state}


@then("the stream ends with the error CANCELLED")
def _stream_cancelled(world: World) -> None:
    assert world.reader is not None
    last = world.reader.to_end()[-1]
    assert last.event == "error" and last.data["code"] == "CANCELLED", last


@then("no token of the task is sent after the cancel returned")
def _no_token_after(world: World) -> None:
    assert world.reader is not None and world.task_id is not None
    live = world.reader.events
    assert live == world.events, "the live stream differs from the log at the cancel"
    assert kinds(live).index("error") == len(live) - 1, "an event followed the cancel"
    assert world.stream(world.task_id) == live, "the log changed after the cancel"
    assert world.status(world.task_id)["tokens_out"] == kinds(live).count("token")


@then("the engine slot is free again")
def _slot_free(world: World) -> None:
    fake = world.server.handle.fake

    async def engine_freed() -> None:  # the engine's connection was closed, its slot freed
        with trio.fail_after(WAIT_S):
            await fake.wait_until(lambda: fake.disconnects >= 1 and fake.busy_slots == 0)

    world.server.call(engine_freed)
    wait_until(lambda: world.health()["slots_busy"] == 0, "orchestra counts the slot free")


# -- a full queue -------------------------------------------------------------------------------


@given("a task holding the only slot")
def _holding(world: World) -> None:
    world.held.append(hang(world.server))


@given(parsers.re(r"(?P<n>\d+) tasks? waiting in the queue"))
def _waiting(world: World, n: str) -> None:
    for i in range(int(n)):
        response = world.post("/v1/tasks", {"prompt": f"waiting {i}", "max_tokens": 2})
        assert response.status_code == 202 and response.json()["queue_position"] == i
        world.waiting.append(response.json()["task_id"])


@when("I submit one more task")
def _one_more(world: World) -> None:
    world.answer = world.post("/v1/tasks", {"prompt": "one too many", "max_tokens": 2})


@then("it is refused with 429 ADMISSION_REJECT")
def _refused(world: World) -> None:
    assert world.answer is not None
    assert world.answer.status_code == 429, world.answer.text
    assert world.answer.json()["code"] == "ADMISSION_REJECT"


@then(
    parsers.parse(
        'the body says it is retriable, with a retry_after_ms and the policy_label "{label}"'
    )
)
def _backoff_body(world: World, label: str) -> None:
    assert world.answer is not None
    body = world.answer.json()
    assert body["retriable"] is True
    assert isinstance(body["retry_after_ms"], int) and body["retry_after_ms"] >= 1
    assert body["policy_label"] == label
    assert body["correlation_id"] == world.answer.headers["X-Correlation-Id"]


@then("the headers Retry-After and X-Backoff-Ms agree with retry_after_ms")
def _backoff_headers(world: World) -> None:
    assert world.answer is not None
    retry_ms = world.answer.json()["retry_after_ms"]
    assert world.answer.headers["X-Backoff-Ms"] == str(retry_ms)
    assert int(world.answer.headers["Retry-After"]) == max(1, -(-retry_ms // 1000))


@then("the waiting tasks still run to their end once the slot is free")
def _waiting_run(world: World) -> None:
    for task_id in world.held:
        world.post(f"/v1/tasks/{task_id}/cancel")
    for task_id in world.waiting:
        assert kinds(world.stream(task_id))[-1] == "end"


# -- determinism --------------------------------------------------------------------------------


@when(parsers.parse('I run the prompt "{prompt}" for {n:d} tokens with the seed {seed:d} twice'))
def _twice(world: World, prompt: str, n: int, seed: int) -> None:
    for _ in range(2):
        task_id = world.submit(prompt=prompt, max_tokens=n, seed=seed)
        events = world.stream(task_id)
        assert kinds(events)[-1] == "end", events[-1]
        world.texts.append(text_of(events))
        world.answers.append(world.get(f"/v1/tasks/{task_id}"))


@then("both runs generated the same bytes")
def _same_bytes(world: World) -> None:
    first, second = world.texts
    assert first and first.encode() == second.encode(), (first, second)


@then(parsers.parse("both runs generated {n:d} tokens"))
def _both_n(world: World, n: int) -> None:
    assert [a.json()["tokens_out"] for a in world.answers] == [n, n]


# -- backpressure -----------------------------------------------------------------------------


@given("a submission now is refused with 429, advising a delay")
def _probe(world: World) -> None:
    response = world.post("/v1/tasks", {"prompt": "probe", "max_tokens": 2})
    assert response.status_code == 429, response.text
    world.advised_ms = response.json()["retry_after_ms"]
    assert world.advised_ms >= 1


@when("a client with retries on submits a task")
def _retrying_client(world: World) -> None:
    client = Client(world.server.base_url, retry=Retry(attempts=5))
    world.exits.callback(client.close)
    got = world.client

    def submit() -> None:
        began = time.monotonic()
        try:
            got["handle"] = client.submit(TaskRequest(prompt="let me in", max_tokens=4))
        except Exception as exc:  # re-raised by the step that reads it
            got["error"] = exc
        got["elapsed_s"] = time.monotonic() - began

    got["thread"] = threading.Thread(target=submit, name="bdd-retrying-client")
    got["thread"].start()
    world.exits.callback(got["thread"].join, WAIT_S)


@then("the server refuses the client's first try with 429")
def _client_refused(world: World) -> None:
    # The probe was the first refusal; the client's first try is the second.
    wait_until(
        lambda: world.metric("orchestra_tasks_rejected_total", reason="ADMISSION_REJECT") >= 2,
        "the client's first try was refused",
    )
    assert "handle" not in world.client


@when("the slot and the queue are freed")
def _free(world: World) -> None:
    for task_id in world.held + world.waiting:
        assert world.post(f"/v1/tasks/{task_id}/cancel").status_code == 200


@then("the client's task is admitted after waiting at least the advised delay")
def _client_admitted(world: World) -> None:
    world.client["thread"].join(WAIT_S)
    if "error" in world.client:
        raise world.client["error"]
    assert "handle" in world.client, "the retrying client did not finish"
    assert world.client["elapsed_s"] >= world.advised_ms / 1000
    world.task_id = world.client["handle"].task_id


@then(parsers.parse("the client's task streams started, {n:d} tokens, then end"))
def _client_streams(world: World, n: int) -> None:
    assert world.task_id is not None
    assert kinds(world.stream(world.task_id)) == ["started"] + ["token"] * n + ["end"]


# -- capacity -----------------------------------------------------------------------------------


@when("I read the capacity from GET /v1/capabilities")
def _read_capacity(world: World) -> None:
    caps = world.get("/v1/capabilities").json()
    [pool] = caps["pools"]
    world.capacity = (pool["slots_total"], caps["limits"]["queue_capacity"])


@then(parsers.parse("it says {slots:d} slots and {places:d} queue places"))
def _capacity_is(world: World, slots: int, places: int) -> None:
    assert world.capacity == (slots, places)


@when("I submit as many tasks that hold their slot as the capacity says")
def _fill(world: World) -> None:
    slots, places = world.capacity
    for i in range(slots + places):
        response = world.post("/v1/tasks", {"prompt": f"{HANG} {i}", "max_tokens": 8})
        world.answers.append(response)
        if response.status_code == 202:
            world.held.append(response.json()["task_id"])
        if i < slots:  # the slots fill first: each one runs before the next comes
            ran = world.held[-1]
            wait_until(lambda ran=ran: world.state(ran) == "running", f"task {i} ran")


@then("every one of them is admitted")
def _all_admitted(world: World) -> None:
    assert [a.status_code for a in world.answers] == [202] * sum(world.capacity)


@then(parsers.parse("{running:d} of them are running and {queued:d} are waiting"))
def _split(world: World, running: int, queued: int) -> None:
    states = [world.state(task_id) for task_id in world.held]
    assert states == ["running"] * running + ["queued"] * queued
    assert world.health()["queue_depth"] == queued


# -- sessions -----------------------------------------------------------------------------------


def turn(world: World, prompt: str, session_id: str) -> str:
    events = run_to_end(
        world, prompt=prompt, max_tokens=4, session_id=session_id, determinism="best_effort"
    )
    return text_of(events)


def session(world: World, session_id: str) -> dict[str, Any]:
    response = world.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@when(parsers.parse('I send the turn "{prompt}" in the session "{session_id}"'))
def _first_turn(world: World, prompt: str, session_id: str) -> None:
    world.conversation = prompt + turn(world, prompt, session_id)


@when(
    parsers.parse('I send a second turn continuing the conversation in the session "{session_id}"')
)
def _second_turn(world: World, session_id: str) -> None:
    prompt = f"{world.conversation} User: and three lakes?"
    world.conversation = prompt + turn(world, prompt, session_id)


@then("both turns ran on the same engine slot")
def _same_slot(world: World) -> None:
    bodies = world.server.handle.fake.completion_bodies
    [first, second] = [body["id_slot"] for body in bodies]
    assert first == second
    world.slot = first


@then(
    parsers.parse(
        'the session "{session_id}" reports 2 turns on that slot, with cached tokens and a warm cache'
    )
)
def _session_report(world: World, session_id: str) -> None:
    body = session(world, session_id)
    assert (body["turns"], body["slot"]) == (2, world.slot)
    assert body["cached_tokens"] > 0 and body["kv_warm"] is True
    assert body["task_id"] is None


@given(parsers.parse('a turn of the session "{session_id}" that holds its slot'))
def _holding_turn(world: World, session_id: str) -> None:
    world.task_id = world.submit(prompt=HANG, max_tokens=8, session_id=session_id)
    task_id = world.task_id
    wait_until(lambda: world.state(task_id) == "running", "the turn ran")
    world.slot = session(world, session_id)["slot"]
    world.reader = world.open_reader(task_id)


@when("I cancel that turn")
def _cancel_turn(world: World) -> None:
    world.answer = world.post(f"/v1/tasks/{world.task_id}/cancel")
    assert world.answer.status_code == 200, world.answer.text


@then("its stream ends with the error CANCELLED")
def _turn_cancelled(world: World) -> None:
    _stream_cancelled(world)


@then(parsers.parse('the session "{session_id}" has no turn in progress'))
def _no_turn(world: World, session_id: str) -> None:
    assert session(world, session_id)["task_id"] is None


@then(parsers.parse('the next turn of the session "{session_id}" runs to its end on the same slot'))
def _next_turn(world: World, session_id: str) -> None:
    turn(world, "and now?", session_id)
    assert world.server.handle.fake.completion_bodies[-1]["id_slot"] == world.slot
    body = session(world, session_id)
    assert (body["turns"], body["slot"]) == (2, world.slot)


# -- capabilities and versions ------------------------------------------------------------------


@when("I read GET /v1/capabilities")
def _read_caps(world: World) -> None:
    response = world.get("/v1/capabilities")
    assert response.status_code == 200, response.text
    world.caps = response.json()


@then("its api_version is this orchestra's API version")
def _api_version(world: World) -> None:
    assert world.caps["api_version"] == API_VERSION


@then(parsers.parse('it lists the engine "{engine}" in "{mode}" mode with its engine_version'))
def _engine_listed(world: World, engine: str, mode: str) -> None:
    [listed] = world.caps["engines"]
    assert (listed["engine"], listed["mode"]) == (engine, mode)
    assert isinstance(listed["engine_version"], str) and listed["engine_version"]


@then("the pool's health reports the same engine version")
def _health_version(world: World) -> None:
    [listed] = world.caps["engines"]
    assert world.health()["engine_version"] == listed["engine_version"]


# -- correlation ids and metrics ----------------------------------------------------------------


class _Lines(logging.Handler):
    """Keeps every record as the JSON line orchestra writes for it."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@given("its log lines are captured")
def _capture(world: World) -> None:
    logger = logging.getLogger("orchestra")
    handler, level = _Lines(world.lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def release() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    world.exits.callback(release)


@when(parsers.parse('I submit a task with the X-Correlation-Id "{cid}" and read it to its end'))
def _submit_with_cid(world: World, cid: str) -> None:
    world.answer = world.post(
        "/v1/tasks", {"prompt": "trace me", "max_tokens": 3}, headers={"X-Correlation-Id": cid}
    )
    assert world.answer.status_code == 202, world.answer.text
    world.task_id = world.answer.json()["task_id"]
    assert kinds(world.stream(world.task_id))[-1] == "end"


@then(parsers.parse('the answer carries the X-Correlation-Id "{cid}"'))
def _echoed(world: World, cid: str) -> None:
    assert world.answer is not None and world.answer.headers["X-Correlation-Id"] == cid


@then(
    parsers.parse(
        "the log line of the task's end has the correlation_id \"{cid}\" and the task's id"
    )
)
def _log_line(world: World, cid: str) -> None:
    # The line is written when the task ends, before its stream's last event is sent.
    ended = [line for line in world.lines if line.get("job_id") == world.task_id]
    assert len(ended) == 1, world.lines
    assert ended[0]["correlation_id"] == cid and ended[0]["outcome"] == "completed"


@when("I ask for a task that does not exist")
def _unknown_task(world: World) -> None:
    world.answer = world.get("/v1/tasks/no-such-task")


@then("the answer carries a fresh X-Correlation-Id, also in its error body")
def _fresh_cid(world: World) -> None:
    assert world.answer is not None and world.answer.status_code == 404
    made = world.answer.headers["X-Correlation-Id"]
    assert len(made) == 36 and world.answer.json()["correlation_id"] == made


@when(parsers.parse('I run the prompt "{prompt}" for {n:d} tokens to its end'))
def _run_prompt(world: World, prompt: str, n: int) -> None:
    world.texts.append(text_of(run_to_end(world, prompt=prompt, max_tokens=n)))


@then(
    parsers.parse(
        "GET /metrics shows {admitted:d} task admitted, {completed:d} task completed "
        "and {tokens:d} tokens out"
    )
)
def _metrics(world: World, admitted: int, completed: int, tokens: int) -> None:
    assert world.metric("orchestra_tasks_admitted_total") == admitted
    assert world.metric("orchestra_tasks_ended_total", outcome="completed") == completed
    assert world.metric("orchestra_tokens_out_total") == tokens
