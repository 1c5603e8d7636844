"""Cover image fetching: one shared aiohttp session, SSRF-guarded, size-capped, retried.

The guard lives in the resolver: every host name is resolved here, every address it resolves
to is checked, and aiohttp connects to exactly the addresses that passed (it is given no
other). Literal IP hosts never reach a resolver in aiohttp, so they are checked before each
request. Redirects are followed by hand, each target checked again.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from streams import metrics
from streams.addresses import is_numeric_host, parse_literal, refusal
from streams.errors import FetchError
from streams.settings import EmbedderSettings

log = logging.getLogger(__name__)

_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class FetchedImage:
    """Bytes of a cover image and their sha256 (hex)."""

    url: str
    data: bytes
    sha256: str


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and refuses hosts with any forbidden address."""

    def __init__(self, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(f"cannot resolve {host!r}: {exc}", reason="unresolvable_host") from exc
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = refusal(address, allow_loopback=self._allow_loopback)
            if why is not None:
                # One bad address poisons the name: a round-robin answer must not let the
                # connector fall through to it on retry.
                raise FetchError(
                    f"{host!r} resolves to {why} ({address})", reason="forbidden_address"
                )
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise FetchError(f"{host!r} has no addresses", reason="unresolvable_host")
        return results

    async def close(self) -> None:
        return None


def check_url(url: str, *, allow_loopback: bool) -> str:
    """Scheme and literal-address checks of one URL (pure); returns its host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise FetchError(f"malformed URL: {exc}", reason="bad_url") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"scheme {parts.scheme!r} is not http(s)", reason="bad_url")
    if not host:
        raise FetchError("URL has no host", reason="bad_url")
    if parts.username or parts.password:
        raise FetchError("URLs with credentials are not fetched", reason="bad_url")
    literal = parse_literal(host)
    if literal is not None:
        why = refusal(literal, allow_loopback=allow_loopback)
        if why is not None:
            raise FetchError(f"{host} is {why}", reason="forbidden_address")
    elif is_numeric_host(host):
        # Shorthand, decimal, octal or hex IPv4 forms: resolvers disagree on what they name
        # and the HTTP client refuses them, so they are malformed, not a transient failure.
        raise FetchError(f"{host} is not a canonical IPv4 address", reason="bad_url")
    return host


class ImageFetcher:
    """Fetches cover images for the embedder; create inside a running event loop."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self._settings = settings
        self._allow_loopback = settings.allow_loopback_images
        self._limit = asyncio.Semaphore(settings.fetch_concurrency)
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(settings.allow_loopback_images),
            limit=settings.fetch_concurrency,
            limit_per_host=settings.fetch_per_host,
            ttl_dns_cache=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=settings.fetch_total_timeout_s,
                connect=settings.fetch_connect_timeout_s,
            ),
            headers={"User-Agent": "vitrine-embedder/0.1", "Accept": "image/*"},
            trust_env=False,  # no proxies from the environment: the guard must see the target
            auto_decompress=False,
        )

    async def close(self) -> None:
        """Close the shared session."""
        await self._session.close()

    async def fetch(self, url: str) -> FetchedImage:
        """The image at ``url``; transient failures are retried with backoff."""
        attempts = self._settings.fetch_attempts
        delay = self._settings.fetch_backoff_s
        for attempt in range(1, attempts + 1):
            try:
                async with self._limit:
                    data = await self._fetch_once(url)
            except FetchError as exc:
                metrics.IMAGE_FETCHES.labels(result=exc.reason).inc()
                if not exc.transient or attempt == attempts:
                    raise
                log.debug("fetch of an image failed (%s), retry %d", exc.reason, attempt)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            metrics.IMAGE_FETCHES.labels(result="ok").inc()
            metrics.IMAGE_BYTES.observe(len(data))
            return FetchedImage(url, data, hashlib.sha256(data).hexdigest())
        raise AssertionError("unreachable")

    async def _fetch_once(self, url: str) -> bytes:
        current = url
        for _ in range(self._settings.fetch_max_redirects + 1):
            check_url(current, allow_loopback=self._allow_loopback)
            try:
                async with self._session.get(current, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError("redirect without Location", reason="http_error")
                        current = urljoin(current, location)
                        continue
                    self._check_status(response.status)
                    return await self._read_capped(response)
            except FetchError:
                raise
            except TimeoutError as exc:
                raise FetchError(
                    "image request timed out", reason="timeout", transient=True
                ) from exc
            except aiohttp.ClientConnectorError as exc:
                inner = exc.__cause__ or exc.__context__
                if isinstance(inner, FetchError):
                    raise inner from exc
                raise FetchError(
                    f"cannot connect: {exc.os_error}", reason="connection_failed", transient=True
                ) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise FetchError(
                    f"connection failed: {exc!r}", reason="connection_failed", transient=True
                ) from exc
        raise FetchError(
            f"more than {self._settings.fetch_max_redirects} redirects",
            reason="too_many_redirects",
        )

    @staticmethod
    def _check_status(status: int) -> None:
        if status == 200:
            return
        if status in (404, 410):
            raise FetchError(f"HTTP {status}", reason="not_found")
        if status in (408, 429) or status >= 500:
            raise FetchError(f"HTTP {status}", reason="server_error", transient=True)
        raise FetchError(f"HTTP {status}", reason="http_error")

    async def _read_capped(self, response: Any) -> bytes:
        cap = self._settings.fetch_max_bytes
        if response.content_length is not None and response.content_length > cap:
            raise FetchError(
                f"Content-Length {response.content_length} is over {cap} bytes",
                reason="too_large",
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > cap:
                raise FetchError(f"body is over {cap} bytes", reason="too_large")
            chunks.append(chunk)
        return b"".join(chunks)
