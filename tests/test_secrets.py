"""No credential shows anywhere: not in a log line (the HTTP libraries' debug lines
included), an exception message, a traceback, a repr, an Opinion or an Analysis.

Each cloud component runs with its real client library against its fake server,
with the root logger at DEBUG and a handler on it that keeps every line, through
success and failure: servers that echo the request's credentials back, and SDK
exceptions whose text quotes them.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import sys
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from moto.core.exceptions import JsonRESTError
from moto.rekognition.responses import RekognitionResponse

from restyle import (
    Analysis,
    Engine,
    Expert,
    ExpertError,
    Listing,
    Marketplace,
    MarketplaceAuthError,
    MarketplaceError,
    Money,
    Opinion,
    Photo,
    Query,
    SynthesizerError,
    load_photo,
)
from restyle._plugin.remote import RemoteComponent
from restyle._secrets import (
    REDACTED,
    RedactingFilter,
    Secret,
    exposes_secret,
    protect_loggers,
    redact,
    register,
)
from restyle.cli import main
from restyle.experts.aws_rekognition import AwsRekognitionExpert
from restyle.experts.google_vision import API_KEY_ENV, GoogleVisionExpert
from restyle.marketplaces.ebay import EbayMarketplace
from restyle.synthesizers.gemini import GeminiSynthesizer
from restyle.synthesizers.openai_compat import OpenAICompatibleSynthesizer
from restyle.testing import FakeServer
from tests.conftest import SAMPLE_PHOTO
from tests.fakes.components import ColorEncoder, ScriptedExpert
from tests.fakes.ebay import SEARCH_PATH, TOKEN_PATH, FakeEbay, ebay_error, item
from tests.fakes.llm import gemini_error, gemini_json, openai_error, openai_json
from tests.fakes.rekognition import REGION, fake_rekognition
from tests.fakes.vision import FakeVision, error, payload

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


# -- the one way to raise ----------------------------------------------------------


class _Remote(RemoteComponent):
    name = "remote-test"
    error_type = ExpertError


def test_a_cause_is_kept_only_when_it_shows_no_secret() -> None:
    secret = "cause-SENTINEL-secret"  # a name, so that no source line in a traceback shows it
    register(secret)
    remote = _Remote()

    def fail(cause: Exception) -> None:
        try:
            raise cause
        except Exception as exc:
            remote._fail(f"remote failed: {exc}", exc)

    clean = raised(lambda: fail(OSError("connection refused")), ExpertError)
    assert isinstance(clean.__cause__, OSError)
    assert "connection refused" in "".join(traceback.format_exception(clean))

    leaky = raised(lambda: fail(OSError(f"refused key {secret}")), ExpertError)
    assert str(leaky) == f"remote failed: refused key {REDACTED}"
    assert leaky.__cause__ is None and leaky.__suppress_context__
    assert secret not in "".join(traceback.format_exception(leaky))

    # A clean exception whose own cause quotes the secret is dropped as well.
    deep = OSError("clean")
    deep.__cause__ = ValueError(secret)
    assert raised(lambda: fail(deep), ExpertError).__cause__ is None


def test_the_boundary_turns_a_foreign_exception_into_the_components_error() -> None:
    secret = "boundary-SENTINEL-secret"
    register(secret)
    remote = _Remote()

    def examine() -> None:
        with remote._boundary("examination"):
            raise KeyError(secret)

    exc = raised(examine, ExpertError)
    assert str(exc).startswith("remote-test examination failed: KeyError")
    assert secret not in "".join(traceback.format_exception(exc))


def test_the_client_is_made_once_whichever_thread_asks_first() -> None:
    import threading

    made: list[object] = []

    class Counting(_Remote):
        def _make_client(self) -> object:
            made.append(object())
            return made[-1]

    remote = Counting()
    threads = [threading.Thread(target=remote.client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and remote.client() is made[0]


# -- every cloud component, against its fake ------------------------------------------


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_google_vision(
    source: str, logs: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeVision() as fake:
        if source == "environment":
            monkeypatch.setenv(API_KEY_ENV, GOOGLE_KEY)
            expert = GoogleVisionExpert(transport="rest", endpoint=fake.endpoint,
                                        max_attempts=2, timeout=10.0)
        else:
            expert = GoogleVisionExpert(api_key=GOOGLE_KEY, transport="rest",
                                        endpoint=fake.endpoint, max_attempts=2, timeout=10.0)
        engine = Engine(experts=[expert], marketplaces=[], encoder=ColorEncoder(),
                        load_entrypoints=False)
        documents = [opinion_json(engine)]
        assert fake.requests[-1].headers["x-goog-api-key"] == GOOGLE_KEY

        echo = f"API key not valid. Request had x-goog-api-key: {GOOGLE_KEY}"
        errors = []
        for reply in (error(400, echo, "INVALID_ARGUMENT"),  # refused, quoting the key
                      error(503, f"backend saw key={GOOGLE_KEY}", "UNAVAILABLE"),  # retried
                      payload({"error": {"code": 7, "message": f"key {GOOGLE_KEY} denied"}})):
            fake.script(reply)
            errors.append(raised(lambda: expert.examine(PHOTO), ExpertError))
            documents.append(opinion_json(engine))
        # The SDK's exceptions quote the key, so none is kept as a cause.
        assert all(e.__cause__ is None for e in errors[:2])
        assert "API key not valid" in str(errors[0]) and REDACTED in str(errors[0])

        fake.script(error(500, "backend error", "INTERNAL"))  # nothing secret: cause kept
        clean = raised(lambda: expert.examine(PHOTO), ExpertError)
        assert clean.__cause__ is not None
    assert_hidden(shown(logs, errors=(*errors, clean), components=(expert,),
                        documents=tuple(documents)))


@dataclass
class AwsFake:
    """moto, answering DetectLabels as scripted or echoing the request's headers back."""

    echo: bool = False
    #: The headers of the last DetectLabels request.
    seen: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsFake]:
    """moto on 127.0.0.1, reached through the environment with sentinel credentials."""
    state = AwsFake()
    with fake_rekognition(monkeypatch) as fake:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
        monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_TOKEN)
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setenv("AWS_ENDPOINT_URL", fake.endpoint)
        scripted = RekognitionResponse.detect_labels

        def detect_labels(self: RekognitionResponse) -> str:
            state.seen = dict(self.headers)
            if not state.echo:
                return scripted(self)
            # An error body quoting the signed headers, and the secret key for good measure.
            raise JsonRESTError(
                "AccessDeniedException",
                f"denied; request headers: {json.dumps(state.seen)}; "
                f"aws_secret_access_key={AWS_SECRET_KEY}",
            )

        monkeypatch.setattr(RekognitionResponse, "detect_labels", detect_labels)
        yield state


