"""Headless Chromium driven over the DevTools protocol: just enough to test the explorer.

The protocol is JSON over a websocket (aiohttp's client); no browser download, no driver
binary: the Debian ``chromium`` package is the browser.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp


class BrowserError(AssertionError):
    """The browser said no, or a condition did not become true in time."""


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        self._profile = tempfile.TemporaryDirectory(prefix="vitrine-chromium-")
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console_errors: list[str] = []

    async def start(self) -> Browser:
        """Launch Chromium and attach to its first page."""
        profile = Path(self._profile.name)
        self._process = subprocess.Popen(
            [
                self._binary,
                "--headless=new",
                "--no-sandbox",  # tests run as root in CI containers
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise BrowserError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(BrowserError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console_errors.append(str(data["params"]["exceptionDetails"]))

    async def send(self, method: str, **params: Any) -> Any:
        """One DevTools command; its result."""
        assert self._ws is not None
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        return await asyncio.wait_for(future, 60)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the document to load."""
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        """Put files into an ``<input type=file>`` (what a user's file picker does)."""
        document = await self.send("DOM.getDocument")
        node = await self.send(
            "DOM.querySelector", nodeId=document["root"]["nodeId"], selector=selector
        )
        await self.send(
            "DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(p) for p in paths]
        )

    async def screenshot(self, path: Path) -> None:
        """A PNG of the viewport."""
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        """Close the page, the browser and its profile."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._profile.cleanup()
