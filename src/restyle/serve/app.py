"""The service's ASGI app: one warm Engine behind FastAPI.

``create_app(engine, settings)`` gives the app ``restyle serve`` runs on
uvicorn and the Ray Serve deployment wraps: the page at ``/`` and the
version 1 API under ``/v1/`` (docs/serving.md). Every answer is the public
schema (:mod:`restyle.serve.schema`): a :class:`PublicAnalysis`, or
``{"error": {"code", "message"}}`` with a fixed message; what went wrong
inside goes to the server's log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from restyle._engine import Engine
from restyle._errors import ImageError, RestyleError
from restyle._listing import ListingDraft
from restyle._types import Analysis
from restyle.serve.admission import Admission, Refused
from restyle.serve.middleware import AccessLog, Gate
from restyle.serve.page import add_page
from restyle.serve.schema import (
    ERRORS,
    PHOTO_BYTES,
    SCHEMA_VERSION,
    PublicAnalysis,
    PublicError,
    documented_errors,
    draft_strategy,
    error_body,
    item_from_uploads,
    public_analysis,
)
from restyle.serve.settings import ServeSettings
from restyle.serve.uploads import UploadLimit

__all__ = ["create_app", "engine_components"]

logger = logging.getLogger("restyle.serve")

#: Errors whose answer tells when to try again (the Retry-After header).
_RETRY = frozenset({"busy", "warming_up", "shutting_down"})
#: Starlette's own errors (a 404, a 405, a 413 while reading) by the status they carry.
_BY_STATUS = {status: code for code, (status, _) in ERRORS.items()
              if code in ("not_found", "method_not_allowed", "too_large", "invalid_request")}
_PHOTO_FIELD = ("a JPEG, PNG, WebP, HEIC or AVIF photo of the item; repeat the field for "
                "several photos of one item (the whole item, its tag, its label...)")
_DEADLINE_FIELD = ("seconds this request may take, waiting included: at most the service's "
                   "deadline (its default); past it the answer is 504")
_ROLES_FIELD = ("one role per photo, comma-separated: whole, tag, label, detail, flaw "
                "(empty where unknown: restyle finds it)")


class ApiError(Exception):
    """An answer of the schema's ERRORS, raised anywhere in a request."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _answer(code: str, retry_after: int) -> JSONResponse:
    status, body = error_body(code)
    headers = {"Retry-After": str(retry_after)} if code in _RETRY else {}
    if code == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=headers)


_UPLOAD_ERRORS = ("no_image", "too_many_photos", "bad_roles", "bad_draft", "unreadable_image",
                  "unauthorized", "too_large", "invalid_request", "busy", "unavailable",
                  "warming_up", "shutting_down", "timeout")


def engine_components(engine: Engine) -> dict[str, Any]:
    """What ``GET /v1/plugins`` tells: the Engine's components by kind and name,
    the encoder's model, and how many plugins failed to load (their errors
    stay in the server's log)."""
    return {
        "encoder": {"name": engine.encoder.name, "model_id": engine.encoder.model_id},
        "experts": [e.name for e in engine.experts],
        "synthesizer": engine.synthesizer.name,
        "marketplaces": [m.name for m in engine.marketplaces],
        "plugin_errors": len(engine.plugin_errors),
    }


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The service around ``engine``: warmed up in the background as the app
    starts (``/v1/ready`` answers 503 until then), its analyses run on
    ``settings.concurrency`` threads behind a queue of ``settings.queue``.
    For cross-request batching give ``engine`` a :class:`BatchingEncoder`
    (``restyle serve`` does)."""
    settings = (settings or ServeSettings()).check()
    admission = Admission(concurrency=settings.concurrency, queue=settings.queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warming = asyncio.create_task(_warm_up(engine, admission))
        try:
            yield
        finally:
            admission.draining = True
            warming.cancel()
            admission.close()

    app = FastAPI(title="restyle", version=f"{SCHEMA_VERSION}", lifespan=lifespan,
                  summary="Identify a secondhand item from its photos, find comps, price it "
                  "and draft its listing.")
    app.state.engine, app.state.admission, app.state.settings = engine, admission, settings
    # The last added runs first: the log sees every answer, the gate comes before the body.
    app.add_middleware(UploadLimit)
    app.add_middleware(Gate, token=settings.token, admission=admission,
                       retry_after=settings.retry_after)
    app.add_middleware(AccessLog)
    _add_handlers(app, settings)
    add_page(app)
    _add_routes(app, engine, admission, settings)
    return app


async def _warm_up(engine: Engine, admission: Admission) -> None:
    try:
        await asyncio.to_thread(engine.warm_up)
    except RestyleError:
        logger.exception("the engine did not warm up; the first requests load what it lacks")
    admission.ready = True
    logger.info("ready")


def _add_handlers(app: FastAPI, settings: ServeSettings) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc.code, settings.retry_after)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return _answer(exc.code, settings.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.detail if exc.detail in ERRORS else _BY_STATUS.get(exc.status_code)
        if code is None:
            body = PublicError.model_validate(
                {"error": {"code": "error", "message": "The request failed."}}).model_dump()
            return JSONResponse(body, status_code=exc.status_code)
        return _answer(code, settings.retry_after)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer("invalid_request", settings.retry_after)


async def _read_photos(uploads: list[UploadFile]) -> list[bytes]:
    """The uploads' bytes, each read only to its limit."""
    photos: list[bytes] = []
    for upload in uploads:
        data = await upload.read(PHOTO_BYTES + 1)
        if not data:
            raise ApiError("no_image")
        if len(data) > PHOTO_BYTES or sum(map(len, photos)) + len(data) > 3 * PHOTO_BYTES:
            raise ApiError("too_large")
        photos.append(data)
    return photos


