"""No credential shows anywhere: not in a log line (the HTTP libraries' debug lines
included), an exception message, a traceback, a repr, an Opinion or an Analysis.

Each cloud component runs with its real client library against its fake server,
with the root logger at DEBUG and a handler on it that keeps every line, through
success and failure: servers that echo the request's credentials back, and SDK
exceptions whose text quotes them.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from restyle import (
    Engine,
    load_photo,
)
from restyle._secrets import (
    REDACTED,
    RedactingFilter,
    Secret,
    exposes_secret,
    protect_loggers,
    redact,
    register,
)
from tests.conftest import SAMPLE_PHOTO

GOOGLE_KEY = "AIzaSy-SECRETS-SENTINEL-vision-0123456"
AWS_KEY_ID = "AKIASECRETSSENTINEL7"
AWS_SECRET_KEY = "secrets/SENTINEL+aws/secret/key/0123456789abc"
AWS_TOKEN = "IQoJb3JpZ2luX2VjSECRETS/SENTINEL+session/token/0123456789=="
GEMINI_KEY = "AIzaSy-SECRETS-SENTINEL-gemini-987654321"
OPENAI_KEY = "sk-SECRETS-SENTINEL-openai-0123456789abcdef"
EBAY_CLIENT_ID = "restyle-SECRETS-SENTINEL-PRD-ebay-app-id"
EBAY_CLIENT_SECRET = "PRD-SECRETS-SENTINEL-ebay-cert-s3cr3t"
#: Every token the fake eBay issues starts with this; the token is this plus a number.
EBAY_TOKEN = "v^1.1#i^1#SECRETS-SENTINEL-ebay-oauth-token-"
SENTINELS = (GOOGLE_KEY, AWS_KEY_ID, AWS_SECRET_KEY, AWS_TOKEN, GEMINI_KEY, OPENAI_KEY,
             EBAY_CLIENT_ID, EBAY_CLIENT_SECRET, EBAY_TOKEN)

PHOTO = load_photo(SAMPLE_PHOTO)
ANSWER = {
    "product_name": "Nike Air Max 90", "brand": "Nike", "category": "sneakers",
    "attributes": [], "confidence": 0.9, "summary": "White Nike Air Max 90 sneakers.",
    "suggested_photos": [],
}


class Capture(logging.Handler):
    """Every record that reaches the root logger, formatted with its exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Capture]:
    """The root logger at DEBUG with a capturing handler, as a host application might."""
    root = logging.getLogger()
    capture = Capture()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


def shown(
    logs: Capture, *, errors: tuple[BaseException, ...] = (), components: tuple[Any, ...] = (),
    documents: tuple[str, ...] = (),
) -> list[str]:
    """Everything a user, a log file, a debugger or an error reporter could see."""
    texts = list(logs.lines)
    for exc in errors:
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for component in components:
        texts += [repr(component), repr(vars(component))]
    return [*texts, *documents]


def assert_hidden(texts: list[str]) -> None:
    assert texts
    for text in texts:
        for sentinel in SENTINELS:
            assert sentinel not in text, f"{sentinel[:12]}... shows in: {text[:300]}"


def raised(call: Any, kind: type[BaseException]) -> BaseException:
    with pytest.raises(kind) as info:
        call()
    return info.value


def opinion_json(engine: Engine) -> str:
    return json.dumps([o.to_dict() for o in engine.examine(PHOTO)])