def test_aws_rekognition(aws: AwsFake, logs: Capture) -> None:
    expert = AwsRekognitionExpert(region=REGION, timeout=10.0, max_attempts=1)
    engine = Engine(experts=[expert], marketplaces=[], encoder=ColorEncoder(),
                    load_entrypoints=False)
    documents = [opinion_json(engine)]
    assert engine.examine(PHOTO)[0].ok
    assert aws.seen["X-Amz-Security-Token"] == AWS_TOKEN
    assert AWS_KEY_ID in aws.seen["Authorization"]

    aws.echo = True
    failure = raised(lambda: expert.examine(PHOTO), ExpertError)
    assert "AccessDeniedException" in str(failure) and REDACTED in str(failure)
    assert failure.__cause__ is None  # botocore's ClientError quotes the token
    (opinion,) = engine.examine(PHOTO)
    assert not opinion.ok and "AccessDeniedException" in (opinion.error or "")
    documents.append(json.dumps(opinion.to_dict()))
    assert_hidden(shown(logs, errors=(failure,), components=(expert,),
                        documents=tuple(documents)))
    # botocore did log the signed request: the filter, not silence, kept it clean.
    assert any(line.startswith("DEBUG botocore.endpoint") for line in logs.lines)


GEMINI_ECHO = f"API key not valid. Request headers: x-goog-api-key: {GEMINI_KEY}"
OPENAI_ECHO = f"Incorrect API key provided: {OPENAI_KEY}. Authorization: Bearer {OPENAI_KEY}"


