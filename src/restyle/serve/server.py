"""Running the app on uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT the service stops taking work at once: the listening
socket closes (new connections are refused), an analysis still asked on a
kept-alive connection gets 503 ``shutting_down`` with Retry-After, and the
requests in flight finish (for up to ``settings.grace`` seconds) before the
process exits.
"""

from __future__ import annotations

import logging
import math
import socket
import types
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI

from restyle.serve.admission import Admission
from restyle.serve.settings import ServeSettings

__all__ = ["run"]

logger = logging.getLogger("restyle.serve")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, admission: Admission) -> None:
        super().__init__(config)
        self.admission = admission

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        if not self.admission.draining:
            logger.info("shutting down: %d request(s) in flight finish first",
                        self.admission.running + self.admission.waiting)
        self.admission.draining = True
        super().handle_exit(sig, frame)


def run(app: FastAPI, settings: ServeSettings,
        sockets: Sequence[socket.socket] | None = None) -> None:
    """Serve ``app`` (made by :func:`~restyle.serve.app.create_app`) until a
    signal ends it, on ``settings``' address or the bound ``sockets`` given."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                            log_config=None, timeout_graceful_shutdown=math.ceil(settings.grace),
                            server_header=False, lifespan="on")
    _Server(config, app.state.admission).run(sockets=list(sockets) if sockets else None)
