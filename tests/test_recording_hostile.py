"""A recording is untrusted input: a real recording, corrupted on disk.

Every file it names must be a regular file inside its folder (no name, link
or FIFO leads replay elsewhere or blocks it), every file is read within a
size limit checked before it is read, and every field is checked: whatever
the recording holds, reading and replaying it is a RecordingError naming the
file and the field, or works.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import shutil
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Box,
    Engine,
    Listing,
    Money,
    Observation,
    Opinion,
    Reranker,
    RestyleError,
)
from restyle._evaluation.recording import (
    MAX_JSON_BYTES,
    MAX_VECTOR_BYTES,
    RecordingError,
    load_recording,
)
from restyle.cli import main
from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert

RED = (200, 30, 30)


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real recording of a real analysis: one expert, three comps with vectors."""
    listings = [Listing(marketplace="shop", listing_id=f"s{i}", title=f"red jacket no. {i}",
                        price=Money(amount=Decimal("20") + i, currency="USD")) for i in range(3)]
    vector = ColorEncoder().encode_images([Image.new("RGB", (8, 8), RED)])[0]
    expert = ScriptedExpert("eye", result=lambda photo: Opinion(expert="eye", labels=(
        Observation(text="Kestrel", score=0.9, facet="brand", box=Box(left=0.1, top=0.1,
                                                                        width=0.5, height=0.5)),
        Observation(text="jacket", score=0.8, facet="category"))))
    engine = Engine(experts=[expert],
                    marketplaces=[ListMarketplace("shop", listings,
                                                  embeddings={x.key: vector for x in listings})],
                    encoder=ColorEncoder(), load_entrypoints=False, reranker=Reranker(cache=None))
    directory = tmp_path_factory.mktemp("made") / "run"
    analysis = engine.analyze(jpeg(RED), record=directory)
    assert len(analysis.comps) == 3 and analysis.price.ok
    assert analysis.opinions[0].ok and analysis.identification.brand == "Kestrel"
    return directory


@pytest.fixture
def run(made: Path, tmp_path: Path) -> Path:
    """A copy of the recording this test may corrupt, with a folder beside it."""
    (tmp_path / "outside").mkdir()
    return Path(shutil.copytree(made, tmp_path / "run"))


def edit(path: Path, change: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text())
    changed = change(data)
    path.write_text(json.dumps(data if changed is None else changed))


def set_field(data: Any, where: tuple[Any, ...], value: Any) -> Any:
    if not where:
        return value
    target = data
    for key in where[:-1]:
        target = target[key]
    if value is DELETE:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    return data


DELETE = object()


def test_the_untouched_recording_replays(run: Path) -> None:
    recording = load_recording(run)
    assert recording.replay().same
    assert len(recording.vectors) == 3


# -- confinement -----------------------------------------------------------------------


def test_a_name_leading_outside_the_recording_is_refused(run: Path) -> None:
    outside = run.parent / "outside" / "x.jpg"
    outside.write_bytes(jpeg((10, 200, 10)))  # a good photo: only its place is wrong
    edit(run / "recording.json", lambda d: set_field(d, ("photo", "file"), "../outside/x.jpg"))
    with pytest.raises(RecordingError, match=r"'\.\./outside/x\.jpg' is outside the recording"):
        load_recording(run)


def test_an_absolute_name_does_not_replace_the_folder(run: Path) -> None:
    outside = run.parent / "outside" / "x.jpg"
    outside.write_bytes(jpeg((10, 200, 10)))
    edit(run / "recording.json", lambda d: set_field(d, ("photo", "file"), str(outside)))
    with pytest.raises(RecordingError, match="is outside the recording"):
        load_recording(run)
    edit(run / "recording.json", lambda d: set_field(d, ("photo", "file"), "/etc/hostname"))
    with pytest.raises(RecordingError, match="is outside the recording"):
        load_recording(run)
    shutil.copy(run / "vectors.npy", run.parent / "outside" / "v.npy")
    edit(run / "recording.json", lambda d: set_field(d, ("photo", "file"), "photo.jpg"))
    edit(run / "recording.json", lambda d: set_field(
        d, ("vectors", "file"), str(run.parent / "outside" / "v.npy")))
    with pytest.raises(RecordingError, match="is outside the recording"):
        load_recording(run)


@pytest.mark.parametrize("name", ["photo.jpg", "vectors.npy", "analysis.json",
                                  "recording.json"])
