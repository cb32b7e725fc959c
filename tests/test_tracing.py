"""Tracing (orchestra.obs.tracing): one trace per task, read back with the SDK's in-memory
exporter. Each test hands the service a TracerProvider of its own (orchestra never sets
OpenTelemetry's global one), so no span leaks from one test into another."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from orchestra.actors.queue import Queue
from orchestra.config import ConfigError, TracingConfig, parse_config
from orchestra.errors import ErrorCode
from orchestra.obs.logs import JsonFormatter
from orchestra.obs.tracing import Tracing, otlp_url
from orchestra.pool import ReplicaState, ReplicaStatus, Residency
from orchestra.task import TaskRequest

from .harness import Stack, open_stack, tokens_seen
from .test_queue_stateful import ScriptedEngine

TRACING = {"enabled": True}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # exported as each span ends
    yield provider
    provider.shutdown()


def spans_of(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and format_trace_id(s.context.trace_id) == trace_id
    ]


def root_of(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    (root,) = [s for s in spans if s.name == "orchestra.task"]
    return root


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    found = [
        s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda s: (s.start_time or 0, s.end_time or 0))


def tree(spans: Sequence[ReadableSpan], node: ReadableSpan | None = None, depth: int = 0) -> str:
    """The span tree as text: each span's name, its events and their codes, indented."""
    node = node or root_of(spans)
    assert node.start_time is not None and node.end_time is not None
    ms = (node.end_time - node.start_time) / 1e6
    status = " ERROR" if node.status.status_code is StatusCode.ERROR else ""
    lines = [f"{'  ' * depth}{node.name} ({ms:.1f} ms){status}"]
    for event in node.events:
        code = (event.attributes or {}).get("orchestra.error_code", "")
        lines.append(f"{'  ' * depth}  * {event.name} {code}".rstrip())
    for child in children(spans, node):
        lines.append(tree(spans, child, depth + 1))
    return "\n".join(lines)


