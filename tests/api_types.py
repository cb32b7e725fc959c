"""Generate ``specs/api-types/``: one JSON Schema (draft 2020-12) per named API type of the
OpenAPI documents (``specs/openapi/*.yaml``), and ``index.json`` saying where each is used.

A named type is a ``components/schemas`` entry that is a request body, a response body
(directly, or as the base of an ``allOf`` that refines it) or the data of an SSE event (a
stream media type's ``x-sse-events``, one schema per event name; the OpenAI face's
``x-sse-data``, the data of every frame), and every entry those refer to. Each becomes
``<document>/<Name>.json`` with a ``$id`` under :data:`BASE_URI`, its ``title`` and
``description`` from the document, and its ``$ref`` s rewritten to sibling files
(``#/components/schemas/X/rest`` -> ``X.json#/rest``), so each file stands alone beside its
siblings. Output is deterministic: sorted keys, two-space indent, one newline at the end.

Run it with ``scripts/api-types`` (``--check`` only compares); ``tests/test_api_types.py``
regenerates into a temporary directory and compares byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs" / "openapi"
OUT = ROOT / "specs" / "api-types"
DOCUMENTS = ("data", "control", "openai", "artifacts", "tools")
DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_URI = "https://orchestra.invalid/api-types/"
"""The base of every ``$id`` (``.invalid``: an identifier, never fetched; a validator finds
the siblings by their ``$id`` in a registry)."""
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SCHEMA_REF = "#/components/schemas/"
INDEX = "index.json"
COMMAND = "scripts/api-types"


@attrs.frozen(order=True)
class Use:
    """One place an operation uses a named type."""

    method: str
    path: str
    role: str
    """``request``, ``response`` or ``event``."""
    status: str | None
    """The response's status (a stream's, for an event); None for a request body."""
    media_type: str
    event: str | None = None
    """The event's name (``x-sse-events``); None for a request, a response, or the data of
    every frame of an OpenAI stream (``x-sse-data``)."""
    refined: bool = False
    """The body is an ``allOf`` of this type and an inline refinement (an error answer
    naming its codes, say), not the type alone."""
    operation_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The use as ``index.json`` lists it (keys without a value left out)."""
        listed = {
            "operation": f"{self.method} {self.path}",
            "operation_id": self.operation_id,
            "role": self.role,
            "status": self.status,
            "media_type": self.media_type,
            "event": self.event,
            "refined": self.refined or None,
        }
        return {key: value for key, value in listed.items() if value is not None}


def load(name: str, specs: Path = SPECS) -> dict[str, Any]:
    """The YAML document as plain data."""
    loaded: dict[str, Any] = yaml.safe_load((specs / f"{name}.yaml").read_text())
    return loaded


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    """``node``, or what its local ``$ref`` points at, followed to the end."""
    while isinstance(node, Mapping) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _named(ref: str) -> str | None:
    """The schema a ``$ref`` names (``#/components/schemas/X[/...]`` -> ``X``), else None."""
    if not ref.startswith(SCHEMA_REF):
        return None
    return ref.removeprefix(SCHEMA_REF).split("/")[0]


def _body_types(schema: Any) -> Iterator[tuple[str, bool]]:
    """The named types a body schema is: ``(name, refined)`` for a ``$ref`` alone, or each
    ``$ref`` at the top of an ``allOf``. An inline schema (``GET /health``) names none."""
    if not isinstance(schema, Mapping):
        return
    if "$ref" in schema and (name := _named(schema["$ref"])) is not None:
        yield name, False
    for part in schema.get("allOf", ()):
        if isinstance(part, Mapping) and "$ref" in part and (name := _named(part["$ref"])):
            yield name, True


