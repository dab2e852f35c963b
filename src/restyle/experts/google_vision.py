"""The ``google-vision`` expert: Google Cloud Vision's web detection, objects, logos and text.

One ``batch_annotate_images`` call per photo; the answer becomes an Opinion of
web entities, best-guess labels, matching page titles, similar image URLs,
localized objects, logos (as brands) and the text printed on the item.
"""

from __future__ import annotations

import functools
import html
import logging
import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from restyle import _settings
from restyle._errors import ConfigurationError, ExpertError
from restyle._input.imaging import UploadImage, UploadLimits, prepare_upload
from restyle._plugin.components import Expert
from restyle._plugin.hookspecs import hookimpl
from restyle._plugin.remote import RemoteComponent
from restyle._secrets import redact
from restyle._taxonomy import map_category
from restyle._types import Box, Observation, Opinion

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["GoogleVisionExpert"]

logger = logging.getLogger("restyle.experts.google_vision")

#: Environment variable holding a Cloud Vision API key (used when no key is passed).
API_KEY_ENV = "RESTYLE_GOOGLE_API_KEY"

# Vision takes up to 20 MB files and 75 Mpx, but a JSON request is capped at
# 10 MB after base64 (+33 %); 1600 px keeps small print legible for text
# detection while keeping uploads, and so latency, small.
LIMITS = UploadLimits(
    max_bytes=7 * 1024 * 1024,
    max_side=1600,
    max_pixels=75_000_000,
    formats=("JPEG", "PNG", "WEBP"),
)

#: Vision gives best-guess labels no score; it is its single top guess, usually
#: right about the kind of item but often generic, so it counts as a fair vote.
BEST_GUESS_SCORE = 0.7

# Page scores are deprecated and usually absent: rank by how the image matched.
_FULL_MATCH_SCORE = 1.0
_PARTIAL_MATCH_SCORE = 0.75
_OTHER_PAGE_SCORE = 0.5

_URL_PREFIX = re.compile(r"^[A-Z]+ \S+: ")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_TRANSPORTS = ("grpc", "rest")


