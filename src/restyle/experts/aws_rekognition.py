"""The ``aws-rekognition`` expert: Amazon Rekognition's labels, boxes and colours.

DetectLabels (model 2.0 and 3.0 answers alike) and, when asked, DetectText,
turned into the same Opinion vocabulary every expert speaks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from restyle import _settings
from restyle._errors import ConfigurationError, ExpertError
from restyle._input.imaging import UploadImage, UploadLimits, prepare_upload
from restyle._plugin.components import Expert
from restyle._plugin.hookspecs import hookimpl
from restyle._plugin.remote import RemoteComponent
from restyle._secrets import protect_loggers, register
from restyle._taxonomy import FACETS
from restyle._types import Box, Observation, Opinion

if TYPE_CHECKING:
    from restyle._input.imaging import Photo
    from restyle._plugin.components import Context

__all__ = ["AwsRekognitionExpert"]

logger = logging.getLogger("restyle.experts.aws_rekognition")

# Rekognition takes at most 5 MB of JPEG or PNG bytes per image (no WebP).
# Labels gain nothing above 4096 px, and smaller uploads answer sooner.
LIMITS = UploadLimits(max_bytes=5 * 1024 * 1024, max_side=4096, formats=("JPEG", "PNG"))

#: Error codes that mean "slow down"; botocore retries them, and so they are
#: reported as throttling when the retries run out.
_THROTTLING = {"ThrottlingException", "ProvisionedThroughputExceededException",
               "LimitExceededException"}
_COLORS = set(FACETS["color"])
_COLOR_ALIASES = {"gray": "grey"}


class AwsRekognitionExpert(RemoteComponent, Expert):
    """Asks Amazon Rekognition what objects and scenes the photo shows.

    Credentials and region come from boto3's usual chain (environment,
    ``~/.aws`` profiles, SSO, instance or container roles) unless ``region`` or
    ``profile`` are given; they are resolved on first use. The keys that can be
    read without the network (the environment's, and the profile's in
    ``~/.aws/credentials`` and ``~/.aws/config``) are registered for redaction
    as soon as an Engine adopts the expert, before any analysis can quote them.

    ``timeout`` bounds the whole examination: the attempts allowed by
    ``max_attempts``, their connect and read timeouts, and botocore's backoff
    between them all fit inside it.
    """

    name = "aws-rekognition"
    error_type = ExpertError

    def __init__(
        self,
        *,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        text: bool = False,
        colors: bool = True,
        max_labels: int = 25,
        min_confidence: float = 50.0,
        timeout: float = 20.0,
        max_attempts: int = 3,
    ) -> None:
        if timeout <= 0 or max_attempts < 1 or max_labels < 1:
            raise ConfigurationError(
                "aws-rekognition needs timeout > 0, max_attempts >= 1 and max_labels >= 1"
            )
        if not 0.0 <= min_confidence <= 100.0:
            raise ConfigurationError("aws-rekognition min_confidence must be within 0..100")
        super().__init__()
        self.region = region
        self.profile = profile
        self.endpoint_url = endpoint_url
        self.text = text
        self.colors = colors
        self.max_labels = max_labels
        self.min_confidence = min_confidence
        self.timeout = timeout
        self.max_attempts = max_attempts
        self._credentials = _Credentials()

    def attach(self, context: Context) -> None:
        """Register for redaction the credentials found without the network."""
        register(*_static_credentials(self.profile))

    # -- client --------------------------------------------------------------

    def client_config(self) -> Any:
        """The botocore Config whose retries and timeouts fit this expert's deadline."""
        from botocore.config import Config

        calls = 2 if self.text else 1
        budget = self.timeout * 0.9 / calls
        attempts = self.max_attempts
        # Standard mode sleeps up to 1 s, 2 s, 4 s... between attempts; drop
        # attempts until each one still has a useful second or more to itself.
        while attempts > 1 and (budget - _max_backoff(attempts)) / attempts < 1.0:
            attempts -= 1
        per_attempt = max(0.1, (budget - _max_backoff(attempts)) / attempts)
        connect = min(3.0, per_attempt / 3)
        return Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=connect,
            read_timeout=per_attempt - connect,
            user_agent_extra="restyle",
        )

    def _make_client(self) -> Any:
        try:
            import boto3
            import botocore.exceptions
        except ImportError as exc:
            self._fail(
                "the aws-rekognition expert needs boto3: pip install 'restyle[aws]'", exc
            )
        try:
            # botocore reads only AWS_DEFAULT_REGION; newer AWS SDKs read AWS_REGION first.
            region = self.region or _settings.env_str("AWS_REGION")
            session = boto3.session.Session(profile_name=self.profile, region_name=region)
            client = session.client(
                "rekognition", endpoint_url=self.endpoint_url, config=self.client_config()
            )
            client.meta.events.register("before-parse.rekognition", _drop_ill_typed_fields)
            # The same object the client signs with (the session caches it).
            self._credentials.source = session.get_credentials()
            self._credentials.register()
            return client
        except botocore.exceptions.NoRegionError as exc:
            self._fail(
                "aws-rekognition has no AWS region: set AWS_REGION or AWS_DEFAULT_REGION, "
                "configure one in ~/.aws/config, or pass region=", exc
            )
        except botocore.exceptions.ProfileNotFound as exc:
            self._fail(f"aws-rekognition: AWS profile {self.profile!r} not found", exc)
        except botocore.exceptions.BotoCoreError as exc:
            self._fail(f"aws-rekognition cannot create its client: {exc}", exc)

    # -- examine -------------------------------------------------------------

    def examine(self, photo: Photo) -> Opinion:
        upload = prepare_upload(photo, LIMITS)
        with self._boundary("examination"):
            return self._examine(upload)

    def _examine(self, upload: UploadImage) -> Opinion:
        client = self.client()
        if upload.reencoded:
            logger.debug("aws-rekognition sends the photo re-encoded at %dx%d, %d bytes",
                         upload.width, upload.height, len(upload.data))
        params: dict[str, Any] = {
            "Image": {"Bytes": upload.data},
            "MaxLabels": self.max_labels,
            "MinConfidence": self.min_confidence,
        }
        if self.colors:
            params["Features"] = ["GENERAL_LABELS", "IMAGE_PROPERTIES"]
        response = self._call("DetectLabels", client.detect_labels, params)
        labels, objects = parse_labels(response)
        colors = parse_colors(response) if self.colors else ()
        texts: tuple[Observation, ...] = ()
        if self.text:
            try:
                found = self._call("DetectText", client.detect_text, {"Image": params["Image"]})
                texts = parse_text(found)
            except ExpertError as exc:
                # The labels are worth keeping without the text.
                logger.warning("%s; reporting labels only", exc)
        return Opinion(expert=self.name, labels=labels + colors, objects=objects, texts=texts)

    def _call(self, operation: str, method: Any, params: dict[str, Any]) -> Mapping[str, Any]:
        import botocore.exceptions as bexc
        from botocore.parsers import ResponseParserError

        started = time.monotonic()
        try:
            # Credentials refreshed since the last call (a role's) are registered
            # before botocore can log them.
            self._credentials.register()
            response = method(**params)
        except bexc.ClientError as exc:
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            code = str(error.get("Code") or "Unknown")
            message = str(error.get("Message") or "no details")
            metadata = exc.response.get("ResponseMetadata", {})
            attempts = 1 + int(metadata.get("RetryAttempts", 0) or 0)
            if code in _THROTTLING:
                tail = f" {attempts} times" if attempts > 1 else ""
                self._fail(
                    f"aws-rekognition {operation} was throttled{tail} ({code}): {message}", exc
                )
            self._fail(f"aws-rekognition {operation} failed ({code}): {message}", exc)
        except (bexc.NoCredentialsError, bexc.PartialCredentialsError) as exc:
            self._fail(
                "aws-rekognition found no AWS credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, configure a profile (AWS_PROFILE), or run with a role",
                exc,
            )
        except (bexc.ReadTimeoutError, bexc.ConnectTimeoutError) as exc:
            self._fail(
                f"aws-rekognition {operation} gave no answer in "
                f"{time.monotonic() - started:.1f} s (timeout {self.timeout:g} s)", exc
            )
        except bexc.BotoCoreError as exc:
            self._fail(
                f"aws-rekognition {operation} failed: {type(exc).__name__}: {exc}", exc
            )
        except ResponseParserError as exc:
            self._fail(f"aws-rekognition {operation} sent a malformed answer", exc)
        if not isinstance(response, Mapping):
            self._fail(f"aws-rekognition {operation} sent a malformed answer")
        return response


