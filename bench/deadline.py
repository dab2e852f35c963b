"""An analysis ends by its deadline whatever the components and servers do.

Each scenario runs ``Engine.analyze`` with a deadline against one fault: a
hung expert, synthesizer, marketplace or comp encoder, an expert whose lazy
answer stalls midway, a synthesizer answering a 100 MB product name, a photo
read from a pipe whose writer stalls, and comp-image servers that drip their
status line, headers or chunk sizes one byte at a time, or never answer.
Prints, per scenario, the deadline, the time ``analyze`` took (best and
worst of the rounds) and the overshoot past the deadline; then the live thread
count after 50 analyses with every component hung at once, and
the peak thread count of an expert that calls ``analyze`` again from inside.
The reference is the deadline itself: restyle's floor is finishing on it.

    python bench/deadline.py [--deadline 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from restyle import (
    Engine,
    Fetcher,
    FetchLimits,
    Identification,
    Listing,
    Marketplace,
    Money,
    Observation,
    Opinion,
    Query,
    Reranker,
    RestyleError,
    Synthesizer,
)
from restyle.testing import (
    ColorEncoder,
    FakeServer,
    ListMarketplace,
    Reply,
    ScriptedExpert,
    image_bytes,
)

PHOTO = Image.new("RGB", (256, 256), (200, 30, 30))
RELEASE = threading.Event()  # everything hung waits on it; set at exit


class HungMarketplace(Marketplace):
    name = "hung-market"

    def search(self, query: Query) -> Sequence[Listing]:
        RELEASE.wait()
        return []


class HungSynthesizer(Synthesizer):
    name = "hung-synth"

    def synthesize(self, opinions: Any, *, photo: Any) -> Identification:
        RELEASE.wait()
        return Identification()


class HungCompEncoder(ColorEncoder):
    """Answers the photo, hangs on comp images."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode_images(self, images: Any) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            RELEASE.wait()
        return super().encode_images(images)


def dripping(reply: bytes, *, interval: float = 0.5) -> Reply:
    """Sends ``reply`` one byte every ``interval`` seconds (or, with an empty
    reply, says nothing)."""
    if not reply:
        return Reply(hang=True)

    def raw(connection: socket.socket, stopping: threading.Event) -> None:
        for byte in reply:
            if stopping.wait(interval):
                return
            connection.sendall(bytes([byte]))
        stopping.wait()

    return Reply(raw=raw)


def listings(n: int = 4, *, image_url: Callable[[int], str | None] = lambda i: None,
             marketplace: str = "m") -> list[Listing]:
    return [Listing(marketplace=marketplace, listing_id=str(i), title=f"item {i}",
                    price=Money(amount="10", currency="USD"), image_url=image_url(i))
            for i in range(n)]


def red_vector() -> np.ndarray:
    return ColorEncoder().encode_images([PHOTO])[0]


class HugeNameSynthesizer(Synthesizer):
    name = "huge-name"

    def synthesize(self, opinions: Any, *, photo: Any) -> Identification:
        return Identification(product_name="x" * 100_000_000)


def lazy_opinion(photo: Any) -> Opinion:
    def stalling() -> Iterator[Observation]:
        yield Observation(text="jacket", score=0.5)
        RELEASE.wait()  # the answer stops midway

    return Opinion(expert="lazy", labels=stalling())  # type: ignore[arg-type]


def stalled_pipe() -> Any:
    """A photo read from a pipe whose writer never writes (and never closes)."""
    read, write = os.pipe()
    _PIPES.append(write)
    return os.fdopen(read, "rb")


_PIPES: list[int] = []


def engine(deadline: float, **options: Any) -> Engine:
    known = {f"m:{i}": red_vector() for i in range(4)}
    settings: dict[str, Any] = {
        "encoder": ColorEncoder(),
        "experts": [ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])],
        "marketplaces": [ListMarketplace("m", listings(), embeddings=known)],
        "reranker": Reranker(cache=None),
        "load_entrypoints": False,
        "deadline": deadline,
    }
    settings.update(options)
    return Engine(**settings)


def comp_server_engine(deadline: float, port: int) -> Engine:
    # Per-image and batch limits far above the deadline: only the deadline can end it.
    fetcher = Fetcher(FetchLimits(timeout=600, batch_timeout=600),
                      trusted_networks=["127.0.0.0/8"])
    market = ListMarketplace("m", listings(image_url=lambda i: f"http://127.0.0.1:{port}/{i}.png"))
    return engine(deadline, marketplaces=[market], reranker=Reranker(fetcher=fetcher, cache=None))


