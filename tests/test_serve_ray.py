"""restyle serve on Ray Serve, on a local Ray of this machine's cores with
fractional CPUs: two pipeline replicas and one encoder replica whose
``@serve.batch`` gathers the concurrent requests' photos; the same API and
the same token as on uvicorn; SIGTERM takes the application down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.test_serve import TOKEN, code, jpeg, post, wait_ready

pytest.importorskip("ray.serve")

#: The driver: fakes on the replicas (pickled by value from __main__), the
#: application deployed by restyle.serve.ray.run_application on a local Ray.
DRIVER = r'''
import json, sys, time
from decimal import Decimal
import ray
from restyle import Engine, Listing, Money
from restyle.serve import ServeSettings
from restyle.serve.ray import application, run_application
from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert

config = json.loads(sys.argv[1])

class LoggingEncoder(ColorEncoder):
    def encode_images(self, images):
        with open(config["log"], "a") as log:
            log.write(f"{len(images)}\n")
        time.sleep(0.3)
        return super().encode_images(images)

def make_encoder():
    return LoggingEncoder()

def make_engine(encoder):
    listings = [Listing(marketplace="shop", listing_id=f"l{i}", title="Acme jacket",
                        price=Money(amount=Decimal(20 + i), currency="USD"), sold=True)
                for i in range(4)]
    expert = ScriptedExpert("acme", entities=[("Acme", 0.9, "brand")])
    return Engine(encoder=encoder, experts=[expert],
                  marketplaces=[ListMarketplace("shop", listings)], load_entrypoints=False)

settings = ServeSettings(port=config["port"], token=config["token"], batch_window=0.5).check()
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
fraction = {"num_cpus": 0.25}
sys.exit(run_application("auto", lambda: application(
    make_encoder, make_engine, settings,
    pipeline={"num_replicas": 2, "ray_actor_options": fraction},
    encoder={"num_replicas": 1, "ray_actor_options": fraction}), settings))
'''


def terminate(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then the status it ends with (killed if it has not within 120 s)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_app_on_ray_serve_batches_the_encoder_across_replicas(tmp_path: Path) -> None:
    from tests.test_serve import _free_port

    port = _free_port()
    log = tmp_path / "batches.txt"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    config = {"port": port, "token": TOKEN, "log": str(log)}
    process = subprocess.Popen([sys.executable, str(script), json.dumps(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_ready(url, timeout=180)
        plugins = requests.get(url + "/v1/plugins", headers=auth, timeout=30).json()
        assert plugins["encoder"] == {"name": "color", "model_id": "color-histogram-4"}
        assert code(post(url, jpeg())) == "unauthorized"
        answers: list[requests.Response] = []
        threads = [threading.Thread(target=lambda i=i: answers.append(
            post(url, jpeg((i * 60, 0, 0)), headers=auth, timeout=120))) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(150)
        assert [a.status_code for a in answers] == [200] * 4
        assert all(a.json()["identification"]["brand"] == "Acme" for a in answers)
        sizes = [int(line) for line in log.read_text().split()]
        assert max(sizes) > 1  # photos of several requests in one model batch
    finally:
        status = terminate(process)
    assert status == 0, process.stderr.read() if process.stderr else ""


def test_the_command_line_serves_a_catalog_on_ray_serve(
    tmp_path: Path, tiny_model_spec: str, tiny_encoder: Any, catalog_copy: Path,
) -> None:
    """`restyle serve --ray local`: the command's own Engine (the model and the
    catalog it names) deployed on a Ray it starts, quarter-CPU replicas; an
    analysis finds the catalog's comps; SIGTERM ends it with status 0."""
    import os

    from tests.conftest import SAMPLE_PHOTO
    from tests.test_serve import _free_port

    port = _free_port()
    env = {**os.environ, "RESTYLE_SERVE_TOKEN": TOKEN, "RESTYLE_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "restyle", "serve", "--ray", "local", "--port", str(port),
         "--model", tiny_model_spec, "--catalog", str(catalog_copy), "--no-plugins",
         "--replica-cpus", "0.25"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_ready(url, timeout=240)
        plugins = requests.get(url + "/v1/plugins", headers=auth, timeout=30).json()
        assert plugins["encoder"]["model_id"] == tiny_encoder.model_id
        answer = post(url, SAMPLE_PHOTO.read_bytes(), headers=auth, timeout=120)
        assert answer.status_code == 200, answer.text
        comps = answer.json()["comps"]
        assert comps and all(c["marketplace"] == "catalog" for c in comps)
    finally:
        status = terminate(process)
    assert status == 0, process.stderr.read() if process.stderr else ""
