"""The status page at ``/`` in a real browser (Debian's headless Chromium, driven by
selenium: :mod:`tests.browser`), against a live orchestra on the fake engine that wants its
token. The browser reaches orchestra through a proxy whose connections a test can cut.

It loads with no console error and asks for the token once (kept for the tab); a running
task's tokens appear live; a dropped connection is resumed without a token lost or shown
twice; a task is cancelled, and the pool drained and resumed, from its buttons; it fits a
phone's width. With ``ORCHESTRA_SCREENSHOTS=<dir>`` set, the screenshot test saves the page
under load there (``proof-bundle/status-page/`` holds the ones the README shows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser import CuttableProxy, chromium, click, console_errors, wait_for
from .test_openapi import (
    HANG,
    SEVERAL,
    Live,
    fake_server,
    gguf_file,
    models_server,
    parse_frames,
    wait_until,
)

TOKEN = "status-page-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One slot, 50 ms per token, nothing waiting inside the engine (a second task waits in
    orchestra's line), and the token required. Its model file exists, so it is listed."""
    tmp = tmp_path_factory.mktemp("status-page")
    gguf_file(tmp, "fake.gguf")
    with fake_server(
        tmp,
        token_delay_s=0.05,
        adapter={"engine_backlog": 0},
        admission={"queue_capacity": 8},
        auth={"token": TOKEN, "optional": False},
    ) as server:
        server.session.headers.update(BEARER)
        yield server


@pytest.fixture(scope="module")
def proxy(live: Live) -> Iterator[CuttableProxy]:
    host, port = live.base_url.removeprefix("http://").rsplit(":", 1)
    cuttable = CuttableProxy((host, int(port)))
    yield cuttable
    cuttable.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def page(browser: Any, proxy: CuttableProxy, live: Live) -> Iterator[Any]:
    """The page open and connected (the token given once), its console read so far."""
    browser.get(proxy.url + "/")
    if browser.execute_script("return sessionStorage.getItem('orchestra.token')") is None:
        give_token(browser)
    wait_for(browser, connected, "the page is live")
    console_errors(browser)
    yield browser
    for task in live.request("GET", "/v1/tasks").json()["tasks"]:
        live.request("POST", f"/v1/tasks/{task['task_id']}/cancel")
    if live.request("GET", "/v1/pools/default/health").json()["draining"]:
        live.request("POST", "/v1/pools/default/resume", json={})