def test_a_link_leading_outside_the_recording_is_refused(run: Path, name: str) -> None:
    outside = run.parent / "outside" / name
    shutil.move(run / name, outside)  # the very same bytes, outside
    (run / name).symlink_to(outside)
    with pytest.raises(RecordingError, match="is outside the recording"):
        load_recording(run)


def test_links_that_stay_inside_are_followed(run: Path, tmp_path: Path) -> None:
    (run / "photo.jpg").rename(run / "kept.jpg")
    (run / "photo.jpg").symlink_to("kept.jpg")
    (tmp_path / "linked").symlink_to(run)  # the folder itself may be a link
    assert load_recording(tmp_path / "linked").replay().same


@pytest.fixture
def fifos() -> Iterator[list[Path]]:
    """FIFOs a test makes; any reader still blocked on one is let go at teardown."""
    made: list[Path] = []
    yield made
    for fifo in made:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            assert exc.errno in (errno.ENXIO, errno.ENOENT)


@pytest.mark.parametrize("name", ["photo.jpg", "vectors.npy", "analysis.json",
                                  "recording.json"])
def test_a_fifo_in_a_recording_is_refused_at_once(
    run: Path, name: str, fifos: list[Path]
) -> None:
    (run / name).unlink()
    os.mkfifo(run / name)
    fifos.append(run / name)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_recording(run)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10.0)  # generous: a refusal takes milliseconds, a hang forever
    assert not reader.is_alive(), f"reading a recording blocked on a FIFO as {name}"
    assert isinstance(outcome[0], RecordingError)
    assert "is not a regular file" in str(outcome[0])


def test_a_folder_where_a_file_should_be_is_refused(run: Path) -> None:
    (run / "photo.jpg").unlink()
    (run / "photo.jpg").mkdir()
    with pytest.raises(RecordingError, match=r"'photo\.jpg' of the recording in .* cannot be "
                       r"opened: Is a directory"):
        load_recording(run)


# -- fields ------------------------------------------------------------------------------

RECORDING = "recording.json"
ANALYSIS = "analysis.json"

BAD_FIELDS = [
    (RECORDING, (), [], "recording.json must be an object, got a list"),
    (RECORDING, ("format",), "1", "is of format '1', not 1; record it again"),
    (RECORDING, ("format",), True, "is of format True, not 1"),
    (RECORDING, ("engine",), "fast", "field engine must be an object"),
    (RECORDING, ("engine", "price_half_life_days"), -3,
     "field engine.price_half_life_days must be a positive number, got -3"),
    (RECORDING, ("engine", "minimum_price_comps"), 0,
     "field engine.minimum_price_comps must be a whole number of at least 1, got 0"),
    (RECORDING, ("engine", "max_comps"), 30.0, "field engine.max_comps must be a whole number"),
    (RECORDING, ("engine", "model_id"), 5, "field engine.model_id must be a text"),
    (RECORDING, ("engine", "experts"), "eye", "field engine.experts must be a list of texts"),
    (RECORDING, ("engine", "reranker"), [0.0, 0.995, True],
     "field engine.reranker must be an object, got a list"),
    (RECORDING, ("engine", "reranker", "duplicate_threshold"), "0.995",
     "field engine.reranker.duplicate_threshold must be a finite number, got '0.995'"),
    (RECORDING, ("engine", "reranker", "text_weight"), 2,
     "field engine.reranker.text_weight must be a number from 0 to 1, got 2"),
    (RECORDING, ("engine", "reranker", "cutoff"), "no",
     "field engine.reranker.cutoff must be true or false"),
    (RECORDING, ("photo",), "photo.jpg", "field photo must be an object"),
    (RECORDING, ("photo", "file"), None, "field photo.file must be a non-empty text"),
    (RECORDING, ("photo", "file"), "", "field photo.file must be a non-empty text"),
    (RECORDING, ("photo", "file"), "photo\x00.jpg", "must be named by a file name"),
    (RECORDING, ("found",), {}, "field found must be a list, got an object"),
    (RECORDING, ("found", 0), 5, "field found[0] must be an object, got 5"),
    (RECORDING, ("found", 1, "listing", "price"), "cheap", "field found[1].listing must be a "
     "listing"),
    (RECORDING, ("found", 0, "step"), 3, "field found[0].step must be a non-empty text"),
    (RECORDING, ("found", 2, "rank"), -1, "field found[2].rank must be a whole number of at "
     "least 0"),
    (RECORDING, ("found", 0, "step_index"), None, "field found[0].step_index"),
    (RECORDING, ("found",), DELETE, "recording.json has no field found"),
    (RECORDING, ("warnings", "search"), "none", "field warnings.search must be a list of "
     "texts"),
    (RECORDING, ("warnings", "rerank"), [1], "field warnings.rerank[0] must be a text"),
    (RECORDING, ("vectors",), [], "field vectors must be an object"),
    (RECORDING, ("vectors", "file"), 5, "field vectors.file must be a non-empty text"),
    (RECORDING, ("vectors", "photo"), 99, "field vectors.photo must be a row of vectors.npy "
     "(0 to 3), got 99"),
    (RECORDING, ("vectors", "photo"), "0", "field vectors.photo must be a whole number"),
    (RECORDING, ("vectors", "comps"), [], "field vectors.comps must be an object"),
    (RECORDING, ("vectors", "comps", "shop:s0"), "1", "field vectors.comps['shop:s0'] must be "
     "a whole number"),
    (ANALYSIS, (), [], "analysis.json must be an object, got a list"),
    (ANALYSIS, ("price", "half_life_days"), -3,
     "analysis.json field price.half_life_days must be a positive number, got -3.0"),
    (ANALYSIS, ("price", "minimum_comps"), 0,
     "analysis.json field price.minimum_comps must be a whole number of at least 1, got 0"),
    (ANALYSIS, ("opinions",), 5, "analysis.json is not an analysis"),
    (ANALYSIS, ("comps", 0, "listing"), [], "analysis.json is not an analysis"),
]


