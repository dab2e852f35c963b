"""The openclip encoder's loading (weights mapped from their file, no second
copy) and its int8 path for CPUs without bfloat16."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import EncoderError, Engine
from restyle.encoders.openclip import OpenClipEncoder
from restyle.encoders.openclip import encoder as openclip_encoder
from tests.conftest import SAMPLE_PHOTO


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    made = [Image.open(SAMPLE_PHOTO).convert("RGB")]
    made += [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
             for _ in range(3)]
    return made


def _mapping_of(address: int) -> str | None:
    """The file the memory at ``address`` is mapped from (None: anonymous)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
    return None


def _loaded(encoder: OpenClipEncoder) -> openclip_encoder._Loaded:
    encoder.load()
    spec = encoder.spec
    return openclip_encoder._CACHE[(spec.model_name, spec.pretrained, encoder.device,
                                    encoder.precision)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_local_model_runs_on_its_mapped_file_with_open_clips_vectors(
        tiny_model_dir: Path, tiny_model_spec: str) -> None:
    import open_clip
    import torch

    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    weight = _loaded(encoder).model.visual.transformer.resblocks[0].mlp.c_fc.weight
    # The weights are the checkpoint's pages, not a copy read into memory.
    assert _mapping_of(weight.data_ptr()) == str(tiny_model_dir / "open_clip_pytorch_model.bin")

    reference, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")
    pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        ours = _loaded(encoder).model.encode_image(pixels)
        theirs = reference.eval().encode_image(pixels)
        ours_text = _loaded(encoder).model.encode_text(open_clip.tokenize(["a red bag"]))
        theirs_text = reference.encode_text(open_clip.tokenize(["a red bag"]))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours_text, theirs_text, atol=1e-5)


def test_int8_quantizes_both_towers_and_keeps_the_vectors_near_fp32(
        tiny_model_spec: str) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    fp32 = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    int8 = OpenClipEncoder(tiny_model_spec, precision="int8")
    model = _loaded(int8).model
    for tower in (model.visual.transformer, model.transformer):
        block = tower.resblocks[0]
        assert isinstance(block.mlp.c_fc, DynamicLinear)
        assert isinstance(block.attn.in_proj, DynamicLinear)  # attention's too
        assert isinstance(block.attn.out_proj, DynamicLinear)

    pictures = _pictures()
    cosines = np.sum(fp32.encode_images(pictures) * int8.encode_images(pictures), axis=1)
    assert cosines.min() > 0.99
    texts = ["a red leather handbag", "blue denim jeans", "a white sneaker"]
    text_cosines = np.sum(fp32.encode_texts(texts) * int8.encode_texts(texts), axis=1)
    assert text_cosines.min() > 0.99


def test_int8_vectors_carry_their_own_model_id(tiny_model_spec: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fp32 = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    monkeypatch.setenv("RESTYLE_PRECISION", "int8")
    int8 = OpenClipEncoder(tiny_model_spec)
    assert int8.precision == "int8" and int8.device == "cpu"
    assert int8.model_id == f"int8:{fp32.model_id}"
    with pytest.raises(EncoderError, match="CPU only"):
        OpenClipEncoder(tiny_model_spec, precision="int8", device="cuda")


def test_a_catalog_built_in_fp32_is_not_searched_with_int8_vectors(
        tiny_model_spec: str, sample_catalog_dir: Path) -> None:
    engine = Engine(encoder=OpenClipEncoder(tiny_model_spec, precision="int8"),
                    catalog=sample_catalog_dir, experts=[], marketplaces=[],
                    load_entrypoints=False)
    with pytest.raises(Exception, match="int8:"):
        engine.catalog  # noqa: B018 - opening it checks the model


def test_the_model_thread_gives_freed_memory_back_once_idle(
        tiny_encoder: OpenClipEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from restyle.encoders.openclip import threads

    trimmed = threading.Event()
    monkeypatch.setattr(threads, "_TRIM_AFTER", 0.05)
    monkeypatch.setattr(threads, "_give_back_free_memory", trimmed.set)
    tiny_encoder.encode_images(_pictures())
    # Within a run of batches nothing is trimmed; once idle, the heap is.
    assert trimmed.wait(10)
    assert threads._malloc_trim() is not None or not sys.platform.startswith("linux")
