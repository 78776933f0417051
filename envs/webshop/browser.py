"""One headless Chromium and one store web site per Python process, shared by browser envs.

Each `WebShopBrowserEnv` gets its own browser context (cookies, history, viewport) from the
shared Chromium, and registers its shopping sessions with the shared site, which serves every
catalog it is asked for on one free port of 127.0.0.1. Both start on first use and are checked
by process id, so a forked worker (AsyncVectorEnv) starts its own instead of using its
parent's. Chromium is closed when the last context closes, and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any, ClassVar

from turngym.envs.webshop.catalog import Catalog

# --disable-partial-raster: redrawing only the changed part of a tile anti-aliases its edges a
# shade differently from a whole redraw, so the same page could give different screenshots.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage", "--disable-partial-raster"]
ENV_VAR = "TURNGYM_CHROMIUM"
NOT_FOUND = ("Chromium not found: install it with `apt-get install chromium` (or `make install`), or set "
             f"{ENV_VAR} to the browser's path")


class BrowserNotFound(RuntimeError):
    """No Chromium to drive; the message names the fix."""


def find_chromium() -> str:
    """The Chromium to launch: $TURNGYM_CHROMIUM, then /usr/bin/chromium, then Playwright's own."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        if not Path(configured).is_file():
            raise BrowserNotFound(f"{ENV_VAR}={configured} is not a file: point it at a Chromium executable")
        return configured
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            bundled = p.chromium.executable_path
    except Exception:  # no Playwright browsers, or no driver: either way, not found
        bundled = ""
    if bundled and Path(bundled).is_file():
        return bundled
    raise BrowserNotFound(NOT_FOUND)


class Chromium:
    """The Chromium of this process and thread, launched through Playwright on first use and
    relaunched if it died. One per thread because Playwright's sync API only answers the thread
    that started it (the env server runs browser envs on a thread of their own)."""

    _lock = threading.Lock()
    _instances: ClassVar[dict[tuple[int, int], Chromium]] = {}  # keyed by (process id, thread id)

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self.pid = os.getpid()
        self.key = (self.pid, threading.get_ident())
        self.executable = find_chromium()
        self.playwright = sync_playwright().start()
        self.browser = self._launch()
        self.contexts = 0

    def _launch(self) -> Any:
        return self.playwright.chromium.launch(executable_path=self.executable, args=FLAGS, headless=True)

    @classmethod
    def get(cls) -> Chromium:
        key = (os.getpid(), threading.get_ident())
        with cls._lock:
            if key not in cls._instances:
                cls._instances[key] = cls()
            return cls._instances[key]

    def new_context(self, viewport: tuple[int, int]) -> Any:
        """A fresh context and page of `viewport` (width, height); relaunches a dead browser."""
        if not self.browser.is_connected():
            self.relaunch()
        context = self.browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                           device_scale_factor=1, reduced_motion="reduce")
        self.contexts += 1
        return context

    def relaunch(self) -> None:
        with contextlib.suppress(Exception):  # it is dead already; closing only tidies up
            self.browser.close()
        self.browser = self._launch()

    def release(self, context: Any) -> None:
        """Close a context; with the last one gone, close Chromium too (no process left behind)."""
        with contextlib.suppress(Exception):  # its browser may have died
            context.close()
        self.contexts -= 1
        if self.contexts <= 0:
            self.shutdown()

    def shutdown(self) -> None:
        with Chromium._lock:
            if Chromium._instances.get(self.key) is self:
                del Chromium._instances[self.key]
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self.playwright.stop()


@atexit.register
def _close_chromium() -> None:
    # Only this thread's: another thread's Playwright cannot be called from here, and its driver,
    # with the Chromium it launched, ends when this process closes the driver's pipe.
    instance = Chromium._instances.get((os.getpid(), threading.get_ident()))
    if instance is not None:
        instance.shutdown()


class Site:
    """A store web site of this process: a uvicorn server for one catalog on a free port of
    127.0.0.1, in a daemon thread; one per catalog file."""

    _lock = threading.Lock()
    _instances: ClassVar[dict[tuple[int, str], Site]] = {}  # keyed by (process id, catalog file)

    def __init__(self, catalog: Catalog) -> None:
        import uvicorn

        from turngym.envs.webshop.server import create_app

        app = create_app(catalog)
        self.sessions = app.state.sessions
        # Port 0: the OS picks a free one. (Handing uvicorn a socket bound here instead costs each
        # request ~40 ms: its connections then miss TCP_NODELAY and meet delayed ACKs.)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="off", access_log=False))
        thread = threading.Thread(target=self.server.run, daemon=True, name="turngym-webshop-site")
        thread.start()
        while not self.server.started:
            if not thread.is_alive():
                raise RuntimeError("the WebShop site did not start on 127.0.0.1")
            threading.Event().wait(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def get(cls, catalog: Catalog) -> Site:
        key = (os.getpid(), str(catalog.path))
        with cls._lock:
            if key not in cls._instances:
                cls._instances[key] = cls(catalog)
            return cls._instances[key]
