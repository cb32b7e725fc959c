"""Who gets in: the auth gate over every route, the token's sources, the trusted proxy
header, and the engine's own api key."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.config import parse_config
from orchestra.errors import ConfigError, ErrorCode, Refusal
from orchestra.http.auth import OPEN_PATHS, Gate
from orchestra.http.envelope import headers_for

from .engine import open_owned
from .harness import open_stack
from .test_openapi import Live, fake_server

TOKEN = "s3cret-token-for-tests-0123456789"

# -- the gate, exactly ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "header", "expected"),
    [
        (True, f"Bearer {TOKEN}", "token"),
        (True, f"bearer   {TOKEN}  ", "token"),
        (False, f"Bearer {TOKEN}", "token"),
        (False, None, "anonymous"),
        (True, None, ErrorCode.UNAUTHORIZED),
        (True, "Bearer", ErrorCode.UNAUTHORIZED),
        (True, f"Basic {TOKEN}", ErrorCode.UNAUTHORIZED),
        (True, "Bearer wrong", ErrorCode.FORBIDDEN),
        (False, "Bearer wrong", ErrorCode.FORBIDDEN),  # optional: none is fine, wrong is not
        (True, f"Bearer {TOKEN}x", ErrorCode.FORBIDDEN),
    ],
)
def test_gate(required: bool, header: str | None, expected: str | ErrorCode) -> None:
    gate = Gate(token=TOKEN, required=required)
    if isinstance(expected, ErrorCode):
        with pytest.raises(Refusal) as caught:
            gate.admit("/v1/tasks", header, None)
        assert caught.value.code is expected
        if expected is ErrorCode.UNAUTHORIZED:
            assert headers_for(caught.value)["WWW-Authenticate"].startswith("Bearer")
    else:
        assert gate.admit("/v1/tasks", header, None) == expected


@given(header=st.text(max_size=80), proxy_user=st.one_of(st.none(), st.text(max_size=10)))
def test_gate_lets_in_only_the_token(header: str, proxy_user: str | None) -> None:
    gate = Gate(token=TOKEN, required=True, trust_proxy=False)
    try:
        who = gate.admit("/v1/tasks", header, proxy_user)
    except Refusal as exc:
        assert exc.code in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN)
    else:
        scheme, _, given = header.strip().partition(" ")
        assert who == "token" and scheme.lower() == "bearer" and given.strip() == TOKEN


def test_gate_trusts_the_proxy_header_only_when_told() -> None:
    trusting = Gate(token=TOKEN, required=True, trust_proxy=True)
    assert trusting.admit("/v1/tasks", None, "alice") == "proxy:alice"
    with pytest.raises(Refusal):
        trusting.admit("/v1/tasks", None, "")
    with pytest.raises(Refusal) as caught:  # a wrong token is wrong, whoever forwards it
        trusting.admit("/v1/tasks", "Bearer nope", "alice")
    assert caught.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(Refusal):
        Gate(token=TOKEN, required=True).admit("/v1/tasks", None, "alice")


# -- where the token comes from ------------------------------------------------------------


def _token_file(tmp_path: Path, mode: int, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_token_comes_from_a_private_file(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600)
    config = parse_config({"bind_addr": "0.0.0.0:8080", "auth": {"token_file": str(path)}})
    assert config.auth.token == TOKEN
    assert TOKEN not in repr(config)  # a config printed in a log shows no token


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o622])
def test_a_token_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _token_file(tmp_path, mode)
    with pytest.raises(ConfigError) as caught:
        parse_config({"auth": {"token_file": str(path)}})
    [problem] = list(caught.value.problems)
    assert problem.startswith("auth.token_file: ") and f"chmod 600 {path}" in problem
    assert f"{stat.S_IMODE(path.stat().st_mode):04o}" in problem


@pytest.mark.parametrize(
    ("text", "fragment"), [("", "is empty"), ("two words\n", "printable ASCII without spaces")]
)
def test_an_unusable_token_file_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = _token_file(tmp_path, 0o600, text)
    with pytest.raises(ConfigError, match=fragment):
        parse_config({"auth": {"token_file": str(path)}})


def test_token_and_token_file_together_or_a_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"auth": {"token": "x", "token_file": str(tmp_path / "t")}})
    assert list(caught.value.problems) == [
        "auth.token_file: set either auth.token or auth.token_file, not both"
    ]
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config({"auth": {"token_file": str(tmp_path / "missing")}})


def test_the_environment_token_counts_for_a_non_loopback_bind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="required when bind_addr"):
        parse_config({"bind_addr": "0.0.0.0:8080"})
    monkeypatch.setenv("ORCHESTRA_TOKEN", TOKEN)
    assert parse_config({"bind_addr": "0.0.0.0:8080"}).auth.token == TOKEN
    # the config file wins over the environment
    assert parse_config({"auth": {"token": "from-file-0000"}}).auth.token == "from-file-0000"


# -- every route of a live server ----------------------------------------------------------

_PARAMS = {
    "task_id": "t-1",
    "pool_id": "default",
    "model_id": "m-1",
    "session_id": "s-1",
    "artifact_id": "sha256:" + "0" * 64,
}


def _routes(app: Any) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for name, value in _PARAMS.items():
            path = path.replace(f"<{name}>", value)
        assert "<" not in path, f"no sample value for {rule.rule}"
        routes.extend((method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
    return routes


_CONFIGS = {
    "loopback, token optional": ("127.0.0.1:0", {"token": TOKEN, "optional": True}, False),
    "loopback, token required": ("127.0.0.1:0", {"token": TOKEN, "optional": False}, True),
    "any address": ("0.0.0.0:0", {"token": TOKEN}, True),
}


@pytest.mark.parametrize("setup", list(_CONFIGS))
async def test_every_route_lets_in_only_the_token(setup: str) -> None:
    bind, auth, required = _CONFIGS[setup]
    headers = {
        "none": {},
        "right": {"Authorization": f"Bearer {TOKEN}"},
        "wrong": {"Authorization": "Bearer not-the-token"},
        "malformed": {"Authorization": TOKEN},
    }
    async with open_stack(bind_addr=bind, auth=auth) as stack:
        port = stack.running.urls[0].rsplit(":", 1)[1]
        routes = _routes(stack.running.app)
        assert len(routes) >= 15
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for method, path in routes:
                for name, header in headers.items():
                    response = await client.request(method, path, headers=header, json={})
                    status, what = response.status_code, f"{setup}: {name} {method} {path}"
                    assert status != 500, what
                    if path in OPEN_PATHS:
                        assert status == 200, what
                    elif name == "right" or (name == "none" and not required):
                        assert status not in (401, 403), what
                    else:
                        expected = {"none": 401, "malformed": 401, "wrong": 403}[name]
                        assert status == expected, what
                        body = response.json()
                        body = body.get("error", body)  # the OpenAI face: OpenAI's error object
                        assert body["code"] == ("FORBIDDEN" if expected == 403 else "UNAUTHORIZED")
                        assert body["correlation_id"] == response.headers["X-Correlation-Id"]
            # nothing got in: every refused submission admitted nothing (and the one with
            # the right token had an empty body, 400)
            assert stack.running.actors.queue.statistics().tasks_known == 0


_LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF)
"""What an HTTP header value can carry."""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One live server (on a thread) requiring the token, for the generated headers."""
    auth = {"token": TOKEN, "optional": False}
    with fake_server(tmp_path_factory.mktemp("guarded"), auth=auth) as live:
        yield live


