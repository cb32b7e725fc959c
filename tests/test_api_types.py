"""The API types (``specs/api-types/``) kept in sync with the OpenAPI documents and the SDK.

``scripts/api-types`` (:mod:`tests.api_types`) generates one JSON Schema per request,
response and event type of ``specs/openapi/*.yaml``. These tests check that:

1. the files are fresh: regenerated into a temporary directory, every file is identical,
   byte for byte, to the one in ``specs/api-types/`` (none stale, missing or extra);
2. every file is a valid draft 2020-12 schema whose ``$ref`` s all resolve to siblings, and
   the index names every file and only those;
3. the SDK's models agree with them: for each attrs class of the SDK that reads or sends a
   wire type (:data:`WIRE_TYPES`), every required property of the schema is a field (by its
   wire name, :data:`RENAMES`) and every field is a property, a field without a default is
   required (else a server may leave it out and the SDK fails to parse it), and the kinds
   agree (string, integer, number, boolean, array, object, nullable): the SDK accepts
   every kind the server may send, and the server accepts every kind the SDK sends. The
   deliberate differences are listed in :data:`EXCEPTIONS`, each with its reason; every
   attrs class of the SDK is in :data:`WIRE_TYPES` or :data:`NOT_WIRE`;
4. real answers of a live server (the fake engine) validate against the generated schemas
   for a few operations, the schema found through ``index.json``.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import jsonschema_rs
import pytest
import trio

from orchestra.sdk import _artifacts, _async, _chat, _events, _models, _openai
from orchestra.sdk._convert import converter

from . import api_types
from .harness import open_stack, parse_sse

OUT = api_types.OUT
SDK_MODULES = (_models, _events, _artifacts, _chat, _openai, _async)
"""Where the SDK's attrs classes live (the wire classes of the OpenAI face and of
embeddings are private to ``_openai`` and ``_async``)."""
LIVE_TIMEOUT_S = 30.0


# -- the generated files ----------------------------------------------------------------------


@cache
def generated() -> dict[str, bytes]:
    return api_types.generate()


@cache
def schema(document: str, name: str) -> dict[str, Any]:
    """A generated type, as stored in ``specs/api-types/``."""
    loaded: dict[str, Any] = json.loads((OUT / document / f"{name}.json").read_text())
    return loaded


@cache
def index() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((OUT / api_types.INDEX).read_text())
    return loaded


@cache
def registry() -> jsonschema_rs.Registry:
    """Every generated type, by its ``$id``."""
    return jsonschema_rs.Registry(
        [(t["$id"], schema(t["document"], t["name"])) for t in index()["types"]]
    )


def validator(document: str, name: str) -> Any:
    return jsonschema_rs.validator_for(
        schema(document, name), registry=registry(), validate_formats=True
    )


def test_generated_files_are_fresh(tmp_path: Path) -> None:
    """Regenerating gives the same bytes as ``specs/api-types/``; also twice in a row."""
    api_types.write(tmp_path, generated())
    assert api_types.generate() == generated(), "the generator is not deterministic"
    problems = api_types.differences(OUT, {p: (tmp_path / p).read_bytes() for p in generated()})
    assert not problems, (
        f"specs/api-types/ disagrees with specs/openapi/*.yaml; run {api_types.COMMAND}:\n  "
        + "\n  ".join(problems)
    )


def test_a_stale_or_missing_file_is_named(tmp_path: Path) -> None:
    files = generated()
    api_types.write(tmp_path, files)
    (tmp_path / "data" / "TaskView.json").write_text("{}\n")
    (tmp_path / "data" / "Admitted.json").unlink()
    (tmp_path / "data" / "Gone.json").write_text("{}\n")
    assert api_types.differences(tmp_path, files) == [
        "data/Admitted.json: missing",
        "data/Gone.json: extra (no longer generated)",
        "data/TaskView.json: stale",
    ]
    api_types.write(tmp_path, files)
    assert api_types.differences(tmp_path, files) == []


@pytest.mark.parametrize("path", sorted(p for p in generated() if p != api_types.INDEX))
def test_each_type_is_a_valid_schema(path: str) -> None:
    document, _, file = path.partition("/")
    loaded = json.loads(generated()[path])
    jsonschema_rs.meta.validate(loaded)  # against the 2020-12 meta-schema
    assert loaded["$schema"] == api_types.DIALECT
    assert loaded["$id"] == api_types.type_id(document, file.removesuffix(".json"))
    assert loaded["title"] and loaded["description"]
    assert not api_types.refs_in(loaded), "a $ref left pointing into the OpenAPI document"
    validator(document, file.removesuffix(".json"))  # every $ref resolves, in the registry


def test_the_index_lists_every_type_once() -> None:
    listed = [t["file"] for t in index()["types"]]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p for p in generated() if p != api_types.INDEX)
    for entry in index()["types"]:
        roles = {use["role"] for use in entry["uses"]}
        # a type no operation uses directly is there because another refers to it
        assert roles or entry["referenced_by"], entry["file"]
        assert set(entry["roles"]) == roles


# -- the SDK's models against the schemas ------------------------------------------------------


@attrs.frozen
class Wire:
    """The schema an SDK class reads (``response``) or sends (``request``): a generated
    type, or a part of one (a JSON pointer into it, for an inline object)."""

    document: str
    name: str
    pointer: str = ""
    direction: str = "response"

    @property
    def label(self) -> str:
        return f"{self.document}/{self.name}.json" + (f"#{self.pointer}" if self.pointer else "")


def reads(document: str, name: str, pointer: str = "") -> Wire:
    """The wire type an SDK class is read from (an answer, an event)."""
    return Wire(document, name, pointer)


def sends(document: str, name: str, pointer: str = "") -> Wire:
    """The wire type an SDK class is sent as (a request body, or a part of one)."""
    return Wire(document, name, pointer, direction="request")


WIRE_TYPES: Mapping[type, tuple[Wire, ...]] = {
    # data
    _models.TaskRequest: (sends("data", "TaskRequest"),),
    _models.TaskHandle: (reads("data", "Admitted"),),
    _models.TaskStatus: (reads("data", "TaskView"),),
    _models.CancelResult: (reads("data", "CancelResult"),),
    _models.SessionStatus: (reads("data", "SessionView"),),
    _models.DeletedSession: (reads("data", "DeletedSession"),),
    _models.TaskSummary: (reads("data", "TaskSummary"),),
    _async._TaskList: (reads("data", "TaskList"),),
    _models.BudgetLeft: (reads("data", "BudgetLeft"),),
    _events.Started: (reads("data", "StartedEvent"),),
    _events.Token: (reads("data", "TokenEvent"),),
    _events.End: (reads("data", "EndEvent"),),
    _events.Error: (reads("data", "ErrorEvent"),),
    # control
    _models.Capabilities: (reads("control", "Capabilities"),),
    _models.EngineInfo: (reads("control", "Capabilities", "/properties/engines/items"),),
    _models.ServedModel: (reads("control", "Capabilities", "/properties/models/items"),),
    _models.PoolInfo: (reads("control", "Capabilities", "/properties/pools/items"),),
    _models.Limits: (reads("control", "Capabilities", "/properties/limits"),),
    _models.SessionLimits: (reads("control", "SessionLimits"),),
    _models.Health: (reads("control", "PoolHealth"),),
    _models.CatalogModel: (reads("control", "CatalogModel"), reads("control", "ListedModel")),
    _models.UnloadedModel: (reads("control", "ListedModel"),),
    _async._ModelList: (reads("control", "ModelList"),),
    _async._ReplicaSets: (reads("control", "ReplicaSets"),),
    _models.ReplicaSet: (reads("control", "ReplicaSets", "/properties/replicasets/items"),),
    _models.Replica: (reads("control", "Replica"),),
    _models.ReplicaModel: (reads("control", "ModelRef"),),
    _models.SloWindow: (reads("control", "SloWindow"),),
    _models.PredictionAccuracy: (reads("control", "PredictionError"),),
    _models.DrainResult: (reads("control", "DrainResult"),),
    _models.ResumeResult: (reads("control", "ResumeResult"),),
    # artifacts
    _artifacts.Artifact: (reads("artifacts", "Artifact"),),
    _artifacts.ArtifactPage: (reads("artifacts", "ArtifactPage"),),
    _artifacts.Lineage: (reads("artifacts", "Lineage"),),
    _artifacts.LineageNode: (reads("artifacts", "LineageNode"),),
    _artifacts._Deleted: (reads("artifacts", "Deleted"),),
    # openai
    _chat.ChatRequest: (sends("openai", "ChatCompletionRequest"),),
    _chat.ChatMessage: (sends("openai", "Message"),),
    _chat.ToolCall: (sends("openai", "RequestToolCall"),),
    _chat.FunctionCall: (sends("openai", "RequestToolCall", "/properties/function"),),
    _openai._Chunk: (reads("openai", "ChatCompletionChunk"), reads("openai", "UsageChunk")),
    _openai._Choice: (reads("openai", "ChatCompletionChunk", "/properties/choices/items"),),
    _openai._Delta: (reads("openai", "ChatDelta"),),
    _openai._ToolCallPiece: (reads("openai", "ToolCallDelta"),),
    _openai._FunctionPiece: (reads("openai", "ToolCallDelta", "/properties/function"),),
    _openai._Usage: (reads("openai", "Usage"),),
    _openai._PromptDetails: (reads("openai", "Usage", "/properties/prompt_tokens_details"),),
    _openai._ErrorChunk: (reads("openai", "OpenAIStreamError"),),
    _openai._StreamError: (reads("openai", "OpenAIStreamError", "/properties/error"),),
    _async._EmbeddingList: (reads("openai", "EmbeddingList"),),
    _async._Embedding: (reads("openai", "EmbeddingList", "/properties/data/items"),),
    _async._EmbeddingUsage: (reads("openai", "EmbeddingList", "/properties/usage"),),
}
"""Each SDK class that is read from (or sent as) a wire type, and that type."""

NOT_WIRE: Mapping[type, str] = {
    _events.Metrics: "holds the whole data of a metrics event as one mapping (`values`), "
    "read with a mapping hook, not field by field: its kind is checked in "
    "test_metrics_values_are_numbers",
    _models.Embeddings: "assembled by embed() from _EmbeddingList (checked)",
    _models.Completion: "assembled by complete() from the stream's events (checked)",
    _chat.ChatCompletion: "assembled by chat() from the chunks (_Chunk, checked) and headers",
    _chat.ChatDelta: "assembled by ChatStream from a chunk (_Chunk, _Delta: checked)",
    _chat.ToolCallDelta: "assembled by ChatStream from _ToolCallPiece (checked)",
    _chat.Usage: "assembled from _Usage (checked), prompt_tokens_details flattened",
    _openai.ChatStream: "the reader of a chat's stream (it reads _Chunk and _ErrorChunk)",
    _openai._Call: "ChatStream's accumulator of a tool call's pieces, never on the wire",
}
"""The SDK's attrs classes that are no wire type, and why."""

