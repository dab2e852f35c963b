"""``AIImageSearchView`` rebuilt on restyle's Engine.

One Engine per process, created on first use and shared by every request
(Engine is thread-safe). Uploads are size-limited; bad photos get a clear 400;
clients never see internal error text, which goes to the log instead. The
answer has the shape of ``PublicAnalysis`` (see README.md), the same as the
FastAPI example's: no server paths, no copy of the upload.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from restyle import Engine, ImageError, RestyleError

# The response schema is shared with the FastAPI example: examples/public_analysis.py.
sys.path.append(str(Path(__file__).resolve().parents[2]))
from public_analysis import public_analysis

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


@method_decorator(csrf_exempt, name="dispatch")  # an API endpoint; protect it with your auth
class AIImageSearchView(View):
    http_method_names = ("post",)  # type: ignore[assignment]

    def post(self, request: HttpRequest) -> JsonResponse:
        upload = request.FILES.get("image")
        if upload is None:
            return JsonResponse({"error": "No image file provided."}, status=400)
        limit = settings.RESTYLE_MAX_UPLOAD_BYTES
        if upload.size is not None and upload.size > limit:
            return JsonResponse({"error": "The photo is larger than 10 MB."}, status=413)
        data = upload.read(limit + 1)
        if len(data) > limit:
            return JsonResponse({"error": "The photo is larger than 10 MB."}, status=413)
        try:
            analysis = get_engine().analyze(data)
        except ImageError:
            return JsonResponse(
                {"error": "The upload is not a JPEG, PNG or WebP photo we can read."}, status=400
            )
        except RestyleError:
            logger.exception("analysis failed")
            return JsonResponse({"error": "The analysis is unavailable."}, status=503)
        return JsonResponse(public_analysis(analysis).model_dump(mode="json"))
