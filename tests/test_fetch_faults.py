"""Deadlines hold whatever a server or resolver does: drips, endless bodies, lies, silence."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

import restyle
from restyle import CompFlag, FetchError, FetchLimits, Listing, Money, Reranker
from restyle._input import guard as _guard
from restyle._input import watchdog as _watchdog
from restyle._input.fetching import Fetcher
from restyle.testing import FakeServer, Raw, Reply, image_bytes
from tests.conftest import wait_until
from tests.fakes.components import ColorEncoder

JPEG = image_bytes()
LOCAL = ["127.0.0.1/32"]
DEADLINE = 0.5
# Generous: the guarantee is "by the deadline", the margin only absorbs a loaded machine.
MARGIN = 1.0


# -- answers below HTTP, written to the raw socket --------------------------------


def drip(head: bytes, piece: bytes, every: float = 0.05) -> Raw:
    """Send ``head``, then ``piece`` every ``every`` seconds, forever: each
    piece arrives well within any per-read timeout."""

    def raw(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(head)
        while not stopping.wait(every):
            connection.sendall(piece)

    return raw


def hang_after(head: bytes) -> Raw:
    """Send ``head``, then nothing more."""

    def raw(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(head)
        stopping.wait()

    return raw


def reset_after(head: bytes) -> Raw:
    """Send ``head``, then reset the connection (TCP RST)."""

    def raw(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(head)
        stopping.wait(0.05)
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return raw


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
CHUNKED_HEAD = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
HOSTILE = {
    "/status-line-drip": Reply(raw=drip(b"HTTP/1.1 200 ", b"O")),
    "/header-drip": Reply(raw=drip(OK_HEAD + b"X-Padding: ", b"a")),
    "/chunk-size-drip": Reply(raw=drip(CHUNKED_HEAD, b"0")),
    "/body-drip": Reply(raw=drip(OK_HEAD + b"Content-Length: 100000\r\n\r\n" + JPEG[:100],
                                 b"\0")),
    "/endless-chunked-body": Reply(raw=drip(CHUNKED_HEAD, b"400\r\n" + b"\0" * 1024 + b"\r\n")),
    "/endless-unsized-body": Reply(raw=drip(OK_HEAD + b"Connection: close\r\n\r\n",
                                            b"\0" * 1024)),
    "/long-length-then-hang": Reply(raw=hang_after(OK_HEAD + b"Content-Length: 5000\r\n\r\n"
                                                   + JPEG[:100])),
    "/reset-mid-body": Reply(raw=reset_after(OK_HEAD + b"Content-Length: 5000\r\n\r\n"
                                             + JPEG[:1000])),
    "/never-answers": Reply(hang=True),
}
MESSAGES = {path: "took longer" for path in HOSTILE} | {"/reset-mid-body": "failed"}


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeServer]:
    with FakeServer(routes=HOSTILE) as server:
        yield server


@pytest.fixture
def good() -> Iterator[FakeServer]:
    with FakeServer(routes={"/a.jpg": Reply(body=JPEG), "/b.jpg": Reply(body=JPEG)}) as srv:
        yield srv


@pytest.fixture
def hanging_resolver() -> Iterator[_guard.Resolver]:
    release = threading.Event()

    def resolver(host: str, port: int) -> list[str]:
        release.wait(30)
        return ["127.0.0.1"]

    yield resolver
    release.set()


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if anything is logged at WARNING or above, or escapes a thread."""
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    caplog.set_level(logging.WARNING)
    yield
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert escaped == []


def fetcher(resolver: _guard.Resolver | None = None, **limits: float) -> Fetcher:
    return Fetcher(FetchLimits(**limits), resolver=resolver,  # type: ignore[arg-type]
                   trusted_networks=LOCAL)


def fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("restyle-fetch")]


@pytest.mark.parametrize("path", list(HOSTILE))
def test_a_fetch_ends_at_its_deadline_whatever_the_server_does(
    hostile: FakeServer, path: str
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=MESSAGES[path]):
        fetcher(timeout=DEADLINE).fetch(hostile.url(path))
    assert time.monotonic() - started < DEADLINE + MARGIN


def test_a_tls_handshake_that_never_comes_is_cut_at_the_deadline() -> None:
    # Nothing accepts: the kernel completes the TCP handshake, no one answers the TLS hello.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        started = time.monotonic()
        with pytest.raises(FetchError, match="took longer"):
            fetcher(timeout=DEADLINE).fetch(f"https://127.0.0.1:{listener.getsockname()[1]}/a.jpg")
        assert time.monotonic() - started < DEADLINE + MARGIN