RENAMES: Mapping[type, Mapping[str, str]] = {
    _events.Token: {"text": "t", "index": "i"},
}
"""Field name -> wire name, where the converter renames (``_convert.py``)."""

EXCEPTIONS: Mapping[tuple[type, str, str], str] = {
    # (class, schema label, field or property): why they may differ
    (_models.Limits, "control/Capabilities.json#/properties/limits", "rate_limits"): (
        "always null (the document: there are none); nothing to read"
    ),
    **{
        (cls, f"data/{name}.json", "id"): "the event's id is the SSE frame's `id:`, not its data"
        for cls, name in (
            (_events.Started, "StartedEvent"),
            (_events.Token, "TokenEvent"),
            (_events.End, "EndEvent"),
            (_events.Error, "ErrorEvent"),
        )
    },
    **{
        (_openai._Chunk, f"openai/{name}.json", prop): "OpenAI's envelope; the SDK reads "
        "the id, model, choices, usage and artifact fields only"
        for name in ("ChatCompletionChunk", "UsageChunk")
        for prop in ("object", "created", "system_fingerprint")
    },
    (_openai._Chunk, "openai/UsageChunk.json", "artifact_id"): "one class reads both "
    "chunks; a usage chunk has no artifact fields (the SDK's default None)",
    (_openai._Chunk, "openai/UsageChunk.json", "artifact_error"): "as artifact_id",
    (_openai._Chunk, "openai/ChatCompletionChunk.json", "usage"): "one class reads both "
    "chunks; only the usage chunk has usage (the SDK's default None)",
    (
        _openai._Choice,
        "openai/ChatCompletionChunk.json#/properties/choices/items",
        "logprobs",
    ): "always null (no logprobs); the SDK does not read it",
    (_openai._StreamError, "openai/OpenAIStreamError.json#/properties/error", "type"): "always "
    "`server_error`; the SDK reads the code",
    (_openai._StreamError, "openai/OpenAIStreamError.json#/properties/error", "param"): "always "
    "null on a stream's error",
    (_async._ModelList, "control/ModelList.json", "object"): "always `list`",
    (_async._EmbeddingList, "openai/EmbeddingList.json", "object"): "always `list`",
    (_async._Embedding, "openai/EmbeddingList.json#/properties/data/items", "object"): "always "
    "`embedding`",
    (_async._Embedding, "openai/EmbeddingList.json#/properties/data/items", "embedding"): (
        "a base64 string answers `encoding_format: base64` only; embed() always sends `float`"
    ),
    (_async._EmbeddingUsage, "openai/EmbeddingList.json#/properties/usage", "total_tokens"): (
        "equal to prompt_tokens for embeddings; the SDK reads that"
    ),
    (_chat.ChatRequest, "openai/ChatCompletionRequest.json", "extra_body"): "not a field "
    "of the body: its entries are merged into it as they are (chat_body)",
}
"""The differences between a class and its schema that are meant, each with its reason."""

