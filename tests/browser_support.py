"""Headless Chromium driven over the DevTools protocol, for the tests of the HTML pages (report.html, compare.html).

A real browser loads the page from the file system, runs its scripts and lays it out; the tests read the rendered
DOM with JavaScript, change filters the way a user does (set a control's value, dispatch its change event, click a
button) and fail on any script error, console error or failed resource load the page produced.

Chromium comes from the system's packages (`apt-get install chromium`; `.ci/run` installs it when missing): the
executable is `$CHROMIUM`, else the first of chromium / chromium-browser / google-chrome on PATH. The protocol is
spoken over one WebSocket (the `websockets` package, synchronous client) with a flat session on one page target.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from websockets.sync.client import connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    exe = os.environ.get("CHROMIUM") or next((shutil.which(c) for c in CANDIDATES if shutil.which(c)), None)
    if not exe:
        raise RuntimeError("no Chromium found (set $CHROMIUM or install it: apt-get install -y chromium; "
                           ".ci/run does this)")
    return exe


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium process with one page; use as a context manager."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.log = open(Path(self.profile) / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.ws = connect(self._browser_url(), max_size=None, open_timeout=timeout).__enter__()
            self._ids = itertools.count(1)
            self.events: list[dict] = []
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable", session=True)
        except BaseException:
            self.close()
            raise

    def _browser_url(self) -> str:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: "
                                   f"{(Path(self.profile) / 'chromium.log').read_text(errors='replace')[-2000:]}")
            if port_file.is_file():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {self.timeout:.0f} s")

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one command and wait for its answer (events arriving meanwhile are kept in :attr:`events`)."""
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    # --- the page ------------------------------------------------------------------------------------------------

    def open(self, path: Path, fragment: str = "") -> None:
        """Load a local file (optionally with ``#fragment``) afresh and wait for its load event."""
        url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
        # by way of a blank page: a URL differing from the current one only in its fragment would not load again
        for target in ("about:blank", url):
            self.events.clear()
            self.call("Page.navigate", {"url": target}, session=True)
            deadline = time.monotonic() + self.timeout
            while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
                if time.monotonic() > deadline:
                    raise BrowserError(f"{target} did not finish loading")
                self._pump(0.1)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited); a thrown error fails."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:120]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str = ""):
        """Poll until the expression is truthy; return its value."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what or expression}; page errors: {self.errors()}")
            self._pump(0.05)

    def errors(self) -> list[str]:
        """Script exceptions, console errors/assertions and failed loads the page has produced so far."""
        self._pump(0.05)
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                   for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
