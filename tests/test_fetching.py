"""Safe fetching: the SSRF guard for every address class, limits, and faults of a fake host."""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path

import pytest

from restyle import FetchError, FetchLimits
from restyle._input.fetching import Fetcher, address_refusal
from restyle.testing import FakeServer, Reply, image_bytes
from tests.conftest import wait_until

JPEG = image_bytes()
LOCAL = ["127.0.0.1/32"]

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "not globally routable"),
    ("198.18.0.1", "not globally routable"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "ULA"),
    ("fd12:3456::1", "ULA"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback, inside an IPv6"),
    ("::ffff:169.254.169.254", "link-local, inside an IPv6"),
    ("::ffff:10.0.0.1", "private, inside an IPv6"),
    ("::127.0.0.1", "loopback, inside an IPv6"),
    ("2002:7f00:1::1", "loopback, inside an IPv6"),
    ("2002:a9fe:a9fe::1", "link-local, inside an IPv6"),
    ("64:ff9b::7f00:1", "loopback, inside an IPv6"),
    ("64:ff9b::a9fe:a9fe", "link-local, inside an IPv6"),
    ("64:ff9b::c0a8:101", "private, inside an IPv6"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback, inside an IPv6"),  # Teredo
    ("2001:db8::1", "not globally routable"),
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8",
           "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    found = address_refusal(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_a_name_resolving_to_an_internal_address_is_never_contacted(
    address: str, reason: str
) -> None:
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return [address]

    with pytest.raises(FetchError, match="refusing") as info:
        Fetcher(resolver=resolver).fetch("http://images.example/a.jpg")
    assert all(part in str(info.value) for part in reason.split(", "))
    assert calls == [("images.example", 80)]


def test_one_internal_answer_among_public_ones_refuses_the_host() -> None:
    fetcher = Fetcher(resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(FetchError, match="private"):
        fetcher.fetch("https://images.example/a.jpg")


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]/a.jpg",
    "http://[fd00::1]/a.jpg",
    "http://0.0.0.0/a.jpg",
])
def test_address_literals_are_checked_without_dns(url: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("literal addresses need no resolver")

    with pytest.raises(FetchError, match="refusing"):
        Fetcher(resolver=resolver).fetch(url)


@pytest.mark.parametrize(("url", "message"), [
    ("http://[2001:db8::1]/x.jpg?sig=abc",
     "refusing to fetch http://[2001:db8::1]/x.jpg: 2001:db8::1 is a not globally routable "
     "address"),
    ("https://[::ffff:127.0.0.1]:8443/x.jpg",
     "refusing to fetch https://[::ffff:127.0.0.1]:8443/x.jpg: ::ffff:127.0.0.1 is a loopback "
     "address, inside an IPv6 address"),
    ("http://0.0.0.0/a.jpg", "refusing to fetch http://0.0.0.0/a.jpg: 0.0.0.0 is an unspecified "
                             "('this network') address"),
    ("http://[::]/a.jpg", "refusing to fetch http://[::]/a.jpg: :: is an unspecified address"),
])
def test_refusals_name_the_url_and_the_kind_of_address(url: str, message: str) -> None:
    with pytest.raises(FetchError) as info:
        Fetcher().fetch(url)
    assert str(info.value) == message


def test_a_name_resolving_to_an_unspecified_address_says_so() -> None:
    fetcher = Fetcher(resolver=lambda host, port: ["::"])
    with pytest.raises(FetchError) as info:
        fetcher.fetch("http://images.example/a.jpg")
    assert str(info.value) == ("refusing to fetch http://images.example/a.jpg: images.example "
                               "resolves to an unspecified address")


def test_an_ipv6_url_keeps_its_brackets_in_every_error(server: FakeServer) -> None:
    fetcher = Fetcher(trusted_networks=["::1/128"])
    with pytest.raises(FetchError) as info:
        fetcher.fetch(f"http://[::1]:{server.port}/missing.jpg?token=s3cr3t")
    assert str(info.value).startswith(f"http://[::1]:{server.port}/missing.jpg ")
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://images.example/a.jpg", "gopher://images.example/",
    "http://images.example:8080/a.jpg", "https://images.example:22/a.jpg", "http:///a.jpg",
    "http://images.example:99999/a.jpg",
])
def test_other_schemes_and_ports_are_refused(url: str) -> None:
    fetcher = Fetcher(resolver=lambda host, port: ["93.184.216.34"])
    with pytest.raises(FetchError, match="refusing"):
        fetcher.fetch(url)


def test_allow_list_limits_hosts_and_keeps_the_address_checks() -> None:
    fetcher = Fetcher(allowed_hosts=["images.example"],
                      resolver=lambda host, port: ["10.0.0.1"])
    with pytest.raises(FetchError, match="allow-list"):
        fetcher.fetch("https://evil.example/a.jpg")
    with pytest.raises(FetchError, match="allow-list"):
        fetcher.fetch("https://notimages.example/a.jpg")
    with pytest.raises(FetchError, match="private"):
        fetcher.fetch("https://cdn.images.example/a.jpg")


