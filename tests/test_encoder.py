"""The openclip encoder: model strings, device and precision choice, batched encoding."""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import EncoderError
from restyle._input.imaging import decode
from restyle.encoders.openclip import OpenClipEncoder, parse_model_spec, select_device
from restyle.encoders.openclip import encoder as openclip_encoder
from restyle.encoders.openclip import pixels as openclip_pixels
from restyle.encoders.openclip import sources as openclip_sources
from restyle.testing import image_bytes
from tests.conftest import SAMPLE_PHOTO


def test_a_bare_architecture_takes_its_published_weights() -> None:
    spec = parse_model_spec("ViT-B-32")
    assert (spec.model_name, spec.pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
    assert spec.model_id == "ViT-B-32/laion2b_s34b_b79k"


def test_architecture_and_tag_as_in_the_original_design() -> None:
    spec = parse_model_spec("ViT-L-14/laion2b_s32b_b82k")
    assert (spec.model_name, spec.pretrained) == ("ViT-L-14", "laion2b_s32b_b82k")


def test_hf_hub_and_random_specs() -> None:
    hub = parse_model_spec("hf-hub:Marqo/marqo-fashionSigLIP")
    assert hub.model_name == "hf-hub:Marqo/marqo-fashionSigLIP" and hub.pretrained is None
    assert parse_model_spec("ViT-B-32/random").model_id == "ViT-B-32/random"


def test_local_directory_and_weights_file(tiny_model_dir: Path) -> None:
    by_prefix = parse_model_spec(f"local-dir:{tiny_model_dir}")
    by_path = parse_model_spec(str(tiny_model_dir))
    assert by_prefix == by_path and by_prefix.model_id.startswith("local:")
    weights = tiny_model_dir / "open_clip_pytorch_model.bin"
    spec = parse_model_spec("ViT-B-32", weights=weights)
    assert spec.pretrained == str(weights) and spec.model_id.startswith("ViT-B-32/file:")


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty"),
    ("NoSuchNet-99", "unknown model architecture"),
    ("local-dir:/nonexistent/model", "no open_clip_config.json"),
])
def test_bad_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(EncoderError, match=message):
        parse_model_spec(spec)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="weights file not found"):
        parse_model_spec("ViT-B-32", weights=tmp_path / "nope.safetensors")


def test_device_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device() == "cuda"
    assert select_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device() == "cpu"


def test_precision_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openclip_encoder, "cpu_has_bf16", lambda: True)
    assert OpenClipEncoder("ViT-B-32/random", device="cpu").precision == "bf16"
    assert OpenClipEncoder("ViT-B-32/random", device="cuda").precision == "fp16"
    assert OpenClipEncoder("ViT-B-32/random", device="cpu", precision="fp32").precision == "fp32"
    monkeypatch.setattr(openclip_encoder, "cpu_has_bf16", lambda: False)
    assert OpenClipEncoder("ViT-B-32/random", device="cpu").precision == "fp32"
    monkeypatch.setenv("RESTYLE_PRECISION", "fp16")
    assert OpenClipEncoder("ViT-B-32/random", device="cpu").precision == "fp16"
    with pytest.raises(EncoderError, match="precision must be one of"):
        OpenClipEncoder("ViT-B-32/random", precision="int4")


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (48 + i, 80, 3), dtype=np.uint8))
            for i in range(n)]


def test_bf16_embeddings_stay_within_cosine_0999_of_fp32(tiny_model_spec: str) -> None:
    batch = images(6)
    exact = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    fast = OpenClipEncoder(tiny_model_spec, device="cpu", precision="bf16")
    a, b = exact.encode_images(batch), fast.encode_images(batch)
    import torch

    assert next(fast._load().model.parameters()).dtype == torch.bfloat16
    assert b.dtype == np.float32
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() >= 0.999
    texts = ["a red leather jacket", "white sneakers"]
    assert (exact.encode_texts(texts) * fast.encode_texts(texts)).sum(axis=1).min() >= 0.999


