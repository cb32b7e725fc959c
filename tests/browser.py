"""What the status page's tests drive a real browser with: Debian's headless Chromium through
its ChromeDriver (selenium, nothing downloaded), and a TCP proxy between the browser and
orchestra whose connections a test can cut (a dropped network, for the stream's resume)."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root in CI, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium reaches for Google's hosts at every start, and this machine's
    # closed network refuses each one.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WAIT_S = 30.0
"""The longest a test waits for the page to show something."""


def require_browser() -> None:
    """Skip where Chromium is not installed, except in CI (``scripts/test`` installs it
    there: scripts/install-browser), where its absence is a failure."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{', '.join(missing)} missing: scripts/install-browser installs them")
    # A developer's machine without Debian's chromium and chromium-driver cannot run these.
    pytest.skip(f"{', '.join(missing)} not installed (scripts/install-browser)")


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 1400) -> Iterator[Any]:
    """A headless Chromium with an empty profile of its own, its console kept for the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="orchestra-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: Any, check: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Wait until ``check(driver)`` is truthy (a stale element counts as not yet); its value."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiter = WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
    return waiter.until(check, message=f"timed out waiting until {what}")


def click(driver: Any, css: str, what: str) -> None:
    """Click the element ``css`` selects once it is there and enabled (the page redraws its
    cards each second, so an element found may be replaced before the click lands)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked(d: Any) -> bool:
        try:
            found = d.find_elements(By.CSS_SELECTOR, css)
            if not found or not found[0].is_enabled():
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(driver, clicked, f"{what} ({css}) could be clicked")


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call (messages of level SEVERE)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


class CuttableProxy:
    """A TCP proxy on loopback to ``upstream``; :meth:`cut` drops every open connection at
    once (both ends see it close, as when a network goes away). It keeps what the clients
    sent, chunk by chunk (requests and their headers), in :attr:`requests`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if upstream:
                    with self._lock:
                        self.requests.append(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def cut(self) -> int:
        """Drop every open connection; how many sockets there were."""
        with self._lock:
            sockets = list(self._open)
        self._drop(*sockets)
        return len(sockets)

    def close(self) -> None:
        self.listener.close()
        self.cut()
