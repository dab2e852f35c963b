"""restyle behind an async FastAPI endpoint: ``POST /analyze`` with the photos of one item.

Run with ``uvicorn app:app`` from this directory (see README.md). One Engine
per process, created at start-up; analysis runs in a worker thread so the
event loop stays free. The answer is a :class:`PublicAnalysis`, never the
whole Analysis: no server paths, no copy of the upload. Every error is
``{"error": {"code": ..., "message": ...}}`` (:class:`PublicError`, the same
as the Django example's) with a fixed message: clients never see internal
error text. An upload over the limit is refused from its Content-Length
before its body is read, and the body is never read past the limit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from restyle import Engine, ImageError, RestyleError

# The response schema, shared with the Django example and restyle serve, and
# the upload limit, shared with restyle serve: pip install 'restyle[serve]'.
from restyle.serve.schema import (
    ERRORS,
    FORM_BYTES,
    PublicAnalysis,
    PublicError,
    documented_errors,
    draft_strategy,
    error_body,
    item_from_uploads,
    public_analysis,
)
from restyle.serve.uploads import UploadLimit

logger = logging.getLogger(__name__)

#: Largest photo accepted, in bytes.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: An item's photos together: at most this many times :data:`MAX_UPLOAD_BYTES`.
ITEM_PHOTOS = 3


class ApiError(Exception):
    """An answer of :data:`ERRORS`, raised anywhere in a request."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = Engine()
    # The model and the prompt vectors load now, not inside the first request's deadline.
    await run_in_threadpool(engine.warm_up)
    app.state.engine = engine
    yield


app = FastAPI(title="restyle", lifespan=lifespan)
# The photos and their form, the limit read at each request.
app.add_middleware(UploadLimit, limit=lambda: ITEM_PHOTOS * MAX_UPLOAD_BYTES + FORM_BYTES)

# Starlette's own errors (405, 413 above, 422) by the status they carry.
_BY_STATUS = {status: code for code, (status, _) in ERRORS.items()
              if code in ("method_not_allowed", "too_large", "invalid_request")}


def _answer(code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    status, body = error_body(code)
    return JSONResponse(body, status_code=status, headers=headers)


@app.exception_handler(ApiError)
async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _answer(exc.code)


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = exc.detail if exc.detail in ERRORS else _BY_STATUS.get(exc.status_code)
    if code is None:  # a 404 and the like: the same shape
        body = PublicError.model_validate(
            {"error": {"code": "not_found" if exc.status_code == 404 else "error",
                       "message": str(exc.detail)}}).model_dump()
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return _answer(code, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _answer("invalid_request")


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@app.post("/analyze", response_model=PublicAnalysis,
          responses=documented_errors("no_image", "too_many_photos", "bad_roles", "bad_draft",
                                "unreadable_image", "too_large", "invalid_request",
                                "unavailable"))
async def analyze(
    image: Annotated[list[UploadFile], File(
        description="a JPEG, PNG, WebP, HEIC or AVIF photo of the item; repeat the field for "
                    "several photos of one item (the whole item, its tag, its label...)")],
    engine: Annotated[Engine, Depends(get_engine)],
    roles: Annotated[str | None, Form(
        description="one role per photo, comma-separated: whole, tag, label, detail, flaw "
                    "(empty where unknown: restyle finds it)")] = None,
    draft: Annotated[str | None, Form(
        description="also make a listing draft, priced quick, market or patient "
                    "(docs/listing.md)")] = None,
) -> PublicAnalysis:
    photos: list[bytes] = []
    for upload in image:
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if not data:
            raise ApiError("no_image")
        if len(data) > MAX_UPLOAD_BYTES or (
                sum(map(len, photos)) + len(data) > ITEM_PHOTOS * MAX_UPLOAD_BYTES):
            raise ApiError("too_large")
        photos.append(data)
    try:
        item = item_from_uploads(photos, roles)
        strategy = draft_strategy(draft)
    except ValueError as exc:
        raise ApiError(str(exc)) from None
    try:
        analysis = await run_in_threadpool(engine.analyze, item)
        listing = None if strategy is None else await run_in_threadpool(
            lambda: engine.draft(analysis, price=strategy))
    except ImageError as exc:
        raise ApiError("unreadable_image") from exc
    except RestyleError as exc:
        logger.exception("analysis failed")
        raise ApiError("unavailable") from exc
    return public_analysis(analysis, listing)
