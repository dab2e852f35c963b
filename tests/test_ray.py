"""Catalog builds and bulk analysis on a real local Ray cluster give what the
in-process ones give: the same rows and ids, vectors, rejections and analyses."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from PIL import Image

from restyle import (
    Catalog,
    CatalogError,
    ConfigurationError,
    EncoderError,
    Engine,
    Fetcher,
    RayExecutor,
    RestyleError,
)
from restyle._indexes.chooser import load_index
from restyle._ingestion.listings import SourcePart, read_listings, split_listings
from restyle._ray.build import STAGING_NAME
from restyle.cli import main
from restyle.testing import ColorEncoder, FakeServer, Reply
from tests.conftest import ROOT, SAMPLE_LISTINGS, SAMPLE_PHOTO

# Fractional actors: the test machine may have two cores, and actors asking for
# whole CPUs next to the read and decode tasks would leave them none.
SMALL = RayExecutor(actors=2, actor_cpus=0.25, task_cpus=0.25, batch_size=16)
LOCAL_NET = Fetcher(trusted_networks=["127.0.0.0/8"])


@contextmanager
def local_ray() -> Iterator[str]:
    """One local Ray for the whole session (4 logical CPUs whatever the machine),
    in a temporary directory of its own, never a cluster found on the machine;
    the one another test module started, if it did."""
    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=temp,
             object_store_memory=300 * 1024 * 1024, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    with local_ray() as address:
        yield address


# -- what a catalog holds ----------------------------------------------------------


def snapshot(directory: Path) -> dict[str, Any]:
    """Everything a build decides: rows with their ids, vectors, index ids, rejections."""
    db = sqlite3.connect(directory / "catalog.sqlite")
    try:
        rows = db.execute(
            "SELECT id, listing_id, title, brand, category, condition, price, currency, url, "
            "image_path, image_sha256, sold FROM items ORDER BY id").fetchall()
        vectors = {i: np.frombuffer(blob, dtype=np.float32)
                   for i, blob in db.execute("SELECT id, vector FROM items")}
        dim = int(db.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()[0])
    finally:
        db.close()
    rejected = directory / "rejected.jsonl"
    return {
        "rows": rows, "vectors": vectors,
        "index": sorted(load_index(directory / "vectors.faiss", dim=dim).ids().tolist()),
        "rejected": rejected.read_text() if rejected.exists() else None,
    }


def assert_same_catalog(local: Path, distributed: Path, *, cosine: float = 0.999) -> None:
    a, b = snapshot(local), snapshot(distributed)
    assert a["rows"] == b["rows"]
    assert a["index"] == b["index"]
    assert a["rejected"] == b["rejected"]
    assert a["vectors"].keys() == b["vectors"].keys()
    for item_id, vector in a["vectors"].items():
        assert float(vector @ b["vectors"][item_id]) >= cosine, item_id
    assert not (distributed / STAGING_NAME).exists()


def build(directory: Path, source: Path, encoder: Any, **kwargs: Any) -> dict[str, Any]:
    with Catalog.open(directory, encoder, create=True) as catalog:
        report = catalog.build(source, encoder, progress=False, **kwargs).to_dict()
    assert report.pop("rejected_file") == (str(directory / "rejected.jsonl")
                                           if report["rejected"] else None)
    return report


# -- generated listings --------------------------------------------------------------


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (64, 64), *,
               pattern: int = 0) -> bytes:
    """A small JPEG of one colour; ``pattern`` adds a stripe so images differ slightly."""
    img = Image.new("RGB", size, color)
    if pattern:
        for x in range(size[0]):
            img.putpixel((x, pattern % size[1]), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_server() -> Iterator[FakeServer]:
    routes = {f"/img/{i}.jpg": Reply(body=jpeg_bytes((10 + 6 * i, 200 - 4 * i, 90), pattern=i))
              for i in range(40)}
    routes["/img/garbage.jpg"] = Reply(body=b"not an image at all", content_type="image/jpeg")
    routes["/img/slow.png"] = Reply(body=png_bytes((1, 2, 3)), content_type="image/png")
    with FakeServer(routes=routes) as server:
        yield server


def generated_listings(folder: Path, server: FakeServer, n: int = 1000) -> list[Any]:
    """``n`` rows: local images and image URLs, with bad rows of every kind among them."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(40):
        (images / f"loc-{i}.jpg").write_bytes(jpeg_bytes((250 - 5 * i, 20 + 5 * i, 5 * i),
                                                         pattern=i + 1))
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder.parent / "outside.jpg").write_bytes(jpeg_bytes((1, 1, 1)))
    rows: list[Any] = []
    for i in range(n):
        row: dict[str, Any] = {
            "id": f"L{i:05d}", "title": f"Listing {i} jacket", "price": f"{5 + i % 97}.50",
            "brand": ["Northwind", "Acme", None][i % 3], "category": ["jacket", "bag"][i % 2],
            "condition": ["good", "new", "fair"][i % 3], "sold": i % 4 == 0,
        }
        if i % 10 < 6:
            row["image"] = f"images/loc-{i % 40}.jpg"
        else:
            row["image_url"] = server.url(f"/img/{i % 40}.jpg")
        if i % 37 == 5:
            del row["price"]
        elif i % 53 == 7:
            row["image"] = "images/missing.jpg"
            row.pop("image_url", None)
        elif i % 97 == 11:
            row.pop("image", None)
            row["image_url"] = server.url("/img/not-there.jpg")
        elif i % 71 == 13:
            rows.append(b'{"id": "broken", "title": ')
            continue
        rows.append(row)
    rows[100] = {**rows[100], "image": "images/broken.jpg"}
    rows[101] = {"id": "garbage", "title": "t", "price": "3", "image_url": server.url(
        "/img/garbage.jpg")}
    rows[102] = {"id": "outside", "title": "t", "price": "3", "image": "../outside.jpg"}
    rows[103] = {"id": "png", "title": "t", "price": "3", "image_url": server.url(
        "/img/slow.png")}
    rows[104] = b"x" * 300_000  # over the row limit: rejected unread
    # The same listing further on with another image, and with the same image.
    rows[n // 2] = {**rows[20], "image": "images/loc-7.jpg"}
    rows[n // 2 + 1] = {**rows[21], "title": "Listing 21, retitled"}
    return rows


def write_listings(folder: Path, rows: list[Any], kind: str = "jsonl") -> Path:
    path = folder / f"listings.{kind}"
    if kind == "jsonl":
        with path.open("wb") as fh:
            for row in rows:
                fh.write(row if isinstance(row, bytes) else json.dumps(row).encode())
                fh.write(b"\n")
        return path
    records = [r for r in rows if isinstance(r, dict)]
    columns = ["id", "title", "price", "brand", "category", "condition", "sold", "image",
               "image_url"]
    if kind == "csv":
        import csv

        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for r in records:
                # A title with a newline in it: CSV records may span lines.
                writer.writerow([r.get(c) if c != "title" else f"{r.get(c)}\nsecond line"
                                 for c in columns])
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [None if r.get(c) is None else str(r.get(c)) for r in records]
                      for c in columns})
    pq.write_table(table, path, row_group_size=37)
    return path