# -- against a fake server -----------------------------------------------------


@pytest.fixture
def server():
    with FakeServer(routes={"/a.jpg": Reply(body=JPEG)}) as srv:
        yield srv


def local_fetcher(**limits: float) -> Fetcher:
    return Fetcher(FetchLimits(**limits), trusted_networks=LOCAL)  # type: ignore[arg-type]


def test_fetches_an_image(server: FakeServer) -> None:
    assert local_fetcher().fetch(server.url("/a.jpg")) == JPEG


def test_the_guard_is_on_unless_a_network_is_trusted_in_code(server: FakeServer) -> None:
    with pytest.raises(FetchError, match="loopback"):
        Fetcher().fetch(server.url("/a.jpg"))
    assert server.paths() == []


def test_connects_to_the_checked_address_with_the_hosts_name(server: FakeServer) -> None:
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])
    calls = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    fetcher = Fetcher(resolver=resolver, trusted_networks=LOCAL)
    assert fetcher.fetch(f"http://images.example:{server.port}/a.jpg") == JPEG
    assert calls == ["images.example"]  # resolved once: no second lookup to race
    assert server.requests[0].headers["host"] == f"images.example:{server.port}"


def test_proxy_variables_cannot_route_around_the_guard(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "")
    assert local_fetcher().fetch(server.url("/a.jpg")) == JPEG
    with pytest.raises(FetchError, match="loopback"):
        Fetcher().fetch(server.url("/a.jpg"))


def test_each_redirect_hop_is_checked(server: FakeServer) -> None:
    server.routes["/meta"] = Reply(location="http://169.254.169.254/latest/meta-data/")
    server.routes["/v6"] = Reply(location="http://[::ffff:10.0.0.1]/x.jpg", status=301)
    server.routes["/file"] = Reply(location="file:///etc/passwd")
    fetcher = local_fetcher()
    with pytest.raises(FetchError, match="link-local"):
        fetcher.fetch(server.url("/meta"))
    with pytest.raises(FetchError, match="private"):
        fetcher.fetch(server.url("/v6"))
    with pytest.raises(FetchError, match="only http"):
        fetcher.fetch(server.url("/file"))


def test_at_most_three_redirects(server: FakeServer) -> None:
    for i in range(1, 4):
        server.routes[f"/r{i}"] = Reply(location=f"/r{i + 1}" if i < 3 else "/a.jpg")
    for i in range(1, 5):
        server.routes[f"/s{i}"] = Reply(location=f"/s{i + 1}" if i < 4 else "/a.jpg")
    server.routes["/loop"] = Reply(location="/loop")
    fetcher = local_fetcher()
    assert fetcher.fetch(server.url("/r1")) == JPEG
    with pytest.raises(FetchError, match="redirected more than 3"):
        fetcher.fetch(server.url("/s1"))
    with pytest.raises(FetchError, match="redirected more than 3"):
        fetcher.fetch(server.url("/loop"))
    assert server.paths().count("/loop") == 4


@pytest.mark.parametrize(("route", "message"), [
    (Reply(body=b"<html>hi</html>", content_type="text/html"), "not an image"),
    (Reply(body=b"<html>hi</html>", content_type="image/jpeg"), "not a JPEG, PNG or WebP"),
    (Reply(body=b"nope", status=404, content_type="image/jpeg"), "HTTP 404"),
    (Reply(body=b"oops", status=503), "HTTP 503"),
    (Reply(reset=True), "failed"),
    (Reply(body=JPEG, content_length=len(JPEG) + 500), "failed"),
    (Reply(body=JPEG * 3, content_length=4 * 1024 * 1024), "larger than"),
    (Reply(body=JPEG * 40, content_length=-1), "larger than"),
    (Reply(location=""), "without a Location"),
])
def test_faults_become_fetch_errors(server: FakeServer, route: Reply, message: str) -> None:
    server.routes["/x.jpg"] = route
    fetcher = local_fetcher(max_bytes=len(JPEG) * 10)
    with pytest.raises(FetchError, match=message):
        fetcher.fetch(server.url("/x.jpg"))


def test_a_short_lie_about_length_gives_at_most_what_was_declared(
    server: FakeServer
) -> None:
    server.routes["/x.jpg"] = Reply(body=JPEG, content_length=100)
    assert local_fetcher().fetch(server.url("/x.jpg")) == JPEG[:100]


def test_a_hanging_server_hits_the_deadline(server: FakeServer) -> None:
    server.routes["/hang.jpg"] = Reply(hang=True)
    with pytest.raises(FetchError, match=r"timed out|took longer"):
        local_fetcher(timeout=0.3).fetch(server.url("/hang.jpg"))


