"""restyle.testing.FakeServer: what it answers, what it records, and every fault as a
real client sees it."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3
from PIL import Image

from restyle.testing import FakeServer, Reply, Request, image_bytes
from tests.conftest import wait_until

JPEG = image_bytes()


@pytest.fixture
def no_new_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert [t for t in threading.enumerate() if t not in before] == []


def get(url: str, **options: object) -> urllib3.BaseHTTPResponse:
    options.setdefault("retries", False)
    options.setdefault("timeout", 5.0)
    return urllib3.request("GET", url, **options)  # type: ignore[arg-type]


# -- what it answers ------------------------------------------------------------


def test_routes_ignore_the_query_and_answer_404_elsewhere(restyle_server: FakeServer) -> None:
    restyle_server.routes["/a.jpg"] = Reply(body=JPEG)
    answer = get(restyle_server.url("/a.jpg?size=large"))
    assert (answer.status, answer.data) == (200, JPEG)
    assert answer.headers["Content-Type"] == "image/jpeg"
    assert get(restyle_server.url("/b.jpg")).status == 404
    restyle_server.routes["/b.jpg"] = Reply(status=503, body="busy")  # routes stay mutable
    assert get(restyle_server.url("/b.jpg")).data == b"busy"


def test_a_script_is_served_in_order_and_its_last_reply_repeats() -> None:
    with FakeServer(Reply(status=429), Reply(body="one"), Reply(body="two")) as server:
        assert [get(server.url()).status for _ in range(2)] == [429, 200]
        assert [get(server.url()).data for _ in range(3)] == [b"two"] * 3
        server.script(Reply(body="three"))
        assert get(server.url("/anywhere")).data == b"three"
        server.routes["/r"] = Reply(body="routed")
        server.script()  # back to the routes
        assert get(server.url("/r")).data == b"routed"
        assert get(server.url("/anywhere")).status == 404


def test_a_responder_chooses_each_reply() -> None:
    def echo(request: Request) -> Reply:
        if request.route == "/boom":
            raise KeyError("no such item")
        if request.route == "/dict":
            return {"status": 200}  # type: ignore[return-value]
        return Reply(body={"method": request.method, "q": request.query.get("q")})

    with FakeServer(responder=echo) as server:
        assert requests.get(server.url("/search?q=jacket"), timeout=5).json() == {
            "method": "GET", "q": "jacket"}
        failed = requests.get(server.url("/boom"), timeout=5)
        assert failed.status_code == 500 and "KeyError" in failed.text
        wrong = requests.get(server.url("/dict"), timeout=5)
        assert wrong.status_code == 500 and "returned dict, not a Reply" in wrong.text
        server.script(Reply(body="scripted"))  # a script replaces the responder
        assert requests.get(server.url("/search"), timeout=5).text == "scripted"


def test_several_answer_sources_are_refused() -> None:
    with pytest.raises(TypeError, match="not several"):
        FakeServer(Reply(), routes={})


def test_every_request_is_recorded(restyle_server: FakeServer) -> None:
    restyle_server.script(Reply(status=201))
    requests.post(restyle_server.url("/items?tag=a&tag=b&empty="), json={"title": "jacket"},
                  headers={"X-Api-Key": "k"}, timeout=5)
    requests.get(restyle_server.url("/items/1"), timeout=5)
    first, second = restyle_server.requests
    assert (first.method, first.path, first.route) == ("POST", "/items?tag=a&tag=b&empty=",
                                                       "/items")
    assert first.query == {"tag": "b", "empty": ""}
    assert first.headers["x-api-key"] == "k" and "X-Api-Key" not in first.headers
    assert first.json() == {"title": "jacket"}
    assert (second.method, second.body) == ("GET", b"")
    assert restyle_server.paths() == ["/items?tag=a&tag=b&empty=", "/items/1"]


@pytest.mark.parametrize(("reply", "content_type", "data"), [
    (Reply(body={"items": [1, 2]}), "application/json", b'{"items": [1, 2]}'),
    (Reply(body=[1]), "application/json", b"[1]"),
    (Reply(body="caf\u00e9"), "text/plain; charset=utf-8", "caf\u00e9".encode()),
    (Reply(body=JPEG), "image/jpeg", JPEG),
    (Reply(body=image_bytes(format="PNG")), "image/png", image_bytes(format="PNG")),
    (Reply(body=image_bytes(format="WEBP")), "image/webp", image_bytes(format="WEBP")),
    (Reply(body=b"\x00\x01"), "application/octet-stream", b"\x00\x01"),
    (Reply(body=b"<html>", content_type="image/jpeg"), "image/jpeg", b"<html>"),
    (Reply(body={}, headers={"content-type": "application/problem+json"}),
     "application/problem+json", b"{}"),
])
def test_bodies_are_sent_with_their_content_type(
    restyle_server: FakeServer, reply: Reply, content_type: str, data: bytes
) -> None:
    restyle_server.routes["/x"] = reply
    answer = get(restyle_server.url("/x"))
    assert answer.headers.getlist("Content-Type") == [content_type]
    assert answer.data == data and answer.headers["Content-Length"] == str(len(data))


def test_a_body_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="not int"):
        Reply(body=3)  # type: ignore[arg-type]


def test_image_bytes_are_the_image_asked_for() -> None:
    for kind in ("JPEG", "PNG", "WEBP", "GIF"):
        with Image.open(io.BytesIO(image_bytes((10, 200, 30), (40, 20), kind))) as image:
            assert (image.format, image.size) == (kind, (40, 20))
            assert image.convert("RGB").getpixel((5, 5)) == pytest.approx((10, 200, 30), abs=4)
    assert image_bytes() == image_bytes()


# -- faults, as a real client sees them --------------------------------------------


def test_delay(restyle_server: FakeServer) -> None:
    restyle_server.routes["/slow"] = Reply(body="late", delay=0.3)
    started = time.monotonic()
    assert get(restyle_server.url("/slow")).data == b"late"
    assert time.monotonic() - started >= 0.3
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        get(restyle_server.url("/slow"), timeout=0.1)


def test_a_hang_lasts_until_the_server_stops(no_new_threads: None) -> None:
    server = FakeServer(routes={"/hang": Reply(hang=True)}).start()
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            get(server.url("/hang"), timeout=30)
        except urllib3.exceptions.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and server.active == 1
    started = time.monotonic()
    server.stop()
    thread.join(5)
    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], urllib3.exceptions.ProtocolError)  # dropped unanswered
    assert server.active == 0


def test_reset(restyle_server: FakeServer) -> None:
    restyle_server.routes["/reset"] = Reply(reset=True)
    with pytest.raises(urllib3.exceptions.ProtocolError) as info:
        get(restyle_server.url("/reset"))
    assert isinstance(info.value.args[1], ConnectionResetError)


def test_drip_sends_one_byte_at_a_time(restyle_server: FakeServer) -> None:
    restyle_server.routes["/drip"] = Reply(body=b"0123456789", drip=0.05)
    started = time.monotonic()
    # Each byte comes well within the read timeout, however long the whole takes.
    answer = get(restyle_server.url("/drip"), timeout=0.3)
    assert answer.data == b"0123456789"
    assert time.monotonic() - started >= 0.45


def test_lies_about_the_length(restyle_server: FakeServer) -> None:
    restyle_server.routes["/long"] = Reply(body=JPEG, content_length=len(JPEG) + 100)
    restyle_server.routes["/short"] = Reply(body=JPEG, content_length=100)
    restyle_server.routes["/none"] = Reply(body=JPEG, content_length=-1)
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        get(restyle_server.url("/long"))
    assert get(restyle_server.url("/short")).data == JPEG[:100]
    unsized = get(restyle_server.url("/none"))
    assert "Content-Length" not in unsized.headers and unsized.data == JPEG


def test_redirects(restyle_server: FakeServer) -> None:
    restyle_server.routes["/old"] = Reply(location="/new")
    restyle_server.routes["/moved"] = Reply(location="/new", status=301)
    restyle_server.routes["/new"] = Reply(body="here")
    answer = requests.get(restyle_server.url("/old"), timeout=5)
    assert answer.text == "here" and answer.history[0].status_code == 302
    moved = get(restyle_server.url("/moved"), redirect=False)
    assert (moved.status, moved.headers["Location"]) == (301, "/new")
    assert restyle_server.paths() == ["/old", "/new", "/moved"]


def test_raw_takes_over_the_connection_below_http(restyle_server: FakeServer) -> None:
    def odd_status(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 299 Odd\r\nContent-Length: 2\r\n\r\nok")

    def endless_headers(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nX-Padding: ")
        while not stopping.wait(0.02):
            connection.sendall(b"a")

    restyle_server.routes["/odd"] = Reply(raw=odd_status)
    restyle_server.routes["/endless"] = Reply(raw=endless_headers)
    answer = get(restyle_server.url("/odd"))
    assert (answer.status, answer.data) == (299, b"ok")
    with socket.create_connection(("127.0.0.1", restyle_server.port), timeout=5) as client:
        client.sendall(b"GET /endless HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while len(received) < 40:  # a header that never ends
            received += client.recv(100)
    assert received.startswith(b"HTTP/1.1 200 OK\r\nX-Padding: aaaa")
    assert restyle_server.paths() == ["/odd", "/endless"]


def test_tls(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    with FakeServer(routes={"/a.jpg": Reply(body=JPEG)}, tls=(cert, key)) as server:
        # A client that never starts its handshake holds up no one.
        with socket.create_connection(("127.0.0.1", server.port)):
            assert server.base_url.startswith("https://127.0.0.1:")
            assert requests.get(server.url("/a.jpg"), verify=cert, timeout=5).content == JPEG
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(server.url("/a.jpg"), timeout=5)  # not a certificate anyone trusts


def test_counts_concurrent_requests() -> None:
    with FakeServer(Reply(body="ok", delay=0.3)) as server:
        threads = [threading.Thread(target=get, args=(server.url(f"/{i}"),)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.max_active == 4
        # A client has its answer a moment before the server's thread counts it answered.
        assert wait_until(lambda: server.active == 0, timeout=5)


def test_no_thread_outlives_the_server(no_new_threads: None) -> None:
    routes = {"/hang": Reply(hang=True), "/drip": Reply(body=b"x" * 1000, drip=0.05),
              "/slow": Reply(delay=30), "/ok": Reply(body="ok"),
              "/raw": Reply(raw=lambda connection, stopping: stopping.wait())}
    server = FakeServer(routes=routes).start()
    session = requests.Session()  # keeps its connection open after the answer
    assert session.get(server.url("/ok"), timeout=5).text == "ok"
    failures: list[Exception] = []

    def client(path: str) -> None:
        try:
            requests.get(server.url(path), timeout=60)
        except requests.RequestException as exc:
            failures.append(exc)

    clients = [threading.Thread(target=client, args=(path,))
               for path in ("/hang", "/drip", "/slow", "/raw")]
    for thread in clients:
        thread.start()
    assert wait_until(lambda: server.active == 4)
    idle = socket.create_connection(("127.0.0.1", server.port))  # connected, never asks
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    for thread in clients:
        thread.join(5)
    assert len(failures) == 4  # every unfinished answer was cut
    session.close()
    idle.close()
    server.stop()  # stopping twice is harmless


def test_the_fixture_serves_nothing_until_told(restyle_server: FakeServer) -> None:
    assert restyle_server.requests == []
    assert requests.get(restyle_server.url("/api"), timeout=5).status_code == 404
    assert restyle_server.base_url == f"http://127.0.0.1:{restyle_server.port}"