class _Credentials:
    """The botocore credentials the client signs with, never shown in a repr."""

    __slots__ = ("source",)

    def __init__(self) -> None:
        self.source: Any = None

    def __repr__(self) -> str:
        return "<AWS credentials>"

    def register(self) -> None:
        """Register the current key id, secret key and session token for redaction."""
        if self.source is None:
            return
        # Refreshes a role's expiring credentials, as the next signature would anyway.
        frozen = self.source.get_frozen_credentials()
        register(frozen.access_key, frozen.secret_key, frozen.token)


def _static_credentials(profile: str | None) -> list[str | None]:
    """The key ids, secret keys and session tokens of the credential providers that
    read only the environment and the profile files: botocore's ``env``,
    ``shared-credentials-file`` and ``config-file``, all of them, not only the one
    the chain would pick. Nothing here opens a socket or runs a process (no
    instance metadata, container endpoint, STS, SSO or ``credential_process``),
    and nothing raises: a broken configuration is reported by the first call."""
    from restyle._secrets import SECRET_VARIABLES

    found: list[str | None] = [_settings.env_str(name) for name in SECRET_VARIABLES
                               if name.startswith("AWS_")]
    try:
        import botocore.credentials
        import botocore.session
    except ImportError:
        return found
    protect_loggers()  # the providers log which file they read
    try:
        session = botocore.session.Session(profile=profile)
        name = session.get_config_variable("profile") or "default"
        providers = [
            botocore.credentials.EnvProvider(),
            botocore.credentials.SharedCredentialProvider(
                session.get_config_variable("credentials_file"), name),
            botocore.credentials.ConfigProvider(session.get_config_variable("config_file"), name),
        ]
    except Exception as exc:
        # The type only: the text of a half-read configuration is not vouched for.
        logger.debug("aws-rekognition could not read its profile's configuration (%s)",
                     type(exc).__name__)
        return found
    for provider in providers:
        try:
            credentials = provider.load()
            if credentials is not None:
                frozen = credentials.get_frozen_credentials()
                found += [frozen.access_key, frozen.secret_key, frozen.token]
        except Exception as exc:
            logger.debug("aws-rekognition could not read credentials from %s (%s)",
                         provider.METHOD, type(exc).__name__)
    return found


