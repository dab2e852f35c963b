"""``AIImageSearchView`` rebuilt on restyle's Engine.

One Engine per process, created on first use and shared by every request
(Engine is thread-safe). An upload over the limit is refused from its
Content-Length before its body is read (Django reads no more than that), and
a photo is read only to the limit; bad photos get a clear 400. Every error is
``{"error": {"code": ..., "message": ...}}`` (``PublicError``, the same as
the FastAPI example's) with a fixed message: clients never see internal error
text, which goes to the log instead. The answer has the shape of
``PublicAnalysis`` (see README.md): no server paths, no copy of the upload.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from restyle import Engine, ImageError, RestyleError

# The response schema, shared with the FastAPI example and restyle serve.
from restyle.serve.schema import draft_strategy, error_body, item_from_uploads, public_analysis

logger = logging.getLogger(__name__)

_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process's Engine, built and warmed up once (configure it with RESTYLE_*
    variables): the model and the prompt vectors load here, not inside the first
    request's deadline."""
    global _engine
    with _engine_lock:
        if _engine is None:
            engine = Engine()
            engine.warm_up()
            _engine = engine
        return _engine


#: What a request body may hold besides the photos: the multipart form around them.
FORM_BYTES = 64 * 1024
#: An item's photos together: at most this many times the one photo's limit.
ITEM_PHOTOS = 3


def error(code: str, **headers: str) -> JsonResponse:
    """The answer of the error ``code`` (restyle.serve.schema's ERRORS)."""
    status, body = error_body(code)
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


@method_decorator(csrf_exempt, name="dispatch")  # an API endpoint; protect it with your auth
class AIImageSearchView(View):
    http_method_names = ("post",)  # type: ignore[assignment]

    def http_method_not_allowed(self, request: HttpRequest, *args: Any,
                                **kwargs: Any) -> HttpResponse:
        return error("method_not_allowed", Allow="POST")

    def post(self, request: HttpRequest) -> JsonResponse:
        limit = settings.RESTYLE_MAX_UPLOAD_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > ITEM_PHOTOS * limit + FORM_BYTES:
            return error("too_large")  # before a byte of the body is read
        # Django reads no more of the body than its Content-Length.
        uploads = request.FILES.getlist("image")  # several: the photos of one item
        if not uploads or not all(upload.size for upload in uploads):
            return error("no_image")
        photos: list[bytes] = []
        for upload in uploads:
            data = upload.read(limit + 1)
            if len(data) > limit or sum(map(len, photos)) + len(data) > ITEM_PHOTOS * limit:
                return error("too_large")
            photos.append(data)
        try:
            item = item_from_uploads(photos, request.POST.get("roles"))
            strategy = draft_strategy(request.POST.get("draft"))
        except ValueError as exc:
            return error(str(exc))
        try:
            analysis = get_engine().analyze(item)
            listing = None if strategy is None else get_engine().draft(analysis, price=strategy)
        except ImageError:
            return error("unreadable_image")
        except RestyleError:
            logger.exception("analysis failed")
            return error("unavailable")
        return JsonResponse(public_analysis(analysis, listing).model_dump(mode="json"))
