"""Ray builds that lose a worker: each stage's worker killed mid-build on a
two-node cluster, the build still the local one; what a build that cannot go on says; an actor pool
larger than the cluster; a cluster that cannot be reached or wants a token."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from restyle import RayExecutor, RestyleError
from restyle._ray.build import STAGING_NAME
from restyle.testing import ColorEncoder, FakeServer, Reply
from tests.test_ray import (
    LOCAL_NET,
    ONE_ACTOR_A_NODE,
    SMALL,
    MeetingEncoder,
    assert_same_catalog,
    build,
    committed_rows,
    free_port,
    generated_listings,
    jpeg_bytes,
    local_ray,
    nodes_that_embedded,
    second_node,
    write_listings,
)


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    with local_ray() as address:
        yield address


# -- a worker of each stage killed ---------------------------------------------------


class Killer:
    """Kills (SIGKILL), once, the first Ray worker of this process whose title
    names ``stage`` (Ray titles a worker by the task or actor it runs)."""

    def __init__(self, stage: str) -> None:
        self.marker = stage.encode()
        self.killed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        me = psutil.Process()
        pids: list[int] = []
        checked = 0.0
        while not self._stop.is_set():
            if time.monotonic() - checked > 0.05:
                pids = [p.pid for p in me.children(recursive=True)]
                checked = time.monotonic()
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        title = fh.read()
                except OSError:
                    continue
                if title.startswith(b"ray::") and self.marker in title:
                    os.kill(pid, signal.SIGKILL)
                    self.killed = title.split(b"\0")[0].decode()
                    return
            time.sleep(0.001)


@pytest.fixture(scope="module")
def slow_images() -> Iterator[FakeServer]:
    """Images that take a moment each: a build's fetch tasks are running when a
    worker is killed."""
    routes = {f"/img/{i}.jpg": Reply(body=jpeg_bytes((10 + 6 * i, 200 - 4 * i, 90), pattern=i),
                                     delay=0.05)
              for i in range(40)}
    routes["/img/garbage.jpg"] = Reply(body=b"not an image", content_type="image/jpeg")
    routes["/img/slow.png"] = Reply(body=jpeg_bytes((1, 2, 3)), content_type="image/jpeg")
    with FakeServer(routes=routes) as server:
        yield server


@pytest.fixture(scope="module")
def killed_build_case(tmp_path_factory: pytest.TempPathFactory,
                      slow_images: FakeServer) -> dict[str, Path]:
    """A catalog holding the file's first rows (so a build asks which it holds),
    the whole file, and the local build of the whole file into that catalog.
    Rows without a price pad the file: the read and write tasks have work."""
    root = tmp_path_factory.mktemp("killed")
    folder = root / "listings"
    rows = generated_listings(folder, slow_images, n=120)
    rows += [{"id": f"P{i:05d}", "title": f"padding {i}"} for i in range(3000)]
    source = write_listings(folder, rows)
    start = folder / "start.jsonl"
    start.write_text("".join(json.dumps(row) + "\n" for row in rows[:40]
                             if isinstance(row, dict)))
    encoder = ColorEncoder()
    build(root / "before", start, encoder, fetcher=LOCAL_NET)
    shutil.copytree(root / "before", root / "local")
    build(root / "local", source, encoder, fetcher=LOCAL_NET)
    return {"root": root, "source": source, "before": root / "before", "local": root / "local"}


STAGES = ["_read_part", "_load_rows", "_StoredImages", "_Embedder", "_write_shard"]


def test_a_worker_killed_in_every_stage_leaves_the_build_equal_to_the_local_one(
    ray_address: str, killed_build_case: dict[str, Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One build on two nodes (an encoder actor on each), and the first worker
    of each stage killed while it runs: the stored-images actor and the encoder
    actors are restarted, the tasks run again, and the catalog is the local
    build's."""
    case = killed_build_case
    target = tmp_path / "ray"
    shutil.copytree(case["before"], target)
    killers = [Killer(stage) for stage in STAGES]
    (tmp_path / "met").mkdir()
    with ExitStack() as stack:
        stack.enter_context(second_node(ray_address, tmp_path / "node.log"))
        for killer in killers:
            stack.enter_context(killer)
        stack.enter_context(caplog.at_level(logging.DEBUG, logger="restyle.ray"))
        report = build(target, case["source"], MeetingEncoder(tmp_path / "met", actors=2),
                       fetcher=LOCAL_NET, executor=ONE_ACTOR_A_NODE, checkpoint_every=100)
    assert [k.killed is not None for k in killers] == [True] * len(STAGES), [
        k.killed for k in killers]
    assert len(nodes_that_embedded(caplog)) == 2
    assert report["rejected"] > 3000
    assert_same_catalog(case["local"], target, cosine=0.99999)