def _max_backoff(attempts: int) -> float:
    return float(sum(min(20, 2**i) for i in range(attempts - 1)))


# -- parsing -------------------------------------------------------------------
# Fields of the wrong JSON type are dropped from the answer before botocore
# parses it: its parser assumes the model's types and fails on a string where a
# structure should be, which would lose the whole answer for one bad field.

_SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,), "blob": (str,), "boolean": (bool,), "integer": (int,), "long": (int,),
    "float": (int, float), "double": (int, float), "timestamp": (int, float, str),
}


def _drop_ill_typed_fields(response_dict: dict[str, Any], operation_model: Any,
                           **_: Any) -> None:
    """botocore ``before-parse`` handler: remove from a successful JSON answer every
    field whose type contradicts the service model. An answer that is not a JSON
    object at all (which botocore would read as an empty one) is an error."""
    from botocore.parsers import ResponseParserError

    shape = operation_model.output_shape
    if shape is None or not 200 <= int(response_dict.get("status_code") or 0) < 300:
        return
    try:
        data = json.loads(response_dict.get("body") or b"{}")
    except (TypeError, ValueError):
        raise ResponseParserError("the answer is not JSON") from None
    cleaned = _well_typed(data, shape)
    if cleaned is _ILL_TYPED:
        raise ResponseParserError("the answer is not a JSON object")
    response_dict["body"] = json.dumps(cleaned).encode()


_ILL_TYPED = object()


