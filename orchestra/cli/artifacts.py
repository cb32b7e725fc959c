"""``orchestra artifact put|get|ls|lineage|tag|rm``: the artifact registry
(``/v1/artifacts``) from the command line, through the SDK's blocking
:class:`~orchestra.sdk.Client`.

``put`` always sends the file's bytes exactly as they are (never re-encoded), so the id it
prints is the SHA-256 of the file. The media type is ``--media-type`` when given, else the
one Python's :mod:`mimetypes` table (and :data:`EXTRA_TYPES`) knows for the file's
extension, with ``; charset=utf-8`` added to a ``text/`` type when the content is UTF-8;
else ``text/plain; charset=utf-8`` for content that decodes as UTF-8 (stdin included), and
``application/octet-stream`` for anything else. Python's own table is used, not the
system's ``/etc/mime.types``, so the same file gets the same media type on every machine.

Each action prints a short answer (``put``: the id, for ``id=$(orchestra artifact put
f)``; ``get``: the raw content), or with ``--json`` the JSON of the SDK's object (the wire's
shape). Errors are reported and exit as the other client commands'
(:data:`orchestra.cli.exits.EXIT_HELP`); a file that cannot be read or written is a usage
error (2).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from orchestra.cli.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, report
from orchestra.cli.render import ago, as_json, out, table
from orchestra.errors import ErrorCode, OrchestraError
from orchestra.sdk import ArtifactPage, Client, Lineage, LineageNode, ServerError

TEXT_TYPE: Final = "text/plain; charset=utf-8"
BYTES_TYPE: Final = "application/octet-stream"
EXTRA_TYPES: Final[Mapping[str, str]] = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".diff": "text/x-diff",
    ".patch": "text/x-diff",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".jsonl": "application/jsonl",
}
"""Extensions agents' artifacts often have that Python's table lacks (before 3.13)."""

DESCRIPTION: Final = (
    "Keep and read artifacts: what agents produce (plans, summaries, diffs, traces), kept "
    "by the server under the SHA-256 of their content, with a kind, tags and parents (the "
    "artifacts each was made from). ACTION is put, get, ls, lineage, tag or rm; "
    "'orchestra artifact ACTION --help' tells more."
)


class UsageError(OrchestraError):
    """A file that cannot be read or written, or arguments that do not go together."""


# -- the parser ----------------------------------------------------------------------------


def add_arguments(
    artifact: argparse.ArgumentParser, common: argparse.ArgumentParser, epilog: str
) -> None:
    """The actions of ``orchestra artifact``, each with the client commands' ``common``
    options (``--url``, ``--json``)."""
    actions = artifact.add_subparsers(dest="artifact_command", required=True, metavar="ACTION")

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return actions.add_parser(
            name,
            parents=[common],
            help=help,
            description=textwrap.fill(description, width=78),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    put = add(
        "put",
        "keep a file (or stdin) as an artifact; print its id",
        "Keep FILE (- or none: stdin) as an artifact and print its id (sha256:<hex> of "
        "the bytes) on stdout; its size, kind and media type go to stderr. The bytes are "
        "sent exactly as they are. The media type is --media-type, else the one known for "
        "the file's extension (text/ types get '; charset=utf-8' when the content is "
        "UTF-8), else text/plain; charset=utf-8 when the content is UTF-8, else "
        "application/octet-stream. The same content again is the same artifact: its tags "
        "and parents are merged. With --json: the artifact's metadata.",
    )
    put.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="default: stdin")
    put.add_argument(
        "--kind",
        default="text",
        metavar="KIND",
        help="plan, summary, diff, trace, text (the default) or an x- name",
    )
    put.add_argument(
        "--tag", action="append", default=[], dest="tags", metavar="TAG", help="(repeatable)"
    )
    put.add_argument(
        "--parent",
        action="append",
        default=[],
        dest="parents",
        metavar="ID",
        help="an artifact it was made from (repeatable)",
    )
    put.add_argument("--media-type", metavar="TYPE", help="e.g. text/markdown, image/png")
    put.add_argument("--session", metavar="ID", help="the session it belongs to")
    put.add_argument("--task", metavar="ID", help="the task it came from")
    put.add_argument("--meta", type=_json_object, metavar="JSON", help="a JSON object to keep")

    get = add(
        "get",
        "print an artifact's content (or its metadata)",
        "Write an artifact's raw content to stdout, or to FILE with -o; with --meta (or "
        "--json), print its metadata as JSON instead.",
    )
    get.add_argument("id", metavar="ID", help="the artifact id (sha256:...)")
    get.add_argument("-o", "--output", metavar="FILE", help="write the content to FILE")
    get.add_argument("--meta", action="store_true", help="print the metadata JSON")

    ls = add(
        "ls",
        "list artifacts, newest first",
        "List the artifacts that match every filter given, newest first: id, kind, size, "
        "when it was kept, tags. One page at a time (--limit, server default 50): when "
        "there are more, stderr says which --cursor shows the next page. With --json: the "
        'wire\'s page, {"artifacts": [...], "next_cursor": ...}.',
    )
    ls.add_argument("--kind", metavar="KIND", help="of this kind")
    ls.add_argument("--tag", metavar="TAG", help="with this tag")
    ls.add_argument("--session", metavar="ID", help="of this session")
    ls.add_argument("--task", metavar="ID", help="from this task")
    ls.add_argument("--parent", metavar="ID", help="made from this artifact")
    ls.add_argument("--limit", type=int, metavar="N", help="at most N (1 to 200)")
    ls.add_argument("--cursor", metavar="CURSOR", help="the page after the one that named it")

    lineage = add(
        "lineage",
        "show what an artifact was made from and what was made from it",
        "Show an artifact's lineage as two indented trees: what it was made from (its "
        "parents, theirs, ...) and what was made from it. An artifact reached twice is "
        "shown once, then '(see above)'.",
    )
    lineage.add_argument("id", metavar="ID", help="the artifact id")

    tag = add(
        "tag",
        "add or remove an artifact's tags",
        "Add and remove tags (removing one it lacks is no error); print its tags then.",
    )
    tag.add_argument("id", metavar="ID", help="the artifact id")
    tag.add_argument("--add", action="append", default=[], metavar="TAG", help="(repeatable)")
    tag.add_argument("--remove", action="append", default=[], metavar="TAG", help="(repeatable)")

    rm = add(
        "rm",
        "delete an artifact",
        "Delete an artifact and print the ids deleted. One that other artifacts name as a "
        "parent is refused (exit 3) unless --cascade, which deletes them too.",
    )
    rm.add_argument("id", metavar="ID", help="the artifact id")
    rm.add_argument("--cascade", action="store_true", help="also delete what was made from it")


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


# -- running an action ---------------------------------------------------------------------


def run_artifact(args: argparse.Namespace) -> int:
    """Run ``orchestra artifact ACTION``; its exit status."""
    action = _ACTIONS[args.artifact_command]
    try:
        with Client(args.url) as client:
            return action(client, args)
    except UsageError as exc:
        print(f"orchestra artifact {args.artifact_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OrchestraError as exc:
        status = report(exc, args.url)
        for line in _hint(exc):
            print(line if line.startswith("  ") else f"orchestra: {line}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        print("orchestra: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _hint(exc: OrchestraError) -> list[str]:
    """More lines for a refused ``rm``: the children that name it, and what to do."""
    if not (isinstance(exc, ServerError) and exc.code is ErrorCode.CONFLICT and exc.details):
        return []
    children = exc.details.get("children")
    if not isinstance(children, list):
        return []
    named = [f"  named as a parent by {child}" for child in children]
    return [*named, "use --cascade to delete them too"]


def _put(client: Client, args: argparse.Namespace) -> int:
    content = _read(args.file)
    name = None if args.file == "-" else args.file
    artifact = client.put_artifact(
        content,
        kind=args.kind,
        media_type=args.media_type or media_type_of(name, content),
        tags=args.tags,
        parents=args.parents,
        session_id=args.session,
        task_id=args.task,
        meta=args.meta,
    )
    if args.json:
        out(as_json(artifact) + "\n")
    else:
        out(artifact.id + "\n")
        print(
            f"{size(artifact.size_bytes)}, {artifact.kind}, {artifact.media_type}",
            file=sys.stderr,
        )
    return EXIT_OK


def _get(client: Client, args: argparse.Namespace) -> int:
    if args.meta or args.json:
        if args.output is not None:
            raise UsageError("-o writes the content; --meta and --json print the metadata")
        out(as_json(client.get_artifact(args.id)) + "\n")
        return EXIT_OK
    content = client.read_artifact(args.id)
    if args.output is None:
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        with open(args.output, "wb") as file:
            file.write(content)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    return EXIT_OK


def _ls(client: Client, args: argparse.Namespace) -> int:
    page = client.list_artifacts(
        kind=args.kind,
        tag=args.tag,
        session_id=args.session,
        task_id=args.task,
        parent=args.parent,
        limit=args.limit,
        cursor=args.cursor,
    )
    out(as_json(page) + "\n" if args.json else artifact_table(page))
    if page.next_cursor is not None and not args.json:
        print(f"more: the next page is --cursor {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def _lineage(client: Client, args: argparse.Namespace) -> int:
    lineage = client.lineage(args.id)
    if args.json:
        out(as_json(lineage) + "\n")
        return EXIT_OK
    out(lineage_tree(lineage, client.get_artifact(args.id).kind))
    return EXIT_OK


def _tag(client: Client, args: argparse.Namespace) -> int:
    if not args.add and not args.remove:
        raise UsageError("give --add TAG or --remove TAG (or both)")
    artifact = client.tag_artifact(args.id, add=args.add, remove=args.remove)
    out(as_json(artifact) + "\n" if args.json else f"tags: {', '.join(artifact.tags) or '-'}\n")
    return EXIT_OK


def _rm(client: Client, args: argparse.Namespace) -> int:
    deleted = client.delete_artifact(args.id, cascade=args.cascade)
    if args.json:
        out(json.dumps({"deleted": list(deleted)}) + "\n")
    else:
        out("".join(f"{deleted_id}\n" for deleted_id in deleted))
    return EXIT_OK


_ACTIONS: Final[Mapping[str, Callable[[Client, argparse.Namespace], int]]] = {
    "put": _put,
    "get": _get,
    "ls": _ls,
    "lineage": _lineage,
    "tag": _tag,
    "rm": _rm,
}


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


# -- what is printed -----------------------------------------------------------------------

_TYPES = mimetypes.MimeTypes()  # Python's own table: the same on every machine
for _extension, _type in EXTRA_TYPES.items():
    _TYPES.add_type(_type, _extension)


def media_type_of(name: str | None, content: bytes) -> str:
    """The media type ``put`` sends for ``content`` read from the file ``name`` (None:
    stdin) when no --media-type is given (see the module docstring)."""
    guessed, encoding = _TYPES.guess_type(name) if name is not None else (None, None)
    utf8 = _is_utf8(content)
    if encoding is not None:  # compressed (.gz, ...): what it is inside is not what it is
        return BYTES_TYPE
    if guessed is None:
        return TEXT_TYPE if utf8 else BYTES_TYPE
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") and utf8 else guessed


def _is_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB``."""
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