def scenarios(deadline: float) -> Iterator[tuple[str, Callable[[], Engine], Any]]:
    yield "hung expert", lambda: engine(deadline, experts=[
        ScriptedExpert("hung", hang=RELEASE, timeout=600)]), None
    yield "hung synthesizer", lambda: engine(deadline, synthesizer=HungSynthesizer()), None
    yield "hung marketplace", lambda: engine(deadline, marketplaces=[HungMarketplace()]), None
    yield "hung comp encoder", lambda: comp_server_engine_with_images(deadline), None
    yield "lazy expert answer", lambda: engine(deadline, experts=[
        ScriptedExpert("lazy", timeout=600, result=lazy_opinion)]), None
    yield "100 MB product name", lambda: engine(deadline, synthesizer=HugeNameSynthesizer()), None
    yield "stalled photo pipe", lambda: engine(deadline), stalled_pipe
    status = b"HTTP/1.1 200 OK\r\n"
    headers = status + b"Content-Type: image/png\r\nX-Padding: " + b"a" * 200 + b"\r\n"
    chunked = (status + b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"0000000000000000000000000000004")
    for name, reply in (("silent image server", b""), ("status-line drip", status),
                        ("header drip", headers), ("chunk-size drip", chunked)):
        yield name, None, reply


_IMAGES: dict[str, bytes] = {}


def comp_server_engine_with_images(deadline: float) -> Engine:
    server = FakeServer(Reply(body=image_bytes((30, 30, 200), format="PNG"))).start()
    eng = comp_server_engine(deadline, server.port)
    eng.encoder = HungCompEncoder()
    return eng


def measure(make: Callable[[], Engine], rounds: int,
            photo: Callable[[], Any] = lambda: PHOTO) -> list[float]:
    times = []
    for _ in range(rounds):
        eng = make()  # fresh components: a stuck one would be skipped as busy
        given = photo()
        start = time.perf_counter()
        with contextlib.suppress(RestyleError):  # an unreadable photo fails, on time
            eng.analyze(given)
        times.append(time.perf_counter() - start)
    return times


def reentrant_peak(deadline: float) -> int:
    """Peak live threads while an expert calls ``analyze`` again from inside."""
    holder: list[Engine] = []
    peak = [threading.active_count()]

    class Again(ScriptedExpert):
        def examine(self, photo: Any) -> Opinion:
            peak[0] = max(peak[0], threading.active_count())
            with contextlib.suppress(RestyleError):
                holder[0].analyze(PHOTO)
            return Opinion(expert=self.name)

    eng = engine(deadline, experts=[Again("again", timeout=600)])
    holder.append(eng)
    before = threading.active_count()
    eng.analyze(PHOTO)
    return peak[0] - before


def _stuck_calls() -> Counter[str]:
    """Threads inside a component call, by call (a worker takes its call's name)."""
    return Counter(t.name for t in threading.enumerate()
                   if t.name.startswith("restyle ") and t.name != "restyle worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deadline", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    deadline = args.deadline
    print(f"deadline {deadline:g} s, {args.rounds} rounds each\n")
    print(f"{'scenario':<22} {'best s':>8} {'worst s':>8} {'overshoot s':>12}")
    try:
        for name, make, reply in scenarios(deadline):
            if make is not None and reply is not None:  # the fault is the photo itself
                times = measure(make, args.rounds, photo=reply)
            elif make is None:
                with FakeServer(dripping(reply)) as server:
                    times = measure(lambda port=server.port: comp_server_engine(deadline, port),
                                    args.rounds)
            else:
                times = measure(make, args.rounds)
            print(f"{name:<22} {min(times):>8.3f} {max(times):>8.3f} "
                  f"{max(times) - deadline:>+12.3f}")
        eng = engine(0.3, experts=[ScriptedExpert("hung", hang=RELEASE, timeout=600)],
                     synthesizer=HungSynthesizer(),
                     marketplaces=[HungMarketplace(),
                                   ListMarketplace("m", listings(), embeddings={})])
        threads_before, stuck_before = threading.active_count(), _stuck_calls()
        for _ in range(50):
            eng.analyze(PHOTO)
        stuck = _stuck_calls() - stuck_before
        print(f"\nafter 50 analyses with an expert, a synthesizer and a marketplace hung: "
              f"{threading.active_count() - threads_before} threads more, "
              f"{sum(stuck.values())} more calls stuck ({', '.join(sorted(stuck))}); "
              f"restyle's idle workers are reused")
        print(f"an expert calling analyze again from inside (deadline {deadline:g} s): "
              f"at most {reentrant_peak(deadline)} threads more at once")
    finally:
        RELEASE.set()


if __name__ == "__main__":
    main()
