"""The SDK against recorded exchanges with the real server (``tests/fixtures/*.json``).

Each fixture is one exchange of a scenario of :mod:`tests.contract_scenarios`, captured
from a live server by ``scripts/capture-fixtures``. Three kinds of check:

1. drift: every scenario runs again on a fresh live server, and its answer must still
   match the stored fixture: status, error code, headers present, JSON keys and value types
   (and every value but the volatile ones: timings, dates, prose, the real engine's token
   texts), and the stream's event kinds in order;
2. the SDK: every fixture is replayed through ``httpx.MockTransport`` into
   :class:`~orchestra.sdk.AsyncClient`, which must send the recorded request and return the
   typed object holding the fixture's values, raise the right exception carrying the
   envelope's fields, or yield the stream's typed events in order; ``complete()`` must
   return the stream's text or raise :class:`~orchestra.sdk.TaskFailed`;
3. coverage: every error code an SDK call can meet has a fixture, and the rest are listed
   in :data:`NOT_REACHABLE`, each with the reason.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import httpx
import pytest

from orchestra.sdk import (
    AsyncClient,
    BudgetExceeded,
    CancelResult,
    Completion,
    End,
    Error,
    ErrorCode,
    Event,
    QueueFull,
    ServerError,
    Started,
    TaskFailed,
    TaskHandle,
    TaskRequest,
    TaskState,
    Token,
)
from orchestra.task import Determinism, Priority

from .contract_scenarios import (
    FIXTURES,
    SCENARIOS,
    VOLATILE_HEADERS,
    Frame,
    Scenario,
    capture,
    fixture_path,
    load,
    media_type,
    record_request,
    sse_frames,
    volatile_in,
)
from .test_openapi import json_type

NOT_REACHABLE: Mapping[ErrorCode, str] = {
    # A bug by definition (an unexpected exception in a handler; a session interrupted
    # while its task still runs, which the queue never lets happen); no request is meant
    # to produce it.
    ErrorCode.INTERNAL: "a server bug by definition; no request produces it on purpose",
    # The tools (POST /v1/tools/...) are for agents, over HTTP and MCP; the SDK has no call
    # for them, so none can meet their upstream's failures.
    ErrorCode.TOOL_FAILED: "answered by the tool routes only, which no SDK call sends",
    ErrorCode.TOOL_TIMEOUT: "answered by the tool routes only, which no SDK call sends",
}
"""The error codes no SDK call can be made to meet on a live server, and why."""


BASE_URL = "http://orchestra.test"

SCENARIO_IDS: Callable[[Scenario], str] = lambda scenario: scenario.name  # noqa: E731


def stored(scenario: Scenario) -> dict[str, Any]:
    """The scenario's fixture; fails with the fix when it was never captured."""
    path = fixture_path(scenario.name)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `scripts/capture-fixtures {scenario.name}`")
    return load(scenario.name)


def error_code_of(fixture: Mapping[str, Any]) -> str | None:
    """The error code a fixture answers with: the envelope's, or the stream's ``error``."""
    response = fixture["response"]
    if "sse" in response:
        errors = [f.data["code"] for f in sse_frames(response["sse"]) if f.event == "error"]
        return errors[-1] if errors else None
    body = response["json"]
    return body.get("code") if response["status"] >= 400 else None


# -- 1. drift: the live server against the stored fixtures -----------------------------------