_CATALOG_FIELDS = (
    "path",
    "sha256",
    "digest",
    "trust_state",
    "state",
    "size_bytes",
    "registered_at",
    "verified_at",
)
GAPS: Mapping[tuple[type, str, str], str] = {
    # Disagreements found and not fixed yet (empty now: the SDK read every field the server
    # sends once this test was written). test_every_exception_is_still_needed insists an
    # entry goes when its gap is fixed.
}
"""Disagreements this test found that are not meant: each to be fixed, then removed."""

ACCEPTS: Mapping[str, frozenset[str]] = {
    "string": frozenset({"string"}),
    "integer": frozenset({"integer"}),
    "number": frozenset({"number", "integer"}),  # the SDK's float hook takes an int
    "boolean": frozenset({"boolean"}),
    "array": frozenset({"array"}),
    "object": frozenset({"object"}),
    "null": frozenset({"null"}),
}
"""For each kind of SDK field, the JSON kinds it reads."""
SENDS_INTO: Mapping[str, frozenset[str]] = {
    "string": frozenset({"string"}),
    "integer": frozenset({"integer", "number"}),
    "number": frozenset({"number"}),
    "boolean": frozenset({"boolean"}),
    "array": frozenset({"array"}),
    "object": frozenset({"object"}),
}
"""For each kind of SDK field, the schema kinds that accept what it sends."""
ANY: frozenset[str] = frozenset(ACCEPTS)
"""A schema (or an annotation, ``Any``) that constrains no kind."""