class GoogleVisionExpert(RemoteComponent, Expert):
    """Asks Google Cloud Vision what the photo shows and where else it appears on the web.

    Credentials, first found wins: ``credentials`` (a google-auth object),
    ``api_key`` (or ``RESTYLE_GOOGLE_API_KEY``), ``credentials_file`` (a
    service-account JSON file), then Application Default Credentials
    (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, or the metadata server).
    They are resolved on first use, so constructing the expert is free.

    ``endpoint`` names another API endpoint (a regional one, a private one);
    ``ca_certs`` is a PEM file of the certificate authorities to trust for it
    instead of the system's, for an endpoint behind a private CA or a
    TLS-inspecting proxy. It applies to the gRPC transport; for REST, set
    ``REQUESTS_CA_BUNDLE``.

    ``timeout`` bounds the whole examination, retries included: transient
    failures (429, 5xx, dropped connections) are retried with backoff, at most
    ``max_attempts`` times, while time is left.
    """

    name = "google-vision"
    error_type = ExpertError

    def __init__(
        self,
        *,
        api_key: str | None = None,
        credentials_file: str | Path | None = None,
        credentials: Any = None,
        transport: str = "grpc",
        endpoint: str | None = None,
        ca_certs: str | Path | None = None,
        logos: bool = True,
        text: bool = True,
        max_results: int = 10,
        timeout: float = 20.0,
        max_attempts: int = 3,
    ) -> None:
        if transport not in _TRANSPORTS:
            raise ConfigurationError(
                f"google-vision transport must be 'grpc' or 'rest', got {transport!r}"
            )
        if ca_certs is not None and transport != "grpc":
            raise ConfigurationError(
                "google-vision ca_certs applies to the grpc transport; "
                "for rest, set REQUESTS_CA_BUNDLE"
            )
        if timeout <= 0 or max_attempts < 1 or max_results < 1:
            raise ConfigurationError(
                "google-vision needs timeout > 0, max_attempts >= 1 and max_results >= 1"
            )
        super().__init__()
        self._api_key = self._secret(api_key)
        self.credentials_file = Path(credentials_file).expanduser() if credentials_file else None
        self._credentials = credentials
        self.transport = transport
        self.endpoint = endpoint
        self.ca_certs = Path(ca_certs).expanduser() if ca_certs is not None else None
        self.logos = logos
        self.text = text
        self.max_results = max_results
        self.timeout = timeout
        self.max_attempts = max_attempts

    # -- client --------------------------------------------------------------

    def _key(self) -> str | None:
        if self._api_key is None:
            self._api_key = self._secret(_settings.env_str(API_KEY_ENV))
        return self._api_key.reveal() if self._api_key is not None else None

    def _make_client(self) -> Any:
        try:
            import google.auth.exceptions
            from google.cloud import vision
        except ImportError as exc:
            self._fail(
                "the google-vision expert needs the Google Cloud Vision client: "
                "pip install 'restyle[google]'", exc
            )
        options: dict[str, Any] = {}
        if self.endpoint:
            options["api_endpoint"] = self.endpoint
        transport: Any = self.transport
        if self.ca_certs is not None:
            transport = functools.partial(
                vision.ImageAnnotatorClient.get_transport_class("grpc"),
                ssl_channel_credentials=self._ssl_credentials(self.ca_certs),
            )
        credentials = self._credentials
        key = None if credentials is not None else self._key()
        try:
            if key:
                options["api_key"] = key
            elif credentials is None and self.credentials_file is not None:
                from google.oauth2 import service_account

                load = service_account.Credentials.from_service_account_file
                # google-auth leaves this factory unannotated.
                credentials = load(str(self.credentials_file))  # type: ignore[no-untyped-call]
            return vision.ImageAnnotatorClient(
                credentials=credentials, transport=transport, client_options=options
            )
        except google.auth.exceptions.DefaultCredentialsError as exc:
            self._fail(
                "google-vision found no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS "
                f"to a service-account file, set {API_KEY_ENV}, pass credentials_file= or "
                "api_key=, or run 'gcloud auth application-default login'", exc
            )
        except (OSError, ValueError) as exc:
            where = self.credentials_file or "the given credentials"
            self._fail(
                f"google-vision cannot use {where}: {type(exc).__name__}: {exc}", exc
            )

    def _ssl_credentials(self, path: Path) -> Any:
        import grpc

        try:
            roots = path.read_bytes()
        except OSError as exc:
            self._fail(
                f"google-vision cannot read ca_certs {path}: {type(exc).__name__}: {exc}", exc
            )
        if b"-----BEGIN CERTIFICATE-----" not in roots:
            self._fail(f"google-vision ca_certs {path} holds no PEM certificate")
        return grpc.ssl_channel_credentials(root_certificates=roots)

    # -- examine -------------------------------------------------------------

    def features(self) -> list[tuple[str, int]]:
        """The Vision features requested, with their result caps."""
        wanted = ["WEB_DETECTION", "OBJECT_LOCALIZATION"]
        if self.logos:
            wanted.append("LOGO_DETECTION")
        if self.text:
            wanted.append("TEXT_DETECTION")
        return [(name, self.max_results) for name in wanted]

    def examine(self, photo: Photo) -> Opinion:
        deadline = time.monotonic() + self.timeout * 0.95
        upload = prepare_upload(photo, LIMITS)
        with self._boundary("examination"):
            return self._examine(upload, deadline)

    def _examine(self, upload: UploadImage, deadline: float) -> Opinion:
        client = self.client()
        from google.cloud import vision

        request = vision.AnnotateImageRequest(
            image=vision.Image(content=upload.data),
            features=[
                vision.Feature(type_=getattr(vision.Feature.Type, name), max_results=cap)
                for name, cap in self.features()
            ],
        )
        response = self._call(client, request, deadline)
        if len(response.responses) != 1:
            self._fail(
                f"google-vision answered {len(response.responses)} results for one image"
            )
        result = response.responses[0]
        if result.error.code:
            self._fail(
                f"google-vision could not annotate the photo: {_status_name(result.error.code)}"
                f" ({result.error.code}): {_first_line(result.error.message or 'no reason given')}"
            )
        return self._opinion(result, upload)

    def _call(self, client: Any, request: Any, deadline: float) -> Any:
        from google.api_core import exceptions as gexc
        from google.protobuf import json_format

        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"google-vision gave no answer within {self.timeout:g} s")
            try:
                # retry=None: the client's own default retries for up to 600 s.
                return client.batch_annotate_images(
                    requests=[request], retry=None, timeout=remaining
                )
            except (gexc.DeadlineExceeded, requests.Timeout) as exc:
                # Before GatewayTimeout, its base class: our own deadline ran out,
                # which no retry can fix.
                self._fail(f"google-vision gave no answer within {self.timeout:g} s", exc)
            except (gexc.TooManyRequests, gexc.ResourceExhausted) as exc:
                error: Exception = exc
                reason = f"quota exceeded or rate limited (429): {_api_message(exc)}"
            except (gexc.InternalServerError, gexc.ServiceUnavailable, gexc.BadGateway,
                    gexc.GatewayTimeout) as exc:
                error = exc
                reason = f"server error ({exc.code}): {_api_message(exc)}"
            except requests.ConnectionError as exc:
                error = exc
                reason = f"connection failed ({type(exc).__name__})"
            except gexc.GoogleAPICallError as exc:
                self._fail(
                    f"google-vision request refused ({exc.code}): {_api_message(exc)}", exc
                )
            except (json_format.ParseError, ValueError, TypeError) as exc:
                self._fail(
                    f"google-vision sent a malformed answer: {type(exc).__name__}: "
                    f"{_first_line(str(exc))}", exc
                )
            reason = redact(reason)
            pause = min(2.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            if attempt >= self.max_attempts or time.monotonic() + pause >= deadline:
                suffix = f" after {attempt} attempts" if attempt > 1 else ""
                self._fail(f"google-vision failed{suffix}: {reason}", error)
            logger.info("google-vision attempt %d failed (%s); retrying", attempt, reason)
            time.sleep(pause)

    def _opinion(self, result: Any, upload: UploadImage) -> Opinion:
        web = result.web_detection
        raw_scores = [e.score for e in web.web_entities if e.description]
        # Web entity scores are relevance, not probability, and exceed 1; scale so
        # the strongest is at most 1 and scores already in [0, 1] keep their value.
        scale = max([1.0, *raw_scores])
        entities = []
        for entity in web.web_entities:
            text = _clean(entity.description)
            if not text:
                continue
            entities.append(Observation(
                text=text,
                score=_unit(entity.score / scale),
                facet="category" if map_category(text) is not None else None,
                raw_score=round(entity.score, 4),
            ))
        labels = tuple(
            Observation(text=_clean(g.label), score=BEST_GUESS_SCORE, facet="product")
            for g in web.best_guess_labels if _clean(g.label)
        )
        pages = []
        for page in web.pages_with_matching_images:
            title = _clean(page.page_title)
            if not title:
                continue
            if page.full_matching_images:
                score = _FULL_MATCH_SCORE
            elif page.partial_matching_images:
                score = _PARTIAL_MATCH_SCORE
            else:
                score = _OTHER_PAGE_SCORE
            pages.append(Observation(text=title, score=score, raw_score=page.score or None))
        objects = tuple(
            Observation(text=_clean(obj.name), score=_unit(obj.score),
                        box=_normalized_box(obj.bounding_poly.normalized_vertices))
            for obj in result.localized_object_annotations if _clean(obj.name)
        )
        logos = tuple(
            Observation(text=_clean(logo.description), score=_unit(logo.score), facet="brand",
                        box=_pixel_box(logo.bounding_poly.vertices, upload))
            for logo in result.logo_annotations if _clean(logo.description)
        )
        return Opinion(
            expert=self.name,
            labels=labels,
            entities=tuple(entities),
            objects=objects,
            logos=logos,
            texts=_text_lines(result.text_annotations, self.max_results),
            pages=tuple(pages),
            similar_images=tuple(img.url for img in web.visually_similar_images if img.url),
        )


def _text_lines(annotations: Any, limit: int) -> tuple[Observation, ...]:
    # The first annotation is the whole text found, one line per printed line;
    # lines keep model numbers ("CW2288-111") whole where words would split them.
    if not annotations:
        return ()
    lines: list[str] = []
    seen: set[str] = set()
    for line in annotations[0].description.splitlines():
        text = _clean(line)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            lines.append(text)
    # Text detection gives no confidence; what it reads is there.
    return tuple(Observation(text=t, score=1.0) for t in lines[:limit])


def _clean(text: str) -> str:
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", text or ""))).strip()


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def _unit(value: float) -> float:
    # Scores arrive as float32; four decimals is all the precision they carry.
    return round(_clamp(value), 4)


def _normalized_box(vertices: Any) -> Box | None:
    if not vertices:
        return None
    xs = [_clamp(v.x) for v in vertices]
    ys = [_clamp(v.y) for v in vertices]
    return Box(left=min(xs), top=min(ys), width=max(xs) - min(xs), height=max(ys) - min(ys))


def _pixel_box(vertices: Any, upload: UploadImage) -> Box | None:
    if not vertices:
        return None
    xs = [_clamp(v.x / upload.width) for v in vertices]
    ys = [_clamp(v.y / upload.height) for v in vertices]
    return Box(left=min(xs), top=min(ys), width=max(xs) - min(xs), height=max(ys) - min(ys))


def _api_message(exc: Any) -> str:
    # The REST transport prefixes the server's message with "POST <url>: ".
    return _first_line(_URL_PREFIX.sub("", str(getattr(exc, "message", "") or "")))


def _first_line(text: str) -> str:
    # Redacted before it is cut, so that no part of a secret survives the cut.
    line = redact(text or "").strip().splitlines()
    return line[0][:300] if line else "no details"


_STATUS_NAMES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 13: "INTERNAL", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED",
}


def _status_name(code: int) -> str:
    return _STATUS_NAMES.get(code, "ERROR")


@hookimpl
def register_experts(register: Any) -> None:
    register(GoogleVisionExpert())