@pytest.mark.parametrize(("name", "where", "value", "message"), BAD_FIELDS,
                         ids=[f"{n}:{'.'.join(map(str, w)) or 'root'}={v!r}"[:60]
                              for n, w, v, _ in BAD_FIELDS])
def test_a_bad_field_is_a_recording_error_naming_it(
    run: Path, name: str, where: tuple[Any, ...], value: Any, message: str
) -> None:
    edit(run / name, lambda d: set_field(d, where, value))
    with pytest.raises(RecordingError) as caught:
        load_recording(run).replay()
    assert message in str(caught.value)
    assert str(run) in str(caught.value)


@pytest.mark.parametrize(("name", "text", "message"), [
    (RECORDING, "{", "recording.json of the recording in"),
    (RECORDING, '{"format": NaN}', "NaN is not a number JSON allows"),
    (ANALYSIS, "\xff\xfe", "analysis.json of the recording in"),
    (RECORDING, "[" * 100_000 + "]" * 100_000, "is not JSON"),
])
def test_text_that_is_not_json_is_a_recording_error(
    run: Path, name: str, text: str, message: str
) -> None:
    (run / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(RecordingError, match="is not JSON") as caught:
        load_recording(run)
    assert message in str(caught.value)


HOSTILE_VALUES: list[Any] = [None, 0, 10**400, "x", {}, True]


def nodes(data: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield where
    if isinstance(data, dict):
        for key, value in data.items():
            yield from nodes(value, (*where, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from nodes(value, (*where, i))


def test_any_field_replaced_by_anything_is_a_restyle_error_or_works(run: Path) -> None:
    """Every field of both files, each replaced by values of every JSON type:
    reading and replaying either work or raise a RestyleError, never another."""
    originals = {name: json.loads((run / name).read_text()) for name in (RECORDING, ANALYSIS)}
    tried = refused = 0
    for name, original in originals.items():
        for where in nodes(original):
            if any(isinstance(key, int) and key > 0 for key in where):
                continue  # the first of each list stands for the others
            for value in HOSTILE_VALUES:
                (run / name).write_text(json.dumps(set_field(copy.deepcopy(original), where,
                                                             value)))
                tried += 1
                try:
                    load_recording(run).replay(minimum_comps=2, half_life_days=7.0,
                                                  load_entrypoints=False)
                except RestyleError:
                    refused += 1
                except Exception as exc:  # what this test is after
                    pytest.fail(f"{name} {where} = {value!r}: {type(exc).__name__}: {exc}")
        (run / name).write_text(json.dumps(original))
    assert tried > 700 and refused > tried // 3


def test_a_bad_recording_on_the_command_line_is_one_line_and_exit_1(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(run / RECORDING, lambda d: set_field(d, ("engine", "reranker"), [0.5]))
    assert main(["replay", str(run), "--no-plugins"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("restyle: error: the recording in ") and err.count("\n") == 1
    assert "engine.reranker must be an object" in err


# -- sizes -------------------------------------------------------------------------------


def peak_while(action: Callable[[], object]) -> tuple[int, BaseException | None]:
    """The most memory Python allocated during ``action``, and what it raised."""
    tracemalloc.start()
    try:
        action()
        raised: BaseException | None = None
    except Exception as exc:  # handed to the test
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


@pytest.mark.parametrize("name", [RECORDING, ANALYSIS])
def test_a_huge_json_file_fails_before_it_is_read(run: Path, name: str) -> None:
    with open(run / name, "r+b") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: 64 MiB on no disk
    peak, raised = peak_while(lambda: load_recording(run))
    assert isinstance(raised, RecordingError), raised
    assert f"{name} of the recording in {run} is larger than the 4 MiB limit" in str(raised)
    assert peak < 2 * 1024 * 1024


def test_json_files_up_to_the_limit_are_read(run: Path) -> None:
    text = (run / RECORDING).read_text()
    padded = text + " " * (MAX_JSON_BYTES - len(text.encode()))
    (run / RECORDING).write_text(padded)
    assert load_recording(run).replay().same
    (run / RECORDING).write_text(padded + " ")
    with pytest.raises(RecordingError, match="larger than the 4 MiB limit"):
        load_recording(run)


def npy_header(shape: tuple[int, ...], descr: str = "<f4", fortran: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize(("shape", "message"), [
    ((10**6, 10**6), "must hold rows of 1 to 8192 numbers, not the shape (1000000, 1000000)"),
    ((10**10, 64), "claims 10000000000 rows of 64: more than the 32 MiB limit"),
])
def test_a_vectors_header_claiming_a_terabyte_is_refused_before_allocating(
    run: Path, shape: tuple[int, int], message: str
) -> None:
    header = npy_header(shape)
    (run / "vectors.npy").write_bytes(header + b"\0" * (134 - len(header)))
    assert (run / "vectors.npy").stat().st_size == 134
    peak, raised = peak_while(lambda: load_recording(run))
    assert isinstance(raised, RecordingError), raised
    assert message in str(raised)
    assert peak < 2 * 1024 * 1024


def test_a_vectors_file_over_the_limit_is_refused_before_it_is_read(run: Path) -> None:
    rows = MAX_VECTOR_BYTES // (4 * 1024) + 100
    header = npy_header((rows, 1024))
    with open(run / "vectors.npy", "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + rows * 1024 * 4)  # honest about its size, and sparse
    peak, raised = peak_while(lambda: load_recording(run))
    assert isinstance(raised, RecordingError), raised
    assert "larger than the 32 MiB limit" in str(raised)
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize(("contents", "message"), [
    (lambda rows: npy_header((8, rows.shape[1])) + rows.tobytes(),
     "claims 8 rows of 64 (2048 bytes) but holds 1024 bytes of them"),
    (lambda rows: npy_header(rows.shape) + rows.tobytes() + b"\0" * 16,
     "claims 4 rows of 64 (1024 bytes) but holds 1040 bytes"),
    (lambda rows: npy_header(rows.shape, "|O") + rows.tobytes(), "must hold float32 numbers"),
    (lambda rows: npy_header(rows.shape, "<f8") + rows.astype("<f8").tobytes(),
     "must hold float32 numbers"),
    (lambda rows: npy_header((rows.size,)) + rows.tobytes(), "must hold rows of 1 to 8192"),
    (lambda rows: npy_header((0, 4)), "must hold rows of 1 to 8192"),
    (lambda rows: npy_header(rows.shape) + np.full(rows.shape, np.nan, "<f4").tobytes(),
     "holds numbers that are not finite"),
    (lambda rows: b"\x93NUMPY\x03\x00" + b"\0" * 60, "not 1.0 or 2.0"),
    (lambda rows: b"\x93NUMPY\x01\x00\x10\x00{'descr': os.system('x')}\n", "is not a .npy file"),
    (lambda rows: b"not numpy", "is not a .npy file"),
])
def test_a_vectors_file_that_lies_is_refused(
    run: Path, contents: Callable[[np.ndarray], bytes], message: str
) -> None:
    rows = np.load(run / "vectors.npy")
    assert rows.shape == (4, 64) and rows.dtype == np.float32
    (run / "vectors.npy").write_bytes(contents(rows))
    with pytest.raises(RecordingError) as caught:
        load_recording(run)
    assert message in str(caught.value)


def test_vectors_in_either_order_and_byte_order_are_read(run: Path) -> None:
    rows = np.load(run / "vectors.npy")
    np.save(run / "vectors.npy", np.asfortranarray(rows.astype(">f4")), allow_pickle=False)
    recording = load_recording(run)
    assert recording.replay().same
    assert np.array_equal(recording.photo_vector, rows[0])