def follow(document: str, node: Any) -> tuple[str, Any]:
    """``node`` with its ``$ref`` (a sibling file, maybe with a pointer) followed."""
    while isinstance(node, Mapping) and "$ref" in node:
        file, _, pointer = node["$ref"].partition("#")
        target: Any = schema(document, file.removesuffix(".json"))
        for part in pointer.strip("/").split("/") if pointer else ():
            target = target[part]
        node = target
    return document, node


def wire_schema(wire: Wire) -> Any:
    _, node = follow(wire.document, {"$ref": f"{wire.name}.json#{wire.pointer}"})
    return node


def kinds(document: str, node: Any) -> frozenset[str]:
    """The JSON kinds a schema allows (``null`` for nullable); :data:`ANY` for any."""
    document, node = follow(document, node)
    if not isinstance(node, Mapping):
        return ANY
    if "const" in node:
        return frozenset({json_kind(node["const"])})
    if "enum" in node:
        return frozenset(json_kind(value) for value in node["enum"])
    if "type" in node:
        given = node["type"]
        found = {given} if isinstance(given, str) else set(given)
        return frozenset(found | ({"integer"} if "number" in found else set()))
    for key in ("oneOf", "anyOf"):
        if key in node:
            return frozenset().union(*(kinds(document, part) for part in node[key]))
    if "allOf" in node:
        return frozenset.intersection(ANY, *(kinds(document, part) for part in node["allOf"]))
    return ANY


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


