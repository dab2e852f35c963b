"""restyle analyze in its own process: progress on a terminal (through a pty),
and Ctrl-C, which stops it within a second and keeps what it wrote."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until
from tests.test_cli import photo_folder

# The command, with each analysis from the ``slow_from``-th on taking ``delay``
# seconds, and a warning logged during the second: a model that takes its time.
SCRIPT = """
import itertools, logging, sys, time
from restyle._engine import Engine
from restyle.cli import main

slow_from, delay = int(sys.argv[1]), float(sys.argv[2])
analyze, count = Engine.analyze, itertools.count()

def paced(self, photo, **kwargs):
    n = next(count)
    if n == 1:
        logging.getLogger("restyle").warning("a warning during the run")
    if n >= slow_from:
        time.sleep(delay)
    return analyze(self, photo, **kwargs)

Engine.analyze = paced
sys.argv = ["restyle", *sys.argv[3:]]
sys.exit(main())
"""


def _environment(tiny_model_spec: str, home: Path) -> dict[str, str]:
    return {**os.environ, "RESTYLE_MODEL": tiny_model_spec, "RESTYLE_HOME": str(home),
            "RESTYLE_DEVICE": "cpu", "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "100"}


def test_progress_on_a_terminal_loads_advances_and_writes_warnings_above_the_bar(
    tiny_model_spec: str, catalog_copy: Path, tmp_path: Path
) -> None:
    photo_folder(tmp_path / "shots", 3)
    primary, secondary = pty.openpty()
    # A terminal 100 columns wide (a new pty has none, and a bar would be cut to nothing).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, "99", "0", "analyze", str(tmp_path / "shots"),
             "--catalog", str(catalog_copy), "--no-plugins", "--no-log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary,
            env=_environment(tiny_model_spec, tmp_path / "home"), timeout=300, check=False)
    finally:
        os.close(secondary)
        reader.join(timeout=10)
        os.close(primary)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert done.returncode == 0, terminal
    assert "Loading the model..." in terminal  # the warm-up is shown
    assert "Analyzing:" in terminal and "| 2/3 [" in terminal
    # The warning starts a line of its own: the bar is cleared first, redrawn after.
    before = terminal[:terminal.index("WARNING restyle: a warning during the run")]
    assert before.endswith(("\r", "\n")), repr(before[-80:])
    assert "3 analysed (0 degraded), 0 failed" in done.stdout.decode()


@pytest.mark.parametrize("output", ["--csv", "--json"])
def test_ctrl_c_stops_a_folder_run_within_a_second_and_keeps_what_was_written(
    tiny_model_spec: str, catalog_copy: Path, tmp_path: Path, output: str
) -> None:
    photo_folder(tmp_path / "shots", 20)
    table = tmp_path / "run.csv"
    argv = ["analyze", str(tmp_path / "shots"), "--catalog", str(catalog_copy),
            "--no-plugins", "--html", str(tmp_path / "report.html")]
    argv += ["--csv", str(table)] if output == "--csv" else ["--json"]
    out = (tmp_path / "out").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "16", "60", *argv], stdin=subprocess.DEVNULL,
        stdout=out, stderr=subprocess.PIPE, text=True,
        env=_environment(tiny_model_spec, tmp_path / "home"))
    written = table if output == "--csv" else tmp_path / "out"
    try:
        # The first batch of 16 is written; the next photos take a minute each.
        assert wait_until(lambda: written.exists() and len(
            written.read_text().splitlines()) >= 16 + (output == "--csv"), timeout=240)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = process.communicate(timeout=30)
        stopped = time.monotonic() - start
    finally:
        process.kill()
        out.close()
    assert process.returncode == 130, err
    assert stopped < 5.0  # within a second, with slack for a loaded machine
    assert err.endswith("restyle: interrupted\n")
    lines = written.read_text().splitlines()
    assert len(lines) == 16 + (output == "--csv")  # every line whole, none lost
    report = (tmp_path / "report.html").read_text()
    assert "16 of 20 photos (interrupted)" in report
    tally = (tmp_path / "out").read_text() if output == "--csv" else err
    assert "interrupted after 16 of 20 photos: 16 analysed" in tally
