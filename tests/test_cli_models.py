"""``orchestra models``, ``ps``, ``load`` and ``unload`` (and ``submit --model``): their output
and exit statuses, run in-process (``orchestra.cli.main.main``) against an
``httpx.MockTransport`` that answers the several-models contract (the fake server of
:mod:`tests.test_sdk_models`)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

import orchestra.cli.client as cli_client
from orchestra.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
from orchestra.cli.main import main
from orchestra.cli.render import ago, duration, model_table, ps_table, until
from orchestra.sdk import AsyncClient, CatalogModel
from orchestra.sdk._convert import structure

from .test_sdk_models import LOADED, OLD_ENTRY, FakeServer, entry, envelope

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def several() -> dict[str, dict[str, Any]]:
    """Four models: one loaded and busy (the default), one loaded and idle, one loading,
    one whose load failed."""
    return {
        "gemma3": entry("gemma3", **LOADED, aliases=["gemma", "g3"], default=True, running=1,
                        waiting=2, last_used=rfc3339(NOW - timedelta(seconds=5)),
                        idle_unload_s=300),
        "qwen": entry("qwen", loaded=True, context=2048, residency="loaded", memory_mb=812,
                      memory_source="estimated", pool="qwen", idle_s=42.4, idle_unload_s=300,
                      last_used=rfc3339(NOW - timedelta(minutes=3, seconds=5))),
        "nomic": entry("nomic", residency="loading", memory_mb=300, memory_source="configured",
                       pool="nomic", embeddings=True, keep_loaded=True),
        "phi": entry("phi", residency="failed", error="llama-server exited with status 1"),
    }  # fmt: skip


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """The server every client command of this test talks to."""
    fake = FakeServer(several())
    transport = httpx.MockTransport(fake)
    monkeypatch.setattr(cli_client, "AsyncClient", partial(AsyncClient, transport=transport))
    return fake


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``orchestra ARGS --url http://mock``: its exit status, stdout and stderr."""
    status = main([*args, "--url", "http://mock"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


# -- orchestra models -------------------------------------------------------------------------


def test_models_shows_residency_memory_pool_and_last_use(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "models")
    assert (status, err) == (EXIT_OK, "")
    header, *rows, failed, note = out.splitlines()
    assert cells(header) == ["ID", "ALIASES", "RESIDENCY", "MEMORY", "POOL", "LAST USED"]
    gemma, qwen, nomic, phi = (cells(row) for row in rows)
    assert gemma[:5] == ["gemma3*", "gemma,g3", "loaded", "3.2 GiB", "gemma3"]
    assert qwen[:5] == ["qwen", "-", "loaded", "~812 MiB", "qwen"]
    assert nomic == ["nomic", "-", "loading", "300 MiB", "nomic", "-"]
    assert phi == ["phi", "-", "failed", "-", "-", "-"]
    assert re.fullmatch(r"\d+[smh]\S* ago", gemma[5]) and qwen[5].endswith(" ago")
    assert failed == "phi: load failed: llama-server exited with status 1"
    assert note == "* the default model"


def test_the_models_table_with_a_clock() -> None:
    models = [structure(m, CatalogModel, what="m") for m in several().values()]
    table = model_table({"object": "list", "data": models}, now=NOW)
    assert [cells(line)[-1] for line in table.splitlines()[1:3]] == ["5s ago", "3m05s ago"]


def test_models_from_an_older_server(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.models = {"served": OLD_ENTRY}
    status, out, _ = run(capsys, "models")
    assert status == EXIT_OK
    assert [cells(line) for line in out.splitlines()[1:]] == [
        ["served", "-", "loaded", "-", "-", "-"]
    ]
    server.models = {}
    assert run(capsys, "models")[:2] == (EXIT_OK, "no models in the catalog\n")


def test_models_json_is_the_wire_list(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "models", "--json")
    assert status == EXIT_OK
    assert json.loads(out) == {"object": "list", "data": list(several().values())}


def test_models_when_the_server_fails_exits_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = httpx.MockTransport(lambda _: envelope(503, "POOL_UNAVAILABLE", "down"))
    monkeypatch.setattr(cli_client, "AsyncClient", partial(AsyncClient, transport=transport))
    status, out, err = run(capsys, "models")
    assert (status, out, err) == (EXIT_FAILED, "", "orchestra: POOL_UNAVAILABLE: down\n")


# -- orchestra ps -----------------------------------------------------------------------------


def test_ps_shows_only_the_models_loaded_or_loading(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "ps")
    assert (status, err) == (EXIT_OK, "")
    header, *rows = out.splitlines()
    assert cells(header) == [
        "ID", "STATE", "MEMORY", "RUNNING", "WAITING", "IDLE", "UNTIL", "POOL"
    ]  # fmt: skip
    assert [cells(row) for row in rows] == [
        ["gemma3", "loaded", "3.2 GiB", "1", "2", "-", "-", "gemma3"],  # busy
        ["qwen", "loaded", "~812 MiB", "0", "0", "42s", "in 4m18s", "qwen"],
        ["nomic", "loading", "300 MiB", "0", "0", "-", "kept", "nomic"],
    ]
    status, out, _ = run(capsys, "ps", "--json")
    assert status == EXIT_OK
    assert [m["id"] for m in json.loads(out)["data"]] == ["gemma3", "qwen", "nomic"]
    server.models = {"phi": several()["phi"]}
    assert run(capsys, "ps")[:2] == (EXIT_OK, "no model loaded\n")


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"keep_loaded": True, "idle_s": 10.0, "idle_unload_s": 300}, "kept"),
        ({"idle_s": 10.0, "idle_unload_s": 0}, "never"),
        ({"idle_s": 10.0, "idle_unload_s": 300}, "in 4m50s"),
        ({"idle_s": 400.0, "idle_unload_s": 300}, "in 0s"),  # due now
        ({"idle_s": 10.0}, "-"),  # an idle timeout the server did not say
        ({"idle_unload_s": 300}, "-"),  # busy: not idle
    ],
)
def test_until_when_an_idle_model_is_unloaded(fields: dict[str, Any], shown: str) -> None:
    model = structure(entry("m", **LOADED, **fields), CatalogModel, what="m")
    assert until(model) == shown