Alternatives = list[tuple[str, Any]]
"""The schemas a property may have (one per ``oneOf`` variant defining it), each with the
document to read it in."""


def properties(document: str, node: Any) -> tuple[dict[str, Alternatives], set[str]]:
    """An object schema's properties and its required ones, through ``$ref``, ``allOf``
    (all of them; the first definition of a property) and ``oneOf``/``anyOf`` (any
    variant's properties, with each variant's schema for it; required only where every
    variant requires it)."""
    document, node = follow(document, node)
    found = {name: [(document, sub)] for name, sub in node.get("properties", {}).items()}
    required = set(node.get("required", ()))
    for part in node.get("allOf", ()):
        more, more_required = properties(document, part)
        found |= {name: subs for name, subs in more.items() if name not in found}
        required |= more_required
    variants = [
        properties(document, part) for key in ("oneOf", "anyOf") for part in node.get(key, ())
    ]
    if variants:
        for more, _ in variants:
            for name, subs in more.items():
                found.setdefault(name, []).extend(subs)
        required |= set.intersection(*(more_required for _, more_required in variants))
    return found, required


def property_kinds(alternatives: Alternatives) -> frozenset[str]:
    return frozenset().union(*(kinds(document, node) for document, node in alternatives))


def sdk_kinds(annotation: Any) -> frozenset[str]:
    """The JSON kinds an SDK field's annotation holds (``null`` for None)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return ANY
    if origin in (typing.Union, types.UnionType):
        return frozenset().union(*(sdk_kinds(arg) for arg in typing.get_args(annotation)))
    if annotation is type(None):
        return frozenset({"null"})
    if origin in (tuple, list) or origin is Sequence:
        return frozenset({"array"})
    if origin in (dict, Mapping) or annotation is dict:
        return frozenset({"object"})
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return frozenset({"boolean"})
        if issubclass(annotation, str | enum.Enum):
            return frozenset({"string"})
        if issubclass(annotation, int):
            return frozenset({"integer"})
        if issubclass(annotation, float):
            return frozenset({"number"})
        if attrs.has(annotation):
            return frozenset({"object"})
    raise AssertionError(f"no JSON kind for {annotation!r}")


def wire_fields(cls: type) -> dict[str, attrs.Attribute[Any]]:
    """The class's fields by wire name."""
    renames = RENAMES.get(cls, {})
    return {renames.get(field.name, field.name): field for field in attrs.fields(cls)}


def disagreements(cls: type, wire: Wire) -> list[str]:
    """Every way ``cls`` and its wire type disagree, but those in :data:`EXCEPTIONS` and
    :data:`GAPS`."""
    return [
        f"{wire.label}: {message}"
        for name, message in raw_disagreements(cls, wire)
        if (cls, wire.label, name) not in EXCEPTIONS and (cls, wire.label, name) not in GAPS
    ]


