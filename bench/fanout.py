"""Experts run concurrently: identify() takes about the slowest deadline, not the sum.

Three experts: one answers after 0.5 s, one after 1 s, and one hangs but has a
1.5 s deadline. The baseline asks them one after another, each under its own
deadline (what a sequential pipeline with timeouts would do). Prints both times
and the ratio sequential / concurrent.

    python bench/fanout.py
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.components import ColorEncoder

from restyle import Engine, Expert, Opinion, load_photo

PHOTO = Path(__file__).resolve().parent.parent / "examples" / "photo.jpg"


class SleepyExpert(Expert):
    def __init__(self, name: str, seconds: float | None, timeout: float, release: threading.Event):
        self.name = name
        self.seconds = seconds
        self.timeout = timeout
        self.release = release

    def examine(self, photo: object) -> Opinion:
        if self.seconds is None:
            self.release.wait()  # hangs until the benchmark ends
        else:
            time.sleep(self.seconds)
        return Opinion(expert=self.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    release = threading.Event()

    def experts() -> list[SleepyExpert]:
        # Fresh instances each round: an expert still stuck from an earlier
        # call is busy and would be skipped, which is not what is timed here.
        return [
            SleepyExpert("half-second", 0.5, 5.0, release),
            SleepyExpert("one-second", 1.0, 5.0, release),
            SleepyExpert("hung", None, 1.5, release),
        ]

    photo = load_photo(PHOTO)
    sequential, concurrent = [], []
    try:
        for _ in range(args.repeat):  # interleaved: baseline, then restyle
            start = time.perf_counter()
            for expert in experts():
                # The baseline: the same experts and deadlines, one at a time.
                Engine(experts=[expert], encoder=ColorEncoder(), marketplaces=[],
                       load_entrypoints=False).examine(photo)
            sequential.append(time.perf_counter() - start)
            engine = Engine(experts=experts(), encoder=ColorEncoder(), marketplaces=[],
                            load_entrypoints=False)
            start = time.perf_counter()
            identification = engine.identify(photo)
            concurrent.append(time.perf_counter() - start)
        assert identification.synthesizer == "consensus"
    finally:
        release.set()
    seq, con = min(sequential), min(concurrent)
    print(f"sequential (each expert under its deadline): {seq:.3f} s")
    print(f"restyle identify (concurrent):               {con:.3f} s")
    print(f"ratio sequential/concurrent: {seq / con:.2f}x (ideal 3.0/1.5 = 2.00x)")


if __name__ == "__main__":
    main()