@settings(max_examples=300)
@given(
    header=st.one_of(
        st.text(_LATIN1, max_size=60).map(str.lstrip),  # HTTP drops leading whitespace
        st.builds(
            lambda pad, tail: f"Bearer{pad}{TOKEN[:-1]}{tail}",
            st.sampled_from([" ", "  "]),
            st.text(_LATIN1, max_size=2),
        ),
    )
)
def test_generated_authorization_headers_never_get_in_or_crash(guarded: Live, header: str) -> None:
    for method, path in [("GET", "/v1/capabilities"), ("POST", "/v1/tasks")]:
        response = guarded.request(
            method,
            path,
            headers={"Authorization": header.encode("latin-1")},
            json={"prompt": "x", "max_tokens": 1},
        )
        assert response.status_code < 500, (header, response.text)
        if response.status_code not in (401, 403):
            scheme, _, given = header.strip().partition(" ")
            assert scheme.lower() == "bearer" and given.strip() == TOKEN, header


async def test_a_trusted_proxy_identity_gets_in_without_a_token() -> None:
    auth = {"token": TOKEN, "optional": False, "trust_proxy_auth": True}
    async with open_stack(auth=auth) as stack:
        alice = {"X-Forwarded-User": "alice"}
        assert (await stack.client.get("/v1/capabilities", headers=alice)).status_code == 200
        assert (await stack.client.get("/v1/capabilities")).status_code == 401
    async with open_stack(auth={"token": TOKEN, "optional": False}) as stack:
        response = await stack.client.get("/v1/capabilities", headers=alice)
        assert response.status_code == 401  # not trusted unless configured


# -- the engine's own key ------------------------------------------------------------------


@pytest.mark.slow
async def test_the_owned_engine_answers_orchestra_and_nobody_else() -> None:
    async with open_owned(auth={"token": TOKEN}) as owned:
        key = owned.supervisor.command.api_key
        assert len(key) >= 32
        engine_url = str(owned.engine.base_url)
        async with httpx.AsyncClient(base_url=engine_url, timeout=10) as stranger:
            assert (await stranger.get("/health")).status_code == 200  # liveness is open
            for path in ("/props", "/slots", "/metrics"):
                assert (await stranger.get(path)).status_code == 401
            denied = await stranger.post("/completion", json={"prompt": "x", "n_predict": 2})
            assert denied.status_code == 401
        text = await owned.text(prompt="Hello", max_tokens=4, seed=1)
        assert text
        pid = owned.pid
        assert (
            key.encode() not in await trio.Path(f"/proc/{pid}/cmdline").read_bytes()
        )  # not in `ps`
        environ = (await trio.Path(f"/proc/{pid}/environ").read_bytes()).split(b"\0")
        assert f"LLAMA_API_KEY={key}".encode() in environ
        owner = (await trio.Path(f"/proc/{pid}/environ").stat()).st_uid
        assert owner == os.getuid()  # only this user (and root) can read it