# -- redaction ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kept"), [
    ("Authorization: Bearer ya29.a0AfB_byC-token-value\r\nHost: x", "Host: x"),
    (r"b'POST / HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNzd29yZA==\r\nHost: x'", "Host: x"),
    ("headers={'X-Amz-Security-Token': b'FwoGZXIvYXdzEJr//////////wEaD', 'Host': b'x'}",
     "'Host': b'x'"),
    ("x-amz-security-token:FwoGZXIvYXdzEJr//////////wEaD\nx-amz-target:Rek", "x-amz-target"),
    ("Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-1/"
     "rekognition/aws4_request, SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cf",
     "SignedHeaders=host"),
    ("GET /?X-Amz-Credential=AKIDEXAMPLE%2F2026&X-Amz-Signature=5d672d79c15b&X-Amz-Expires=60",
     "X-Amz-Expires=60"),
    ('{"access_token": "v^1.1#i^1#r^0#p^1#I^3#f^0#t^H4sIAAAA", "expires_in": 7200}',
     '"expires_in": 7200'),
    ("grant_type=client_credentials&client_secret=PRD-0123456789ab&scope=api", "scope=api"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "aws_secret_access_key"),
    ("'x-goog-api-key': 'AIzaSyA-0123456789abcdefghijklmnopqrstu'", "x-goog-api-key"),
    ("POST https://vision.googleapis.com/v1/images:annotate?key=AIzaSyA-0123456789&alt=json",
     "alt=json"),
    ("Signature:\n5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7", "Signature"),
    ("an access key AKIAIOSFODNN7EXAMPLE in the text", "in the text"),
    ("self-signed eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJyZXN0eWxlIn0.c2lnbmF0dXJl sent",
     "self-signed"),
])
def test_credential_shapes_are_redacted_and_the_rest_kept(text: str, kept: str) -> None:
    cleaned = redact(text)
    assert REDACTED in cleaned and kept in cleaned
    for secret in ("ya29.a0AfB", "dXNlcjpwYXNzd29yZA", "eyJhbGciOiJSUzI1NiJ9", "FwoGZXIvYXdz",
                   "AKIDEXAMPLE", "5d672d79c15b", "H4sIAAAA", "PRD-0123456789ab",
                   "wJalrXUtnFEMI", "AIzaSyA-0123", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in cleaned
    assert redact(cleaned) == cleaned


@pytest.mark.parametrize("text", [
    "the answer was cut off at the output token limit (finish reason MAX_TOKENS)",
    "eBay token request: HTTP 503, retrying in 0.5 s",
    "set RESTYLE_GOOGLE_API_KEY, pass credentials_file= or api_key=, or run gcloud",
    '{"promptTokenCount": 812, "max_tokens": 2048, "token_type": "Application Access Token"}',
    "Basic crewneck sweatshirt and a Ring Bearer pillow",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_registered_values_are_redacted_in_every_form_they_travel_in() -> None:
    value = "reg/istered+SENTINEL=value"
    register(value)
    text = f"raw {value} url {value.replace('/', '%2F').replace('+', '%2B').replace('=', '%3D')}"
    text += " json " + value.replace("/", "\\/")
    assert redact(text) == f"raw {REDACTED} url {REDACTED} json {REDACTED}"
    # Values too short to be a key are not registered: they would mangle every message.
    register("short")
    assert redact("a short message") == "a short message"


def test_secret_registers_itself_and_never_shows() -> None:
    secret = Secret("made-SENTINEL-secret-value")
    assert secret.reveal() == "made-SENTINEL-secret-value"
    assert repr(secret) == str(secret) == REDACTED
    assert redact("value made-SENTINEL-secret-value here") == f"value {REDACTED} here"


def test_exposes_secret_looks_at_the_whole_chain() -> None:
    secret = "chained-SENTINEL-secret"
    register(secret)
    assert not exposes_secret(ValueError("nothing to see"))
    assert exposes_secret(ValueError("x", {"headers": {"key": secret}}))  # in the args only
    try:
        try:
            raise KeyError(secret)
        except KeyError:
            raise RuntimeError("outer, clean") from None
    except RuntimeError as outer:
        assert exposes_secret(outer)  # through __context__, suppressed or not
    if sys.version_info >= (3, 11):
        noted = ValueError("clean")
        noted.add_note("header x-goog-api-key: AIzaSyNOTE-0123456789")
        assert exposes_secret(noted)
        group = ExceptionGroup("group", [ValueError(secret)])  # noqa: F821 - 3.11+
        assert exposes_secret(group)


def test_filter_redacts_message_arguments_exception_and_extras(logs: Capture) -> None:
    register("filtered-SENTINEL-key")
    logger = logging.getLogger("tests.secrets.filtered")
    logger.addFilter(RedactingFilter())
    try:
        try:
            raise ValueError("failed with filtered-SENTINEL-key")
        except ValueError:
            logger.debug("sending %s", {"Authorization": "Bearer filtered-SENTINEL-key"},
                         exc_info=True, extra={"httpRequest": {"headers": {
                             "x-goog-api-key": "filtered-SENTINEL-key"}}})
        logger.info("clean %s", "argument")
    finally:
        logger.filters.clear()
    records = logs.lines
    assert any("sending" in line and "Traceback" in line for line in records)
    assert any(line.endswith("clean argument") for line in records)
    assert not any("filtered-SENTINEL-key" in line for line in records)


def test_transport_loggers_are_protected_idempotently() -> None:
    protect_loggers()
    protect_loggers()
    for name in ("botocore.endpoint", "botocore.parsers", "urllib3.connectionpool", "httpx",
                 "google_genai._api_client", "openai._base_client", "restyle"):
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, RedactingFilter)]
        assert len(filters) == 1, name
    # A logger made later (a module imported lazily) is protected at the next use.
    late = logging.getLogger("botocore.secrets-test-late")
    protect_loggers()
    assert any(isinstance(f, RedactingFilter) for f in late.filters)
