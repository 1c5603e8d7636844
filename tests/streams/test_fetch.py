"""The image fetcher against a loopback server: caps, redirects, retries, resolver guard."""

from __future__ import annotations

import asyncio
import socket

import pytest

from streams.errors import FetchError
from streams.fetch import GuardedResolver, ImageFetcher
from streams.settings import EmbedderSettings
from tests.streams.harness import ImageServer, png
from vitrine.settings import load


def settings(**overrides: object) -> EmbedderSettings:
    base: dict[str, object] = dict(
        allow_loopback_images=True, fetch_max_bytes=4096, fetch_backoff_s=0.01
    )
    base.update(overrides)
    return load(EmbedderSettings, **base)


async def fetch(s: EmbedderSettings, url: str) -> bytes:
    fetcher = ImageFetcher(s)
    try:
        return (await fetcher.fetch(url)).data
    finally:
        await fetcher.close()


def reason_of(s: EmbedderSettings, url: str) -> str:
    with pytest.raises(FetchError) as info:
        asyncio.run(fetch(s, url))
    return info.value.reason


def test_fetches_and_hashes(image_server: ImageServer) -> None:
    image_server.images["/ok.png"] = png((1, 2, 3))
    assert asyncio.run(fetch(settings(), image_server.url("/ok.png"))) == png((1, 2, 3))


def test_permanent_failures(image_server: ImageServer) -> None:
    image_server.images["/big.png"] = b"x" * 5000
    image_server.images["/gone.png"] = (410, b"")
    image_server.images["/denied.png"] = (403, b"")
    assert reason_of(settings(), image_server.url("/nothing.png")) == "not_found"
    assert reason_of(settings(), image_server.url("/gone.png")) == "not_found"
    assert reason_of(settings(), image_server.url("/denied.png")) == "http_error"
    assert reason_of(settings(), image_server.url("/big.png")) == "too_large"


def test_loopback_refused_without_the_setting(image_server: ImageServer) -> None:
    image_server.images["/ok.png"] = png((1, 2, 3))
    s = settings(allow_loopback_images=False)
    assert reason_of(s, image_server.url("/ok.png")) == "forbidden_address"
    assert reason_of(s, f"http://localhost:{image_server.port}/ok.png") == "forbidden_address"


def test_redirects_are_rechecked_and_bounded(image_server: ImageServer) -> None:
    image_server.images["/ok.png"] = png((4, 5, 6))
    image_server.images["/r1"] = (302, b"", {"Location": "/ok.png"})
    image_server.images["/evil"] = (302, b"", {"Location": "http://10.9.9.9/x.png"})
    image_server.images["/loop"] = (302, b"", {"Location": "/loop"})
    assert asyncio.run(fetch(settings(), image_server.url("/r1"))) == png((4, 5, 6))
    assert reason_of(settings(), image_server.url("/evil")) == "forbidden_address"
    assert reason_of(settings(), image_server.url("/loop")) == "too_many_redirects"


def test_transient_errors_are_retried(image_server: ImageServer) -> None:
    image_server.images["/flaky.png"] = (503, b"")
    before = image_server.hits
    assert reason_of(settings(fetch_attempts=3), image_server.url("/flaky.png")) == "server_error"
    assert image_server.hits - before == 3


def test_resolver_refuses_names_of_internal_addresses() -> None:
    async def resolve(host: str) -> None:
        await GuardedResolver(allow_loopback=False).resolve(host, 80, socket.AF_INET)

    with pytest.raises(FetchError) as info:
        asyncio.run(resolve("localhost"))
    assert info.value.reason == "forbidden_address"


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "10.1", "1.2.3.4."]
)
def test_non_canonical_ipv4_hosts_are_bad_urls_at_once(host: str) -> None:
    # One attempt allowed per transient failure would still retry; bad_url must not.
    s = settings(fetch_attempts=4, fetch_backoff_s=5.0)
    assert reason_of(s, f"http://{host}:9/a.png") == "bad_url"