def _analysis_work(engine: Engine, photos: list[bytes], roles: str | None,
                   strategy: str | None, condition: str | None,
                   ends: float) -> Callable[[], PublicAnalysis]:
    """The analysis (and the draft) of one request, run on a worker thread,
    each call given what is left of the request's deadline."""
    try:
        item = item_from_uploads(photos, roles)
    except ValueError as exc:
        raise ApiError(str(exc)) from None

    def work() -> PublicAnalysis:
        analysis: Analysis = engine.analyze(item, deadline=max(ends - time.monotonic(), 0.05))
        listing: ListingDraft | None = None
        if strategy is not None:
            listing = engine.draft(analysis, price=strategy, condition=condition or None,
                                   deadline=max(ends - time.monotonic(), 0.05))
        return public_analysis(analysis, listing)

    return work


async def _serve_analysis(request: Request, work: Callable[[], PublicAnalysis],
                          ends: float) -> PublicAnalysis:
    admission: Admission = request.app.state.admission
    try:
        return await admission.run(work, ends=ends)
    except ImageError as exc:
        raise ApiError("unreadable_image") from exc
    except RestyleError as exc:
        logger.exception("analysis failed")
        raise ApiError("unavailable") from exc


def _add_routes(app: FastAPI, engine: Engine, admission: Admission,
                settings: ServeSettings) -> None:
    @app.get("/v1/health", summary="The process answers (no token needed)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/ready", summary="Warm and taking requests (no token needed)",
             responses=documented_errors("warming_up", "shutting_down"))
    async def ready() -> dict[str, Any]:
        if admission.draining:
            raise ApiError("shutting_down")
        if not admission.ready:
            raise ApiError("warming_up")
        return {"status": "ready", "running": admission.running, "waiting": admission.waiting,
                "concurrency": admission.concurrency, "queue": admission.queue}

    @app.get("/v1/plugins", responses=documented_errors("unauthorized"),
             summary="The Engine's components")
    async def plugins() -> dict[str, Any]:
        return engine_components(engine)

    @app.post("/v1/analyze", response_model=PublicAnalysis,
              responses=documented_errors(*_UPLOAD_ERRORS), summary="Analyze an item's photos")
    async def analyze(
        request: Request,
        image: Annotated[list[UploadFile], File(description=_PHOTO_FIELD)],
        roles: Annotated[str | None, Form(description=_ROLES_FIELD)] = None,
        draft: Annotated[str | None, Form(
            description="also make a listing draft, priced quick, market or patient")] = None,
        deadline: Annotated[float | None, Form(gt=0, description=_DEADLINE_FIELD)] = None,
    ) -> PublicAnalysis:
        ends = _ends(request, settings, deadline)
        photos = await _read_photos(image)
        strategy = _strategy(draft)
        work = _analysis_work(engine, photos, roles, strategy, None, ends)
        return await _serve_analysis(request, work, ends)

    @app.post("/v1/draft", response_model=PublicAnalysis,
              responses=documented_errors(*_UPLOAD_ERRORS),
              summary="Analyze an item's photos and draft its listing")
    async def draft(
        request: Request,
        image: Annotated[list[UploadFile], File(description=_PHOTO_FIELD)],
        roles: Annotated[str | None, Form(description=_ROLES_FIELD)] = None,
        price: Annotated[str, Form(description="quick, market or patient")] = "market",
        condition: Annotated[str | None, Form(
            description="the item's condition when the photos do not show it, such as "
                        "'new with tags' or 'used'", max_length=80)] = None,
        deadline: Annotated[float | None, Form(gt=0, description=_DEADLINE_FIELD)] = None,
    ) -> PublicAnalysis:
        ends = _ends(request, settings, deadline)
        photos = await _read_photos(image)
        strategy = _strategy(price) or "market"
        work = _analysis_work(engine, photos, roles, strategy, condition, ends)
        return await _serve_analysis(request, work, ends)


def _ends(request: Request, settings: ServeSettings, deadline: float | None) -> float:
    """When the request must be answered (on the monotonic clock): its arrival
    plus the service's deadline, or the shorter one the client asked for."""
    arrived = getattr(request.state, "arrived", None) or time.monotonic()
    return float(arrived) + min(settings.deadline, deadline or settings.deadline)


def _strategy(value: str | None) -> str | None:
    try:
        return draft_strategy(value)
    except ValueError as exc:
        raise ApiError(str(exc)) from None
