"""The one confined open that listings' images and recordings' files go through:
a name resolved inside its folder, a regular file opened without following a
last link or blocking, read within a limit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from restyle._input.confined import Unsafe, open_inside, open_regular, read_capped


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "a.txt").write_bytes(b"hello")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return inside


def problem(call: object) -> str:
    assert callable(call)
    with pytest.raises(Unsafe) as raised:
        call()
    return raised.value.problem


def test_a_regular_file_inside_is_opened_and_read(folder: Path) -> None:
    with open_inside(folder, "a.txt") as handle:
        assert read_capped(handle, 5) == b"hello"
    with open_inside(folder, folder / "a.txt") as handle:  # absolute, inside
        assert handle.read() == b"hello"


def test_names_and_links_leading_outside_are_refused(folder: Path) -> None:
    assert problem(lambda: open_inside(folder, "../secret.txt")) == "outside"
    assert problem(lambda: open_inside(folder, folder.parent / "secret.txt")) == "outside"
    assert problem(lambda: open_inside(folder, ".")) == "outside"  # the folder itself
    (folder / "link.txt").symlink_to(folder.parent / "secret.txt")
    assert problem(lambda: open_inside(folder, "link.txt")) == "outside"
    assert problem(lambda: open_inside(folder / "missing", "a.txt")) == "unresolvable"


def test_a_link_swapped_in_after_resolving_is_not_followed(folder: Path) -> None:
    (folder / "b.txt").symlink_to(folder.parent / "secret.txt")
    assert problem(lambda: open_regular(folder / "b.txt")) == "unopenable"


def test_folders_and_fifos_are_refused_without_blocking(folder: Path) -> None:
    assert problem(lambda: open_inside(folder.parent, "inside")) in {"unopenable", "irregular"}
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    os.mkfifo(folder / "pipe")
    outcome: list[str] = []
    opener = threading.Thread(target=lambda: outcome.append(
        problem(lambda: open_inside(folder, "pipe"))), daemon=True)
    opener.start()
    opener.join(10)  # a blocking open would never return: no writer ever comes
    assert outcome == ["irregular"]


def test_a_file_over_the_limit_is_refused(folder: Path) -> None:
    with open_inside(folder, "a.txt") as handle:
        assert problem(lambda: read_capped(handle, 4)) == "too large"