@pytest.mark.parametrize("source", ["argument", "environment"])
@pytest.mark.parametrize("provider", ["gemini", "openai-compatible"])
def test_llm_synthesizers(
    provider: str, source: str, logs: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    gemini = provider == "gemini"
    key = GEMINI_KEY if gemini else OPENAI_KEY
    replies = ([gemini_json(ANSWER), gemini_error(400, GEMINI_ECHO, "INVALID_ARGUMENT")]
               if gemini else [openai_json(ANSWER), openai_error(401, OPENAI_ECHO)])
    with FakeServer(*replies) as server:
        options: dict[str, Any] = {"timeout": 5.0, "retries": 0}
        if source == "argument":
            options["api_key"] = key
        else:
            monkeypatch.setenv("GEMINI_API_KEY" if gemini else "OPENAI_API_KEY", key)
        synthesizer = (GeminiSynthesizer(base_url=server.base_url, retry_delay=0.01, **options)
                       if gemini else
                       OpenAICompatibleSynthesizer(base_url=server.base_url + "/v1", **options))
        expert = ScriptedExpert("scripted", entities=[("Nike Air Max 90", 0.9, None)])
        engine = Engine(experts=[expert], synthesizer=synthesizer, marketplaces=[],
                        encoder=ColorEncoder(), load_entrypoints=False)
        good = engine.identify(PHOTO)
        assert good.synthesizer == provider
        sent = server.requests[-1].headers
        assert (sent["x-goog-api-key"] if gemini else sent["authorization"]).endswith(key)

        fallback = engine.identify(PHOTO)  # the server now refuses, quoting the key
        assert fallback.synthesizer == "consensus" and fallback.fallback_reason
        failure = raised(lambda: synthesizer.synthesize([], photo=PHOTO), SynthesizerError)
        assert failure.__cause__ is None  # the SDK's error quotes the key
    unreachable = raised(lambda: synthesizer.synthesize([], photo=PHOTO), SynthesizerError)
    assert unreachable.__cause__ is not None  # a refused connection names no key
    assert_hidden(shown(logs, errors=(failure, unreachable), components=(synthesizer,),
                        documents=(json.dumps(good.to_dict()),
                                   json.dumps(fallback.to_dict()))))


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_ebay(source: str, logs: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    basic = base64.b64encode(f"{EBAY_CLIENT_ID}:{EBAY_CLIENT_SECRET}".encode()).decode()
    with FakeEbay(client_id=EBAY_CLIENT_ID, client_secret=EBAY_CLIENT_SECRET,
                  items=[item(n, image=False) for n in range(3)],
                  token_prefix=EBAY_TOKEN) as fake:
        options: dict[str, Any] = {"base_url": fake.base_url, "timeout": (2.0, 5.0),
                                   "max_retries": 0}
        if source == "argument":
            options.update(client_id=EBAY_CLIENT_ID, client_secret=EBAY_CLIENT_SECRET)
        else:
            monkeypatch.setenv("EBAY_CLIENT_ID", EBAY_CLIENT_ID)
            monkeypatch.setenv("EBAY_CLIENT_SECRET", EBAY_CLIENT_SECRET)
        ebay = EbayMarketplace(**options)
        expert = ScriptedExpert("scripted", entities=[("leather jacket", 0.9, None)])
        engine = Engine(experts=[expert], marketplaces=[ebay], encoder=ColorEncoder(),
                        load_entrypoints=False)
        analyses = [engine.analyze(PHOTO)]
        assert analyses[0].comps
        token = fake.calls(SEARCH_PATH)[-1].headers["Authorization"]
        assert token.startswith(f"Bearer {EBAY_TOKEN}")
        assert fake.calls(TOKEN_PATH)[-1].headers["Authorization"] == f"Basic {basic}"

        errors = []
        # A search refused with the bearer token quoted, then a server error quoting it.
        fake.script(SEARCH_PATH, 400, ebay_error(12001, f"Bad request; Authorization: {token}"))
        errors.append(raised(lambda: ebay.search(Query(text="jacket")), MarketplaceError))
        fake.script(SEARCH_PATH, 500, ebay_error(10001, f"internal error for {token[7:]}"))
        errors.append(raised(lambda: ebay.search(Query(text="jacket")), MarketplaceError))
        fake.script(SEARCH_PATH, 500, ebay_error(10001, f"internal error for {token[7:]}"))
        analyses.append(engine.analyze(PHOTO))
        assert analyses[-1].warnings  # the failure is reported, redacted

        # The keys refused, with every one of them quoted back.
        fake.revoke_tokens()
        fake.script(TOKEN_PATH, 401, {
            "error": "invalid_client",
            "error_description": f"client authentication failed: Authorization: Basic {basic} "
                                 f"client_id={EBAY_CLIENT_ID} secret {EBAY_CLIENT_SECRET}"})
        fake.script(SEARCH_PATH, 401, ebay_error(1001, "Invalid access token"))
        refused = raised(lambda: ebay.search(Query(text="jacket")), MarketplaceAuthError)
        assert "invalid_client" in str(refused)
        errors.append(refused)
        ebay.close()
    assert_hidden(shown(logs, errors=tuple(errors), components=(ebay,),
                        documents=tuple(a.to_json() for a in analyses)))


def test_analysis_with_every_cloud_component_at_once(
    aws: AwsFake, logs: Capture
) -> None:
    with FakeVision() as vision, FakeServer(gemini_json(ANSWER)) as gemini, \
            FakeEbay(client_id=EBAY_CLIENT_ID, client_secret=EBAY_CLIENT_SECRET,
                     items=[item(n, image=False) for n in range(3)],
                     token_prefix=EBAY_TOKEN) as ebay_fake:
        ebay = EbayMarketplace(client_id=EBAY_CLIENT_ID, client_secret=EBAY_CLIENT_SECRET,
                               base_url=ebay_fake.base_url, timeout=(2.0, 5.0))
        engine = Engine(
            experts=[GoogleVisionExpert(api_key=GOOGLE_KEY, transport="rest",
                                        endpoint=vision.endpoint, max_attempts=1),
                     AwsRekognitionExpert(region=REGION, max_attempts=1)],
            synthesizer=GeminiSynthesizer(api_key=GEMINI_KEY, base_url=gemini.base_url,
                                          retries=0, timeout=5.0),
            marketplaces=[ebay], encoder=ColorEncoder(), load_entrypoints=False,
        )
        first = engine.analyze(PHOTO)
        assert all(o.ok for o in first.opinions) and first.comps
        assert first.identification.synthesizer == "gemini"
        # Every service now refuses, quoting what it was sent.
        vision.script(error(403, f"x-goog-api-key: {GOOGLE_KEY} denied", "PERMISSION_DENIED"))
        aws.echo = True
        gemini.script(gemini_error(400, GEMINI_ECHO, "INVALID_ARGUMENT"))
        second = engine.analyze(PHOTO)
        ebay.close()
    assert set(second.failed_experts) == {"google-vision", "aws-rekognition"}
    assert second.identification.fallback_reason
    assert Analysis.from_json(second.to_json()) == second
    assert_hidden(shown(logs, components=(*engine.experts, engine.synthesizer, ebay),
                        documents=(first.to_json(), second.to_json(), repr(engine))))


# -- the command line ---------------------------------------------------------------


@pytest.mark.parametrize("verbosity", ["-vv", "-vvv"])
def test_cli_verbose_logging_shows_no_aws_credential(
    verbosity: str, aws: AwsFake, tiny_model_spec: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)
    aws.echo = True  # Rekognition quotes the signed headers back
    code = main([verbosity, "analyze", str(SAMPLE_PHOTO), "--experts", "aws-rekognition",
                 "--marketplaces", "", "--catalog", str(tmp_path), "--no-plugins", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert aws.seen["X-Amz-Security-Token"] == AWS_TOKEN  # the token did go over the wire
    failed = json.loads(out)["opinions"][0]
    assert failed["expert"] == "aws-rekognition" and "AccessDeniedException" in failed["error"]
    assert "DEBUG restyle" in err or "WARNING restyle" in err
    if verbosity == "-vvv":
        assert "DEBUG botocore" in err  # the HTTP client's own debug lines, redacted
    else:
        assert "DEBUG botocore" not in err
    for sentinel in (AWS_KEY_ID, AWS_SECRET_KEY, AWS_TOKEN):
        assert sentinel not in out and sentinel not in err
    # The command leaves logging as it found it.
    assert not any(isinstance(h, logging.StreamHandler) and h.stream is not None
                   and any(isinstance(f, RedactingFilter) for f in h.filters)
                   for h in logging.getLogger().handlers)



# -- secrets known before the first analysis, and redacted on the way out ----------------

#: A third-party plugin that fails quoting what the host put in LEAKY_ECHO, and a
#: marketplace whose listing titles quote LEAKY_TITLE: services echo such things.
LEAKY_PLUGIN = '''
import os

import restyle
from restyle.testing import ColorEncoder


class LeakyExpert(restyle.Expert):
    name = "leaky"

    def examine(self, photo):
        raise RuntimeError(f"upstream refused session {os.environ['LEAKY_ECHO']}")


class EchoMarket(restyle.Marketplace):
    name = "echo-market"

    def search(self, query):
        return [restyle.Listing(marketplace=self.name, listing_id=str(i),
                                title=f"leather jacket {os.environ['LEAKY_TITLE']} #{i}",
                                price=restyle.Money(amount=40 + i, currency="USD"))
                for i in range(3)]


@restyle.hookimpl
def register_experts(register):
    register(LeakyExpert())


@restyle.hookimpl
def register_marketplaces(register):
    register(EchoMarket())


@restyle.hookimpl
def register_encoders(register):
    register(ColorEncoder())
'''


class LeakyExpert(Expert):
    """A third-party expert whose failure quotes a value its service echoed."""

    name = "leaky"
    timeout = 5.0

    def __init__(self, echoed: str) -> None:
        self.echoed = echoed

    def examine(self, photo: Photo) -> Opinion:
        raise RuntimeError(f"upstream refused session {self.echoed}")


class EchoMarket(Marketplace):
    """A third-party marketplace whose listing titles quote ``echoed``."""

    name = "echo-market"
    timeout = 5.0

    def __init__(self, echoed: str) -> None:
        self.echoed = echoed

    def search(self, query: Query) -> list[Listing]:
        return [Listing(marketplace=self.name, listing_id=str(i),
                        title=f"leather jacket {self.echoed} #{i}",
                        price=Money(amount=40 + i, currency="USD")) for i in range(3)]


def fresh(kind: str) -> str:
    """A credential-like value no earlier test registered, as in a new process."""
    return f"{kind}-FRESH-{uuid.uuid4().hex}/value+0123=="


@dataclass
class AwsSetup:
    key_id: str
    secret_key: str
    token: str


@pytest.fixture(params=["environment", "profile"])
def aws_credentials(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AwsSetup:
    """Fresh AWS credentials in the environment or in a profile of the shared
    credentials file, and no region: the expert then fails to make its client,
    before anything it learns on first use could be registered. What must hide
    the token is what the Engine registered when it adopted the expert."""
    setup = AwsSetup(fresh("keyid"), fresh("aws-secret"), fresh("IQoJsession"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if request.param == "environment":
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", setup.key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", setup.secret_key)
        monkeypatch.setenv("AWS_SESSION_TOKEN", setup.token)
    else:
        credentials = tmp_path / "credentials"
        credentials.write_text(
            f"[default]\naws_access_key_id = AKIAOTHERPROFILE0000\n"
            f"aws_secret_access_key = other-profile-secret-0123456789\n\n"
            f"[team]\naws_access_key_id = {setup.key_id}\n"
            f"aws_secret_access_key = {setup.secret_key}\n"
            f"aws_session_token = {setup.token}\n"
        )
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        monkeypatch.setenv("AWS_PROFILE", "team")
    return setup


def test_aws_credentials_are_hidden_in_the_first_analysis_of_a_new_engine(
    aws_credentials: AwsSetup, logs: Capture
) -> None:
    token = aws_credentials.token
    aws = AwsRekognitionExpert(max_attempts=1, timeout=5.0)
    # The failing expert is listed first, so its failure is recorded first.
    engine = Engine(experts=[LeakyExpert(token), aws], marketplaces=[],
                    encoder=ColorEncoder(), load_entrypoints=False)
    analysis = engine.analyze(PHOTO)
    leaky, failed_aws = analysis.opinions
    assert leaky.error == f"RuntimeError: upstream refused session {REDACTED}"
    assert "no AWS region" in (failed_aws.error or "")  # it never made its client
    no_region = raised(lambda: aws.examine(PHOTO), ExpertError)
    texts = [analysis.to_json(), json.dumps(analysis.to_dict()), repr(analysis),
             repr(analysis.opinions), *logs.lines,
             "".join(traceback.format_exception(no_region))]
    assert any("upstream refused session" in line for line in logs.lines)
    for text in texts:
        for secret in (token, aws_credentials.secret_key):
            assert secret not in text, text[:300]


def test_attaching_the_aws_expert_opens_no_socket_and_runs_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials anywhere but behind the network and a credential_process:
    adopting the expert touches none of them (instance metadata, the container
    endpoint, the process), and registers what the files hold."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    marker = tmp_path / "process-ran"
    config = tmp_path / "config"
    config.write_text(
        "[profile team]\n"
        f"credential_process = {sys.executable} -c \"open({str(marker)!r}, 'w')\"\n"
        "aws_access_key_id = AKIACONFIGFILE000000\n"
        f"aws_secret_access_key = {(config_secret := fresh('config-secret'))}\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_EC2_METADATA_DISABLED", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "team")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/creds")
    try:
        Engine(experts=[AwsRekognitionExpert()], marketplaces=[], encoder=ColorEncoder(),
               load_entrypoints=False)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert not marker.exists()
    assert redact(f"secret {config_secret}") == f"secret {REDACTED}"


def test_a_documented_key_of_an_unused_component_is_hidden_in_analyses_and_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = fresh("AIzaGemini")
    monkeypatch.setenv("GEMINI_API_KEY", f" {key} ")  # read stripped, as the synthesizer does
    expert = ScriptedExpert("scripted", entities=[("leather jacket", 0.9, None)])
    engine = Engine(experts=[expert], marketplaces=[EchoMarket(key)],  # Gemini not selected
                    encoder=ColorEncoder(), load_entrypoints=False)
    analysis = engine.analyze(PHOTO, record=tmp_path / "recording")
    titles = [c.listing.title for c in analysis.comps]
    assert titles and all(t.startswith("leather jacket ") for t in titles)
    recorded = [p.read_text(errors="replace") for p in (tmp_path / "recording").iterdir()]
    for text in [analysis.to_json(), json.dumps(analysis.to_dict()), repr(analysis), *recorded]:
        assert key not in text, text[:300]
    assert f"leather jacket {REDACTED} #0" in analysis.to_json()


@pytest.mark.parametrize("value", ["", "x", "short"])
def test_short_values_in_documented_variables_are_not_registered(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", value)
    text = "x marks a short answer"
    assert redact(text) == text


def test_output_hides_a_secret_registered_after_the_analysis() -> None:
    secret = fresh("late")
    expert = ScriptedExpert("scripted", entities=[("leather jacket", 0.9, None)])
    engine = Engine(experts=[expert], marketplaces=[EchoMarket(secret)],
                    encoder=ColorEncoder(), load_entrypoints=False)
    analysis = engine.analyze(PHOTO)
    assert secret in analysis.comps[0].listing.title  # not a secret yet: kept as it came
    register(secret)  # e.g. a component learnt it on first use, after the title was recorded
    for text in (analysis.to_json(), json.dumps(analysis.to_dict()),
                 json.dumps(analysis.comps[0].to_dict()), repr(analysis),
                 repr(analysis.comps[0])):
        assert secret not in text and REDACTED in text
    assert analysis.comps[0].listing.title.endswith(" #0")  # the value itself is untouched


def test_cli_first_analysis_hides_aws_and_unused_keys(
    aws_credentials: AwsSetup, install_plugin: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = tmp_path / "restyle-leaky"
    (project / "src" / "restyle_leaky").mkdir(parents=True)
    (project / "src" / "restyle_leaky" / "__init__.py").write_text("")
    (project / "src" / "restyle_leaky" / "plugin.py").write_text(LEAKY_PLUGIN)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "restyle-leaky"\nversion = "0.1.0"\n'
        '[project.entry-points.restyle]\nleaky = "restyle_leaky.plugin"\n')
    install_plugin(project)
    gemini_key = fresh("AIzaUnused")
    monkeypatch.setenv("GEMINI_API_KEY", gemini_key)  # set, but Gemini is not selected
    monkeypatch.setenv("LEAKY_ECHO", aws_credentials.token)
    monkeypatch.setenv("LEAKY_TITLE", gemini_key)
    recording = tmp_path / "recording"
    code = main(["-vvv", "analyze", str(SAMPLE_PHOTO), "--experts", "leaky,aws-rekognition",
                 "--marketplaces", "echo-market", "--encoder", "color",
                 "--catalog", str(tmp_path / "catalog"), "--json", "--record", str(recording)])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    result = json.loads(out)
    assert result["opinions"][0]["error"] == f"RuntimeError: upstream refused session {REDACTED}"
    assert result["comps"] and "upstream refused session" in err
    recorded = [p.read_text(errors="replace") for p in recording.iterdir()]
    for text in (out, err, *recorded):
        for secret in (aws_credentials.token, aws_credentials.secret_key, gemini_key):
            assert secret not in text


def test_redacting_repr_hides_a_secret_registered_after_the_value_was_made() -> None:
    from dataclasses import dataclass as frozen_value

    from restyle._serde import redacting_repr

    @redacting_repr
    @frozen_value(frozen=True, slots=True)
    class Inner:
        title: str

    @redacting_repr
    @frozen_value(frozen=True, slots=True)
    class Outer:
        inner: Inner
        items: tuple[Inner, ...]

    secret = fresh("repr")
    value = Outer(inner=Inner(title=f"a {secret} b"), items=(Inner(title=secret),))
    assert secret in repr(value)
    register(secret)
    assert repr(value) == (f"{Outer.__qualname__}(inner={Inner.__qualname__}(title='a "
                           f"{REDACTED} b'), items=({Inner.__qualname__}(title='{REDACTED}'),))")
    assert repr(value.items) == f"({Inner.__qualname__}(title='{REDACTED}'),)"


# -- redaction inside redaction ---------------------------------------------------------


def test_redaction_that_runs_inside_redaction_neither_deadlocks_nor_loses_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logging runs inside anything: a finalizer the garbage collector calls
    while this very thread compiles the registry's expression (a client's
    ``__del__`` that logs as it closes) redacts again, and registers again.
    Run on a thread, so that a deadlock fails the test instead of hanging it."""
    import re
    import threading

    from restyle import _secrets

    first, second = f"sk-{uuid.uuid4().hex}", f"sk-{uuid.uuid4().hex}"
    register(first)
    compile_ = re.compile
    inner: list[str] = []

    def compile_and_log(pattern: Any, flags: int = 0) -> Any:
        if not inner:  # once: the finalizer logs a line holding both secrets
            inner.append("")
            register(second)
            inner[0] = redact(f"closing {first} {second}")
        return compile_(pattern, flags)

    monkeypatch.setattr(_secrets.re, "compile", compile_and_log)
    register(f"sk-{uuid.uuid4().hex}")  # the expression must be compiled again
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(redact(f"{first} and {second}")),
                              daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "redaction inside redaction deadlocked"
    assert outcome == ["<redacted> and <redacted>"]
    assert inner == ["closing <redacted> <redacted>"]
