"""The JavaScript SDK (``orchestra/http/static/sdk/orchestra.js``): served as it is kept in
the repo, and its calls, errors and stream resume checked by Node's built-in test runner
(``tests/js/``) against a live orchestra on the fake engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.http.static import SDK_FILES

from .test_openapi import Live, fake_server, gguf_file

ROOT = Path(__file__).resolve().parent.parent
SDK_DIR = ROOT / "orchestra" / "http" / "static" / "sdk"
JS_TESTS = Path(__file__).resolve().parent / "js"
TOKEN = "js-sdk-token-for-tests-0123456789"
NODE = shutil.which("node")
NODE_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One slot, nothing waiting inside the engine, two tasks may queue (so three hanging
    tasks fill it), 20 ms per token, and the bearer token required. The engine's model file
    exists, so the server adopts it into its catalog and lists it (as ``fake``)."""
    tmp = tmp_path_factory.mktemp("js-sdk")
    gguf_file(tmp, "fake.gguf")
    with fake_server(
        tmp,
        token_delay_s=0.02,
        adapter={"engine_backlog": 0},
        admission={"queue_capacity": 2},
        auth={"token": TOKEN, "optional": False},
    ) as server:
        yield server


@pytest.mark.parametrize("name", sorted(SDK_FILES))
def test_the_served_files_are_the_repo_files(live: Live, name: str) -> None:
    response = live.request("GET", f"/sdk/{name}")  # no token: the files are open
    assert response.status_code == 200, response.text
    assert response.content == (SDK_DIR / name).read_bytes()
    assert response.headers["Content-Type"] == SDK_FILES[name]
    assert response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    again = live.request("GET", f"/sdk/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    stale = live.request("GET", f"/sdk/{name}", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200 and stale.content == response.content


def test_the_javascript_sdk_against_a_live_server(live: Live) -> None:
    if NODE is None:
        # Node (>= 18) is what runs these tests; a machine without it cannot run them.
        pytest.skip("node is not installed")
    env = {**os.environ, "ORCHESTRA_URL": live.base_url, "ORCHESTRA_TOKEN": TOKEN}
    result = subprocess.run(
        [NODE, "--test", "--test-concurrency=1", *sorted(map(str, JS_TESTS.glob("*.test.mjs")))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "# fail 0" in output, output