def names(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[str]:
    return [s.name for s in children(spans, parent)]


def events(span: ReadableSpan) -> list[tuple[str, object]]:
    return [(e.name, (e.attributes or {}).get("orchestra.error_code")) for e in span.events]


def trace_id_of(response_headers: object) -> str:
    traceparent = response_headers["traceparent"]  # type: ignore[index]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(span_id)) == ("00", 16)
    assert int(flags, 16) & 1  # sampled
    return str(trace_id)


async def submit(stack: Stack, **body: object) -> tuple[str, str]:
    """Submit; the task id and its trace id (from the 202's ``traceparent``)."""
    response = await stack.client.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    return response.json()["task_id"], trace_id_of(response.headers)


# -- the tree of one task -------------------------------------------------------------------


async def test_a_completed_task_is_one_trace_with_every_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        task_id, trace_id = await submit(stack, prompt="trace me", max_tokens=4)
        events_read = await stack.stream(task_id)
        assert events_read[-1].event == "end"
    spans = spans_of(exporter, trace_id)
    print(tree(spans))  # shown with -s; the README's example
    root = root_of(spans)
    assert root.parent is None  # no traceparent came: a trace of its own
    assert names(spans, root) == [
        "orchestra.admission",
        "orchestra.queue.wait",
        "orchestra.engine",
        "orchestra.stream",
    ]
    assert root.attributes is not None
    assert root.attributes["orchestra.task_id"] == task_id
    assert root.attributes["orchestra.outcome"] == "completed"
    assert root.attributes["orchestra.tokens_out"] == 4
    assert root.status.status_code is StatusCode.UNSET and events(root) == []
    (engine,) = [s for s in spans if s.name == "orchestra.engine"]
    assert names(spans, engine) == ["orchestra.engine.prompt", "orchestra.engine.decode"]
    prompt, decode = children(spans, engine)
    # Timed by the engine's own figures, inside the dispatch, one after the other.
    assert engine.start_time is not None and engine.end_time is not None
    assert prompt.start_time is not None and prompt.end_time is not None
    assert decode.start_time is not None and decode.end_time is not None
    assert engine.start_time <= prompt.start_time <= prompt.end_time == decode.start_time
    assert decode.end_time == engine.end_time
    decode_ms = events_read[-1].data["decode_time_ms"]
    assert abs((decode.end_time - decode.start_time) / 1e6 - decode_ms) < 0.01
    (stream,) = [s for s in spans if s.name == "orchestra.stream"]
    assert stream.attributes is not None
    assert stream.attributes["orchestra.stream.kind"] == "sse"
    assert stream.attributes["orchestra.stream.outcome"] == "end"
    # Every span of the task was ended, and none is from another trace.
    assert len(spans) == 7


async def test_every_reader_has_a_span_of_its_own(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        task_id, trace_id = await submit(stack, prompt="two readers", max_tokens=3)
        await stack.stream(task_id)
        late = await stack.client.get(f"/v1/tasks/{task_id}/stream", headers={"Last-Event-ID": "1"})
        assert trace_id_of(late.headers) == trace_id  # the task's traceparent
    spans = spans_of(exporter, trace_id)
    readers = [s for s in spans if s.name == "orchestra.stream"]
    assert [(s.attributes or {}).get("orchestra.stream.from_event") for s in readers] == [0, 2]


async def test_a_cancelled_task_shows_the_cancel_with_its_code(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        task_id, trace_id = await submit(stack, prompt="[[hang:1]] x", max_tokens=8)
        async with stack.live(task_id) as live:
            await live.until(tokens_seen(1))
            cancelled = await stack.client.post(f"/v1/tasks/{task_id}/cancel")
            assert cancelled.json()["state"] == "cancelled"
            assert (await live.to_end())[-1].data["code"] == "CANCELLED"
    spans = spans_of(exporter, trace_id)
    print(tree(spans))
    root = root_of(spans)
    assert events(root) == [("task.cancelled", "CANCELLED")]
    assert root.status.status_code is StatusCode.ERROR
    assert (root.attributes or {})["orchestra.outcome"] == "cancelled"
    (engine,) = [s for s in spans if s.name == "orchestra.engine"]
    assert engine.status.status_code is StatusCode.ERROR  # ended by the cancel, no timings
    assert names(spans, engine) == []


async def test_a_refused_task_is_a_trace_with_the_refusal_and_its_code(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sections = {
        "tracing": TRACING,
        "admission": {"queue_capacity": 1},
        "adapter": {"engine_backlog": 0},
    }
    async with open_stack(tracer_provider=provider, **sections) as stack:
        running, _ = await submit(stack, prompt="[[hang:1]] runs", max_tokens=4)
        await stack.wait_state(running, "running")
        waiting, _ = await submit(stack, prompt="waits", max_tokens=4)
        full = await stack.client.post("/v1/tasks", json={"prompt": "one too many"})
        assert full.status_code == 429
        late = await stack.client.post(
            "/v1/tasks", json={"prompt": "in time?", "deadline_ms": 1, "priority": "batch"}
        )
        assert late.status_code == 504
        for task_id in (waiting, running):
            await stack.client.post(f"/v1/tasks/{task_id}/cancel")
    for response, code in ((full, "ADMISSION_REJECT"), (late, "DEADLINE_UNMET")):
        spans = spans_of(exporter, trace_id_of(response.headers))
        print(tree(spans))
        root = root_of(spans)
        assert events(root) == [("task.refused", code)]
        assert root.status.status_code is StatusCode.ERROR
        assert names(spans, root) == ["orchestra.admission"]  # nothing waited or ran
        (admission,) = children(spans, root)
        assert admission.status.status_code is StatusCode.ERROR
    (refused,) = root_of(spans_of(exporter, trace_id_of(full.headers))).events
    assert refused.attributes is not None
    assert refused.attributes["orchestra.policy_label"] == "queue_capacity"
    assert isinstance(refused.attributes["orchestra.retry_after_ms"], int)


async def test_a_requeued_task_shows_each_dispatch_and_each_requeue(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        task_id, trace_id = await submit(stack, prompt="[[error-before:500]] x", max_tokens=4)
        assert (await stack.stream(task_id))[-1].data["code"] == "WORKER_RESET"
    spans = spans_of(exporter, trace_id)
    print(tree(spans))
    root = root_of(spans)
    assert events(root) == [
        ("task.requeued", "WORKER_RESET"),
        ("task.requeued", "WORKER_RESET"),
        ("task.failed", "WORKER_RESET"),
    ]
    dispatches = [s for s in children(spans, root) if s.name == "orchestra.engine"]
    assert [(s.attributes or {})["orchestra.attempt"] for s in dispatches] == [1, 2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in dispatches)
    assert (root.attributes or {})["orchestra.attempts"] == 3


async def test_a_repeated_submission_answers_with_the_first_task_s_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        body = {"prompt": "once", "max_tokens": 2, "task_id": "same-task"}
        _, first = await submit(stack, **body)
        _, again = await submit(stack, **body)
        assert again == first  # the answer names the task's trace
        await stack.stream("same-task")
    repeats = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "orchestra.task" and [e.name for e in s.events] == ["task.duplicate"]
    ]
    assert len(repeats) == 1  # the repeat's own short trace ended at once
    assert repeats[0].context is not None
    assert format_trace_id(repeats[0].context.trace_id) != first


# -- a client's trace, the response, the log line ---------------------------------------------


async def test_a_client_traceparent_is_continued_and_its_trace_id_is_logged(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    caplog.set_level(logging.INFO, logger="orchestra.queue")
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        response = await stack.client.post(
            "/v1/tasks",
            json={"prompt": "continue my trace", "max_tokens": 2},
            headers={"traceparent": traceparent, "X-Correlation-Id": "my-request-1"},
        )
        assert response.status_code == 202
        assert trace_id_of(response.headers) == CLIENT_TRACE
        assert response.headers["X-Correlation-Id"] == "my-request-1"
        await stack.stream(response.json()["task_id"])
    root = root_of(spans_of(exporter, CLIENT_TRACE))
    assert root.parent is not None and format_span_id(root.parent.span_id) == CLIENT_SPAN
    (line,) = [r for r in caplog.records if r.getMessage().endswith(" completed")]
    written = json.loads(JsonFormatter().format(line))
    assert written["trace_id"] == CLIENT_TRACE
    assert written["correlation_id"] == "my-request-1"


async def test_an_openai_stream_is_a_reader_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with open_stack(tracer_provider=provider, tracing=TRACING) as stack:
        response = await stack.client.post(
            "/v1/completions",
            json={"model": "default", "prompt": "hi", "max_tokens": 2, "stream": True},
        )
        assert response.status_code == 200 and response.text.endswith("[DONE]\n\n")
        trace_id = trace_id_of(response.headers)
    spans = spans_of(exporter, trace_id)
    root = root_of(spans)
    assert (root.attributes or {})["http.route"] == "/v1/completions"
    (stream,) = [s for s in spans if s.name == "orchestra.stream"]
    assert (stream.attributes or {})["orchestra.stream.kind"] == "openai"
    assert (stream.attributes or {})["orchestra.stream.outcome"] == "end"


# -- off ------------------------------------------------------------------------------------


async def test_tracing_off_creates_no_span_and_no_header(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestra.queue")
    async with open_stack(tracer_provider=provider) as stack:  # no [tracing]
        response = await stack.client.post(
            "/v1/tasks",
            json={"prompt": "not traced", "max_tokens": 2},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
        )
        task_id = response.json()["task_id"]
        assert "traceparent" not in response.headers
        await stack.stream(task_id)
        assert stack.running.actors.queue.trace_of(task_id) is None
        assert not stack.running.actors.tracing.on
    assert exporter.get_finished_spans() == ()
    (line,) = [r for r in caplog.records if r.getMessage().endswith(" completed")]
    assert "trace_id" not in json.loads(JsonFormatter().format(line))


# -- the Queue's own steps: a model load, a crash --------------------------------------------


async def test_a_wait_for_a_model_load_and_a_requeue_after_a_crash(
    nursery: trio.Nursery, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    engine = ScriptedEngine()
    queue = Queue(
        capacity=4, engine=engine, retention_s=60.0, orphan_grace_s=60.0,
        residency=Residency.UNLOADED,
    )  # fmt: skip
    await nursery.start(queue.run)
    tracing = Tracing.from_config(TracingConfig(enabled=True), provider)
    with tracing.admission({}, "/v1/tasks") as trace:
        assert trace is not None
        admitted = await queue.submit(TaskRequest(prompt="cold", max_tokens=2), "")
    await queue.set_residency(Residency.LOADED)  # the Models actor: loaded
    await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ready"))
    await trio.testing.wait_all_tasks_blocked()
    assert "cold" in engine.calls  # dispatched: the engine process now dies
    await queue.replica_lost(ErrorCode.WORKER_RESET, "llama-server killed by SIGKILL")
    await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ready"))  # restarted
    await trio.testing.wait_all_tasks_blocked()
    engine.calls["cold"].send.send_nowait(("tokens", ["a", "b"]))
    log = queue.log_of(admitted.task_id)
    assert log is not None
    while not log.closed:
        await log.wait_beyond(len(log))
    spans = spans_of(exporter, trace.trace_id)
    print(tree(spans))
    root = root_of(spans)
    assert events(root) == [("task.requeued", "WORKER_RESET")]
    assert names(spans, root) == [
        "orchestra.admission",
        "orchestra.queue.wait",
        "orchestra.engine",
        "orchestra.engine",
    ]
    (wait,) = [s for s in spans if s.name == "orchestra.queue.wait"]
    (load,) = children(spans, wait)
    assert load.name == "orchestra.model.load"
    assert load.end_time is not None and wait.end_time is not None
    assert load.end_time <= wait.end_time
    assert (root.attributes or {})["orchestra.outcome"] == "completed"


# -- configuration ----------------------------------------------------------------------------


def test_tracing_is_off_by_default_and_each_bad_key_is_named() -> None:
    assert parse_config({}).tracing == TracingConfig()
    assert not TracingConfig().on and not Tracing.from_config(TracingConfig()).on
    assert TracingConfig(otlp_endpoint="http://127.0.0.1:4318").on
    bad = {
        "enabled": "yes",
        "otlp_endpoint": "127.0.0.1:4318",
        "service_name": "",
        "sample_ratio": 1.5,
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"tracing": bad})
    assert sorted(info.value.problems) == [
        "tracing.colour: unknown key",
        'tracing.enabled: expected true or false (got "yes")',
        "tracing.otlp_endpoint: must be empty or a URL like http://127.0.0.1:4318 or "
        'http://127.0.0.1:4318/v1/traces (got "127.0.0.1:4318")',
        "tracing.sample_ratio: must be between 0 and 1 (got 1.5)",
        "tracing.service_name: must not be empty",
    ]
    for endpoint in ("http://u:p@c:4318", "http://c:4318/?x=1", "http://c:0"):
        with pytest.raises(ConfigError, match=r"^tracing\.otlp_endpoint: "):
            parse_config({"tracing": {"otlp_endpoint": endpoint}})


def test_otlp_endpoint_is_a_base_url_or_the_traces_url() -> None:
    assert otlp_url("http://c:4318") == "http://c:4318/v1/traces"
    assert otlp_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert otlp_url("https://c/otel/v1/traces") == "https://c/otel/v1/traces"


async def test_an_otlp_endpoint_builds_an_exporter_the_service_shuts_down() -> None:
    tracing = Tracing.from_config(TracingConfig(otlp_endpoint="http://127.0.0.1:9/"))
    assert tracing.on
    await tracing.aclose()  # nothing was traced: nothing is sent


async def _collector(
    received: list[bytes], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """An OTLP/HTTP collector on loopback: keeps each request's body, answers 200."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += await stream.receive_some(65536)
        received.append(body)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_spans_reach_an_otlp_collector_by_the_shutdown() -> None:
    """The real path: `[tracing] otlp_endpoint` exports over OTLP/HTTP (protobuf), batched in
    the SDK's thread and flushed when the service stops."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_collector, received)
        endpoint = f"http://127.0.0.1:{port}"
        async with open_stack(tracing={"otlp_endpoint": endpoint, "service_name": "lab-1"}) as s:
            answer = await s.client.post("/v1/tasks", json={"prompt": "hi", "max_tokens": 3})
            await s.stream(answer.json()["task_id"])
            traceparent = answer.headers.get("traceparent")
        nursery.cancel_scope.cancel()
    assert received, "nothing was exported"
    spans, services = [], set()
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                spans += list(scope.spans)
    assert services == {"lab-1"}
    assert {"orchestra.task", "orchestra.admission", "orchestra.engine"} <= {s.name for s in spans}
    assert traceparent is not None  # the task's own trace id is the one exported
    assert traceparent.split("-")[1] in {s.trace_id.hex() for s in spans}