def give_token(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    field = wait_for(driver, lambda d: visible(d, "#token-input"), "the page asks for the token")
    field.send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def visible(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found and found[0].is_displayed() else None


def connected(driver: Any) -> bool:
    return bool(
        driver.execute_script(
            "return document.getElementById('connection').dataset.state === 'live'"
        )
    )


def card(driver: Any, task_id: str) -> dict[str, Any] | None:
    """A running task's card as the page shows it (None while it has none)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """
        const node = document.querySelector(`#running [data-task-id="${arguments[0]}"]`);
        if (!node) return null;
        return {text: node.querySelector('.text').textContent, stream: node.dataset.stream,
                tokens: Number(node.dataset.tokens || 0), gaps: Number(node.dataset.gaps || 0),
                outcome: node.dataset.outcome || null};
        """,
        task_id,
    )


def submit(live: Live, **body: Any) -> str:
    response = live.request("POST", "/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def full_text(live: Live, task_id: str) -> tuple[str, int]:
    """A task's whole text and token count, read from its stream once it ended."""
    frames = parse_frames(live.request("GET", f"/v1/tasks/{task_id}/stream").text)
    assert frames[-1].event == "end", frames[-1]
    tokens = [json.loads(f.data)["t"] for f in frames if f.event == "token"]
    return "".join(tokens), len(tokens)


def state_of(live: Live, task_id: str) -> str:
    return str(live.request("GET", f"/v1/tasks/{task_id}").json()["state"])


# -- the tests ---------------------------------------------------------------------------------


def test_it_loads_with_no_console_error_and_asks_the_token_once(
    browser: Any, proxy: CuttableProxy
) -> None:
    browser.get(proxy.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    give_token(browser)
    wait_for(browser, connected, "the page is live")
    pool = wait_for(browser, lambda d: visible(d, '#pools [data-pool-id="default"]'), "the pool")
    assert pool.get_attribute("data-state") == "ready"
    assert "fake" in pool.text  # the model it serves
    assert "0/1 slots busy" in pool.text
    assert console_errors(browser) == []
    # The tab keeps the token: a reload does not ask again.
    browser.refresh()
    wait_for(browser, connected, "the page is live again")
    assert visible(browser, "#token-input") is None
    assert console_errors(browser) == []


def test_a_wrong_token_is_asked_again(browser: Any, proxy: CuttableProxy) -> None:
    from selenium.webdriver.common.by import By

    browser.get(proxy.url + "/")
    browser.execute_script("sessionStorage.setItem('orchestra.token', 'not-the-token')")
    browser.refresh()
    wait_for(browser, lambda d: visible(d, "#token-input"), "the page asks again")
    assert "refused" in browser.find_element(By.ID, "token-error").text
    give_token(browser)
    wait_for(browser, connected, "the page is live")


def test_a_running_task_streams_its_tokens_live(page: Any, live: Live) -> None:
    task_id = submit(live, prompt="Tell a story about a lighthouse.", max_tokens=60)
    shown = wait_for(page, lambda d: (c := card(d, task_id)) and c["tokens"] >= 3 and c, "tokens")
    assert shown["stream"] == "live" and shown["outcome"] is None
    assert state_of(live, task_id) == "running"  # seen while it ran, not after
    ended = wait_for(page, lambda d: (c := card(d, task_id)) and c["outcome"] and c, "its end")
    text, count = full_text(live, task_id)
    assert ended["outcome"] == "completed" and ended["text"] == text
    assert ended["tokens"] == count == 60 and ended["gaps"] == 0
    assert console_errors(page) == []


def test_a_dropped_connection_resumes_without_loss_or_repeat(
    page: Any, live: Live, proxy: CuttableProxy
) -> None:
    task_id = submit(live, prompt="Tell a long story about a harbour.", max_tokens=120)
    wait_for(page, lambda d: (c := card(d, task_id)) and c["tokens"] >= 5, "the first tokens")
    before = len(proxy.requests)
    assert proxy.cut() > 0  # the stream and the page's other connections, all at once
    ended = wait_for(page, lambda d: (c := card(d, task_id)) and c["outcome"] and c, "its end")
    text, count = full_text(live, task_id)
    assert ended["outcome"] == "completed"
    assert ended["text"] == text and ended["tokens"] == count == 120 and ended["gaps"] == 0
    # EventSource came back by itself, asking for what follows the last event it had.
    resumed = [r for r in proxy.requests[before:] if f"/v1/tasks/{task_id}/stream".encode() in r]
    assert resumed and all(b"last-event-id:" in r.lower() for r in resumed)
    wait_for(page, connected, "the page is live again")


def test_cancel_a_task_from_the_page(page: Any, live: Live) -> None:
    running = submit(live, prompt=HANG, max_tokens=50)
    waiting = submit(live, prompt="waits behind it", max_tokens=4)
    wait_for(page, lambda d: (c := card(d, running)) and c["tokens"] >= 1, "the running card")
    click(page, f'#waiting tr[data-task-id="{waiting}"] button', "the waiting task's cancel")
    wait_until(lambda: state_of(live, waiting) == "cancelled", "the waiting task is cancelled")
    click(page, f'#running [data-task-id="{running}"] button', "the running task's cancel")
    wait_until(lambda: state_of(live, running) == "cancelled", "the running task is cancelled")
    ended = wait_for(page, lambda d: (c := card(d, running)) and c["outcome"] and c, "its end")
    assert ended["outcome"] == "CANCELLED" and ended["stream"] == "failed"


def test_drain_and_resume_the_pool(page: Any, live: Live) -> None:
    def health() -> dict[str, Any]:
        return live.request("GET", "/v1/pools/default/health").json()  # type: ignore[no-any-return]

    pool = '#pools [data-pool-id="default"]'
    click(page, f'{pool} button[data-action="drain:default"]', "Drain")
    wait_until(lambda: health()["draining"], "the pool drains")
    refused = live.request("POST", "/v1/tasks", json={"prompt": "hi", "max_tokens": 2})
    assert refused.status_code == 503 and refused.json()["code"] == "POOL_UNREADY"
    wait_for(page, lambda d: visible(d, f'{pool}[data-state="draining"]'), "the page shows it")
    click(page, f'{pool} button[data-action="resume:default"]', "Resume")
    wait_until(lambda: health()["ready"] and not health()["draining"], "the pool resumes")
    wait_for(page, lambda d: visible(d, f'{pool}[data-state="ready"]'), "the page shows it")
    assert submit(live, prompt="hi again", max_tokens=2)


def test_recent_errors_are_listed(page: Any, live: Live) -> None:
    task_id = submit(live, prompt="[[error-mid:2]] this one breaks", max_tokens=8)
    item = wait_for(
        page, lambda d: visible(d, f'#errors li[data-task-id="{task_id}"]'), "its error"
    )
    failed = live.request("GET", f"/v1/tasks/{task_id}").json()
    assert failed["state"] == "failed" and failed["error_code"] in item.text


def test_it_fits_a_phone(browser: Any, proxy: CuttableProxy, live: Live) -> None:
    browser.set_window_size(390, 844)
    try:
        browser.get(proxy.url + "/")
        wait_for(browser, connected, "the page is live")
        task_id = submit(live, prompt=HANG, max_tokens=50)
        submit(live, prompt="waits", max_tokens=4)
        wait_for(browser, lambda d: card(d, task_id), "the running card")
        wait_for(browser, lambda d: visible(d, "#waiting tbody tr"), "the waiting line")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    finally:
        browser.set_window_size(1200, 1400)
        for task in live.request("GET", "/v1/tasks").json()["tasks"]:
            live.request("POST", f"/v1/tasks/{task['task_id']}/cancel")


def test_a_screenshot_under_load(page: Any, live: Live) -> None:
    """The page with a task running, three waiting (one batch) and one failed; saved where
    ``ORCHESTRA_SCREENSHOTS`` says, for the proof bundle and the README."""
    for tokens in (12, 20, 16):  # served tasks: the TTFT figures have samples
        full_text(live, submit(live, prompt="a short answer", max_tokens=tokens))
    failed = submit(live, prompt="[[error-mid:3]] a task that breaks", max_tokens=8)
    wait_until(lambda: state_of(live, failed) == "failed", "the failed task ended")
    running = submit(live, prompt="Write about the sea at night.", max_tokens=800)
    for body in ({"max_tokens": 40}, {"max_tokens": 80}, {"max_tokens": 60, "priority": "batch"}):
        submit(live, prompt="a task that waits its turn", **body)
    wait_for(page, lambda d: (c := card(d, running)) and c["tokens"] >= 40, "a page of tokens")
    wait_for(
        page, lambda d: len(d.find_elements("css selector", "#waiting tbody tr")) == 3, "3 wait"
    )
    shot = page.get_screenshot_as_png()
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    folder = os.environ.get("ORCHESTRA_SCREENSHOTS")
    if folder:
        # For the picture, let the charts draw the last twenty seconds first.
        wait_for(
            page,
            lambda d: (
                int(d.find_element("id", "tokens-chart").get_attribute("data-samples") or 0) >= 20
            ),
            "20 s of chart",
        )
        shot = page.get_screenshot_as_png()
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "status-page.png").write_bytes(shot)
        page.set_window_size(390, 1100)
        try:
            wait_for(page, connected, "the page is live at a phone's width")
            (Path(folder) / "status-page-phone.png").write_bytes(page.get_screenshot_as_png())
        finally:
            page.set_window_size(1200, 1400)


# -- several models: load and unload from the page -------------------------------------------


@pytest.fixture(scope="module")
def several(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Two ``[models]`` on the fake engine started as llama-server, loaded on demand, no
    token (a loopback bind)."""
    with models_server(tmp_path_factory.mktemp("status-page-models"), SEVERAL) as server:
        yield server


def test_load_and_unload_a_model_from_the_page(browser: Any, several: Live) -> None:
    def residency(model: str) -> str:
        listed = several.request("GET", "/v1/models").json()["data"]
        return str(next(m for m in listed if m["id"] == model)["residency"])

    browser.get(several.base_url + "/")
    wait_for(browser, connected, "the page is live")
    model = '#pools [data-pool-id="gemma3"] [data-model-id="gemma3"]'
    wait_for(browser, lambda d: visible(d, model), "the model's line")
    assert residency("gemma3") == "unloaded"
    click(browser, f'{model} button[data-action="load:gemma3"]', "Load")
    wait_until(lambda: residency("gemma3") == "loaded", "gemma3 is loaded")
    wait_for(
        browser, lambda d: visible(d, f'{model} button[data-action="unload:gemma3"]'), "Unload"
    )
    click(browser, f'{model} button[data-action="unload:gemma3"]', "Unload")
    wait_until(lambda: residency("gemma3") == "unloaded", "gemma3 is unloaded")
    wait_for(browser, lambda d: visible(d, f'{model} button[data-action="load:gemma3"]'), "Load")
    assert console_errors(browser) == []
