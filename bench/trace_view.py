"""Traces a user can look at: one completed and one cancelled task, exported as OTLP-style
JSON (``proof-bundle/traces/<name>.json``), printed as span trees, and drawn as a timeline
(``proof-bundle/traces/<name>.png``) when Pillow is importable, in Jaeger's layout: one
bar per span on a shared time axis, children under their parent, events as ticks.

orchestra runs in this process in front of the fake llama-server (20 ms per token), with
its spans going to the SDK's in-memory exporter. There is no Jaeger here (no internet, no
containers): the picture is made from the exported spans themselves.

    .venv/bin/python bench/trace_view.py            # JSON and trees (and PNGs with Pillow)
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestra.config import parse_config
from orchestra.service import run_service
from orchestra.testing.fake_llama import FakeLlamaServer

OUT = Path("proof-bundle/traces")


def as_json(spans: list[ReadableSpan]) -> list[dict[str, Any]]:
    """The spans, oldest first, as plain JSON (ids in hex, times in ns)."""
    out = []
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        assert span.context is not None
        out.append(
            {
                "name": span.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
                "start_ns": span.start_time,
                "end_ns": span.end_time,
                "status": span.status.status_code.name,
                "attributes": dict(span.attributes or {}),
                "events": [
                    {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                    for e in span.events
                ],
            }
        )
    return out


def tree(
    spans: list[dict[str, Any]], span: dict[str, Any] | None = None, depth: int = 0
) -> list[str]:
    """The span tree as text, from the oldest span (the task's) down."""
    span = span or spans[0]
    ms = (span["end_ns"] - span["start_ns"]) / 1e6
    status = " ERROR" if span["status"] == "ERROR" else ""
    lines = [f"{'  ' * depth}{span['name']} ({ms:.1f} ms){status}"]
    for event in span["events"]:
        code = event["attributes"].get("orchestra.error_code", "")
        lines.append(f"{'  ' * depth}  * {event['name']} {code}".rstrip())
    for child in spans:
        if child["parent_id"] == span["span_id"]:
            lines += tree(spans, child, depth + 1)
    return lines


def draw(spans: list[dict[str, Any]], title: str, path: Path) -> bool:
    """A Jaeger-like timeline of ``spans``; False when Pillow is not there."""
    try:
        from PIL import Image, ImageDraw  # not a dependency: only for this picture
    except ImportError:
        return False
    rows: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in spans:
            if span["parent_id"] == parent:
                rows.append((depth, span))
                walk(span["span_id"], depth + 1)

    walk(spans[0]["parent_id"], 0)
    t0 = min(s["start_ns"] for s in spans)
    t1 = max(s["end_ns"] for s in spans)
    width, label_w, row_h, top = 1100, 300, 28, 50
    image = Image.new("RGB", (width, top + row_h * len(rows) + 30), "white")
    pen = ImageDraw.Draw(image)
    pen.text((10, 12), title, fill="black")
    scale = (width - label_w - 170) / max(1, t1 - t0)  # room for event labels
    for ms in range(0, int((t1 - t0) / 1e6) + 1, max(1, int((t1 - t0) / 1e6 / 8))):
        x = label_w + ms * 1e6 * scale
        pen.line((x, top - 8, x, top + row_h * len(rows)), fill=(225, 225, 225))
        pen.text((x + 2, top - 20), f"{ms} ms", fill=(90, 90, 90))
    colours = [(70, 130, 180), (60, 179, 113), (218, 165, 32), (147, 112, 219), (205, 92, 92)]
    for row, (depth, span) in enumerate(rows):
        y = top + row * row_h
        ms = (span["end_ns"] - span["start_ns"]) / 1e6
        pen.text((10 + 14 * depth, y + 7), f"{span['name']}  {ms:.1f} ms", fill="black")
        x0 = label_w + (span["start_ns"] - t0) * scale
        x1 = max(x0 + 2, label_w + (span["end_ns"] - t0) * scale)
        colour = (200, 40, 40) if span["status"] == "ERROR" else colours[depth % len(colours)]
        pen.rectangle((x0, y + 5, x1, y + row_h - 5), fill=colour)
        for event in span["events"]:
            x = label_w + (event["time_ns"] - t0) * scale
            pen.line((x, y + 2, x, y + row_h - 2), fill="black", width=2)
            code = event["attributes"].get("orchestra.error_code", "")
            pen.text((x + 4, y + row_h - 14), f"{event['name']} {code}", fill="black")
    image.save(path)
    return True


async def traced() -> list[ReadableSpan]:
    """Run the two tasks; their spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fake = FakeLlamaServer(total_slots=1, token_delay_s=0.02)
    async with trio.open_nursery() as nursery:
        engine_url = await nursery.start(fake.serve)
        config = parse_config(
            {
                "bind_addr": "127.0.0.1:0",
                "adapter": {"endpoint": engine_url},
                "data_dir": tempfile.mkdtemp(prefix="orchestra-trace-view-"),
                "log": {"level": "warning"},
                "tracing": {"enabled": True},
            }
        )
        stop = trio.Event()
        running = await nursery.start(
            partial(run_service, config, stop=stop, tracer_provider=provider)
        )
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=30) as client:
            done = await client.post("/v1/tasks", json={"prompt": "Once upon", "max_tokens": 8})
            await client.get(done.json()["stream_url"])
            long = await client.post("/v1/tasks", json={"prompt": "Count", "max_tokens": 200})
            async with client.stream("GET", long.json()["stream_url"]) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: token"):
                        break
                await client.post(f"/v1/tasks/{long.json()['task_id']}/cancel")
        stop.set()
        nursery.cancel_scope.cancel()
    provider.shutdown()
    return list(exporter.get_finished_spans())


def main() -> None:
    by_trace: dict[str, list[ReadableSpan]] = {}
    for span in trio.run(traced):
        assert span.context is not None
        by_trace.setdefault(f"{span.context.trace_id:032x}", []).append(span)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, spans in zip(("completed", "cancelled"), by_trace.values(), strict=True):
        data = as_json(spans)
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        text = "\n".join(tree(data))
        (OUT / f"{name}.txt").write_text(text + "\n")
        title = f"orchestra: a {name} task (trace {data[0]['trace_id']})"
        drawn = draw(data, title, OUT / f"{name}.png")
        print(f"{name}:{' (and a PNG)' if drawn else ''}\n{text}\n")


if __name__ == "__main__":
    main()