def test_redirect_hops_share_one_deadline(
    hostile: FakeServer, good: FakeServer
) -> None:
    for i in range(1, 4):
        good.routes[f"/r{i}"] = Reply(location=f"/r{i + 1}" if i < 3 else "/a.jpg", delay=0.2)
    good.routes["/to-drip"] = Reply(location=hostile.url("/header-drip"), delay=0.2)
    for path in ("/r1", "/to-drip"):
        started = time.monotonic()
        with pytest.raises(FetchError, match="took longer"):
            fetcher(timeout=DEADLINE).fetch(good.url(path))
        assert time.monotonic() - started < DEADLINE + MARGIN


def test_a_hanging_resolver_is_abandoned_at_the_deadline(
    hanging_resolver: _guard.Resolver,
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="took longer"):
        fetcher(hanging_resolver, timeout=DEADLINE).fetch("http://images.example/a.jpg")
    assert time.monotonic() - started < DEADLINE + MARGIN


def test_when_every_lookup_thread_is_stuck_lookups_fail_at_once(
    hanging_resolver: _guard.Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_guard, "_LOOKUPS", _guard._Lookups(2))
    stuck = fetcher(hanging_resolver, timeout=0.2)
    stuck.fetch_many(["http://one.example/a.jpg", "http://two.example/a.jpg",
                      "http://three.example/a.jpg"])
    assert len([t for t in fetch_threads() if t.name == "restyle-fetch-resolve"]) == 2
    started = time.monotonic()
    with pytest.raises(FetchError, match="resolver busy"):
        fetcher(lambda host, port: ["127.0.0.1"], timeout=5).fetch("http://four.example/")
    assert time.monotonic() - started < 0.5


@pytest.mark.usefixtures("quiet_log")
def test_a_batch_ends_at_its_deadline_with_the_good_results_intact(
    hostile: FakeServer, good: FakeServer, hanging_resolver: _guard.Resolver
) -> None:
    def resolver(host: str, port: int) -> Sequence[str]:
        return hanging_resolver(host, port) if host == "stuck.example" else ["127.0.0.1"]

    bad = [hostile.url(path) for path in HOSTILE]
    bad.append(f"http://stuck.example:{good.port}/a.jpg")
    fine = [good.url("/a.jpg"), f"http://images.example:{good.port}/b.jpg"]
    delivered: list[str] = []
    started = time.monotonic()
    results = fetcher(resolver, timeout=20, batch_timeout=DEADLINE).fetch_many(
        [fine[0], *bad, fine[1]], on_result=lambda url, result: delivered.append(url)
    )
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert [results[url] for url in fine] == [JPEG, JPEG]
    for url in bad:
        assert isinstance(results[url], FetchError), url
    assert set(fine) <= set(delivered)


def test_reranking_ends_at_the_batch_deadline_and_keeps_every_comp(
    hostile: FakeServer, good: FakeServer
) -> None:
    def comp(lid: str, url: str) -> tuple[Listing, str]:
        return Listing(marketplace="m", listing_id=lid, title="a jacket", image_url=url,
                       price=Money(amount=Decimal("10"), currency="USD")), "full"

    found = [comp("good", good.url("/a.jpg"))]
    found += [comp(path, hostile.url(path)) for path in HOSTILE]
    encoder = ColorEncoder()
    reranker = Reranker(fetcher=fetcher(batch_timeout=DEADLINE), cache=None)
    started = time.monotonic()
    photo = encoder.encode_images([Image.open(io.BytesIO(JPEG))])[0]
    comps = reranker.rerank(photo, found, encoder=encoder).comps
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert comps[0].listing.listing_id == "good" and comps[0].similarity is not None
    assert all(CompFlag.IMAGE_UNAVAILABLE in c.flags for c in comps[1:])
    assert len(comps) == len(found)


def test_on_result_is_never_called_after_the_batch_returns(good: FakeServer) -> None:
    good.routes["/slow.jpg"] = Reply(body=JPEG, delay=0.6)
    calls: list[tuple[str, float]] = []

    def on_result(url: str, result: bytes | FetchError) -> None:
        if url.endswith("/a.jpg"):
            time.sleep(0.4)  # still running at the deadline: waited for
        calls.append((url, time.monotonic()))

    urls = [good.url("/a.jpg"), good.url("/slow.jpg")]
    results = fetcher(batch_timeout=0.2).fetch_many(urls, on_result=on_result)
    returned = time.monotonic()
    assert results[urls[0]] == JPEG
    assert isinstance(results[urls[1]], FetchError)
    # Cut by the watchdog or left at the batch deadline, whichever came first.
    assert re.search(r"(not fetched within|took longer than) 0\.(2|1\d*) s", str(results[urls[1]]))
    time.sleep(0.8)
    assert all(at <= returned for _, at in calls)