class ExplodingEncoder(ColorEncoder):
    """Fails with an error that is not restyle's: Ray carries it wrapped, in colour."""

    def encode_images(self, images: Any) -> np.ndarray:
        raise ValueError("the model is on fire")


def test_a_build_that_fails_on_ray_says_in_one_plain_line_where_why_and_that_it_resumes(
    ray_address: str, tmp_path: Path,
) -> None:
    from tests.conftest import SAMPLE_LISTINGS

    with pytest.raises(RestyleError) as caught:
        build(tmp_path / "cat", SAMPLE_LISTINGS, ExplodingEncoder(), executor=SMALL)
    message = str(caught.value)
    assert message == (
        "the catalog build failed on Ray while encoding images: ValueError: the model is on "
        "fire; the catalog keeps its last checkpoint: run the same build again and it "
        "resumes from there")
    assert committed_rows(tmp_path / "cat") == 0
    assert not (tmp_path / "cat" / STAGING_NAME).exists()


# -- a pool larger than the cluster --------------------------------------------------


def test_more_actors_than_the_cluster_has_cpus_are_fitted_to_it(
    ray_address: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import SAMPLE_LISTINGS

    encoder = ColorEncoder()
    local = build(tmp_path / "local", SAMPLE_LISTINGS, encoder)
    too_many = RayExecutor(actors=8, actor_cpus=1.0, task_cpus=0.25, batch_size=4)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="restyle.ray"):
        distributed = build(tmp_path / "ray", SAMPLE_LISTINGS, encoder, executor=too_many)
    assert time.monotonic() - started < 120
    assert distributed == local
    assert_same_catalog(tmp_path / "local", tmp_path / "ray")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("8 actors of 1 CPUs" in m and "running 2 actors of 1 CPUs" in m
               for m in warned), warned
    # One actor of more CPUs than the cluster has: fitted to what is left beside the tasks.
    with caplog.at_level(logging.WARNING, logger="restyle.ray"):
        build(tmp_path / "big", SAMPLE_LISTINGS, encoder,
              executor=RayExecutor(actors=1, actor_cpus=16, task_cpus=0.25))
    assert any("running 1 actors of 2.25 CPUs" in r.getMessage() for r in caplog.records)


# -- clusters that cannot be reached -------------------------------------------------


CONNECT = """
import sys
from restyle.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_build(tmp_path: Path, address: str,
              env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``restyle catalog build --ray ADDRESS`` in a process of its own (not
    connected to the tests' Ray); the model is never loaded, the cluster
    being refused first."""
    from tests.conftest import ROOT, SAMPLE_LISTINGS

    return subprocess.run(
        [sys.executable, "-c", CONNECT, "catalog", "build", str(SAMPLE_LISTINGS), "--catalog",
         str(tmp_path / "cat"), "--no-plugins", "--ray", address, "--model", "color"],
        env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        capture_output=True, text=True, timeout=240,
    )


def test_a_cluster_that_wants_a_token_is_named_so_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    """A head started with RAY_AUTH_MODE=token; a driver without the token is
    told so at once, and no catalog is created."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    port = free_port()
    temp = Path(f"/tmp/rt-{os.getpid()}")
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
         "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}", "--block",
         "--disable-usage-stats", f"--node-manager-port={free_port()}",
         f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--metrics-export-port={free_port()}", "--object-store-memory=80000000"],
        env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0123456789abcdef" * 2},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not any(temp.glob("session_latest/logs/gcs_server.out")):
            assert head.poll() is None and time.monotonic() < deadline, "the head did not start"
            time.sleep(0.2)
        time.sleep(1)
        started = time.monotonic()
        done = cli_build(tmp_path, f"127.0.0.1:{port}", env)
        assert time.monotonic() - started < 60  # ray.init alone retries for ~20 s, then fails
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode != 0
    assert "requires authentication" in done.stderr and "RAY_AUTH_TOKEN" in done.stderr
    assert not (tmp_path / "cat").exists()


def test_an_unreachable_cluster_leaves_no_catalog_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    done = cli_build(tmp_path, f"127.0.0.1:{free_port()}", env)
    assert done.returncode != 0
    assert "cannot connect to the Ray cluster" in done.stderr
    assert not (tmp_path / "cat").exists()
