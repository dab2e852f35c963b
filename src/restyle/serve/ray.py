"""The same service as a Ray Serve application (``restyle serve --ray``).

Two deployments: the encoder (:class:`EncoderDeployment`), whose
``encode`` is a ``@serve.batch`` method, so that the photos of every pipeline
replica's requests are encoded in shared model batches, with its own replica
count and ``num_gpus``; and the pipeline (:class:`PipelineDeployment`), the
app of :func:`~restyle.serve.app.create_app` around an Engine whose encoder
is :class:`RemoteEncoder`, a client of the encoder deployment. Ray Serve's
proxy takes the HTTP requests and spreads them over the pipeline replicas;
autoscaling is each deployment's ``autoscaling_config`` (docs/serving.md).

Engines and encoders are made on the replicas by the functions handed to
:func:`application` (picklable), with the driver's ``RESTYLE_*`` settings.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from ray import serve

from restyle._engine import Engine
from restyle._plugin.components import Encoder
from restyle._ray.cluster import adopt, connect, environment
from restyle.serve.settings import ServeSettings

__all__ = ["EncoderDeployment", "PipelineDeployment", "RemoteEncoder", "application",
           "run_application", "serve_on_ray"]

#: The Ray Serve application's name.
APP_NAME = "restyle"


@serve.deployment(name="encoder")
class EncoderDeployment:
    """One encoder, its ``encode`` calls (one image each) batched by Ray Serve."""

    def __init__(self, make_encoder: Callable[[], Encoder], max_batch: int, window: float,
                 settings: dict[str, str], cwd: str) -> None:
        adopt(settings, cwd)
        self.encoder = make_encoder()
        self.encoder.warm_up()
        # The batch's bounds are the service's settings, set on this replica's batcher.
        batched: Any = self.encode
        batched.set_max_batch_size(max_batch)
        batched.set_batch_wait_timeout_s(window)

    def describe(self) -> dict[str, Any]:
        return {"name": self.encoder.name, "model_id": self.encoder.model_id,
                "dim": self.encoder.dim}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def encode(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        images = [Image.fromarray(p) for p in pixels]
        vectors = await asyncio.to_thread(self.encoder.encode_images, images)
        return list(vectors)

    async def encode_texts(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.encoder.encode_texts, texts)


class RemoteEncoder(Encoder):
    """The encoder deployment, as an Engine's encoder on a pipeline replica:
    each image one ``encode`` call (Ray Serve batches them), its model's name,
    id and size asked once."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._described: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _describe(self) -> dict[str, Any]:
        with self._lock:
            if self._described is None:
                self._described = _off_the_loop(lambda: dict(
                    self.handle.describe.remote().result()))
            return self._described

    @property
    def name(self) -> str:  # type: ignore[override]
        return str(self._describe()["name"])

    @property
    def model_id(self) -> str:
        return str(self._describe()["model_id"])

    @property
    def dim(self) -> int:
        return int(self._describe()["dim"])

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        calls = [self.handle.encode.remote(np.asarray(image.convert("RGB"))) for image in images]
        rows = [np.asarray(call.result(), dtype=np.float32) for call in calls]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.handle.encode_texts.remote(list(texts)).result(), np.float32)


def _off_the_loop(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``call()``, on another thread when this one runs an event loop (a
    replica's constructor does), where a handle must not wait."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@serve.deployment(name="pipeline")
@serve.ingress()
class PipelineDeployment:
    """The service's app around an Engine whose encoder is the encoder deployment."""

    def __init__(self, encoder: Any, make_engine: Callable[[Encoder], Engine],
                 settings: dict[str, Any], environment: dict[str, str], cwd: str) -> None:
        adopt(environment, cwd)
        self.engine = make_engine(RemoteEncoder(encoder))
        self.settings = ServeSettings(**settings)

    def __serve_build_asgi_app__(self) -> Any:
        from restyle.serve.app import create_app

        return create_app(self.engine, self.settings)


def application(make_encoder: Callable[[], Encoder], make_engine: Callable[[Encoder], Engine],
                settings: ServeSettings, *, pipeline: dict[str, Any] | None = None,
                encoder: dict[str, Any] | None = None) -> Any:
    """The Ray Serve application: ``make_encoder()`` on the encoder replicas,
    ``make_engine(encoder)`` on the pipeline replicas. ``pipeline`` and
    ``encoder`` are each deployment's options (``num_replicas``,
    ``ray_actor_options`` such as ``{"num_cpus": 1, "num_gpus": 1}``,
    ``autoscaling_config``...)."""
    cwd = os.getcwd()
    deployments: tuple[Any, Any] = (EncoderDeployment, PipelineDeployment)
    encoding = deployments[0].options(**(encoder or {})).bind(
        make_encoder, settings.max_batch, settings.batch_window, environment(), cwd)
    # The token travels to the replicas inside the settings, never in a log line.
    return deployments[1].options(**(pipeline or {})).bind(
        encoding, make_engine, asdict(settings), environment(), cwd)


def _encoder_of(arguments: dict[str, Any]) -> Encoder:
    return Engine(**arguments, experts=[], marketplaces=[]).encoder


def _engine_around(arguments: dict[str, Any], encoder: Encoder) -> Engine:
    return Engine(**arguments, encoder=encoder)


def serve_on_ray(args: Any, settings: ServeSettings, engine_arguments: dict[str, Any]) -> int:
    """``restyle serve --ray``: the Engine the options describe, deployed on the
    cluster at ``--ray`` (see :func:`run_application`)."""
    plugins = not args.no_plugins
    model = {"encoder": args.encoder or None, "model": args.model or None,
             "load_entrypoints": plugins}
    catalog = args.catalog and os.path.abspath(os.path.expanduser(args.catalog))
    engine = {**engine_arguments, "catalog": catalog, "load_entrypoints": plugins}
    actor = {"num_cpus": args.replica_cpus}
    return run_application(args.ray, lambda: application(
        partial(_encoder_of, model), partial(_engine_around, engine), settings,
        pipeline={"num_replicas": args.replicas, "ray_actor_options": actor},
        encoder={"num_replicas": args.encoder_replicas,
                 "ray_actor_options": {**actor, "num_gpus": args.encoder_gpus}}), settings)


def run_application(address: str, make_app: Callable[[], Any], settings: ServeSettings) -> int:
    """Connect to Ray at ``address`` ('local', 'auto' or a cluster's), deploy
    ``make_app()`` behind Ray Serve's proxy on the settings' address, then wait
    for SIGTERM or Ctrl-C and take the application down: its replicas finish
    the requests in flight first."""
    ray = connect(address)
    # Heard from now on (after Ray's own handlers): a signal while the
    # application deploys takes it down as soon as it is up.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(make_app(), name=APP_NAME, route_prefix="/")
    sys.stderr.write(f"restyle serve: on Ray Serve, http://{settings.host}:{settings.port}/ "
                     f"({'token required' if settings.token else 'no token'})\n")
    stop.wait()
    # Taken down within the grace: a Ctrl-C in a terminal may have ended a
    # local Ray's own processes too, and then nothing would answer.
    down = threading.Thread(target=_take_down, daemon=True)
    down.start()
    down.join(settings.grace)
    ray.shutdown()
    return 0


def _take_down() -> None:
    serve.delete(APP_NAME)
    serve.shutdown()  # type: ignore[no-untyped-call]