def test_threads_do_not_pile_up_against_a_hanging_server(hostile: FakeServer) -> None:
    before = len(fetch_threads())
    most = 0
    for i in range(50):
        urls = [hostile.url(f"/never-answers?n={i}"), hostile.url(f"/header-drip?n={i}")]
        results = fetcher(batch_timeout=0.05).fetch_many(urls)
        assert all(isinstance(r, FetchError) for r in results.values())
        most = max(most, len(fetch_threads()))
    assert most <= before + 8
    assert wait_until(lambda: len(fetch_threads()) <= before, timeout=5)


def test_a_stuck_batch_does_not_hold_up_interpreter_exit(hostile: FakeServer) -> None:
    script = textwrap.dedent("""
        import sys, time
        from restyle import FetchLimits
        from restyle._input.fetching import Fetcher

        def resolver(host, port):
            time.sleep(60)
            return []

        fetcher = Fetcher(FetchLimits(batch_timeout=0.5), resolver=resolver,
                          trusted_networks=["127.0.0.1/32"])
        results = fetcher.fetch_many([sys.argv[1], "http://images.example/a.jpg"])
        print(sorted(type(r).__name__ for r in results.values()))
    """)
    src = str(Path(restyle.__file__).parents[1])
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, hostile.url("/never-answers")],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": src})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['FetchError', 'FetchError']"
    assert time.monotonic() - started < 20  # the server hangs and the lookup sleeps 60 s


@pytest.mark.usefixtures("quiet_log")
def test_an_unexpected_error_from_urllib3_costs_one_image(
    good: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(_watchdog.HTTPPool, "urlopen", broken)
    with pytest.raises(FetchError, match="RuntimeError"):
        fetcher().fetch(good.url("/a.jpg"))
    results = fetcher().fetch_many([good.url("/a.jpg")])
    assert "RuntimeError" in str(results[good.url("/a.jpg")])


@pytest.mark.usefixtures("quiet_log")
def test_an_error_in_a_worker_or_in_on_result_costs_one_image(
    good: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def on_result(url: str, result: bytes | FetchError) -> None:
        if url.endswith("/b.jpg"):
            raise ValueError("cannot decode")

    urls = [good.url("/a.jpg"), good.url("/b.jpg")]
    results = fetcher().fetch_many(urls, on_result=on_result)
    assert results[urls[0]] == JPEG
    assert isinstance(results[urls[1]], FetchError)
    assert "ValueError" in str(results[urls[1]])

    original = Fetcher.fetch

    def flaky(self: Fetcher, url: str, *, deadline: float | None = None) -> bytes:
        if url.endswith("/b.jpg"):
            raise KeyError(url)
        return original(self, url, deadline=deadline)

    monkeypatch.setattr(Fetcher, "fetch", flaky)
    results = fetcher().fetch_many(urls)
    assert results[urls[0]] == JPEG
    assert "KeyError" in str(results[urls[1]])


def test_analyze_ends_by_its_deadline_against_every_hostile_server(
    hostile: FakeServer, good: FakeServer
) -> None:
    from restyle import Engine
    from restyle.testing import ListMarketplace, ScriptedExpert

    listings = [Listing(marketplace="m", listing_id="good", title="a jacket",
                        image_url=good.url("/a.jpg"),
                        price=Money(amount=Decimal("10"), currency="USD"))]
    listings += [Listing(marketplace="m", listing_id=path.strip("/"), title="a jacket",
                         image_url=hostile.url(path),
                         price=Money(amount=Decimal("10"), currency="USD"))
                 for path in HOSTILE]
    # Per-image and batch limits far above the deadline: only the deadline can end it.
    engine = Engine(experts=[ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])],
                    marketplaces=[ListMarketplace("m", listings)], encoder=ColorEncoder(),
                    reranker=Reranker(fetcher=fetcher(timeout=600, batch_timeout=600),
                                      cache=None),
                    load_entrypoints=False, deadline=4 * DEADLINE)
    started = time.monotonic()
    analysis = engine.analyze(JPEG)
    assert time.monotonic() - started < 4 * DEADLINE + MARGIN
    by_id = {c.listing.listing_id: c for c in analysis.comps}
    assert by_id["good"].similarity is not None
    assert len(by_id) == len(listings)
    assert all(CompFlag.IMAGE_UNAVAILABLE in c.flags for k, c in by_id.items() if k != "good")