def test_dripping_bytes_cannot_stretch_the_total_deadline(server: FakeServer) -> None:
    # Each byte arrives well within a read timeout; only a total deadline stops it.
    server.routes["/drip.jpg"] = Reply(body=JPEG, drip=0.02)
    with pytest.raises(FetchError, match=r"took longer|timed out"):
        local_fetcher(timeout=0.4).fetch(server.url("/drip.jpg"))


def test_a_batch_ends_at_its_deadline_and_keeps_every_result(server: FakeServer) -> None:
    server.routes["/hang.jpg"] = Reply(hang=True)
    server.routes["/drip.jpg"] = Reply(body=JPEG, drip=0.05)
    fetcher = local_fetcher(timeout=20, batch_timeout=0.4)
    urls = [server.url("/a.jpg"), server.url("/hang.jpg"), server.url("/drip.jpg"),
            server.url("/a.jpg")]
    results = fetcher.fetch_many(urls)
    assert list(results) == urls[:3]
    assert results[urls[0]] == JPEG
    assert isinstance(results[urls[1]], FetchError)
    assert isinstance(results[urls[2]], FetchError)


def test_per_host_limit_bounds_concurrent_connections() -> None:
    before = threading.active_count()
    routes = {f"/{i}.jpg": Reply(body=JPEG, delay=0.15) for i in range(8)}
    with FakeServer(routes=routes) as srv:
        fetcher = Fetcher(FetchLimits(per_host=2, workers=8), trusted_networks=LOCAL)
        results = fetcher.fetch_many([srv.url(p) for p in routes])
        assert not [t for t in threading.enumerate() if t.name == "restyle-fetch"]
        assert all(r == JPEG for r in results.values())
        assert srv.max_active == 2
    # No worker or handler thread outlives its call; the fetch watchdog ends on
    # its own once nothing is watched.
    assert wait_until(lambda: threading.active_count() == before, timeout=2)


def test_secrets_in_urls_never_appear_in_errors(server: FakeServer) -> None:
    url = f"http://127.0.0.1:{server.port}/missing.jpg?token=s3cr3t&sig=abc"
    with pytest.raises(FetchError) as info:
        local_fetcher().fetch(url)
    text = str(info.value) + repr(info.value)
    assert "HTTP 404" in text
    assert "s3cr3t" not in text and "sig=" not in text
    with pytest.raises(FetchError) as info:
        Fetcher().fetch("http://user:hunter2@10.0.0.1/a.jpg?token=s3cr3t")
    assert "hunter2" not in str(info.value) and "s3cr3t" not in str(info.value)


class CountingListener:
    """A TCP socket on 127.0.0.1 that counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.mark.parametrize("userinfo", ["user:hunter2@", "user@", ":hunter2@", "@"])
def test_a_url_with_credentials_is_refused_before_connecting(userinfo: str) -> None:
    listener = CountingListener()
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    try:
        fetcher = Fetcher(trusted_networks=LOCAL, resolver=resolver)
        for url in (f"http://{userinfo}127.0.0.1:{listener.port}/a.jpg",
                    f"http://{userinfo}images.example:{listener.port}/a.jpg"):
            with pytest.raises(FetchError) as info:
                fetcher.fetch(url)
            assert str(info.value).endswith(
                ": a URL with credentials (user:password@) is not allowed")
            assert "hunter2" not in str(info.value) + repr(info.value)
            result = fetcher.fetch_many([url])[url]
            assert isinstance(result, FetchError) and "credentials" in str(result)
    finally:
        listener.close()
    assert listener.connections == 0 and resolved == []


def test_a_redirect_to_a_url_with_credentials_is_refused(server: FakeServer) -> None:
    server.routes["/login"] = Reply(status=302, headers={
        "Location": f"http://user:hunter2@127.0.0.1:{server.port}/a.jpg"})
    with pytest.raises(FetchError, match="credentials") as info:
        local_fetcher().fetch(server.url("/login"))
    assert "hunter2" not in str(info.value)
    assert server.paths() == ["/login"]


def test_https_is_pinned_to_the_checked_address_with_the_hosts_certificate(
    certificate: tuple[str, str]
) -> None:
    cert, key = certificate
    with FakeServer(routes={"/a.jpg": Reply(body=JPEG)}, tls=(cert, key)) as srv:
        fetcher = Fetcher(resolver=lambda host, port: ["127.0.0.1"], trusted_networks=LOCAL,
                          ca_certs=cert)
        assert fetcher.fetch(f"https://images.example:{srv.port}/a.jpg") == JPEG
        # The certificate is checked against the name, not the pinned address.
        with pytest.raises(FetchError, match="failed"):
            fetcher.fetch(f"https://other.example:{srv.port}/a.jpg")
    assert Path(cert).is_file()


def test_resolver_failures_are_fetch_errors() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise OSError("no network")

    results = Fetcher(resolver=broken).fetch_many(["https://images.example/a.jpg"])
    assert isinstance(results["https://images.example/a.jpg"], FetchError)
    with pytest.raises(FetchError, match="cannot resolve"):
        Fetcher(resolver=lambda host, port: []).fetch("https://images.example/a.jpg")