def json_drift(expected: Any, actual: Any, masked: frozenset[str], where: str = "$") -> list[str]:
    """How ``actual`` differs from ``expected``: key sets, JSON types, and the values of
    every key not in ``masked`` (whose values only need the same type; a measured number
    may come out whole, so integer and number are one type there)."""
    want, got = json_type(expected), json_type(actual)
    if want != got:
        return [f"{where}: the fixture has {want} {expected!r}, the server sent {got} {actual!r}"]
    if isinstance(expected, dict):
        problems = []
        if missing := sorted(set(expected) - set(actual)):
            problems.append(f"{where}: the server no longer sends {missing}")
        if extra := sorted(set(actual) - set(expected)):
            problems.append(f"{where}: the server now sends {extra}")
        for key in sorted(set(expected) & set(actual)):
            if key in masked:
                kinds = {json_type(expected[key]), json_type(actual[key])}
                if len(kinds) > 1 and kinds != {"integer", "number"}:
                    problems.append(f"{where}.{key}: {' vs '.join(sorted(kinds))}")
            else:
                problems += json_drift(expected[key], actual[key], masked, f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{where}: the fixture has {len(expected)} items, the server {len(actual)}"]
        return [
            problem
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for problem in json_drift(e, a, masked, f"{where}[{i}]")
        ]
    if expected != actual:
        return [f"{where}: the fixture has {expected!r}, the server sent {actual!r}"]
    return []


def collapsed(kinds: list[str]) -> list[str]:
    """Event kinds with runs of one kind merged (token, token, token → token)."""
    return [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]


def sse_drift(scenario: Scenario, expected_text: str, actual_text: str) -> list[str]:
    """How a stream differs from the fixture's: event kinds in order (with runs of tokens
    merged when the scenario says so), ids counting up from the same first id, and each
    event's data compared as JSON with the scenario's masks."""
    expected, actual = sse_frames(expected_text), sse_frames(actual_text)
    masked = scenario.masked
    want, got = [f.event for f in expected], [f.event for f in actual]
    if scenario.collapse_tokens:
        want, got = collapsed(want), collapsed(got)
    if want != got:
        return [f"events: the fixture has {want}, the server sent {got}"]
    problems = []
    ids = [f.id for f in actual]
    first = expected[0].id if expected else 0
    if ids != list(range(first, first + len(ids))):
        problems.append(f"event ids: {ids}, not counting up from {first}")
    if scenario.collapse_tokens:
        model = {}
        for frame in expected:
            model.setdefault(frame.event, frame)
        pairs = [(model[frame.event], frame) for frame in actual]
    else:
        pairs = list(zip(expected, actual, strict=True))
    for want_frame, got_frame in pairs:
        where = f"event {got_frame.id} ({got_frame.event})"
        problems += json_drift(want_frame.data, got_frame.data, masked, where)
    return problems


def header_drift(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    problems = []
    if set(expected) != set(actual):
        problems.append(f"headers: the fixture has {sorted(expected)}, the server {sorted(actual)}")
    for name in sorted(set(expected) & set(actual)):
        if name in VOLATILE_HEADERS:
            if not actual[name].isdigit():
                problems.append(f"header {name}: {actual[name]!r} is not a whole number")
        elif name == "content-type":
            if media_type(expected[name]) != media_type(actual[name]):
                problems.append(f"content-type: {expected[name]!r} became {actual[name]!r}")
        elif expected[name] != actual[name]:
            problems.append(f"header {name}: {expected[name]!r} became {actual[name]!r}")
    return problems


def drift(scenario: Scenario, fixture: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Every way the live exchange differs from the stored one (empty: no drift)."""
    problems = []
    for key in ("scenario", "summary", "server", "sdk_call", "covers", "request"):
        if fixture.get(key) != live[key]:
            problems.append(f"{key}: the scenario changed since the capture: {live[key]!r}")
    want, got = fixture["response"], live["response"]
    if want["status"] != got["status"]:
        body = got.get("json", got.get("sse"))
        return [*problems, f"status: the fixture has {want['status']}, now {got['status']}: {body}"]
    problems += header_drift(want["headers"], got["headers"])
    if ("sse" in want) != ("sse" in got):
        return [*problems, "body: one is a stream, the other JSON"]
    if "sse" in want:
        problems += sse_drift(scenario, want["sse"], got["sse"])
    else:
        problems += json_drift(want["json"], got["json"], scenario.masked)
    if fixture.get("volatile") != volatile_in(scenario, want):
        problems.append("volatile: does not list the masked keys of the response; recapture")
    return problems


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
async def test_the_server_still_answers_like_the_fixture(scenario: Scenario) -> None:
    fixture = stored(scenario)
    live = await capture(scenario)
    problems = drift(scenario, fixture, live)
    assert problems == [], (
        f"the server's answer drifted from {fixture_path(scenario.name)}; if the change is "
        f"intended, run `scripts/capture-fixtures {scenario.name}`:\n  " + "\n  ".join(problems)
    )


def test_drift_is_noticed() -> None:
    """The comparison itself: masked values may change, nothing else may."""
    scenario = next(s for s in SCENARIOS if s.name == "status_200_completed")
    fixture = stored(scenario)
    same = json.loads(json.dumps(fixture))
    same["response"]["json"]["run_ms"] = 123_456
    assert drift(scenario, fixture, same) == []
    for change in (
        lambda body: body.update(state="failed"),
        lambda body: body.update(tokens_out="4"),
        lambda body: body.update(run_ms="slow"),
        lambda body: body.pop("attempts"),
        lambda body: body.update(colour="blue"),
    ):
        changed = json.loads(json.dumps(fixture))
        change(changed["response"]["json"])
        assert drift(scenario, fixture, changed) != []
    changed = json.loads(json.dumps(fixture))
    changed["response"]["headers"].pop("x-correlation-id")
    assert drift(scenario, fixture, changed) != []

    stream = next(s for s in SCENARIOS if s.name == "stream_200_completed")
    fixture = stored(stream)
    text = fixture["response"]["sse"]
    one_token_less = re.sub(r"id: 2\nevent: token\n.*?\n\n", "", text)
    assert sse_drift(stream, text, text) == []
    assert sse_drift(stream, text, one_token_less) != []
    assert sse_drift(stream, text, text.replace("event: end", "event: error")) != []


# -- 2. the SDK against the fixtures ---------------------------------------------------------


WIRE_NAMES: Mapping[tuple[type, str], str] = {(Token, "text"): "t", (Token, "index"): "i"}
"""SDK fields whose wire name differs."""
EVENT_CLASSES: Mapping[str, type[Event]] = {
    "started": Started,
    "token": Token,
    "end": End,
    "error": Error,
}


def mismatches(value: Any, wire: Any, where: str = "$") -> list[str]:
    """How an SDK value differs from the wire JSON it was read from: each field of an attrs
    class must hold its key's value (or its default when the key is absent), tuples hold
    the array's items, enums their string."""
    if attrs.has(type(value)):
        if not isinstance(wire, dict):
            return [f"{where}: the SDK has {type(value).__name__}, the wire {wire!r}"]
        problems = []
        for field in attrs.fields(type(value)):
            key = WIRE_NAMES.get((type(value), field.name), field.name)
            held = getattr(value, field.name)
            if key in wire:
                problems += mismatches(held, wire[key], f"{where}.{key}")
            elif held != field.default:
                problems.append(f"{where}.{key}: not on the wire, yet the SDK has {held!r}")
        return problems
    if isinstance(value, tuple):
        if not isinstance(wire, list) or len(wire) != len(value):
            return [f"{where}: the SDK has {value!r}, the wire {wire!r}"]
        return [
            problem
            for i, (item, wire_item) in enumerate(zip(value, wire, strict=True))
            for problem in mismatches(item, wire_item, f"{where}[{i}]")
        ]
    if isinstance(value, enum.Enum):
        same = value.value == wire
    elif isinstance(value, Mapping):
        same = dict(value) == wire
    elif isinstance(value, float):
        same = json_type(wire) in ("integer", "number") and value == wire
    else:
        same = json_type(value) == json_type(wire) and value == wire
    return [] if same else [f"{where}: the SDK has {value!r}, the wire {wire!r}"]


def http_response(recorded: Mapping[str, Any]) -> httpx.Response:
    """The recorded response, as the server sent it."""
    if "sse" in recorded:
        content = recorded["sse"].encode()
    else:
        content = json.dumps(recorded["json"], separators=(",", ":")).encode()
    return httpx.Response(recorded["status"], headers=recorded["headers"], content=content)


def request_mismatches(sent: httpx.Request, recorded: Mapping[str, Any]) -> list[str]:
    """How the SDK's request differs from the recorded one (method, path, JSON body, and
    the headers that change the answer: authorization, Last-Event-ID, Accept of a stream)."""
    problems = []
    if (sent.method, sent.url.path) != (recorded["method"], recorded["path"]):
        problems.append(f"sent {sent.method} {sent.url.path}, recorded {recorded['path']}")
    body = json.loads(sent.content) if sent.content else None
    if body != recorded.get("json"):
        problems.append(f"body: sent {body!r}, recorded {recorded.get('json')!r}")
    headers = recorded["headers"]
    for name in ("authorization", "last-event-id"):
        if sent.headers.get(name) != headers.get(name):
            problems.append(
                f"{name}: sent {sent.headers.get(name)!r}, recorded {headers.get(name)!r}"
            )
    if (
        headers.get("accept") == "text/event-stream"
        and sent.headers.get("accept") != headers["accept"]
    ):
        problems.append(f"accept: sent {sent.headers.get('accept')!r}")
    return problems


def client_for(fixture: Mapping[str, Any], transport: httpx.AsyncBaseTransport) -> AsyncClient:
    """An SDK client with the fixture's bearer token (none when it sent none)."""
    scheme, _, token = fixture["request"]["headers"].get("authorization", "").partition(" ")
    return AsyncClient(BASE_URL, token=token if scheme == "Bearer" else "", transport=transport)


def task_request(body: Mapping[str, Any]) -> TaskRequest:
    """The ``TaskRequest`` whose JSON body is ``body``."""
    fields: dict[str, Any] = dict(body)
    if "stop" in fields:
        fields["stop"] = tuple(fields["stop"])
    if "priority" in fields:
        fields["priority"] = Priority(fields["priority"])
    if "determinism" in fields:
        fields["determinism"] = Determinism(fields["determinism"])
    return TaskRequest(**fields)


def path_segment(path: str, index: int) -> str:
    return path.split("/")[index]


async def call_sdk(client: AsyncClient, fixture: Mapping[str, Any]) -> Any:
    """Make the SDK call that sends the fixture's request; what it returns."""
    request = fixture["request"]
    path = request["path"]
    call = fixture["sdk_call"]
    if call == "capabilities":
        return await client.capabilities()
    if call == "models":
        return await client.models()
    if call == "health":
        return await client.health(path_segment(path, 3))
    if call == "submit":
        return await client.submit(task_request(request["json"]))
    if call == "status":
        return await client.status(path_segment(path, 3))
    if call == "cancel":
        return await client.cancel(path_segment(path, 3))
    if call == "session":
        return await client.session(path_segment(path, 3))
    if call == "delete_session":
        return await client.delete_session(path_segment(path, 3))
    if call == "load_model":
        return await client.load_model(path_segment(path, 3))
    if call == "put_artifact":
        body = dict(request["json"])
        return await client.put_artifact(
            body.pop("content"), kind=body.pop("kind"), tags=body.pop("tags", ())
        )
    assert call == "stream", call
    last = request["headers"].get("last-event-id")
    last_event_id = None if last is None else int(last)
    async with client.stream(path_segment(path, 3), last_event_id=last_event_id) as events:
        return [event async for event in events]


def event_mismatches(events: list[Event], frames: list[Frame]) -> list[str]:
    if len(events) != len(frames):
        return [f"the SDK yielded {len(events)} events, the stream has {len(frames)}"]
    problems = []
    for event, frame in zip(events, frames, strict=True):
        if type(event) is not EVENT_CLASSES[frame.event]:
            problems.append(f"event {frame.id} ({frame.event}): the SDK yielded {event!r}")
            continue
        problems += mismatches(event, {**frame.data, "id": frame.id}, f"event {frame.id}")
    return problems


def check_server_error(exc: ServerError, response: Mapping[str, Any]) -> None:
    """``exc`` carries the recorded error envelope."""
    body, status = response["json"], response["status"]
    expected: type[ServerError] = ServerError
    if body["code"] == "BUDGET_EXCEEDED":
        expected = BudgetExceeded
    elif status == 429:
        expected = QueueFull
    assert type(exc) is expected
    retry_after_ms = body.get("retry_after_ms")
    if retry_after_ms is None and response["headers"].get("retry-after", "").isdigit():
        retry_after_ms = int(response["headers"]["retry-after"]) * 1000
    assert (exc.code, exc.status, exc.retriable) == (
        ErrorCode(body["code"]),
        status,
        body["retriable"],
    )
    assert exc.message == body["message"]
    assert exc.retry_after_ms == retry_after_ms
    assert exc.correlation_id == body["correlation_id"] == response["headers"]["x-correlation-id"]
    assert exc.problems == tuple(body.get("problems", ()))
    assert exc.policy_label == body.get("policy_label")
    assert exc.details == body.get("details")


def test_sdk_mismatches_are_noticed() -> None:
    """The comparison itself: a value, a missing key, an enum, a renamed wire field."""
    wire = {"task_id": "t", "queue_position": 0, "predicted_start_ms": 5, "stream_url": "/s"}
    handle = TaskHandle(task_id="t", queue_position=0, predicted_start_ms=5, stream_url="/s")
    assert mismatches(handle, wire) == []
    assert mismatches(attrs.evolve(handle, queue_position=1), wire) != []
    assert mismatches(handle, {**wire, "queue_position": False}) != []
    assert mismatches(handle, {k: v for k, v in wire.items() if k != "stream_url"}) != []
    assert mismatches(Token(id=1, text="a", index=0), {"id": 1, "t": "a", "i": 0}) == []
    assert mismatches(Token(id=1, text="a", index=0), {"id": 1, "t": "b", "i": 0}) != []
    failed = CancelResult(task_id="t", state=TaskState.FAILED)
    assert mismatches(failed, {"task_id": "t", "state": "failed"}) == []
    assert mismatches(failed, {"task_id": "t", "state": "cancelled"}) != []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
async def test_the_sdk_reads_the_fixture(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCHESTRA_TOKEN", raising=False)
    fixture = stored(scenario)
    response = fixture["response"]
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return http_response(response)

    result: Any = None
    error: ServerError | None = None
    async with client_for(fixture, httpx.MockTransport(answer)) as client:
        if response["status"] >= 400:
            with pytest.raises(ServerError) as raised:
                await call_sdk(client, fixture)
            error = raised.value
        else:
            result = await call_sdk(client, fixture)

    assert len(sent) == 1
    assert request_mismatches(sent[0], fixture["request"]) == []
    if error is not None:
        check_server_error(error, response)
    elif "sse" in response:
        assert event_mismatches(result, sse_frames(response["sse"])) == []
    elif fixture["sdk_call"] == "models":
        assert mismatches(result, response["json"]["data"]) == []
    else:
        assert mismatches(result, response["json"]) == []


COMPLETE_SCENARIOS = [
    scenario
    for scenario in SCENARIOS
    if scenario.sdk_call == "stream"
    and "last-event-id" not in scenario.request.headers
    and scenario.covers is not ErrorCode.NOT_FOUND
]
"""The streams of a known task, from its start: what ``complete()`` reads."""


@pytest.mark.parametrize("scenario", COMPLETE_SCENARIOS, ids=SCENARIO_IDS)
async def test_complete_returns_the_text_or_raises_task_failed(scenario: Scenario) -> None:
    fixture = stored(scenario)
    admitted = load("submit_202")["response"]
    task_id = path_segment(fixture["request"]["path"], 3)
    handle = {
        **admitted["json"],
        "task_id": task_id,
        "stream_url": f"/v1/tasks/{task_id}/stream",
    }
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if (request.method, request.url.path) == ("POST", "/v1/tasks"):
            return httpx.Response(202, headers=admitted["headers"], json=handle)
        if (request.method, request.url.path) == ("GET", fixture["request"]["path"]):
            return http_response(fixture["response"])
        return httpx.Response(500, text="not in the fixture")

    frames = sse_frames(fixture["response"]["sse"])
    text = "".join(f.data["t"] for f in frames if f.event == "token")
    last = frames[-1]
    async with client_for(fixture, httpx.MockTransport(answer)) as client:
        if last.event == "end":
            completion = await client.complete("a prompt", task_id=task_id, max_tokens=8)
        else:
            with pytest.raises(TaskFailed) as raised:
                await client.complete("a prompt", task_id=task_id, max_tokens=8)

    assert [(r.method, r.url.path) for r in sent] == [
        ("POST", "/v1/tasks"),
        ("GET", fixture["request"]["path"]),
    ], "complete() submits, streams, and cancels nothing once the stream has ended"
    if last.event == "end":
        started = frames[0]
        assert isinstance(completion, Completion)
        assert completion.task_id == task_id
        assert completion.text == text
        assert completion.tokens_out == last.data["tokens_out"]
        assert completion.decode_time_ms == last.data["decode_time_ms"]
        assert completion.queue_wait_ms == started.data["queue_wait_ms"]
        assert completion.total_ms >= 0
    else:
        failed = raised.value
        assert (failed.code, failed.retriable, failed.status) == (
            ErrorCode(last.data["code"]),
            last.data["retriable"],
            None,
        )
        assert failed.message == last.data["message"]
        assert failed.retry_after_ms == last.data.get("retry_after_ms")
        assert (failed.task_id, failed.text) == (task_id, text)


# -- 3. coverage -----------------------------------------------------------------------------


def test_the_fixtures_are_the_scenarios() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(s.name for s in SCENARIOS)
    readme = (FIXTURES / "README.md").read_text()
    assert [s.name for s in SCENARIOS if f"`{s.name}`" not in readme] == [], "list it in README"
    for scenario in SCENARIOS:
        fixture = stored(scenario)
        assert fixture["request"] == record_request(scenario), scenario.name
        covers = None if scenario.covers is None else str(scenario.covers)
        assert fixture["covers"] == covers == error_code_of(fixture), scenario.name


def test_a_real_engine_answered_at_least_one_fixture() -> None:
    real = [s for s in SCENARIOS if s.engine == "real"]
    assert any(s.sdk_call == "stream" for s in real)
    for scenario in real:
        assert "real llama-server" in stored(scenario)["server"]


def test_every_error_code_an_sdk_call_can_meet_has_a_fixture() -> None:
    covered = {error_code_of(stored(scenario)) for scenario in SCENARIOS} - {None}
    assert covered.isdisjoint(NOT_REACHABLE), "a code with a fixture is listed as not reachable"
    missing = {str(code) for code in ErrorCode} - covered - {str(c) for c in NOT_REACHABLE}
    assert not missing, f"no fixture for {sorted(missing)}: add a scenario, or say why not"
