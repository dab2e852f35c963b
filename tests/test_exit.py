"""A process ends with its own status whatever restyle's model is doing: a real
model call that overran its deadline is still running on restyle's model thread
as the interpreter exits (torch work on a daemon thread at finalisation aborts
the process: "terminate called without an active exception", status 134)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

# ViT-B-32 with untrained weights: no download, the compute of the real model.
OVERRUN = textwrap.dedent("""
    import sys, time
    from PIL import Image
    from restyle._pipeline import budget as _budget
    from restyle.encoders.openclip import OpenClipEncoder
    encoder = OpenClipEncoder("ViT-B-32/random", device="cpu", precision="fp32")
    encoder.load()
    images = [Image.new("RGB", (256, 256), (i, 20, 30)) for i in range(48)]
    try:
        _budget.call(encoder, "encoder openclip", encoder.encode_images, images,
                     deadline=time.monotonic() + 0.3)
        print("answered in time")
    except Exception as exc:
        print("overran:", type(exc).__name__, flush=True)
    time.sleep(float(sys.argv[1]))  # exit with the batch still on the model thread
    {ending}
""")


@pytest.mark.parametrize(("ending", "status"), [
    ("sys.exit(3)", 3),
    ("pass", 0),
])
def test_a_process_exits_with_its_status_while_a_model_call_overruns(
        ending: str, status: int) -> None:
    script = OVERRUN.replace("{ending}", ending)
    done = subprocess.run([sys.executable, "-c", script, "0.1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**_env(), "RESTYLE_DEVICE": "cpu"})
    assert "overran" in done.stdout, done.stdout + done.stderr
    assert "terminate called" not in done.stderr
    assert done.returncode == status, done.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