# -- reading a file in slices -----------------------------------------------------------


@pytest.mark.parametrize("part_bytes", [1, 7, 64, 1000, 1 << 20])
def test_slices_of_a_listings_file_read_as_the_whole_file(tmp_path: Path,
                                                          part_bytes: int) -> None:
    lines = [b"\xef\xbb\xbf" + json.dumps({"id": "bom", "title": "t"}).encode(), b"",
             b"not json", b"x" * 5000, json.dumps({"id": "\u00e9", "n": 2}).encode(),
             b"\xff\xfe bad utf8", b"   ", *[json.dumps({"id": i}).encode() for i in range(40)]]
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b"\n".join(lines))  # no newline at the end
    from restyle import ListingLimits

    limits = ListingLimits(row_bytes=1000)
    whole = list(read_listings(source, limits=limits))
    parts = split_listings(source, part_bytes=part_bytes)
    sliced = [row for part in parts for row in read_listings(source, limits=limits, part=part)]
    assert sliced == whole
    assert parts[0].first_row == 1


def test_slices_of_parquet_and_csv(tmp_path: Path, image_server: FakeServer) -> None:
    rows = generated_listings(tmp_path / "listings", image_server, n=200)
    parquet = write_listings(tmp_path / "listings", rows, "parquet")
    parts = split_listings(parquet, part_bytes=1)
    assert len(parts) > 3
    sliced = [r for part in parts for r in read_listings(parquet, part=part)]
    assert sliced == list(read_listings(parquet))
    csv_file = write_listings(tmp_path / "listings", rows, "csv")
    assert split_listings(csv_file, part_bytes=1) == [SourcePart()]


