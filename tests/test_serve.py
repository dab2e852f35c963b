"""restyle serve as a real server: uvicorn in a subprocess on 127.0.0.1, an
offline Engine of fakes (or the tiny model for the command itself), every
route and status, the queue, the deadline, the token, the access log and a
graceful shutdown with a request in flight."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from restyle.serve.settings import ServeSettings
from restyle.testing import sample_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "s3cret-token-of-the-test-0123456789"

#: A server: an Engine of fakes (its encoder slowed by ``delay`` seconds a
#: call) behind create_app, on a socket bound here; the port goes to stdout.
LAUNCHER = r'''
import json, os, socket, sys, time
from decimal import Decimal
from restyle import Engine, Listing, Money, Reranker, Fetcher
from restyle.cli.serve import access_log_to_stderr
from restyle.serve import BatchingEncoder, ServeSettings
from restyle.serve.app import create_app
from restyle.serve.server import run
from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert

config = json.loads(sys.argv[1])

class SlowEncoder(ColorEncoder):
    def encode_images(self, images):
        time.sleep(config["delay"])
        return super().encode_images(images)

    def warm_up(self):
        # Warm once the test says so: the file config["warm_when"] exists.
        while config["warm_when"] and not os.path.exists(config["warm_when"]):
            time.sleep(0.05)

titles = config["titles"]
listings = [Listing(marketplace="shop", listing_id=f"l{i}", title=titles[i % len(titles)],
                    price=Money(amount=Decimal(20 + i), currency="USD"), sold=True,
                    url=f"https://shop.example/l{i}",
                    image_url=config["image_url"] and config["image_url"].format(i=i))
            for i in range(4)]
encoder = SlowEncoder()
if config.get("batch"):
    encoder = BatchingEncoder(encoder, window=0.05)
expert = ScriptedExpert("acme", entities=[("Acme", 0.9, "brand")])
engine = Engine(encoder=encoder, experts=[expert],
                marketplaces=[ListMarketplace("shop", listings)], load_entrypoints=False,
                reranker=Reranker(fetcher=Fetcher(trusted_networks=["127.0.0.0/8"]), cache=None))
settings = ServeSettings(**config["settings"]).check()
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(64)
access_log_to_stderr()
print(sock.getsockname()[1], flush=True)
run(create_app(engine, settings), settings, sockets=[sock])
'''


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access(self) -> list[dict[str, Any]]:
        """The access log's lines so far."""
        return [json.loads(line) for line in self.log if line.startswith('{"event":"request"')]


def jpeg(color: tuple[int, int, int] | None = None) -> bytes:
    image = sample_image()
    if color is not None:
        image.paste(color, (0, 0, 40, 40))
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