def uses_of(document: Mapping[str, Any]) -> dict[str, list[Use]]:
    """Every named type used directly by an operation, with its uses, sorted."""
    found: dict[str, list[Use]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            op_id = operation.get("operationId")
            bodies: list[tuple[str, str | None, Any]] = []
            if "requestBody" in operation:
                bodies.append(("request", None, operation["requestBody"]))
            for status, response in operation.get("responses", {}).items():
                bodies.append(("response", str(status), response))
            for role, status, body in bodies:
                for media_type, media in _resolve(document, body).get("content", {}).items():
                    common = {"method": method.upper(), "path": path, "status": status}
                    common |= {"media_type": media_type, "operation_id": op_id}
                    for name, refined in _body_types(media.get("schema")):
                        use = Use(role=role, refined=refined, **common)
                        found.setdefault(name, []).append(use)
                    for event, schema in media.get("x-sse-events", {}).items():
                        for name, refined in _body_types(schema):
                            use = Use(role="event", event=event, refined=refined, **common)
                            found.setdefault(name, []).append(use)
                    for name, refined in _body_types(media.get("x-sse-data")):
                        use = Use(role="event", refined=refined, **common)
                        found.setdefault(name, []).append(use)
    return {name: sorted(set(uses)) for name, uses in found.items()}


def refs_in(node: Any) -> set[str]:
    """The named schemas ``node`` refers to."""
    found: set[str] = set()
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and (name := _named(value)):
                found.add(name)
            else:
                found |= refs_in(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs_in(value)
    return found


def rewrite(node: Any) -> Any:
    """``node`` with every ``#/components/schemas/X/rest`` ``$ref`` made ``X.json#/rest``."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and _named(value):
                name, _, rest = value.removeprefix(SCHEMA_REF).partition("/")
                out[key] = f"{name}.json" + (f"#/{rest}" if rest else "")
            else:
                out[key] = rewrite(value)
        return out
    if isinstance(node, list):
        return [rewrite(value) for value in node]
    return node


def type_id(document: str, name: str) -> str:
    return f"{BASE_URI}{document}/{name}.json"


def _fallback_description(
    document: Mapping[str, Any], name: str, uses: Sequence[Use], source: str
) -> str:
    """For a schema without a description: what the document says of its first use (the
    response's or request body's description), else where it comes from."""
    for use in uses:
        operation = document["paths"][use.path][use.method.lower()]
        body = (
            operation["requestBody"]
            if use.role == "request"
            else operation["responses"][use.status]
        )
        said = _resolve(document, body).get("description")
        if said and use.role != "event":
            where = "request body" if use.role == "request" else f"{use.status} answer"
            return f"The {where} of {use.method} {use.path}: {said.strip()}"
    return f"`{name}`, a schema of {document['info']['title']} ({source})."


def generate(specs: Path = SPECS) -> dict[str, bytes]:
    """Every file of ``specs/api-types/`` (but its README), by path relative to it."""
    files: dict[str, Any] = {}
    types: list[dict[str, Any]] = []
    documents: dict[str, Any] = {}
    for doc_name in DOCUMENTS:
        document = load(doc_name, specs)
        source = f"specs/openapi/{doc_name}.yaml"
        schemas: Mapping[str, Any] = document["components"]["schemas"]
        documents[doc_name] = {
            "source": source,
            "title": document["info"]["title"],
            "version": document["info"]["version"],
        }
        uses = uses_of(document)
        wanted = set(uses)
        pending = sorted(wanted)
        while pending:  # every schema the used ones refer to, transitively
            for ref in refs_in(schemas[pending.pop()]):
                if ref not in wanted:
                    wanted.add(ref)
                    pending.append(ref)
        referenced_by: dict[str, set[str]] = {}
        for name in wanted:
            for ref in refs_in(schemas[name]) - {name}:
                referenced_by.setdefault(ref, set()).add(name)
        for name in sorted(wanted):
            schema = schemas[name]
            body = {key: value for key, value in rewrite(schema).items()}
            title = body.pop("title", name)
            description = body.pop("description", None) or _fallback_description(
                document, name, uses.get(name, []), source
            )
            files[f"{doc_name}/{name}.json"] = {
                "$schema": DIALECT,
                "$id": type_id(doc_name, name),
                "$comment": (
                    f"Generated by {COMMAND} from {source}#/components/schemas/{name}; do not edit."
                ),
                "title": title,
                "description": description.strip(),
                **body,
            }
            types.append(
                {
                    "document": doc_name,
                    "name": name,
                    "file": f"{doc_name}/{name}.json",
                    "$id": type_id(doc_name, name),
                    "roles": sorted({use.role for use in uses.get(name, [])}),
                    "uses": [use.as_json() for use in uses.get(name, [])],
                    "refs": sorted(refs_in(schema) - {name}),
                    "referenced_by": sorted(referenced_by.get(name, ())),
                }
            )
    files[INDEX] = {
        "$comment": f"Generated by {COMMAND} from specs/openapi/*.yaml; do not edit.",
        "base_uri": BASE_URI,
        "dialect": DIALECT,
        "documents": documents,
        "types": types,
    }
    return {path: dump(content) for path, content in files.items()}


def dump(content: Any) -> bytes:
    """The one stable formatting of every generated file."""
    return (json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def owned(out: Path) -> set[str]:
    """The generated files now in ``out`` (``index.json`` and ``<document>/*.json``)."""
    found = {INDEX} if (out / INDEX).exists() else set()
    for doc_name in DOCUMENTS:
        found |= {f"{doc_name}/{p.name}" for p in (out / doc_name).glob("*.json")}
    return found


def differences(out: Path, files: Mapping[str, bytes]) -> list[str]:
    """How ``out`` differs from ``files``: each missing, stale or extra file."""
    problems = []
    for path in sorted(set(files) | owned(out)):
        if path not in files:
            problems.append(f"{path}: extra (no longer generated)")
        elif not (out / path).exists():
            problems.append(f"{path}: missing")
        elif (out / path).read_bytes() != files[path]:
            problems.append(f"{path}: stale")
    return problems


def write(out: Path, files: Mapping[str, bytes]) -> list[str]:
    """Make ``out`` hold exactly ``files`` (other files, the README, are left alone)."""
    changed = differences(out, files)
    for path in owned(out) - set(files):
        (out / path).unlink()
    for path, content in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="default: specs/api-types")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = differences(args.out, files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"stale: run {COMMAND}", file=sys.stderr)
        return 1 if problems else 0
    changed = write(args.out, files)
    for change in changed:
        print(change, file=sys.stderr)
    print(f"{len(files)} files in {args.out} ({len(changed)} changed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
