"""``orchestra artifact put|get|ls|lineage|tag|rm`` against a live server (fake engine):
their output and exit statuses. Most run in-process (``orchestra.cli.main.main`` on a
worker thread, the service in the test's Trio run); one runs ``python -m orchestra`` as a
child process to check the real stdin and stdout bytes."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from orchestra.cli.artifacts import artifact_table, lineage_tree, media_type_of, size
from orchestra.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from orchestra.cli.main import main
from orchestra.sdk import ArtifactPage, AsyncClient, Lineage, LineageNode

from .harness import open_stack

ORCHESTRA = [sys.executable, "-m", "orchestra"]


def sha(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@attrs.frozen
class Result:
    status: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@attrs.define
class Cli:
    """``orchestra artifact ...`` run in-process against ``url``."""

    url: str
    capture: pytest.CaptureFixture[bytes]
    monkeypatch: pytest.MonkeyPatch

    async def __call__(self, *args: str, stdin: bytes = b"") -> Result:
        self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        status = await trio.to_thread.run_sync(main, ["artifact", *args, "--url", self.url])
        captured = self.capture.readouterr()
        return Result(status, captured.out, captured.err.decode())


@asynccontextmanager
async def served(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, **sections: Any
) -> AsyncIterator[tuple[Cli, AsyncClient]]:
    """A live server; the CLI and an SDK client of it."""
    async with open_stack(**sections) as stack, AsyncClient(stack.running.urls[0]) as client:
        yield Cli(stack.running.urls[0], capsysbinary, monkeypatch), client


# -- put and get ---------------------------------------------------------------------------


async def test_put_and_get_text_bytes_and_stdin(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "plan.md"
    plan.write_text("# Plan\n\n1. read — écrire\n")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    async with served(capsysbinary, monkeypatch) as (cli, client):
        put = await cli("put", str(plan), "--kind", "plan", "--tag", "b", "--tag", "a",
                        "--session", "s-1", "--task", "t-1", "--meta", '{"by": "me"}')  # fmt: skip
        assert put.status == EXIT_OK and put.text == sha(plan.read_bytes()) + "\n"
        assert put.err == f"{plan.stat().st_size} B, plan, text/markdown; charset=utf-8\n"
        kept = await client.get_artifact(put.text.strip())
        assert (kept.kind, kept.tags, kept.session_id, kept.task_id) == (
            "plan",
            ("a", "b"),
            "s-1",
            "t-1",
        )
        assert kept.meta == {"by": "me"}

        got = await cli("get", kept.id)
        assert (got.status, got.out, got.err) == (EXIT_OK, plan.read_bytes(), "")
        meta = await cli("get", kept.id, "--meta")
        assert meta.status == EXIT_OK and meta.json["id"] == kept.id
        assert meta.json == {**meta.json, "kind": "plan", "tags": ["a", "b"], "meta": {"by": "me"}}
        assert (await cli("get", kept.id, "--json")).json == meta.json

        binary = await cli("put", str(blob), "--kind", "x-blob", "--json")
        assert binary.status == EXIT_OK
        assert binary.json["id"] == sha(bytes(range(256)))
        assert binary.json["media_type"] == "application/octet-stream"
        copy = tmp_path / "copy.bin"
        written = await cli("get", binary.json["id"], "-o", str(copy))
        assert (written.status, written.out) == (EXIT_OK, b"")
        assert copy.read_bytes() == bytes(range(256))

        piped = await cli("put", "--kind", "summary", stdin="from stdin ✓".encode())
        assert piped.text.strip() == sha("from stdin ✓".encode())
        assert piped.err.endswith(", summary, text/plain; charset=utf-8\n")
        dash = await cli("put", "-", "--media-type", "image/png", stdin=b"\x89PNG")
        assert dash.err == "4 B, text, image/png\n"
        assert await client.read_artifact(dash.text.strip()) == b"\x89PNG"


async def test_put_and_get_usage_errors_and_refusals(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = {"max_artifact_bytes": 64, "max_total_bytes": 100}
    async with served(capsysbinary, monkeypatch, artifacts=small) as (cli, _):
        missing = await cli("put", str(tmp_path / "nope.txt"))
        assert missing.status == EXIT_USAGE and missing.out == b""
        assert missing.err.startswith("orchestra artifact put: cannot read ")

        kind = await cli("put", "-", "--kind", "novel", stdin=b"x")
        assert kind.status == EXIT_REFUSED and kind.err.startswith("orchestra: INVALID_PARAMS: ")
        parent = await cli("put", "-", "--parent", sha(b"absent"), stdin=b"x")
        assert parent.status == EXIT_REFUSED and "parents" in parent.err

        large = await cli("put", "-", stdin=b"x" * 65)
        assert large.status == EXIT_REFUSED
        assert large.err.startswith("orchestra: ARTIFACT_TOO_LARGE: the artifact is 65 bytes")
        assert (await cli("put", "-", stdin=b"y" * 60)).status == EXIT_OK
        full = await cli("put", "-", stdin=b"z" * 60)  # 507: a server failure, exit 4
        assert full.status == EXIT_FAILED and full.err.startswith("orchestra: STORAGE_FULL: ")

        unknown = await cli("get", sha(b"absent"))
        assert (unknown.status, unknown.out) == (EXIT_REFUSED, b"")
        assert unknown.err.startswith("orchestra: NOT_FOUND: ")
        bad_id = await cli("get", "not-an-id", "--meta")
        assert bad_id.status == EXIT_REFUSED and "INVALID_PARAMS" in bad_id.err
        both = await cli("get", sha(b"y" * 60), "--meta", "-o", str(tmp_path / "x"))
        assert both.status == EXIT_USAGE and not (tmp_path / "x").exists()
        unwritable = await cli("get", sha(b"y" * 60), "-o", str(tmp_path / "no" / "such"))
        assert unwritable.status == EXIT_USAGE and "cannot write" in unwritable.err


# -- ls, lineage, tag, rm ------------------------------------------------------------------


async def test_ls_table_json_filters_and_pages(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(capsysbinary, monkeypatch) as (cli, client):
        empty = await cli("ls")
        assert (empty.status, empty.text) == (EXIT_OK, "no artifacts\n")
        root = await client.put_artifact("root", kind="plan", tags=["x", "y"], task_id="t-1")
        one = await client.put_artifact("one", kind="diff", parents=[root.id], session_id="s")
        two = await client.put_artifact(b"two" * 400, kind="summary", parents=[root.id])

        table = await cli("ls")
        header, *rows = table.text.splitlines()
        assert table.status == EXIT_OK and table.err == ""
        assert cells(header) == ["ID", "KIND", "SIZE", "CREATED", "TAGS"]
        assert [cells(row)[:3] for row in rows] == [
            [two.id, "summary", "1.2 KiB"],
            [one.id, "diff", "3 B"],
            [root.id, "plan", "4 B"],
        ]
        assert cells(rows[2])[4] == "x,y" and cells(rows[0])[4] == "-"
        assert re.fullmatch(r"\d+s ago", cells(rows[0])[3])

        async def ids(*filters: str) -> list[str]:
            result = await cli("ls", "--json", *filters)
            assert result.status == EXIT_OK
            return [a["id"] for a in result.json["artifacts"]]

        assert await ids("--kind", "diff") == [one.id]
        assert await ids("--tag", "x") == [root.id]
        assert await ids("--session", "s") == [one.id]
        assert await ids("--task", "t-1") == [root.id]
        assert await ids("--parent", root.id) == [two.id, one.id]

        first = await cli("ls", "--limit", "2")
        assert len(first.text.splitlines()) == 3
        cursor = re.fullmatch(r"more: the next page is --cursor (\S+)\n", first.err)
        assert cursor is not None
        rest = await cli("ls", "--limit", "2", "--cursor", cursor[1], "--json")
        assert rest.json == {"artifacts": [rest.json["artifacts"][0]], "next_cursor": None}
        assert rest.json["artifacts"][0]["id"] == root.id and rest.err == ""
        wrong = await cli("ls", "--cursor", "nonsense")
        assert wrong.status == EXIT_REFUSED and "INVALID_PARAMS" in wrong.err


async def test_lineage_tag_and_rm(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(capsysbinary, monkeypatch) as (cli, client):
        a = await client.put_artifact("a", kind="text")
        b = await client.put_artifact("b", kind="plan", parents=[a.id])
        c = await client.put_artifact("c", kind="diff", parents=[b.id])

        tree = await cli("lineage", b.id)
        assert tree.status == EXIT_OK
        assert tree.text == (
            f"{b.id} (plan)\n  made from:\n    {a.id} (text)\n  made into:\n    {c.id} (diff)\n"
        )
        leaf = await cli("lineage", c.id, "--json")
        assert leaf.json["id"] == c.id and leaf.json["truncated"] is False
        assert [(n["id"], n["depth"]) for n in leaf.json["ancestors"]] == [(b.id, 1), (a.id, 2)]
        assert leaf.json["descendants"] == []

        tagged = await cli("tag", b.id, "--add", "x", "--add", "y", "--remove", "absent")
        assert (tagged.status, tagged.text) == (EXIT_OK, "tags: x, y\n")
        removed = await cli("tag", b.id, "--remove", "x", "--remove", "y", "--json")
        assert removed.json["tags"] == [] and (await client.get_artifact(b.id)).tags == ()
        assert (await cli("tag", b.id)).status == EXIT_USAGE

        refused = await cli("rm", a.id)
        assert refused.status == EXIT_REFUSED and refused.out == b""
        assert refused.err.startswith("orchestra: CONFLICT: ")
        assert f"  named as a parent by {b.id}\n" in refused.err
        assert refused.err.endswith("orchestra: use --cascade to delete them too\n")
        assert (await cli("rm", c.id, "--json")).json == {"deleted": [c.id]}
        cascade = await cli("rm", a.id, "--cascade")
        assert (cascade.status, cascade.text) == (EXIT_OK, f"{a.id}\n{b.id}\n")
        gone = await cli("lineage", a.id)
        assert gone.status == EXIT_REFUSED and "NOT_FOUND" in gone.err


# -- usage, and a real process -------------------------------------------------------------


def test_help_names_the_actions_and_a_missing_action_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["artifact", "--help"])
    help_text = capsys.readouterr().out
    assert shown.value.code == EXIT_OK and "Exit status" in help_text
    for action in ("put", "get", "ls", "lineage", "tag", "rm"):
        assert re.search(rf"^    {action} ", help_text, re.M), action
    with pytest.raises(SystemExit) as put_help:
        main(["artifact", "put", "--help"])
    put_text = capsys.readouterr().out
    assert put_help.value.code == EXIT_OK
    assert "--media-type" in put_text and "--parent" in put_text and "Exit status" in put_text
    for usage in (["artifact"], ["artifact", "get"], ["artifact", "put", "--meta", "[1]"]):
        with pytest.raises(SystemExit) as wrong:
            main(usage)
        assert wrong.value.code == EXIT_USAGE, usage
        assert "usage: orchestra artifact" in capsys.readouterr().err


async def test_a_child_process_reads_stdin_and_writes_raw_bytes_and_no_server_exits_4() -> None:
    content = b"\x00\xffraw bytes\n" * 10
    async with open_stack() as stack:
        url = stack.running.urls[0]
        with trio.fail_after(30):
            put = await trio.run_process(
                [*ORCHESTRA, "artifact", "put", "--url", url],
                stdin=content,
                capture_stdout=True,
                capture_stderr=True,
            )
            assert put.stdout.decode() == sha(content) + "\n"
            assert put.stderr.decode() == "120 B, text, application/octet-stream\n"
            got = await trio.run_process(
                [*ORCHESTRA, "artifact", "get", sha(content), "--url", url],
                capture_stdout=True,
                capture_stderr=True,
            )
    assert got.stdout == content and got.stderr == b""
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with trio.fail_after(30):
            down = await trio.run_process(
                [*ORCHESTRA, "artifact", "ls", "--url", nobody],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert down.returncode == EXIT_FAILED and down.stdout == b""
    assert down.stderr.decode().startswith(f"orchestra: TRANSPORT_ERROR: no answer from {nobody}")


# -- rendering -----------------------------------------------------------------------------


def test_media_types_sizes_and_a_lineage_that_is_a_graph() -> None:
    assert media_type_of("notes.md", "é".encode()) == "text/markdown; charset=utf-8"
    assert media_type_of("data.json", b"{}") == "application/json"
    assert media_type_of("change.patch", b"\xff") == "text/x-diff"
    assert media_type_of("a.tar.gz", b"x") == "application/octet-stream"
    assert media_type_of("README", b"hi") == "text/plain; charset=utf-8"
    assert media_type_of(None, b"\xff\xfe") == "application/octet-stream"
    assert [size(n) for n in (0, 1023, 1536, 3 * 1024**2)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 MiB",
    ]
    assert artifact_table(ArtifactPage(artifacts=(), next_cursor=None)) == "no artifacts\n"

    # d is made from b and c, both made from a: a is reached twice from d
    a, b, c, d = ("sha256:" + ch * 64 for ch in "abcd")
    up = Lineage(
        id=d,
        ancestors=(
            LineageNode(id=b, kind="plan", depth=1, parents=(a,)),
            LineageNode(id=c, kind="plan", depth=1, parents=(a,)),
            LineageNode(id=a, kind="text", depth=2, parents=()),
        ),
        descendants=(),
        truncated=True,
    )
    assert lineage_tree(up, "diff").splitlines() == [
        f"{d} (diff)",
        "  made from:",
        f"    {b} (plan)",
        f"      {a} (text)",
        f"    {c} (plan)",
        f"      {a} (text) (see above)",
        "  made into: nothing",
        "  (truncated: the server stopped at its node limit)",
    ]
