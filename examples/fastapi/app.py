"""restyle behind an async FastAPI endpoint: ``POST /analyze`` with a photo upload.

Run with ``uvicorn app:app`` from this directory (see README.md). One Engine
per process, created at start-up; analysis runs in a worker thread so the
event loop stays free. The answer is a :class:`PublicAnalysis`, never the
whole Analysis: no server paths, no copy of the upload. Clients get clear 4xx
answers for bad uploads and never see internal error text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from restyle import Engine, ImageError, RestyleError

# The response schema is shared with the Django example: examples/public_analysis.py.
sys.path.append(str(Path(__file__).resolve().parent.parent))
from public_analysis import PublicAnalysis, public_analysis

logger = logging.getLogger(__name__)

#: Largest upload accepted, in bytes.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = Engine()
    # The model and the prompt vectors load now, not inside the first request's deadline.
    await run_in_threadpool(engine.warm_up)
    app.state.engine = engine
    yield


app = FastAPI(title="restyle", lifespan=lifespan)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@app.post("/analyze", response_model=PublicAnalysis)
async def analyze(
    image: Annotated[UploadFile, File(description="a JPEG, PNG or WebP photo of the item")],
    engine: Annotated[Engine, Depends(get_engine)],
) -> PublicAnalysis:
    data = await image.read(MAX_UPLOAD_BYTES + 1)
    if not data:
        raise HTTPException(status_code=400, detail="No image was uploaded.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(status_code=413, detail="The photo is larger than 10 MB.")
    try:
        analysis = await run_in_threadpool(engine.analyze, data)
    except ImageError as exc:
        raise HTTPException(
            status_code=400, detail="The upload is not a JPEG, PNG or WebP photo we can read."
        ) from exc
    except RestyleError as exc:
        logger.exception("analysis failed")
        raise HTTPException(status_code=503, detail="The analysis is unavailable.") from exc
    return public_analysis(analysis)