# -- builds ----------------------------------------------------------------------------


def test_the_sample_catalog_built_on_ray_is_the_local_one(
    ray_address: str, tiny_encoder: Any, tmp_path: Path,
) -> None:
    local = build(tmp_path / "local", SAMPLE_LISTINGS, tiny_encoder)
    distributed = build(tmp_path / "ray", SAMPLE_LISTINGS, tiny_encoder, executor=SMALL)
    assert distributed == local and local["added"] == 12
    assert_same_catalog(tmp_path / "local", tmp_path / "ray")


def test_a_thousand_listings_built_on_ray_are_the_local_catalog(
    ray_address: str, tmp_path: Path, image_server: FakeServer,
) -> None:
    folder = tmp_path / "listings"
    source = write_listings(folder, generated_listings(folder, image_server))
    encoder = ColorEncoder()
    local = build(tmp_path / "local", source, encoder, fetcher=LOCAL_NET)
    distributed = build(tmp_path / "ray", source, encoder, fetcher=LOCAL_NET, executor=SMALL)
    assert distributed == local
    assert local["rows"] == 1000 and local["added"] > 800
    assert local["updated"] == 1 and local["skipped"] == 1  # the listings given twice
    reasons = {r["reason"].split(":")[0] for r in local["rejections"]}
    assert {"missing price", "image not found", "image could not be fetched",
            "invalid JSON", "row is longer than the limit of 262144 bytes"} <= reasons
    assert_same_catalog(tmp_path / "local", tmp_path / "ray", cosine=0.99999)

    # Built again: what is stored is skipped (L00020 appears twice with two images,
    # so it is updated twice), and no URL is fetched again but those that failed.
    fetched = len(image_server.paths())
    again = build(tmp_path / "ray", source, encoder, fetcher=LOCAL_NET, executor=SMALL)
    assert again == build(tmp_path / "local", source, encoder, fetcher=LOCAL_NET)
    assert again["added"] == 0 and again["updated"] == 2 and again["skipped"] > 800
    failing = {"/img/not-there.jpg", "/img/garbage.jpg"}
    assert set(image_server.paths()[fetched:]) == failing
    assert_same_catalog(tmp_path / "local", tmp_path / "ray", cosine=0.99999)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_csv_and_parquet_built_on_ray_are_the_local_catalog(
    ray_address: str, tmp_path: Path, image_server: FakeServer, kind: str,
) -> None:
    folder = tmp_path / "listings"
    source = write_listings(folder, generated_listings(folder, image_server, n=150), kind)
    encoder = ColorEncoder()
    local = build(tmp_path / "local", source, encoder, fetcher=LOCAL_NET)
    distributed = build(tmp_path / "ray", source, encoder, fetcher=LOCAL_NET, executor=SMALL)
    assert distributed == local and local["added"] > 100
    assert_same_catalog(tmp_path / "local", tmp_path / "ray", cosine=0.99999)


KILLED_BUILD = """
import sys, time
import ray
from restyle import Catalog, Fetcher, RayExecutor
from restyle.testing import ColorEncoder

class SlowColorEncoder(ColorEncoder):
    def encode_images(self, images):
        time.sleep(0.02 * len(images))
        return super().encode_images(images)

ray.init(address=sys.argv[1])
encoder = SlowColorEncoder()
with Catalog.open(sys.argv[3], encoder, create=True) as catalog:
    catalog.build(sys.argv[2], encoder, progress=False, checkpoint_every=50,
                  fetcher=Fetcher(trusted_networks=["127.0.0.0/8"]),
                  executor=RayExecutor(actors=2, actor_cpus=0.25, task_cpus=0.25,
                                       batch_size=8))
print("finished")
"""