def _well_typed(value: Any, shape: Any) -> Any:
    """``value`` without its ill-typed or null fields, or ``_ILL_TYPED``."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return _ILL_TYPED
        members = {member.serialization.get("name", name): member
                   for name, member in shape.members.items()}
        kept = {}
        for key, item in value.items():
            member = members.get(key)
            cleaned = item if member is None else _well_typed(item, member)
            if cleaned is not _ILL_TYPED and cleaned is not None:
                kept[key] = cleaned
        return kept
    if kind == "list":
        if not isinstance(value, list):
            return _ILL_TYPED
        items = (_well_typed(item, shape.member) for item in value)
        return [item for item in items if item is not _ILL_TYPED and item is not None]
    if kind == "map":
        if not isinstance(value, dict):
            return _ILL_TYPED
        entries = ((key, _well_typed(item, shape.value)) for key, item in value.items())
        return {key: item for key, item in entries if item is not _ILL_TYPED and item is not None}
    allowed = _SCALARS.get(kind)
    if value is None or allowed is None:
        return value
    if isinstance(value, bool) and bool not in allowed:
        return _ILL_TYPED
    return value if isinstance(value, allowed) else _ILL_TYPED

# Rekognition answers are parsed defensively: a field may be missing (model
# 2.0 has no Aliases, Categories or ImageProperties), null, or of a wrong type.


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _name(value: Mapping[str, Any]) -> str:
    name = value.get("Name")
    return name.strip() if isinstance(name, str) else ""


def _percent(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return round(min(1.0, max(0.0, float(value) / 100.0)), 4)


def _box(value: Any) -> Box | None:
    if not isinstance(value, Mapping):
        return None
    try:
        left, top = (min(1.0, max(0.0, float(value.get(k) or 0.0))) for k in ("Left", "Top"))
        width = min(1.0 - left, max(0.0, float(value.get("Width") or 0.0)))
        height = min(1.0 - top, max(0.0, float(value.get("Height") or 0.0)))
    except (TypeError, ValueError):
        return None
    return Box(left=left, top=top, width=width, height=height)


def _best(observations: Iterable[Observation]) -> tuple[Observation, ...]:
    """One observation per (text, facet), the highest-scored, best first."""
    best: dict[tuple[str, str | None], Observation] = {}
    for obs in observations:
        key = (obs.text.lower(), obs.facet)
        if key not in best or obs.score > best[key].score:
            best[key] = obs
    return tuple(sorted(best.values(), key=lambda o: -o.score))


def parse_labels(response: Mapping[str, Any]) -> tuple[tuple[Observation, ...],
                                                       tuple[Observation, ...]]:
    """Labels (with their aliases, parents and categories) and boxed objects."""
    labels: list[Observation] = []
    objects: list[Observation] = []
    for label in _items(response.get("Labels")):
        name = _name(label)
        score = _percent(label.get("Confidence"))
        if not name or score is None:
            continue
        raw = float(label["Confidence"])
        labels.append(Observation(text=name, score=score, raw_score=raw))
        # A parent or an alias holds at least as surely as the label that implies it.
        for related in _items(label.get("Aliases")) + _items(label.get("Parents")):
            if _name(related):
                labels.append(Observation(text=_name(related), score=score, raw_score=raw))
        for category in _items(label.get("Categories")):
            if _name(category):
                labels.append(Observation(text=_name(category), score=score,
                                          facet="department", raw_score=raw))
        for instance in _items(label.get("Instances")):
            box = _box(instance.get("BoundingBox"))
            instance_score = _percent(instance.get("Confidence"))
            if box is not None:
                objects.append(Observation(
                    text=name, score=score if instance_score is None else instance_score,
                    box=box,
                    raw_score=raw if instance_score is None else float(instance["Confidence"]),
                ))
    return _best(labels), tuple(sorted(objects, key=lambda o: -o.score))


def parse_colors(response: Mapping[str, Any]) -> tuple[Observation, ...]:
    """Dominant colours, from the foreground (the item) when Rekognition separated it."""
    properties = response.get("ImageProperties")
    if not isinstance(properties, Mapping):
        return ()
    foreground = properties.get("Foreground")
    colors = _items(foreground.get("DominantColors")) if isinstance(foreground, Mapping) else []
    colors = colors or _items(properties.get("DominantColors"))
    shares: dict[str, float] = {}
    for color in colors:
        simple = color.get("SimplifiedColor")
        share = _percent(color.get("PixelPercent"))
        if not isinstance(simple, str) or share is None:
            continue
        simple = simple.strip().lower()
        simple = _COLOR_ALIASES.get(simple, simple)
        if simple in _COLORS:
            shares[simple] = shares.get(simple, 0.0) + share
    return tuple(
        Observation(text=color, score=round(min(1.0, share), 4), facet="color")
        for color, share in sorted(shares.items(), key=lambda kv: -kv[1])
    )


def parse_text(response: Mapping[str, Any]) -> tuple[Observation, ...]:
    """The lines of text Rekognition read, with their boxes."""
    lines = []
    for found in _items(response.get("TextDetections")):
        text = found.get("DetectedText")
        score = _percent(found.get("Confidence"))
        if found.get("Type") != "LINE" or not isinstance(text, str) or not text.strip():
            continue
        geometry = found.get("Geometry")
        box = _box(geometry.get("BoundingBox")) if isinstance(geometry, Mapping) else None
        lines.append(Observation(text=text.strip(), score=score or 0.0, box=box))
    return _best(lines)


@hookimpl
def register_experts(register: Any) -> None:
    register(AwsRekognitionExpert())