def raw_disagreements(cls: type, wire: Wire) -> list[tuple[str, str]]:
    """Every way ``cls`` and its wire type disagree: ``(wire name, what)``."""
    hints = typing.get_type_hints(cls)
    props, required = properties(wire.document, wire_schema(wire))
    fields = wire_fields(cls)
    problems: list[tuple[str, str]] = []
    for name in sorted(required - set(fields)):
        problems.append((name, f"required property {name!r} is no field of the class"))
    for name, field in sorted(fields.items()):
        if name not in props:
            shown = f"{field.name!r}" + (f" (wire {name!r})" if name != field.name else "")
            problems.append((name, f"field {shown} is no property of the schema"))
            continue
        has_default = field.default is not attrs.NOTHING
        if wire.direction == "response" and not has_default and name not in required:
            problems.append(
                (name, f"field {name!r} has no default but the schema does not require it")
            )
        theirs = property_kinds(props[name])
        ours = sdk_kinds(hints[field.name])
        if ANY in (theirs, ours):
            continue
        if wire.direction == "response":
            unread = theirs - frozenset().union(*(ACCEPTS[kind] for kind in ours))
            if unread:
                problems.append(
                    (
                        name,
                        f"{name!r}: the server may send {sorted(unread)}, the SDK reads {sorted(ours)}",
                    )
                )
        else:
            unsent = {kind for kind in ours - {"null"} if not SENDS_INTO[kind] & theirs}
            if unsent:
                problems.append(
                    (
                        name,
                        f"{name!r}: the SDK sends {sorted(unsent)}, the schema takes {sorted(theirs)}",
                    )
                )
    return problems


SDK_CLASSES = sorted(
    {
        value
        for module in SDK_MODULES
        for value in vars(module).values()
        if isinstance(value, type) and attrs.has(value) and value.__module__ == module.__name__
    },
    key=lambda cls: (cls.__module__, cls.__qualname__),
)


def test_every_sdk_class_is_classified() -> None:
    """A new attrs class in the SDK is mapped to its wire type, or said not to be one."""
    unclassified = [
        cls.__qualname__ for cls in SDK_CLASSES if cls not in WIRE_TYPES and cls not in NOT_WIRE
    ]
    assert not unclassified, f"add to WIRE_TYPES or NOT_WIRE: {unclassified}"
    assert not set(WIRE_TYPES) & set(NOT_WIRE)


@pytest.mark.parametrize(
    ("cls", "wire"),
    [(cls, wire) for cls, wires in WIRE_TYPES.items() for wire in wires],
    ids=lambda value: value.__qualname__ if isinstance(value, type) else value.label,
)
def test_sdk_class_agrees_with_its_schema(cls: type, wire: Wire) -> None:
    problems = disagreements(cls, wire)
    assert not problems, (
        f"{cls.__module__}.{cls.__qualname__} against its schema:\n  " + "\n  ".join(problems)
    )


def test_every_exception_is_still_needed() -> None:
    """An exception whose difference is gone is taken out, so the list stays the truth."""
    stale = []
    for (cls, label, name), reason in {**EXCEPTIONS, **GAPS}.items():
        assert reason, f"{cls.__qualname__} {label} {name}: an exception needs its reason"
        wire = next((w for w in WIRE_TYPES[cls] if w.label == label), None)
        assert wire is not None, f"{cls.__qualname__}: no wire type {label}"
        if not [p for p in raw_disagreements(cls, wire) if p[0] == name]:
            stale.append(f"{cls.__qualname__} {label} {name}")
    assert not stale, f"exceptions no longer needed: {stale}"


def sample(annotation: Any) -> Any:
    """A JSON value of the SDK type, keyed by wire names (for :func:`test_converter_reads_the_wire_names`)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return sample(next(arg for arg in typing.get_args(annotation) if arg is not type(None)))
    if origin in (tuple, list) or origin in (dict, Mapping) or annotation is Any:
        return [] if origin in (tuple, list) else {}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return next(iter(annotation)).value
    if isinstance(annotation, type) and attrs.has(annotation):
        hints = typing.get_type_hints(annotation)
        return {
            name: sample(hints[field.name])
            for name, field in wire_fields(annotation).items()
            if field.default is attrs.NOTHING
        }
    return {bool: False, str: "x", int: 0, float: 0.5}[annotation]


@pytest.mark.parametrize(
    "cls",
    [cls for cls, wires in WIRE_TYPES.items() if wires[0].direction == "response"],
    ids=lambda cls: cls.__qualname__,
)
def test_converter_reads_the_wire_names(cls: type) -> None:
    """The SDK's converter reads each class from its wire names (:data:`RENAMES` is right)."""
    payload = sample(cls)
    if cls in (_events.Started, _events.Token, _events.End, _events.Error):
        payload["id"] = 0  # event_from_wire adds the frame's id
    converter.structure(payload, cls)


