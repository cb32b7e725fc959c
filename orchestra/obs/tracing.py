"""Tracing with OpenTelemetry: one trace per task, off by default (``[tracing]``).

The spans of one task, all in one trace (``specs/observability.md``)::

    orchestra.task                 admission → the task's end; a child of the client's
    │                              ``traceparent`` when it sent one, else a trace's root
    ├── orchestra.admission        the HTTP request's handling, up to its 202 or refusal
    ├── orchestra.queue.wait       admission → first dispatch
    │   └── orchestra.model.load   admission → its model loaded (only when it waited for one)
    ├── orchestra.engine           one per dispatch: dispatch → its session's end
    │   ├── orchestra.engine.prompt   the engine's prompt evaluation  } from the engine's own
    │   └── orchestra.engine.decode   the engine's generation         } timings
    └── orchestra.stream           one per reader: an SSE subscriber, an OpenAI stream

What happens to the task is an event on ``orchestra.task``, each with its
``orchestra.error_code``: ``task.refused`` (a 429, a 504 deadline, any refusal),
``task.cancelled``, ``task.deadline_unmet``, ``task.failed``, ``task.requeued`` (an engine
failure before the first token put it back at the head of the queue) and
``task.preempted`` (taken back for an interactive task).

Who writes what. The HTTP face opens a task's trace (:meth:`Tracing.admission`) and owns
it until it hands it to the Queue with the submission (:meth:`TaskTrace.hand_over`, from
:meth:`~orchestra.actors.queue_face.QueueFace.submit`, which reads :data:`admitting` in
the handler's own task and puts the trace on its ``Submit`` message). From then on the
Queue, the single writer of task state, is the trace's only writer: it keeps it on the
task's record and calls it where things happen (admission, dispatch, a session's end, a
requeue, the task's end), never per token. Spans are parented explicitly on the task's
span context, never through the caller's context variables: the Queue runs its sessions
in its own nursery. A reader's span (:meth:`TaskTrace.reader`) is the reader's own.

Off, nothing is created: no trace, no span, no context; :meth:`Tracing.admission` yields
None and every call site skips on ``task.trace is None``. The service is handed its
:class:`opentelemetry.trace.TracerProvider` (tests pass one with an in-memory exporter);
orchestra never sets OpenTelemetry's global provider.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import attrs
import trio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orchestra import __version__
from orchestra.errors import ErrorCode, Refusal
from orchestra.messages import Completed
from orchestra.task import TaskState

if TYPE_CHECKING:
    from orchestra.config import TracingConfig

SCOPE = "orchestra"
"""The instrumentation scope of every span."""
OTLP_TRACES_PATH = "/v1/traces"
"""Added to an ``otlp_endpoint`` given as a base URL (OTLP/HTTP's traces path)."""

_PROPAGATOR = TraceContextTextMapPropagator()

admitting: contextvars.ContextVar[TaskTrace | None] = contextvars.ContextVar(
    "orchestra_admitting_trace", default=None
)
"""The trace of the submission the current HTTP handler is admitting (set by
:meth:`Tracing.admission`, read by the Queue's face in the same task)."""

_EVENTS: dict[str, str] = {
    ErrorCode.CANCELLED: "task.cancelled",
    ErrorCode.DEADLINE_UNMET: "task.deadline_unmet",
}
"""The event of a task's end by its code (any other code: ``task.failed``)."""


class Headers(Protocol):
    """A request's headers, as the HTTP face has them (looked up by name)."""

    def get(self, key: str) -> str | None: ...


def _now_ns() -> int:
    return time.time_ns()


@attrs.define(eq=False)
class TaskTrace:
    """The spans of one task. Written by one owner at a time: the HTTP handler until
    :meth:`hand_over`, the Queue afterwards (and each reader its own span)."""

    _tracer: Tracer
    root: Span
    """``orchestra.task``."""
    _admission: Span | None
    _context: Context = attrs.field(init=False)
    _wait: Span | None = attrs.field(default=None, init=False)
    _load: Span | None = attrs.field(default=None, init=False)
    _engine: Span | None = attrs.field(default=None, init=False)
    _engine_at_ns: int = attrs.field(default=0, init=False)
    handed: bool = attrs.field(default=False, init=False)
    """The Queue has it (its submission was sent): only the Queue ends it from now on."""
    adopted: bool = attrs.field(default=False, init=False)
    """The Queue admitted a task with it."""
    ended: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self._context = trace.set_span_in_context(self.root)

    # -- what it is ------------------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        """The trace id, 32 hex digits (the ``trace_id`` of the task's log lines)."""
        return trace.format_trace_id(self.root.get_span_context().trace_id)

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` of the task's span (returned in responses)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, self._context)
        return carrier.get("traceparent", "")

    def _child(self, name: str, parent: Span | None = None, start_ns: int | None = None) -> Span:
        context = self._context if parent is None else trace.set_span_in_context(parent)
        return self._tracer.start_span(
            name,
            context=context,
            start_time=start_ns,
            record_exception=False,
            set_status_on_exception=False,
        )

    # -- the HTTP face, while admitting ------------------------------------------------------

    def hand_over(self) -> None:
        """Its submission is on the Queue's inbox: the Queue owns it now."""
        self.handed = True

    def admission_done(self, refusal: Refusal | None) -> None:
        """The admitting request's handling ended (with ``refusal``, or its 202)."""
        span, self._admission = self._admission, None
        if span is None:
            return
        if refusal is not None:
            span.set_attribute("orchestra.error_code", str(refusal.code))
            span.set_status(Status(StatusCode.ERROR, str(refusal.code)))
        span.end()

    # -- the Queue ------------------------------------------------------------------------------

    def admitted(self, task_id: str, pool_id: str, *, waits_for_load: bool) -> None:
        """The Queue admitted it as ``task_id``: its wait begins (and its model's load, when
        the model is not in memory)."""
        self.adopted = True
        self.root.set_attributes({"orchestra.task_id": task_id, "orchestra.pool_id": pool_id})
        self._wait = self._child("orchestra.queue.wait")
        if waits_for_load:
            self._load = self._child("orchestra.model.load", self._wait)

    def loaded(self) -> None:
        """Its model is in memory now."""
        span, self._load = self._load, None
        if span is not None:
            span.end()

    def refused(self, refusal: Refusal) -> None:
        """It was refused: ``task.refused`` with the code, and the trace ends."""
        attributes: dict[str, str | int] = {"orchestra.error_code": str(refusal.code)}
        if refusal.retry_after_ms is not None:
            attributes["orchestra.retry_after_ms"] = refusal.retry_after_ms
        if refusal.policy_label is not None:
            attributes["orchestra.policy_label"] = refusal.policy_label
        self.root.add_event("task.refused", attributes)
        self.root.set_status(Status(StatusCode.ERROR, str(refusal.code)))
        self._finish()

    def duplicate(self, task_id: str) -> None:
        """An idempotent resubmission of ``task_id``: answered with that task; nothing new
        runs, so this trace ends here."""
        self.root.add_event("task.duplicate", {"orchestra.task_id": task_id})
        self._finish()

    def dispatched(self, attempt: int, replica: str) -> None:
        """Dispatch ``attempt`` (from 1) to ``replica``: its wait ends at the first."""
        self.loaded()
        if self._wait is not None:
            self._wait.end()
            self._wait = None
        self._engine_at_ns = _now_ns()
        self._engine = self._child("orchestra.engine", start_ns=self._engine_at_ns)
        self._engine.set_attributes({"orchestra.attempt": attempt, "orchestra.replica": replica})

    def completed(self, done: Completed) -> None:
        """The engine finished its generation: its prompt evaluation and decode as spans
        timed by the engine's own figures, ending now (never before the dispatch)."""
        span, self._engine = self._engine, None
        if span is None:
            return
        end = _now_ns()
        decode_start = max(self._engine_at_ns, end - round(done.decode_time_ms * 1e6))
        prompt_start = max(self._engine_at_ns, decode_start - round(done.prompt_time_ms * 1e6))
        prompt = self._child("orchestra.engine.prompt", span, prompt_start)
        prompt.set_attributes(
            {
                "orchestra.tokens_in": done.tokens_in or 0,
                "orchestra.cached_tokens": done.cached_tokens,
            }
        )
        prompt.end(decode_start)
        decode = self._child("orchestra.engine.decode", span, decode_start)
        decode.set_attribute("orchestra.tokens_out", done.tokens_out)
        decode.end(end)
        span.end(end)

    def requeued(self, code: ErrorCode, message: str, attempt: int) -> None:
        """Dispatch ``attempt`` failed before its first token: back at the head of the
        queue (``task.requeued``)."""
        attributes: dict[str, str | int] = {
            "orchestra.error_code": str(code),
            "orchestra.attempt": attempt,
            "orchestra.message": message,
        }
        self.root.add_event("task.requeued", attributes)
        self._end_engine(code)

    def preempted(self, attempt: int) -> None:
        """Dispatch ``attempt`` was taken back for an interactive task."""
        self.root.add_event("task.preempted", {"orchestra.attempt": attempt})
        self._end_engine(None)

    def _end_engine(self, code: str | None) -> None:
        span, self._engine = self._engine, None
        if span is not None:
            if code is not None:
                span.set_status(Status(StatusCode.ERROR, str(code)))
            span.end()

    def end(
        self, state: TaskState, code: str | None, message: str, *, tokens_out: int, attempts: int
    ) -> None:
        """The task ended in ``state`` (with ``code`` unless completed): its event, and
        every span of it still open ends."""
        self.root.set_attributes(
            {
                "orchestra.outcome": str(state),
                "orchestra.tokens_out": tokens_out,
                "orchestra.attempts": attempts,
            }
        )
        if code is not None:
            name = _EVENTS.get(code, "task.failed")
            attributes = {"orchestra.error_code": str(code), "orchestra.message": message}
            self.root.add_event(name, attributes)
            self.root.set_status(Status(StatusCode.ERROR, str(code)))
            self.root.set_attribute("orchestra.error_code", str(code))
        self._end_engine(code)
        self._finish()

    def abandoned(self) -> None:
        """Its admitting request ended (the client left, a bug) before the Queue saw it."""
        self.root.add_event("task.abandoned")
        self._finish()

    def _finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        for span in (self._load, self._wait):
            if span is not None:
                span.end()
        self._load = self._wait = None
        self.root.end()

    # -- readers -------------------------------------------------------------------------------

    def reader(self, kind: str, from_event: int = 0) -> Span:
        """A span for one reader of the task's events (``sse``, ``openai``); the reader
        ends it with :func:`reader_done`."""
        span = self._child("orchestra.stream")
        span.set_attributes(
            {"orchestra.stream.kind": kind, "orchestra.stream.from_event": from_event}
        )
        return span


def reader_done(span: Span, *, finished: bool) -> None:
    """A reader's stream ended: it read to the task's end, or it left before."""
    span.set_attribute("orchestra.stream.outcome", "end" if finished else "left")
    span.end()


@attrs.frozen
class Tracing:
    """The service's tracing: a tracer, or off (the default)."""

    tracer: Tracer | None = None
    """None: tracing is off and nothing is created."""
    _owned: TracerProvider | None = attrs.field(default=None, alias="owned")
    """A provider the service built (from ``[tracing]``) and shuts down."""

    @property
    def on(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_config(cls, config: TracingConfig, provider: TracerProvider | None = None) -> Tracing:
        """Off unless ``[tracing]`` turns it on. On: spans go to ``provider`` when given
        (a test's, with its own exporter), else to an SDK provider exporting with OTLP/HTTP
        to ``otlp_endpoint``, keeping ``sample_ratio`` of new traces."""
        if not config.on:
            return cls()
        owned = None
        if provider is None:
            provider = owned = _otlp_provider(config)
        return cls(provider.get_tracer(SCOPE, __version__), owned=owned)

    def admission(
        self, headers: Headers, route: str
    ) -> contextlib.AbstractContextManager[TaskTrace | None]:
        """Open a task's trace for the request being admitted (a child of its
        ``traceparent``, when ``headers`` carry one) for the duration of the block, which
        yields it (None when off). A refusal raised in the block ends the trace unless
        the Queue already has it."""
        if self.tracer is None:
            return contextlib.nullcontext()
        return self._admission(self.tracer, headers, route)

    @contextlib.contextmanager
    def _admission(
        self, tracer: Tracer, headers: Headers, route: str
    ) -> Iterator[TaskTrace | None]:
        parent = _PROPAGATOR.extract(headers)
        root = tracer.start_span(
            "orchestra.task",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.route": route},
            record_exception=False,
            set_status_on_exception=False,
        )
        context = trace.set_span_in_context(root)
        admission = tracer.start_span(
            "orchestra.admission",
            context=context,
            record_exception=False,
            set_status_on_exception=False,
        )
        task_trace = TaskTrace(tracer, root, admission)
        token = admitting.set(task_trace)
        refusal: Refusal | None = None
        try:
            yield task_trace
        except Refusal as exc:
            refusal = exc
            raise
        finally:
            admitting.reset(token)
            task_trace.admission_done(refusal)
            if not task_trace.handed:  # refused (or abandoned) before the Queue saw it
                if refusal is not None:
                    task_trace.refused(refusal)
                else:
                    task_trace.abandoned()

    async def aclose(self) -> None:
        """Export what is left and stop the exporter it built (in a thread: it may wait
        for the collector)."""
        if self._owned is not None:
            shutdown = getattr(self._owned, "shutdown", None)
            if shutdown is not None:
                await trio.to_thread.run_sync(shutdown)


def otlp_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of ``otlp_endpoint``: a base URL gets ``/v1/traces``."""
    base = endpoint.rstrip("/")
    if "/" not in base.partition("://")[2]:
        return base + OTLP_TRACES_PATH
    return endpoint


def _otlp_provider(config: TracingConfig) -> TracerProvider:
    """An SDK provider that batches spans (in its own thread) to an OTLP/HTTP exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    provider = SdkTracerProvider(
        resource=Resource.create(
            {"service.name": config.service_name, "service.version": __version__}
        ),
        sampler=ParentBasedTraceIdRatio(config.sample_ratio),
    )
    exporter = (
        OTLPSpanExporter(endpoint=otlp_url(config.otlp_endpoint))
        if config.otlp_endpoint
        else OTLPSpanExporter()
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