def artifact_table(page: ArtifactPage) -> str:
    """``orchestra artifact ls``: one row per artifact."""
    if not page.artifacts:
        return "no artifacts\n"
    header = ("ID", "KIND", "SIZE", "CREATED", "TAGS")
    rows = [
        (a.id, a.kind, size(a.size_bytes), ago(a.created_at), ",".join(a.tags) or "-")
        for a in page.artifacts
    ]
    return table(header, rows)


def lineage_tree(lineage: Lineage, kind: str) -> str:
    """``orchestra artifact lineage``: the artifact, then what it was made from and what
    was made from it, each an indented tree (an artifact reached twice: ``(see above)``)."""
    up = {node.id: node for node in lineage.ancestors}
    down = {node.id: node for node in lineage.descendants}
    lines = [f"{lineage.id} ({kind})"]

    def parents_of(node_id: str) -> Sequence[str]:
        if node_id == lineage.id:
            return [n.id for n in lineage.ancestors if n.depth == 1]
        return up[node_id].parents if node_id in up else ()

    def children_of(node_id: str) -> Sequence[str]:
        return [n.id for n in lineage.descendants if node_id in n.parents]

    def walk(
        node_id: str, nodes: Mapping[str, LineageNode], next_of: Callable[[str], Sequence[str]]
    ) -> None:
        seen: set[str] = set()

        def visit(at: str, indent: int) -> None:
            for following in next_of(at):
                node = nodes.get(following)
                what = f"{following} ({node.kind})" if node is not None else following
                again = following in seen
                lines.append("  " * indent + what + (" (see above)" if again else ""))
                if not again:
                    seen.add(following)
                    visit(following, indent + 1)

        visit(node_id, 2)

    lines.append("  made from:" if lineage.ancestors else "  made from: nothing")
    walk(lineage.id, up, parents_of)
    lines.append("  made into:" if lineage.descendants else "  made into: nothing")
    walk(lineage.id, down, children_of)
    if lineage.truncated:
        lines.append("  (truncated: the server stopped at its node limit)")
    return "".join(line + "\n" for line in lines)