def wait_ready(url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        try:
            if requests.get(f"{url}/v1/ready", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.1)
    raise AssertionError("the server never became ready")


def _read_log(served: Served) -> None:
    assert served.process.stderr is not None
    for line in served.process.stderr:
        served.log.append(line.rstrip("\n"))


def start(tmp_path: Path, *, delay: float = 0.0, warm_when: str | None = None,
          batch: bool = False,
          titles: Sequence[str] = ("Acme jacket",), image_url: str | None = None,
          ready: bool = True, **settings: Any) -> Served:
    config = {"delay": delay, "warm_when": warm_when, "batch": batch, "titles": list(titles),
              "image_url": image_url, "settings": settings}
    script = tmp_path / "launch_server.py"
    script.write_text(LAUNCHER)
    process = subprocess.Popen([sys.executable, str(script), json.dumps(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip().isdigit(), line
    served = Served(process, int(line))
    threading.Thread(target=_read_log, args=(served,), daemon=True).start()
    if ready:
        wait_ready(served.url)
    return served


def stop(served: Served) -> int:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
    try:
        return served.process.wait(30)
    finally:
        if served.process.poll() is None:
            served.process.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def make(**kwargs: Any) -> Served:
        started.append(start(tmp_path, **kwargs))
        return started[-1]

    yield make
    for served in started:
        stop(served)


def post(url: str, *photos: bytes, path: str = "/v1/analyze", timeout: float = 30,
         headers: dict[str, str] | None = None, **fields: str) -> requests.Response:
    files = [("image", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    return requests.post(url + path, files=files or None, data=fields or None,
                         headers=headers, timeout=timeout)


def code(response: requests.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


def test_every_route_answers_in_the_public_schema(server: Callable[..., Served]) -> None:
    from restyle.serve.schema import PublicAnalysis

    served = server()
    assert requests.get(served.url + "/v1/health", timeout=5).json() == {"status": "ok"}
    ready = requests.get(served.url + "/v1/ready", timeout=5).json()
    assert ready["status"] == "ready" and ready["concurrency"] == 8
    assert requests.get(served.url + "/v1/plugins", timeout=5).json() == {
        "encoder": {"name": "color", "model_id": "color-histogram-4"}, "experts": ["acme"],
        "synthesizer": "consensus", "marketplaces": ["shop"], "plugin_errors": 0}
    response = post(served.url, jpeg(), jpeg((200, 0, 0)), roles="whole,tag")
    assert response.status_code == 200
    body = PublicAnalysis.model_validate(response.json())
    assert body.identification.brand == "Acme" and body.draft is None
    assert [(p.index, p.role) for p in body.photos] == [(0, "whole"), (1, "tag")]
    assert body.identification.evidence[0].expert == "acme"
    assert body.price.status == "ok" and body.comps[0].url == "https://shop.example/l0"
    drafted = post(served.url, jpeg(), path="/v1/draft", price="quick", condition="used")
    assert drafted.status_code == 200
    draft = PublicAnalysis.model_validate(drafted.json()).draft
    assert draft is not None and "Acme" in draft.title and draft.price_strategy == "quick"
    page = requests.get(served.url + "/", timeout=5)
    assert page.status_code == 200 and 'capture="environment"' in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert requests.get(served.url + "/static/app.js", timeout=5).status_code == 200
    openapi = requests.get(served.url + "/openapi.json", timeout=5).json()
    for route in ("/v1/analyze", "/v1/draft"):
        assert {"200", "400", "401", "413", "422", "429", "503", "504"} <= set(
            openapi["paths"][route]["post"]["responses"])


def test_bad_requests_get_400_413_422_and_404_in_one_shape(
        server: Callable[..., Served]) -> None:
    served = server()
    assert code(post(served.url, b"%PDF-1.7 not a photo")) == "unreadable_image"
    assert post(served.url, b"%PDF").status_code == 400
    assert code(post(served.url, jpeg(), roles="whole,tag")) == "bad_roles"
    assert code(post(served.url, *[jpeg()] * 13)) == "too_many_photos"
    assert code(post(served.url, jpeg(), path="/v1/draft", price="free")) == "bad_draft"
    response = post(served.url)
    assert response.status_code == 422 and code(response) == "invalid_request"
    response = requests.get(served.url + "/v1/analyze", timeout=5)
    assert response.status_code == 405 and code(response) == "method_not_allowed"
    response = requests.get(served.url + "/v1/nothing", timeout=5)
    assert response.status_code == 404 and code(response) == "not_found"
    # Refused from its Content-Length, before any of the 50 MB is sent.
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data;"
                     b" boundary=x\r\nContent-Length: 52428800\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"too_large"' in answer
    big = post(served.url, b"\xff\xd8" + b"\0" * (10 * 1024 * 1024))
    assert big.status_code == 413 and code(big) == "too_large"


def test_a_full_queue_is_429_with_retry_after_and_the_queued_one_is_served(
        server: Callable[..., Served]) -> None:
    served = server(delay=1.5, concurrency=1, queue=1, deadline=20, retry_after=3)
    answers: dict[str, requests.Response] = {}

    def ask(name: str, color: tuple[int, int, int]) -> None:
        answers[name] = post(served.url, jpeg(color))

    first = threading.Thread(target=ask, args=("first", (255, 0, 0)))
    first.start()
    _until(lambda: requests.get(served.url + "/v1/ready", timeout=5).json()["running"] == 1)
    second = threading.Thread(target=ask, args=("second", (0, 255, 0)))
    second.start()
    _until(lambda: requests.get(served.url + "/v1/ready", timeout=5).json()["waiting"] == 1)
    full = post(served.url, jpeg())
    assert full.status_code == 429 and code(full) == "busy"
    assert full.headers["Retry-After"] == "3"
    first.join(30)
    second.join(30)
    assert answers["first"].status_code == 200 and answers["second"].status_code == 200
    ready = requests.get(served.url + "/v1/ready", timeout=5).json()
    assert ready["waiting"] == 0


def test_a_request_that_waits_past_its_deadline_gets_504_by_it(
        server: Callable[..., Served]) -> None:
    served = server(delay=2.0, concurrency=1, queue=4, deadline=20)
    answers: list[requests.Response] = []
    blocker = threading.Thread(target=lambda: answers.append(post(served.url, jpeg((0, 0, 9)))))
    blocker.start()
    _until(lambda: requests.get(served.url + "/v1/ready", timeout=5).json()["running"] == 1)
    started = time.monotonic()
    response = post(served.url, jpeg(), deadline="1")  # the client's own, shorter deadline
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and code(response) == "timeout"
    assert elapsed < 1.0 + 2.0  # its deadline, and slack for a loaded machine
    blocker.join(30)
    assert answers[0].status_code == 200  # the one that held the slot is served whole
    assert code(post(served.url, jpeg(), deadline="0")) == "invalid_request"


def test_not_ready_while_warming_up_then_ready(
        server: Callable[..., Served], tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    served = server(warm_when=str(warm), ready=False)
    _until(lambda: _health(served.url))
    response = requests.get(served.url + "/v1/ready", timeout=5)
    assert response.status_code == 503 and code(response) == "warming_up"
    assert "Retry-After" in response.headers
    refused = post(served.url, jpeg())
    assert refused.status_code == 503 and code(refused) == "warming_up"
    warm.touch()
    wait_ready(served.url)
    assert post(served.url, jpeg()).status_code == 200


def test_the_token_guards_every_route_but_health_and_the_log_keeps_no_secret(
        server: Callable[..., Served]) -> None:
    served = server(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(served.url + "/v1/health", timeout=5).status_code == 200
    for response in (requests.get(served.url + "/v1/plugins", timeout=5),
                     post(served.url, jpeg()),
                     post(served.url, jpeg(), headers={"Authorization": "Bearer wrong"}),
                     post(served.url, jpeg(), headers={"Authorization": TOKEN})):
        assert response.status_code == 401 and code(response) == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(served.url + "/v1/plugins", headers=auth, timeout=5).status_code == 200
    photo = jpeg((1, 2, 3))
    response = requests.post(served.url + f"/v1/analyze?token={TOKEN}", headers=auth,
                             files=[("image", ("secret-name.jpg", photo, "image/jpeg"))],
                             timeout=30)
    assert response.status_code == 200
    def analyzed() -> list[dict[str, Any]]:
        return [line for line in served.access()
                if line["path"] == "/v1/analyze" and line["status"] == 200]

    # A line is written when its connection is done with, so lines may come late
    # and in another order than the requests: wait for the last, then count.
    _until(lambda: bool(analyzed()))
    lines = served.access()
    statuses = sorted((line["method"], line["path"], line["status"]) for line in lines)
    assert statuses.count(("POST", "/v1/analyze", 401)) == 3
    assert ("GET", "/v1/plugins", 200) in statuses and ("GET", "/v1/plugins", 401) in statuses
    (last,) = [line for line in lines if line["path"] == "/v1/analyze" and line["status"] == 200]
    assert last["method"] == "POST"
    assert last["bytes_in"] > len(photo) and last["client"] == "127.0.0.1"
    assert set(last) == {"event", "id", "method", "path", "status", "ms", "bytes_in",
                         "bytes_out", "client"}
    log = "\n".join(served.log)
    assert TOKEN not in log and "secret-name" not in log and "Bearer" not in log
    assert "/9j/" not in log and "JFIF" not in log  # no photo, raw or in base64


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(
        server: Callable[..., Served]) -> None:
    served = server(delay=2.0)
    answers: list[requests.Response] = []
    flight = threading.Thread(target=lambda: answers.append(post(served.url, jpeg())))
    flight.start()
    _until(lambda: requests.get(served.url + "/v1/ready", timeout=5).json()["running"] == 1)
    served.process.send_signal(signal.SIGTERM)
    _until(lambda: not _accepts(served.port), timeout=10)
    with pytest.raises(requests.ConnectionError):
        post(served.url, jpeg(), timeout=5)
    flight.join(30)
    assert answers and answers[0].status_code == 200
    # Ended by itself once the request was answered; uvicorn then re-raises the signal.
    assert served.process.wait(30) in (0, -signal.SIGTERM)
    assert any("shutting down" in line for line in served.log)


def test_the_command_serves_the_tiny_model_and_refuses_an_open_address_without_a_token(
        tiny_model_spec: str, sample_catalog_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from restyle.cli import main

    options = ["--model", tiny_model_spec, "--catalog", str(sample_catalog_dir), "--no-plugins"]
    monkeypatch.delenv("RESTYLE_SERVE_TOKEN", raising=False)
    assert main(["serve", *options, "--host", "0.0.0.0"]) == 2
    assert "without a token" in capsys.readouterr().err
    (tmp_path / "token").write_text("short\n")
    assert main(["serve", *options, "--token-file", str(tmp_path / "token")]) == 2
    assert "at least 16" in capsys.readouterr().err
    command = [sys.executable, "-m", "restyle", "serve", *options]
    environment = {k: v for k, v in os.environ.items() if k != "RESTYLE_SERVE_TOKEN"}
    port = _free_port()
    process = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, env=environment)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=120)
        plugins = requests.get(url + "/v1/plugins", timeout=5).json()
        assert plugins["encoder"]["name"] == "openclip"
        assert plugins["experts"] == ["clip", "catalog"]
        response = post(url, (EXAMPLES / "photo.jpg").read_bytes(), path="/v1/draft")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["comps"] and body["draft"]["title"]
        assert all(c["image_url"] is None for c in body["comps"])  # server files stay there
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) in (0, -signal.SIGTERM)


def test_settings_refuse_an_open_address_without_a_token_unless_told() -> None:
    from restyle import ConfigurationError

    for host in ("0.0.0.0", "192.168.1.20", "::", "example.com"):
        with pytest.raises(ConfigurationError, match="without a token"):
            ServeSettings(host=host).check()
        ServeSettings(host=host, token=TOKEN).check()
        ServeSettings(host=host, allow_no_token=True).check()
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        ServeSettings(host=host).check()
    assert TOKEN not in repr(ServeSettings(token=TOKEN))


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    ends = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError("the condition never held")
        time.sleep(0.05)


def _health(url: str) -> bool:
    try:
        return requests.get(url + "/v1/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
