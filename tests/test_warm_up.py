"""The first answer is as complete as the second: the model and the clip
expert's prompt vectors load outside any analysis's deadline (Engine.warm_up,
or in the background on first use), and one overrun never costs the calls
after it their answer."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

from restyle import Engine, RestyleError
from restyle._pipeline import prompts
from restyle.experts import clip
from restyle.testing import ColorEncoder
from tests.conftest import wait_until

T = TypeVar("T")
PHOTO = Image.new("RGB", (64, 64), (200, 30, 30))


@pytest.fixture(autouse=True)
def fresh_prompt_vectors() -> None:
    prompts.forget()


class SlowTexts(ColorEncoder):
    """Encodes texts slowly (as a text tower on a loaded machine does), counting calls."""

    def __init__(self, seconds: float, model_id: str) -> None:
        super().__init__()
        self.seconds = seconds
        self._model_id = model_id
        self.text_calls = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls += 1
        time.sleep(self.seconds)
        return super().encode_texts(texts)


def clip_engine(encoder: ColorEncoder) -> Engine:
    return Engine(encoder=encoder, experts=["clip"], marketplaces=[], load_entrypoints=True)


def test_an_overrun_on_first_use_does_not_cost_the_next_call_its_answer() -> None:
    encoder = SlowTexts(2.0, "slow-texts-1")
    engine = clip_engine(encoder)
    first = engine.identify(PHOTO, deadline=1.0)  # the prompts are not ready in its time
    assert first.evidence == () or all(e.expert != "clip" for e in first.evidence)
    opinions = engine.examine(PHOTO, deadline=10.0)  # waits for them, not "busy"
    assert opinions[0].ok, opinions[0].error
    assert opinions[0].labels
    assert encoder.text_calls == 1  # encoded once, not again for the second call


def test_warm_up_readies_the_prompts_and_the_first_answer_is_complete() -> None:
    encoder = SlowTexts(1.5, "slow-texts-2")
    engine = clip_engine(encoder)
    engine.warm_up()
    assert encoder.text_calls == 2  # the photo roles' prompts and the taxonomy's
    opinions, took = timed(lambda: engine.examine(PHOTO, deadline=1.0))
    assert opinions[0].ok and opinions[0].labels
    assert took < 1.0


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.monotonic()
    return fn(), time.monotonic() - start


def test_prompt_vectors_are_kept_on_disk_and_damage_is_recomputed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from restyle import _settings

    encoder = SlowTexts(0.0, "kept-prompts")
    clip_engine(encoder).warm_up()
    kept = [path for path in (_settings.home() / "prompts").glob("*.npy")
            if len(np.load(path)) == len(clip._prompts())]  # the taxonomy's, beside the roles'
    assert len(kept) == 1
    first = clip.taxonomy_vectors(encoder)

    prompts.forget()  # a new process
    again = SlowTexts(0.0, "kept-prompts")
    clip_engine(again).warm_up()
    assert again.text_calls == 0  # read back, not encoded
    for facet, (terms, vectors) in clip.taxonomy_vectors(again).items():
        assert terms == first[facet][0]
        np.testing.assert_array_equal(vectors, first[facet][1])

    np.save(kept[0], np.full((3, 64), np.nan, np.float32))  # damaged
    prompts.forget()
    damaged = SlowTexts(0.0, "kept-prompts")
    clip_engine(damaged).warm_up()
    assert damaged.text_calls == 1  # the taxonomy's again; the roles' were read back
    assert np.isfinite(np.load(kept[0])).all()


def _burn(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Two processes keeping both cores busy, as on a loaded machine."""
    stop = multiprocessing.get_context("spawn").Event()
    burners = [multiprocessing.get_context("spawn").Process(target=_burn, args=(stop,))
               for _ in range(2)]
    for burner in burners:
        burner.start()
    yield
    stop.set()
    for burner in burners:
        burner.join(10)
        if burner.is_alive():
            burner.kill()


def test_first_and_second_answers_are_complete_on_a_busy_machine(
        busy_machine: None, tiny_model_spec: str, sample_catalog_dir: Path) -> None:
    engine = Engine(model=tiny_model_spec, catalog=sample_catalog_dir)
    engine.warm_up()
    photo = Path(__file__).resolve().parents[1] / "examples" / "photo.jpg"
    for _ in range(2):
        analysis = engine.analyze(photo, deadline=20)
        assert analysis.failed_experts == {}
        assert {o.expert for o in analysis.opinions} == {"clip", "catalog"}
        assert analysis.comps
        assert not [w for w in analysis.warnings if "busy" in w or "no time" in w]


def test_a_model_loading_late_is_waited_for_only_until_the_deadline(
        tiny_model_spec: str) -> None:
    from restyle._pipeline import budget as _budget
    from restyle.encoders.openclip import OpenClipEncoder
    from restyle.encoders.openclip.threads import _MODEL_THREAD

    encoder = OpenClipEncoder(tiny_model_spec, device="cpu")
    gate = threading.Event()
    started = _MODEL_THREAD.submit(gate.wait, 30)  # the model thread is held up
    try:
        with pytest.raises(RestyleError):
            _budget.call(encoder, "encoder openclip", encoder.encode_images, [PHOTO],
                         deadline=time.monotonic() + 0.5)
        # The call returned at its deadline: the encoder is not stuck in it.
        assert wait_until(lambda: not _budget.busy(encoder), timeout=1.0)
    finally:
        gate.set()
        started.result(30)
    vectors = _budget.call(encoder, "encoder openclip", encoder.encode_images, [PHOTO],
                           deadline=time.monotonic() + 30)
    assert vectors.shape[0] == 1