def test_metrics_values_are_numbers() -> None:
    """``Metrics.values`` (``Mapping[str, float | None]``) holds what a metrics event sends."""
    props, _ = properties("data", schema("data", "MetricsEvent"))
    assert props
    for name, alternatives in props.items():
        assert property_kinds(alternatives) <= {"number", "integer", "null"}, name


# -- real answers --------------------------------------------------------------------------


def answer_type(document: str, method: str, path: str, status: int, media_type: str) -> str:
    """The type the index says an operation answers with (the base type of a refined
    error: the refinement only narrows it)."""
    found: list[str] = [
        entry["name"]
        for entry in index()["types"]
        if entry["document"] == document
        for use in entry["uses"]
        if use["operation"] == f"{method} {path}"
        and use["role"] == "response"
        and use["status"] == str(status)
        and use["media_type"] == media_type
    ]
    assert len(found) == 1, (document, method, path, status, media_type, found)
    return found[0]


def event_types(document: str, method: str, path: str) -> dict[str, str]:
    """Event name -> type of an operation's stream, from the index."""
    return {
        use["event"]: entry["name"]
        for entry in index()["types"]
        if entry["document"] == document
        for use in entry["uses"]
        if use["operation"] == f"{method} {path}" and use["role"] == "event"
    }


def errors_of(document: str, name: str, instance: Any) -> list[str]:
    return [
        f"{name}{e.instance_path}: {e.message}"
        for e in validator(document, name).iter_errors(instance)
    ]


async def test_live_answers_validate_against_the_generated_schemas() -> None:
    problems: list[str] = []
    with trio.fail_after(LIVE_TIMEOUT_S):
        async with open_stack() as stack:
            client = stack.client

            async def check(document: str, method: str, template: str, url: str, **kw: Any) -> Any:
                response = await client.request(method, url, **kw)
                media_type = response.headers["content-type"].partition(";")[0]
                name = answer_type(document, method, template, response.status_code, media_type)
                problems.extend(errors_of(document, name, response.json()))
                return response.json()

            body = {"prompt": "Once upon a time", "max_tokens": 4, "seed": 1}
            admitted = await check("data", "POST", "/v1/tasks", "/v1/tasks", json=body)
            task = admitted["task_id"]
            stream = await client.get(f"/v1/tasks/{task}/stream")
            by_event = event_types("data", "GET", "/v1/tasks/{task_id}/stream")
            events = parse_sse(stream.content)
            assert [e.event for e in events][:: len(events) - 1] == ["started", "end"]
            for event in events:
                problems.extend(errors_of("data", by_event[event.event], event.data))
            await check("data", "GET", "/v1/tasks/{task_id}", f"/v1/tasks/{task}")
            await check("data", "POST", "/v1/tasks/{task_id}/cancel", f"/v1/tasks/{task}/cancel")
            await check("control", "GET", "/v1/capabilities", "/v1/capabilities")
            health = "/v1/pools/{pool_id}/health"
            await check("control", "GET", health, "/v1/pools/default/health")
            await check("control", "GET", "/v1/models", "/v1/models")
            chat = {
                "model": "default",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
            }
            await check("openai", "POST", "/v1/chat/completions", "/v1/chat/completions", json=chat)
            missing = await check("data", "GET", "/v1/tasks/{task_id}", "/v1/tasks/nope")
            assert missing["code"] == "NOT_FOUND"
    assert not problems, "\n".join(problems)