def test_durations_and_ages() -> None:
    assert [duration(s) for s in (0, 42.4, 60, 245, 3600, 7620)] == [
        "0s", "42s", "1m00s", "4m05s", "1h00m", "2h07m"
    ]  # fmt: skip
    assert ago(None) == "-" and ago("yesterday") == "yesterday"
    assert ago("2026-03-01T11:00:00Z", NOW) == "1h00m ago"
    assert ago("2026-03-01T11:59:00", NOW) == "1m00s ago"  # no zone: UTC
    assert ps_table({"data": []}) == "no model loaded\n"


# -- orchestra load / unload ------------------------------------------------------------------


def test_load_by_id_shows_progress_then_the_load_time(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "load", "phi")
    assert status == EXIT_OK
    assert err == "loading phi…\n"
    assert out == "phi loaded in 4.2 s (memory 3.2 GiB, pool phi)\n"
    assert server.paths() == ["POST /v1/models/phi/load"]


def test_load_by_path_registers_it_first(
    server: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "Mistral-7B.gguf"
    path.write_bytes(b"GGUF")
    status, out, err = run(capsys, "load", str(path), "--json")
    assert (status, err) == (EXIT_OK, "loading Mistral-7B…\n")
    assert server.paths() == [
        "POST /v1/catalog/models",
        "POST /v1/catalog/models/Mistral-7B/verify",
        "POST /v1/models/Mistral-7B/load",
    ]
    sha256 = hashlib.sha256(b"GGUF").hexdigest()
    assert server.body(0) == {"id": "Mistral-7B", "path": str(path), "sha256": sha256}
    shown = json.loads(out)
    assert (shown["id"], shown["residency"], shown["load_ms"]) == ("Mistral-7B", "loaded", 4200)


def test_load_without_a_measured_time_shows_how_long_it_took(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.refuse = httpx.Response(200, json=entry("phi", residency="loaded", loaded=True))
    status, out, _ = run(capsys, "load", "phi")
    assert status == EXIT_OK and re.fullmatch(r"phi loaded in \d+\.\d s\n", out)


@pytest.mark.parametrize(
    ("refusal", "exit_status", "code"),
    [
        (None, EXIT_REFUSED, "NOT_FOUND"),  # an unknown id
        (
            envelope(503, "MODEL_LOAD_FAILED", "llama-server exited"),
            EXIT_FAILED,
            "MODEL_LOAD_FAILED",
        ),
        (
            envelope(503, "MODEL_TOO_LARGE", "needs 9000 MiB, 4000 free"),
            EXIT_FAILED,
            "MODEL_TOO_LARGE",
        ),
    ],
)
def test_a_load_refused_exits_with_its_status(
    server: FakeServer,
    capsys: pytest.CaptureFixture[str],
    refusal: httpx.Response | None,
    exit_status: int,
    code: str,
) -> None:
    server.refuse = refusal
    status, out, err = run(capsys, "load", "nope" if refusal is None else "phi")
    assert (status, out) == (exit_status, "")
    progress, report = err.splitlines()
    assert progress.startswith("loading ") and report.startswith(f"orchestra: {code}: ")


def test_unload_and_force(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "unload", "gemma3") == (EXIT_OK, "gemma3 unloaded\n", "")
    assert run(capsys, "unload", "gemma3", "--force") == (
        EXIT_OK,
        "gemma3 unloaded, 2 tasks cancelled\n",
        "",
    )
    assert [r.url.query.decode() for r in server.sent] == ["", "force=true"]
    status, out, _ = run(capsys, "unload", "qwen", "--json")
    assert status == EXIT_OK and json.loads(out)["cancelled"] == 0
    status, out, err = run(capsys, "unload", "nope")
    assert (status, out) == (EXIT_REFUSED, "")
    assert err == "orchestra: NOT_FOUND: no model 'nope'\n"


# -- the rest ---------------------------------------------------------------------------------


def test_submit_sends_its_model(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "submit", "hi", "--model", "qwen")[:2] == (EXIT_OK, "t\n")
    assert run(capsys, "submit", "hi")[:2] == (EXIT_OK, "t\n")
    assert [server.body(i).get("model_ref") for i in (0, 1)] == ["qwen", None]


def test_help_lists_the_model_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    for command in ("models", "ps", "load", "unload"):
        assert re.search(rf"^    {command} ", shown, re.M), command
    with pytest.raises(SystemExit):
        main(["unload", "--help"])
    assert "--force" in capsys.readouterr().out
