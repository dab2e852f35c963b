"""The ``openclip`` encoder: an open_clip model picked by one string.

Model specs:

- ``"ViT-B-32/laion2b_s34b_b79k"``: a built-in architecture plus a pretrained tag
  (downloaded on first use, then cached where open_clip and huggingface_hub
  cache weights). A bare architecture name uses its first published tag.
- ``"hf-hub:org/repo"``: a model published on the Hugging Face Hub.
- ``"local-dir:/path"`` or the path of a directory holding
  ``open_clip_config.json`` and a weights file: no network at all.
- ``weights="/path/file.safetensors"`` with an architecture name loads a local
  weights file for that architecture.

The model loads lazily, once per process per (spec, device, precision), and
is shared by every Engine that asks for it. A model from the Hugging Face Hub
is loaded from the local cache, with no request, in offline mode or when a
quick probe finds the Hub unreachable; missing weights are then an error at once.

Precision: on CUDA the weights are fp16; on CPUs with native bfloat16
instructions (AVX512-BF16 or AMX) the whole model is cast to bfloat16, which
more than doubles ViT-B-32 throughput while keeping embeddings within cosine
0.9999 of fp32 (bf16 *autocast* is avoided: it is several times slower than
fp32 for open_clip); elsewhere fp32. ``precision="fp32"`` or
``RESTYLE_PRECISION=fp32`` turns the fast path off. ``precision="int8"``
(opt-in, CPU only) makes both towers' transformer blocks int8 dynamic-quantized
layers (see ``quantize``); its vectors carry the model id ``int8:MODEL``.

Loading: a model with a local weights file is built on the meta device and
given the file's tensors mapped from disk, never a second copy of them (see
``load``).

Threads: every model call runs on one daemon thread of this package (see
``threads._ModelThread``), and the standard open_clip preprocessing (shortest-side
resize, centre crop, normalise) is done on uint8 pixels by the calling thread,
which prepares the next batch while the model runs the current one.

Deadlines and exit: a call made by an Engine waits for the model (its loading,
or the batch it asked for) only until the call's deadline, then raises an
:class:`~restyle.EncoderError` and returns; the work goes on on the model
thread and its result is kept (a model loaded late is there for the next
call), so one overrun never makes the encoder *busy*. When the interpreter
shuts down, no new torch work starts and the exit waits for the work in
progress (one batch, or a model load; at most :data:`EXIT_WAIT_SECONDS`):
torch work still running on a daemon thread as the interpreter finalises
aborts the process ("terminate called without an active exception").

The modules, along their jobs:

- ``spec``: model strings parsed, the device and the precision chosen;
- ``sources``: where the weights come from (the Hub, probed, or its cache);
- ``threads``: the model thread, deadlines, and the torch work the exit waits for;
- ``load``: the model built from its weights file without a second copy;
- ``quantize``: the int8 path for CPUs without bfloat16;
- ``pixels``: the standard preprocessing on uint8 pixels;
- ``encoder``: :class:`OpenClipEncoder`, its model cache and its encoding.
"""

from __future__ import annotations

from typing import Any

from restyle._plugin.hookspecs import hookimpl
from restyle.encoders.openclip.encoder import OpenClipEncoder
from restyle.encoders.openclip.sources import HUB_PROBE_TIMEOUT
from restyle.encoders.openclip.spec import (
    ModelSpec,
    cpu_has_bf16,
    parse_model_spec,
    select_device,
)
from restyle.encoders.openclip.threads import EXIT_WAIT_SECONDS

__all__ = [
    "EXIT_WAIT_SECONDS",
    "HUB_PROBE_TIMEOUT",
    "ModelSpec",
    "OpenClipEncoder",
    "cpu_has_bf16",
    "parse_model_spec",
    "select_device",
]


@hookimpl
def register_encoders(register: Any) -> None:
    register(OpenClipEncoder())