def committed_rows(directory: Path) -> int:
    try:
        db = sqlite3.connect(f"{(directory / 'catalog.sqlite').as_uri()}?mode=ro", uri=True,
                             timeout=0.2)
        try:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_a_killed_ray_build_resumes_to_the_same_catalog(
    ray_address: str, tmp_path: Path, image_server: FakeServer,
) -> None:
    folder = tmp_path / "listings"
    source = write_listings(folder, generated_listings(folder, image_server, n=400))
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(KILLED_BUILD))
    target = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    log = (tmp_path / "build.log").open("wb")  # a file, not a pipe nobody reads while it runs
    driver = subprocess.Popen([sys.executable, str(script), ray_address, str(source),
                               str(target)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while committed_rows(target) < 100 and driver.poll() is None:
            assert time.monotonic() < deadline, "the build committed nothing in two minutes"
            time.sleep(0.1)
        assert driver.poll() is None, (tmp_path / "build.log").read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and anything it started
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log.close()
    before = committed_rows(target)
    assert 100 <= before < 330
    assert list((target / STAGING_NAME).glob("run-*")), "the killed run left its staging folder"

    encoder = ColorEncoder()
    resumed = build(target, source, encoder, fetcher=LOCAL_NET, executor=SMALL)
    assert resumed["skipped"] >= before - 1 and resumed["added"] > 0
    local = build(tmp_path / "local", source, encoder, fetcher=LOCAL_NET)
    assert resumed["rows"] == local["rows"] and resumed["rejected"] == local["rejected"]
    assert_same_catalog(tmp_path / "local", target, cosine=0.99999)


def test_a_staging_folder_in_use_means_another_build_is_running(
    ray_address: str, tmp_path: Path,
) -> None:
    import fcntl

    encoder = ColorEncoder()
    build(tmp_path / "cat", SAMPLE_LISTINGS, encoder)
    busy = tmp_path / "cat" / STAGING_NAME / "run-other"
    busy.mkdir(parents=True)
    with (busy / ".lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CatalogError, match="another build is writing the catalog"):
            build(tmp_path / "cat", SAMPLE_LISTINGS, encoder, executor=SMALL)
    assert busy.exists()


class BrokenEncoder(ColorEncoder):
    """Gives vectors of the wrong shape after the first batch."""

    def encode_images(self, images: Any) -> np.ndarray:
        return np.ones((len(images), 3), np.float32)


def test_a_ray_build_that_fails_raises_the_error_and_keeps_the_catalog(
    ray_address: str, tmp_path: Path,
) -> None:
    encoder = BrokenEncoder()
    with pytest.raises(EncoderError, match="returned vectors of shape"):
        build(tmp_path / "cat", SAMPLE_LISTINGS, encoder, executor=SMALL)
    assert committed_rows(tmp_path / "cat") == 0
    assert not (tmp_path / "cat" / STAGING_NAME).exists()
    with pytest.raises(CatalogError, match="listings file not found"):
        build(tmp_path / "cat", tmp_path / "nothing.jsonl", ColorEncoder(), executor=SMALL)


def test_the_cli_builds_on_ray(ray_address: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], tiny_model_spec: str,
                               tiny_encoder: Any) -> None:
    target = tmp_path / "cli"
    code = main(["catalog", "build", str(SAMPLE_LISTINGS), "--catalog", str(target),
                 "--model", tiny_model_spec, "--no-plugins", "--json", "--ray", ray_address,
                 "--ray-actors", "1", "--ray-batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["added"] == 12
    build(tmp_path / "local", SAMPLE_LISTINGS, tiny_encoder)
    assert_same_catalog(tmp_path / "local", target)

    code = main(["analyze", str(SAMPLE_PHOTO), "--catalog", str(target), "--model",
                 tiny_model_spec, "--no-plugins", "--json", "--ray", ray_address])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["comps"]


def test_past_the_threshold_a_ray_build_trains_and_encodes_the_index_in_ray_tasks(
    ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from restyle._indexes import sharded as _shards
    from restyle._ray import build as _ray
    from tests.test_shards import listings

    monkeypatch.setattr(_shards, "SHARDED_ABOVE", 100)
    monkeypatch.setattr(_shards, "SHARDED_AT_LEAST", 0)
    monkeypatch.setattr(_shards, "SHARD_IDS", 64)
    monkeypatch.setattr(_shards, "FLUSH_AT", 50)
    monkeypatch.setattr(_shards, "ENCODE_CHUNK", 20)
    calls: list[str] = []
    real = _ray._runner

    def spying(ray_module: Any) -> Any:
        run = real(ray_module)

        def counted(fn: Any, shared: Any, items: Any) -> Any:
            calls.append(fn.__name__)
            return run(fn, shared, items)

        return counted

    monkeypatch.setattr(_ray, "_runner", spying)
    source = listings(tmp_path / "listings", 400)
    encoder = ColorEncoder(bins=3)
    local = build(tmp_path / "local", source, encoder, checkpoint_every=150)
    distributed = build(tmp_path / "ray", source, encoder, checkpoint_every=150, executor=SMALL)
    assert distributed == local
    assert {"train_shard_template", "encode_codes"} <= set(calls)
    assert (tmp_path / "ray" / "vectors.shards" / "manifest.json").is_file()
    a, b = snapshot_sharded(tmp_path / "local"), snapshot_sharded(tmp_path / "ray")
    assert a == b


def snapshot_sharded(directory: Path) -> dict[str, Any]:
    encoder = ColorEncoder(bins=3)
    with Catalog.open(directory, encoder) as catalog:
        assert catalog.index.kind == "ivfpq"
        found = [next(listing.listing_id for listing, _ in catalog.search_vector(
            catalog.vectors_for([f"L{i}"])[f"L{i}"], limit=3)) for i in range(0, 400, 20)]
        return {"rows": snapshot(directory)["rows"], "ids": sorted(catalog.index.ids().tolist()),
                "found": found}


# -- bulk analysis ---------------------------------------------------------------------


def photos(folder: Path) -> list[Any]:
    """48 photos (crops and tints of the sample images, as paths, bytes and PIL
    images) and two that are not photos."""
    folder.mkdir()
    sources = [SAMPLE_PHOTO, *sorted((SAMPLE_LISTINGS.parent / "images").glob("*.jpg"))]
    out: list[Any] = []
    for i in range(48):
        with Image.open(sources[i % len(sources)]) as img:
            img = img.convert("RGB")
            w, h = img.size
            crop = img.crop((i % 5, i % 7, w - i % 3, h - i % 4))
            if i % 4 == 1:
                crop = Image.blend(crop, Image.new("RGB", crop.size, (200, 40, 40)), 0.2)
        if i % 3 == 0:
            out.append(crop)
        else:
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=90)
            if i % 3 == 1:
                out.append(buf.getvalue())
            else:
                path = folder / f"photo-{i}.jpg"
                path.write_bytes(buf.getvalue())
                out.append(path)
    (folder / "notes.txt").write_text("not a photo")
    out.insert(7, folder / "notes.txt")
    out.insert(30, folder / "missing.jpg")
    return out


TIMINGS = {"elapsed", "created_at", "latency"}


def comparable(result: Any) -> Any:
    """An analysis without its timings (when it ran, how long each part took)."""
    if isinstance(result, RestyleError):
        return (type(result).__name__, str(result))

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMINGS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(result.to_dict())


def test_bulk_analysis_on_ray_equals_the_local_results(
    ray_address: str, tmp_path: Path, catalog_copy: Path, tiny_model_spec: str,
) -> None:
    from restyle.encoders.openclip import OpenClipEncoder

    engine = Engine(encoder=OpenClipEncoder(tiny_model_spec, device="cpu"), catalog=catalog_copy,
                    load_entrypoints=False, deadline=300)
    images = photos(tmp_path / "photos")
    assert len(images) == 50
    local = engine.analyze_many(images, return_exceptions=True, progress=False)
    distributed = engine.analyze_many(images, return_exceptions=True, progress=False,
                                      executor=RayExecutor(actors=2, actor_cpus=0.25))
    assert [comparable(r) for r in distributed] == [comparable(r) for r in local]
    errors = [r for r in distributed if isinstance(r, RestyleError)]
    assert len(errors) == 2
    assert all(r.comps for r in distributed if not isinstance(r, RestyleError))
    with pytest.raises(RestyleError, match="photo not found"):
        engine.analyze_many(images[25:35], executor="ray", progress=False)


def test_an_engine_that_cannot_travel_is_refused_before_it_runs(
    ray_address: str, catalog_copy: Path,
) -> None:
    class Local(ColorEncoder):  # defined in a function: it cannot be imported elsewhere
        def __init__(self) -> None:
            super().__init__()
            self.lock = __import__("threading").Lock()

    engine = Engine(encoder=Local(), experts=[], marketplaces=[], load_entrypoints=False,
                    catalog=catalog_copy)
    with pytest.raises(ConfigurationError, match="must be picklable"):
        engine.analyze_many([SAMPLE_PHOTO], executor=SMALL, progress=False)
    with pytest.raises(ConfigurationError, match="executor must be None, 'ray'"):
        engine.analyze_many([SAMPLE_PHOTO], executor="dask", progress=False)  # type: ignore[arg-type]


# -- two nodes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"])


class MeetingEncoder(ColorEncoder):
    """The colour encoder whose actors each wait, at their first batch, until
    ``actors`` of them have one: a fast actor cannot take every batch before a
    slower node's actor has started, so each node's actor embeds."""

    def __init__(self, folder: Path, actors: int) -> None:
        super().__init__()
        self.folder, self.actors = str(folder), actors
        self.met = False

    def encode_images(self, images: Any) -> np.ndarray:
        if not self.met:
            Path(self.folder, str(os.getpid())).touch()
            deadline = time.monotonic() + 60
            while len(os.listdir(self.folder)) < self.actors and time.monotonic() < deadline:
                time.sleep(0.05)
            self.met = True
        return super().encode_images(images)


@contextmanager
def second_node(ray_address: str, log: Path, *, cpus: int = 4) -> Iterator[None]:
    """A second node of ``cpus`` CPUs joined to the cluster with ``ray start
    --address`` for the block, its output in ``log``; stopped and gone after."""
    ray_cli = Path(sys.executable).with_name("ray")
    with log.open("wb") as out:
        node = subprocess.Popen(
            [str(ray_cli), "start", f"--address={ray_address}", f"--num-cpus={cpus}", "--block",
             "--object-store-memory=200000000", f"--node-manager-port={free_port()}",
             f"--object-manager-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}",
             f"--metrics-export-port={free_port()}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while alive_nodes() < 2:
                assert node.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the second node did not join"
                time.sleep(0.2)
            yield
        finally:
            node.send_signal(signal.SIGTERM)  # `ray start --block` stops its node
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
            deadline = time.monotonic() + 60
            while alive_nodes() > 1 and time.monotonic() < deadline:
                time.sleep(0.2)


#: Two encoder actors that fit only one to a node of four CPUs.
ONE_ACTOR_A_NODE = RayExecutor(actors=2, actor_cpus=3, task_cpus=0.25, batch_size=8)


def nodes_that_embedded(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The nodes a build's shards say their vectors were embedded on (its debug log)."""
    return {n for r in caplog.records if "embedded on" in r.getMessage()
            for n in r.args[-1].split(", ") if n != "no node"}  # type: ignore[index, union-attr]


def test_a_build_across_two_nodes_is_the_local_catalog(
    ray_address: str, tmp_path: Path, image_server: FakeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second node joins with ``ray start --address``; each node has room for
    one encoder actor of three CPUs, so both embed."""
    with second_node(ray_address, tmp_path / "node.log"):
        folder = tmp_path / "listings"
        source = write_listings(folder, generated_listings(folder, image_server, n=200))
        local = build(tmp_path / "local", source, ColorEncoder(), fetcher=LOCAL_NET)
        (tmp_path / "met").mkdir()
        encoder = MeetingEncoder(tmp_path / "met", actors=2)
        with caplog.at_level(logging.DEBUG, logger="restyle.ray"):
            distributed = build(tmp_path / "ray", source, encoder, fetcher=LOCAL_NET,
                                executor=ONE_ACTOR_A_NODE)
        assert distributed == local
        assert_same_catalog(tmp_path / "local", tmp_path / "ray", cosine=0.99999)
        assert len(nodes_that_embedded(caplog)) == 2