def test_batches_match_one_at_a_time_in_order(tiny_model_spec: str) -> None:
    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32", batch_size=3)
    batch = [*images(6), images(1)[0].convert("L")]
    together = encoder.encode_images(batch)
    alone = np.concatenate([encoder.encode_images([img]) for img in batch])
    assert together.shape == (7, encoder.dim)
    assert np.allclose(together, alone, atol=1e-4)
    assert encoder.encode_images([]).shape == (0, encoder.dim)
    assert encoder.image_size == 64


def test_a_failing_preprocess_is_an_encoder_error(tiny_model_spec: str) -> None:
    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32", batch_size=2)

    class Broken:
        mode = "RGB"

    with pytest.raises(EncoderError, match="cannot encode images"):
        encoder.encode_images([*images(3), Broken()])  # type: ignore[list-item]


def test_large_jpegs_decode_at_reduced_scale_for_the_encoder() -> None:
    big = image_bytes(size=(2000, 1200))
    assert decode(big).image.size == (2000, 1200)
    drafted = decode(big, draft_side=224).image
    assert drafted.size == (500, 300)  # 1/4 scale: both sides still >= 224
    small = image_bytes(size=(300, 300))
    assert decode(small, draft_side=224).image.size == (300, 300)


def test_png_is_unaffected_by_draft() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1000, 1000), (1, 2, 3)).save(buf, format="PNG")
    assert decode(buf.getvalue(), draft_side=100).image.size == (1000, 1000)


