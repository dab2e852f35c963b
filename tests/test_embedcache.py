"""The embedding cache never hands out a damaged vector and never fails the pipeline."""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import EmbeddingCache, Fetcher, Listing, Money, Reranker
from restyle.testing import FakeServer, Reply
from tests.fakes.components import ColorEncoder

RED, BLUE = (200, 30, 30), (30, 30, 200)


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


def unit(dim: int, i: int = 0) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)[i]


def damage(path: Path, sha: str, blob: bytes) -> None:
    """Overwrite one stored vector, as a crash, a bad disk or a bad writer would."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE embeddings SET vector = ? WHERE sha256 = ?", (blob, sha))
    db.close()


@pytest.mark.parametrize(("label", "blob"), [
    ("wrong length", unit(32).tobytes()),
    ("not float32", b"\x00\x01\x02"),
    ("nan", np.full(64, np.nan, np.float32).tobytes()),
    ("zero", np.zeros(64, np.float32).tobytes()),
    ("not unit", (unit(64) * 7).tobytes()),
])
def test_a_damaged_entry_is_dropped_counted_and_never_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, label: str, blob: bytes
) -> None:
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put("good", "m", unit(64, 1))
    cache.put("bad", "m", unit(64, 2))
    damage(path, "bad", blob)
    with caplog.at_level(logging.WARNING, logger="restyle.cache"):
        assert cache.get("bad", "m") is None
        assert cache.get("bad", "m") is None  # gone: a miss, not a second drop
    assert np.array_equal(cache.get("good", "m"), unit(64, 1))  # type: ignore[arg-type]
    stats = cache.stats()
    assert (stats.dropped, stats.hits, stats.misses, stats.disabled) == (1, 1, 2, False)
    assert cache.dropped == 1 and len(cache) == 1
    assert [r.message for r in caplog.records] == [
        f"embedding cache {path}: dropped a damaged entry "
        f"({_problem(label)}); 1 so far"
    ]
    cache.close()


def _problem(label: str) -> str:
    return {
        "wrong length": "dimension 32, not 64",
        "not float32": "not a float32 vector",
        "nan": "values that are not finite",
        "zero": "length 0, not 1",
        "not unit": "length 7, not 1",
    }[label]


def test_vectors_that_are_not_finite_unit_vectors_are_never_stored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put("nan", "m", np.full(4, np.nan, np.float32))
    cache.put("zero", "m", np.zeros(4, np.float32))
    cache.put("matrix", "m", np.eye(4, dtype=np.float32))
    assert len(cache) == 0 and cache.stats().refused == 3
    cache.close()


def test_a_new_dimension_for_a_model_replaces_the_old_entries(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put("a", "m", unit(64))
    cache.put("b", "m", unit(32))  # the encoder behind "m" changed: it is the authority
    assert cache.get("a", "m") is None and cache.get("b", "m") is not None
    cache.close()
    reopened = EmbeddingCache(tmp_path / "c.sqlite")
    assert reopened.get("b", "m") is not None and reopened.stats().dropped == 0
    reopened.close()


def test_a_cache_written_before_dimensions_were_recorded_is_checked_by_majority(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    for i in range(3):
        cache.put(f"ok{i}", "m", unit(64, i))
    cache.put("short", "m", unit(64, 5))
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM models")
        db.execute("UPDATE embeddings SET vector = ? WHERE sha256 = 'short'",
                   (unit(16).tobytes(),))
    db.close()
    cache = EmbeddingCache(path)
    assert cache.get("short", "m") is None and cache.get("ok1", "m") is not None
    assert cache.dropped == 1
    cache.close()


def test_a_file_damaged_mid_way_turns_the_cache_off_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    for i in range(400):
        vector = np.random.default_rng(i).standard_normal(512).astype(np.float32)
        cache.put(f"sha{i}", "m", vector / np.linalg.norm(vector))
    cache.close()
    data = bytearray(path.read_bytes())
    data[8192:len(data) - 4096] = b"\xff" * (len(data) - 12288)  # every page but a few
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="restyle.cache"):
        cache = EmbeddingCache(path)
        for i in range(20):
            assert cache.get(f"sha{i}", "m") is None
            cache.put(f"new{i}", "m", unit(512, i))
        assert len(cache) == 0 and cache.sha_for_url("http://x/") is None
    warnings = [r.message for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith(f"embedding cache {path} disabled: ")
    assert cache.stats().disabled
    cache.close()


def test_damaged_entries_never_reach_the_ranking(tmp_path: Path) -> None:
    """NaN, zero and wrong-length vectors in the cache used to raise in the
    re-ranker or rank the wrong comp first; now they are re-encoded."""
    routes = {"/red.png": Reply(body=png(RED), content_type="image/png"),
              "/blue.png": Reply(body=png(BLUE), content_type="image/png")}
    encoder = ColorEncoder()
    photo = encoder.encode_images([Image.open(io.BytesIO(png(RED)))])[0]
    path = tmp_path / "c.sqlite"
    with FakeServer(routes=routes) as server:
        found = [
            (Listing(marketplace="m", listing_id=name, title="a jacket",
                     price=Money(amount=Decimal("10"), currency="USD"),
                     image_url=server.url(f"/{name}.png")), "full")
            for name in ("blue", "red")
        ]

        def rank() -> list[str]:
            cache = EmbeddingCache(path)
            reranker = Reranker(fetcher=Fetcher(trusted_networks=["127.0.0.1/32"]), cache=cache)
            comps = reranker.rerank(photo, found, encoder=encoder).comps
            cache.close()
            return [c.listing.listing_id for c in comps]

        assert rank() == ["red", "blue"]
        red_sha = hashlib.sha256(png(RED)).hexdigest()
        blue_sha = hashlib.sha256(png(BLUE)).hexdigest()
        for blob in (np.full(64, np.nan, np.float32).tobytes(), np.zeros(64, np.float32).tobytes(),
                     unit(32).tobytes()):
            damage(path, red_sha, blob)
            damage(path, blue_sha, blob)
            assert rank() == ["red", "blue"]