def recording_inputs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Wrap the step that bounds each image; returns the sizes the encoder then resizes."""
    seen: list[tuple[int, int]] = []
    original = openclip_encoder.encoder_input

    def bounded(img: Image.Image, side: int) -> Image.Image:
        out = original(img, side)
        seen.append(out.size)
        return out

    monkeypatch.setattr(openclip_encoder, "encoder_input", bounded)
    return seen


def test_a_strip_handed_to_the_encoder_is_cut_about_its_centre(
    tiny_model_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    seen = recording_inputs(monkeypatch)
    rng = np.random.default_rng(3)
    wide = Image.fromarray(rng.integers(0, 255, (30, 10000, 3), dtype=np.uint8))
    tall = wide.transpose(Image.Transpose.ROTATE_90)
    vectors = encoder.encode_images([wide, tall])
    # Cut to 20:1, so the shortest-side resize to 64 makes 1280x64, not 21333x64.
    assert sorted(seen) == sorted([(600, 30), (30, 600)])
    centre = encoder.encode_images([wide.crop((4700, 0, 5300, 30))])
    assert np.allclose(vectors[0], centre[0], atol=1e-6)


def test_a_large_image_is_reduced_before_the_resize(
    tiny_model_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    seen = recording_inputs(monkeypatch)
    big = Image.new("RGB", (3000, 1000), (10, 120, 200))
    small = Image.new("RGB", (200, 150), (10, 120, 200))
    encoder.encode_images([big, small])
    assert encoder.image_size == 64
    # 3000x1000 reduced 7 times: its short side, 143, stays at least twice 64.
    assert sorted(seen) == [(200, 150), (429, 143)]


# -- starting without the network ------------------------------------------------------

FIX = ("run once with network access to cache them, or set RESTYLE_OFFLINE=1 and use a local "
       "model: RESTYLE_MODEL=local-dir:/path")


@pytest.fixture
def hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """The model hub's address made a closed port on this machine; no model loaded yet."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
    monkeypatch.setattr(openclip_sources, "_PROBE_ADDRESS", address)
    monkeypatch.setattr(openclip_encoder, "_CACHE", {})
    for name in ("RESTYLE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return address


def hub_cache(cache: Path, repo: str, files: dict[str, Path | str]) -> None:
    """``files`` laid out as huggingface_hub caches a download of ``repo``."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snapshot / name)
        else:
            (snapshot / name).write_text(content)


@pytest.mark.parametrize("spec", ["ViT-B-32/laion2b_s34b_b79k", "hf-hub:nobody/no-such-clip"])
def test_weights_not_cached_and_the_hub_unreachable_fail_at_once_with_the_fix(
    hub_unreachable: tuple[str, int], tmp_path: Path, spec: str
) -> None:
    encoder = OpenClipEncoder(spec, cache_dir=tmp_path, device="cpu")
    started = time.monotonic()
    with pytest.raises(EncoderError) as raised:
        encoder.encode_texts(["a jacket"])
    assert time.monotonic() - started < 5  # open_clip alone retries for about a minute
    host, port = hub_unreachable
    assert str(raised.value) == (
        f"cannot load model {spec}: its weights are not in the local cache and {host}:{port} "
        f"cannot be reached; {FIX}")


def test_the_cli_says_so_in_one_line(
    hub_unreachable: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from huggingface_hub import constants

    from restyle.cli import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.monotonic()
    code = main(["analyze", str(SAMPLE_PHOTO), "--model", "ViT-B-32/laion2b_s34b_b79k",
                 "--no-plugins"])
    out, err = capsys.readouterr()
    assert time.monotonic() - started < 10
    assert (code, out) == (1, "")
    assert err.endswith(f"restyle: error: cannot load model ViT-B-32/laion2b_s34b_b79k: its "
                        f"weights are not in the local cache and {hub_unreachable[0]}:"
                        f"{hub_unreachable[1]} cannot be reached; {FIX}\n")


@pytest.fixture
def tagged_tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """The tiny architecture published under a pretrained tag whose weights live on the
    Hub and whose preprocessing is not open_clip's default."""
    from open_clip import factory, pretrained

    from tests.conftest import TINY_MODEL_CFG

    monkeypatch.setitem(factory._MODEL_CONFIGS, "restyle-tiny", TINY_MODEL_CFG)
    monkeypatch.setitem(pretrained._PRETRAINED, "restyle-tiny", {"test": {
        "url": "", "hf_hub": "restyle/tiny-clip/", "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25), "interpolation": "bilinear", "resize_mode": "shortest"}})
    return "restyle-tiny/test"


def normalisation(encoder: OpenClipEncoder) -> tuple[tuple[float, ...], tuple[float, ...]]:
    step = encoder._load().preprocess.transforms[-1]
    return tuple(step.mean), tuple(step.std)


@pytest.mark.parametrize("offline", [False, True])
def test_cached_tagged_weights_load_at_once_with_the_tags_preprocessing(
    hub_unreachable: tuple[str, int], tagged_tiny_model: str, tiny_model_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: bool,
) -> None:
    if offline:
        monkeypatch.setenv("RESTYLE_OFFLINE", "1")
    hub_cache(tmp_path, "restyle/tiny-clip",
              {"open_clip_pytorch_model.bin": tiny_model_dir / "open_clip_pytorch_model.bin"})
    encoder = OpenClipEncoder(tagged_tiny_model, cache_dir=tmp_path, device="cpu")
    started = time.monotonic()
    assert encoder.dim == 64
    assert time.monotonic() - started < 10
    assert normalisation(encoder) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.mark.parametrize("offline", [False, True])
def test_a_cached_hub_model_loads_at_once(
    hub_unreachable: tuple[str, int], tiny_model_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, offline: bool,
) -> None:
    if offline:
        monkeypatch.setenv("RESTYLE_OFFLINE", "1")
    config = json.loads((tiny_model_dir / "open_clip_config.json").read_text())
    config["preprocess_cfg"] = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    hub_cache(tmp_path, "restyle/tiny-clip-hub", {
        "open_clip_config.json": json.dumps(config),
        "open_clip_pytorch_model.bin": tiny_model_dir / "open_clip_pytorch_model.bin"})
    encoder = OpenClipEncoder("hf-hub:restyle/tiny-clip-hub", cache_dir=tmp_path, device="cpu")
    started = time.monotonic()
    assert encoder.encode_texts(["a jacket"]).shape == (1, 64)
    assert time.monotonic() - started < 10
    assert encoder.model_id == "hf-hub:restyle/tiny-clip-hub"
    assert normalisation(encoder) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_offline_mode_never_checks_the_hub(
    hub_unreachable: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(openclip_sources, "_reachable",
                        lambda *_: pytest.fail("the hub was checked"))
    encoder = OpenClipEncoder("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path, device="cpu")
    with pytest.raises(EncoderError, match=r"not in the local cache and offline mode is on"):
        encoder.encode_texts(["x"])


def test_the_hub_is_checked_where_downloads_go(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert openclip_sources._hub_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert openclip_sources._hub_address() == ("proxy.internal", 3128)
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    assert openclip_sources._hub_address() == ("huggingface.co", 443)


def test_the_uint8_preprocessing_matches_open_clips_own(tiny_model_spec: str) -> None:
    import torch

    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    loaded = encoder._load()
    assert loaded.pixels is not None and loaded.pixels.side == 64
    rng = np.random.default_rng(5)
    photos = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
              for h, w in ((48, 80), (200, 150), (64, 64), (90, 333))]
    ours = loaded.pixels.normalise(np.stack([loaded.pixels.crop(p) for p in photos]))
    theirs = torch.stack([loaded.preprocess(p) for p in photos])
    assert ours.shape == theirs.shape
    # torch's antialiased resize is within one level (of 255) of Pillow's.
    scale = torch.tensor(loaded.pixels.std).view(1, 3, 1, 1) * 255
    assert float(((ours - theirs).abs() * scale).max()) <= 1.0 + 1e-3
    # Through the model: the same embeddings as with the model's own preprocess.
    fast = encoder.encode_images(photos)
    pixels, loaded.pixels = loaded.pixels, None
    try:
        slow = encoder.encode_images(photos)
    finally:
        loaded.pixels = pixels
    assert (fast * slow).sum(axis=1).min() >= 0.9999


def test_an_unusual_preprocess_keeps_the_models_own_steps(tiny_model_spec: str) -> None:
    from torchvision import transforms

    assert openclip_pixels._Pixels.of(transforms.Compose([transforms.ToTensor()])) is None
    squash = transforms.Compose([
        transforms.Resize((64, 64)), transforms.CenterCrop(64), transforms.Lambda(lambda x: x),
        transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    assert openclip_pixels._Pixels.of(squash) is None


def test_every_model_call_runs_on_one_thread(
    tiny_model_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32", batch_size=2)
    model = encoder._load().model
    threads: set[str] = set()
    for name in ("encode_image", "encode_text"):
        original = getattr(model, name)

        def spy(*args: object, original: object = original) -> object:
            threads.add(threading.current_thread().name)
            return original(*args)  # type: ignore[operator]

        monkeypatch.setattr(model, name, spy)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: encoder.encode_images(images(n)), [1, 3, 5, 2]))
        list(pool.map(lambda t: encoder.encode_texts([t]), ["a", "b"]))
    assert threads == {"restyle-model"}


def test_batches_are_embedded_in_order_one_answer_each(tiny_model_spec: str) -> None:
    encoder = OpenClipEncoder(tiny_model_spec, device="cpu", precision="fp32")
    batches = [images(3), [], images(1), images(2)]
    answers = list(encoder.encode_image_batches(iter(batches)))
    assert [len(a) for a in answers] == [3, 0, 1, 2]
    for batch, answer in zip(batches, answers, strict=True):
        if batch:
            assert np.allclose(answer, encoder.encode_images(batch), atol=1e-5)


@pytest.mark.parametrize(("setting", "first", "expected"), [
    ({}, "", "PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "", "ACTIVE"),
    ({"GOMP_SPINCOUNT": "1000"}, "", None),
    ({}, "import torch; ", None),  # too late for torch's runtime: left alone
])
def test_importing_restyle_makes_openmp_wait_passively_unless_told_otherwise(
    setting: dict[str, str], first: str, expected: str | None
) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(setting)
    code = f"{first}import os, json, restyle; print(json.dumps(os.environ.get('OMP_WAIT_POLICY')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == expected


def test_the_input_side_is_known_without_loading_the_model(tiny_model_spec: str) -> None:
    encoder = OpenClipEncoder(tiny_model_spec, device="cpu")
    side = encoder.input_side
    before = dict(openclip_encoder._CACHE)
    assert OpenClipEncoder("ViT-B-32/random").input_side == 224
    assert OpenClipEncoder("ViT-L-14-336/random").input_side == 336
    assert OpenClipEncoder("hf-hub:someone/some-model").input_side is None
    assert dict(openclip_encoder._CACHE) == before  # nothing was loaded to answer
    assert side == encoder.image_size  # and what the loaded model says agrees


def test_a_build_decodes_down_to_the_models_input_side() -> None:
    from decimal import Decimal

    from restyle import Condition
    from restyle._ingestion.listings import (
        DRAFT_SIDE,
        DecodedListing,
        ListingRow,
        LoadedImage,
        decode_listing_image,
        draft_side,
    )
    from restyle.testing import ColorEncoder

    assert draft_side(OpenClipEncoder("ViT-B-32/random")) == 224
    assert draft_side(OpenClipEncoder("hf-hub:someone/some-model")) == DRAFT_SIDE
    assert draft_side(ColorEncoder()) == DRAFT_SIDE  # no input_side: the safe default

    def decoded(data: bytes, side: int) -> Image.Image:
        row = ListingRow(number=1, listing_id="a", title="t", brand=None, category=None,
                         condition=Condition.UNKNOWN, price=Decimal(1), currency="USD",
                         url=None, image="/x/a.jpg", image_as_written="a.jpg", sold=None)
        result = decode_listing_image(LoadedImage(row=row, data=data, sha256="0" * 64),
                                      side=side)
        assert isinstance(result, DecodedListing) and result.sha256 == "0" * 64
        return result.image

    jpeg = image_bytes(size=(640, 480))
    assert decoded(jpeg, 224).size == (320, 240)  # half scale: both sides still >= 224
    assert decoded(jpeg, 448).size == (640, 480)
    assert decoded(image_bytes(size=(640, 480), format="PNG"), 224).size == (320, 240)


def test_the_model_thread_follows_torch_set_num_threads(tiny_model_spec: str) -> None:
    import torch

    from restyle.encoders.openclip.threads import _MODEL_THREAD

    def team() -> int:
        info = _MODEL_THREAD.run(torch.__config__.parallel_info)
        return int(info.split("omp_get_max_threads() :")[1].split()[0])

    encoder = OpenClipEncoder(tiny_model_spec, device="cpu")
    encoder.encode_images(images(1))  # the model thread is running before the call below
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encoder.encode_images(images(2))
        assert team() == 1
    finally:
        torch.set_num_threads(before)
    encoder.encode_images(images(1))
    assert team() == before


def test_for_an_accelerator_a_batch_is_prepared_by_several_threads_the_same(
        tiny_model_spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    encoder = OpenClipEncoder(tiny_model_spec, device="cpu")
    loaded = encoder._load()
    pictures = [img.resize((90 + 7 * i, 70 + 5 * i)) for i, img in enumerate(images(12))]
    here = encoder._prepared(loaded, pictures)
    seen: set[str] = set()
    original = openclip_encoder.encoder_input

    def bounded(img: Image.Image, side: int) -> Image.Image:
        seen.add(threading.current_thread().name)
        return original(img, side)

    monkeypatch.setattr(openclip_encoder, "encoder_input", bounded)
    side = encoder.image_size
    monkeypatch.setattr(OpenClipEncoder, "image_size", property(lambda self: side))
    monkeypatch.setattr(OpenClipEncoder, "device", property(lambda self: "cuda:0"))
    pooled = encoder._prepared(loaded, pictures)
    # Resized by Pillow there (as open_clip's own preprocessing does), by torch here.
    assert np.abs(pooled.astype(int) - here.astype(int)).max() <= 1
    assert all(name.startswith("restyle-prepare") for name in seen)
