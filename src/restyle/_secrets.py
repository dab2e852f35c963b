"""Keeping keys and tokens out of reprs, messages, causes and log lines: one place for it.

Every credential restyle holds is a :class:`Secret`, and making one registers
its value; so is whatever the documented key variables hold
(:data:`SECRET_VARIABLES`), whether or not their component is in use.
:func:`redact` then replaces every registered value, and anything shaped
like a credential whoever it belongs to (``Authorization`` headers,
``x-goog-api-key``, ``X-Amz-Security-Token``, ``access_token`` and
``client_secret`` fields...), wherever it appears. :class:`RedactingFilter`
does the same to log records, and :func:`protect_loggers` puts it on the
loggers of the HTTP libraries the cloud components use.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "HTTP_LOGGERS",
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SECRET_VARIABLES",
    "RedactingFilter",
    "Secret",
    "basic_credentials",
    "describe",
    "exposes_secret",
    "protect_loggers",
    "redact",
    "redact_registered",
    "register",
    "register_environment",
    "registered_pattern",
    "without_secrets",
]

#: What a secret becomes in a message.
REDACTED = "<redacted>"

#: Shorter values are not registered: no real key is that short, and replacing a
#: short common string in every message and log line would protect nothing.
MIN_SECRET_LENGTH = 8

#: The environment variables restyle documents that hold a key, a client secret or a
#: token (docs/configuration.md). Whatever they hold is registered whether or not
#: the component that reads it is in use: a listing title, a server's message or
#: another component's failure may quote any of them.
SECRET_VARIABLES = (
    "RESTYLE_GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET",
)

#: The loggers of the libraries the cloud components talk through, whose debug
#: lines quote request headers and bodies.
HTTP_LOGGERS = (
    "botocore", "boto3", "s3transfer", "urllib3", "requests", "google",
    "google_genai", "grpc", "httpx", "httpx2", "httpcore", "httpcore2", "openai",
)

# Loggers created only when their module is first imported, possibly in the
# middle of the first request: made (and protected) up front.
_EMITTERS = (
    "botocore.auth", "botocore.endpoint", "botocore.parsers", "botocore.hooks",
    "botocore.credentials", "botocore.httpsession", "botocore.awsrequest",
    "botocore.retryhandler", "botocore.retries.standard", "botocore.retries.adaptive",
    "botocore.client", "botocore.utils", "botocore.tokens", "botocore.regions",
    "urllib3.connectionpool", "urllib3.connection", "urllib3.response",
    "urllib3.util.retry", "urllib3.poolmanager",
    "google.auth.transport.requests", "google.auth._default", "google.oauth2._client",
    "google.api_core.retry", "google.api_core.grpc_helpers", "google.api_core.bidi",
    "google_genai._api_client", "google_genai.models", "grpc._channel", "grpc._common",
    "httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
    "httpx2", "httpcore2.connection", "httpcore2.http11", "httpcore2.proxy",
    "openai", "openai._base_client",
)


class Secret:
    """A string that never shows itself in a repr, a str() or a traceback's locals.

    Making one registers the value, so that :func:`redact` and the logging
    filter replace it wherever it turns up.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)

    def reveal(self) -> str:
        """The secret itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__


def basic_credentials(user: str, password: str) -> Secret:
    """The value of an HTTP Basic ``Authorization`` header, as a Secret of its own."""
    return Secret(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))


# -- the registry ------------------------------------------------------------------


class _Registry:
    """Every registered value, and one regular expression that finds them all.

    Read without a lock: redaction runs inside logging, and logging may run
    inside anything, a finalizer the garbage collector calls while this very
    thread compiles the expression included. The values are one frozen set,
    replaced whole; the expression is kept with the set it was compiled from,
    and compiled again (harmlessly, perhaps twice) when the set has changed.
    """

    __slots__ = ("_lock", "_pattern", "_values")

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._pattern: tuple[frozenset[str], re.Pattern[str]] | None = None
        # Only writers take it; reentrant, as a finalizer may register too.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<{len(self._values)} registered secrets>"

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        # The forms a value takes in a URL, a form body or escaped JSON.
        forms = {value, quote(value, safe=""), quote_plus(value, safe=""),
                 value.replace("/", "\\/")}
        with self._lock:
            while True:  # again if a reentrant add replaced the set meanwhile
                current = self._values
                grown = current | forms
                if self._values is current:
                    self._values = grown
                    return

    def pattern(self) -> re.Pattern[str] | None:
        values, cached = self._values, self._pattern
        if cached is not None and cached[0] is values:
            return cached[1]
        if not values:
            return None
        # Longest first, so that a value holding another is replaced whole.
        ordered = sorted(values, key=len, reverse=True)
        compiled = re.compile("|".join(re.escape(v) for v in ordered))
        self._pattern = (values, compiled)
        return compiled


_REGISTRY = _Registry()


def register(*values: str | Secret | None) -> None:
    """Make :func:`redact` replace these values from now on (the process's lifetime)."""
    for value in values:
        if isinstance(value, Secret):
            value = value.reveal()
        if value:
            _REGISTRY.add(value)


_environment_seen: tuple[str | None, ...] | None = None


def register_environment() -> None:
    """Register what the :data:`SECRET_VARIABLES` hold now.

    Cheap when they have not changed since the last call (a dozen lookups), so
    that :func:`redact` and the output of an Analysis call it every time: a key
    set after restyle was imported is redacted as well.
    """
    global _environment_seen
    values = tuple(os.environ.get(name) for name in SECRET_VARIABLES)
    if values != _environment_seen:
        # Stripped, as restyle reads them: the value inside any spaces around it.
        register(*(value.strip() for value in values if value))
        _environment_seen = values


register_environment()


def redact_registered(text: str) -> str:
    """``text`` with every registered secret replaced, and nothing else: for what
    restyle hands back (an Analysis's JSON, dict and repr), whose listing titles
    and URLs must stay as they came while no key shows, even one registered
    after the text was recorded."""
    pattern = registered_pattern() if text else None
    return pattern.sub(REDACTED, text) if pattern is not None else text


def registered_pattern() -> re.Pattern[str] | None:
    """The expression :func:`redact_registered` applies, after registering the
    environment's secrets: fetched once by a caller redacting many strings."""
    register_environment()
    return _REGISTRY.pattern()


# -- shapes of credentials -------------------------------------------------------------

# Names of fields and headers whose value is a credential, in any case, followed
# by ":" or "=" as in a header line, JSON, a Python dict repr or a form body.
_NAMES = sorted((
    "authorization", "proxy-authorization", "x-goog-api-key", "x-api-key", "api-key",
    "api_key", "apikey", "x-amz-security-token", "x-amz-credential", "x-amz-signature",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "secret_access_key",
    "session_token", "security_token", "access_token", "refresh_token", "id_token",
    "client_secret", "private_key", "password", "passwd", "secret", "token", "signature",
), key=len, reverse=True)
_SCHEMES = r"(?:Bearer|Basic|Digest|Token|Negotiate|AWS4-HMAC-SHA256)[ \t]+"
_FIELD = re.compile(
    # A name starts a word, or follows an escaped line break as in a bytes repr.
    r"(?P<name>(?:(?<![\w-])|(?<=\\[rnt]))(?:"
    + "|".join(re.escape(n) for n in _NAMES)
    + r")(?![\w-]))"
    r"(?P<sep>\\*[\"']?[ \t]*[:=][ \t]*(?:\r?\n[ \t]*)?)"
    r"(?:(?P<open>b?(?P<quote>\\*[\"']))(?P<quoted>[^\r\n]*?)(?P=quote)"
    rf"|(?!(?:{_SCHEMES})?{re.escape(REDACTED)})"
    rf"(?P<bare>(?:{_SCHEMES})?[^\s'\"\\&,;<>()\[\]{{}}]+))",
    re.IGNORECASE,
)
_KEY_PARAMETER = re.compile(r"(?<=[?&;])(?P<name>key=)(?P<bare>[^&\s'\"#<>]+)")
# Credentials recognisable by their shape alone.
_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key ids
    r"|\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"  # Google API keys
    r"|\bya29\.[0-9A-Za-z._-]+"  # Google OAuth access tokens
    r"|\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]*"  # signed JWTs
    r"|\bsk-[A-Za-z0-9_-]{20,}"  # OpenAI keys
    r"|\bv\^1\.1#[^\s'\"\\,;]+"  # eBay OAuth tokens
    r"|(?<=Bearer )[A-Za-z0-9._~+/=^#%-]{12,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    re.DOTALL,
)


def _field(match: re.Match[str]) -> str:
    name, sep = match.group("name"), match.group("sep")
    if match.group("bare") is not None:
        return f"{name}{sep}{REDACTED}"
    if not match.group("quoted"):
        return match.group(0)
    return f"{name}{sep}{match.group('open')}{REDACTED}{match.group('quote')}"


def redact(text: str, *secrets: str | Secret | None) -> str:
    """``text`` with every registered secret and everything shaped like a credential
    replaced by ``<redacted>``; what is left is safe to show, log or keep.

    ``secrets`` are replaced as well, in this text only, when at least 4
    characters long: shorter ones would mangle the message and protect nothing.
    """
    if not text:
        return text
    register_environment()
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    pattern = _REGISTRY.pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _FIELD.sub(_field, text)
    text = _KEY_PARAMETER.sub(lambda m: m.group("name") + REDACTED, text)
    return _SHAPES.sub(REDACTED, text)


def describe(exc: BaseException, *, limit: int = 500) -> str:
    """``"Type: message"`` of a component's exception, redacted and kept to one
    bounded line, for Opinions, warnings and fallback reasons."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def without_secrets(exc: BaseException) -> BaseException:
    """``exc`` made safe to hand a caller: its message redacted, and its cause and
    context dropped when any of them would show a secret in a traceback."""
    linked = [e for e in (exc.__cause__, exc.__context__) if e is not None]
    if any(exposes_secret(e) for e in linked):
        exc.__cause__ = None
        exc.__context__ = None
        exc.__suppress_context__ = True
    text = str(exc)
    clean = redact(text)
    if clean != text or any(redact(repr(a)) != repr(a) for a in exc.args):
        exc.args = (clean,)
    return exc


def _exception_texts(exc: BaseException) -> Iterable[str]:
    yield str(exc)
    yield repr(exc)
    yield repr(exc.args)
    for note in getattr(exc, "__notes__", None) or ():
        yield str(note)


def exposes_secret(exc: BaseException) -> bool:
    """Whether ``exc``, or any exception chained to it, would show a secret in a
    traceback: in its message, repr, arguments or notes."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        try:
            if any(redact(text) != text for text in _exception_texts(current)):
                return True
        except Exception:
            return True  # an exception that cannot show itself cannot be vouched for
        linked = [current.__cause__, current.__context__,
                  *(getattr(current, "exceptions", None) or ())]
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return False


# -- logging ---------------------------------------------------------------------


_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime",
}


def _scrub(value: Any, depth: int = 0) -> Any:
    """``value`` (a str, or lists and dicts of them) redacted; the same object if clean."""
    if isinstance(value, str):
        return redact(value)
    if depth > 6:
        return value
    if isinstance(value, dict):
        cleaned = {k: _scrub(v, depth + 1) for k, v in value.items()}
        changed = any(cleaned[k] is not v for k, v in value.items())
        return cleaned if changed else value
    if isinstance(value, (list, tuple)):
        items = [_scrub(v, depth + 1) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items) if isinstance(value, list) else tuple(items)
    return value


class RedactingFilter(logging.Filter):
    """Redacts secrets from a record's message, exception text, stack and extra fields.

    On a logger it sees only the records that logger itself makes, not its
    children's; on a handler it sees every record the handler writes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # logging reports a bad format itself, quoting msg and args: keep it clean.
            record.msg, record.args = redact(str(record.msg)), None
        else:
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned = redact(text)
            if cleaned != text:
                # The formatters use exc_text when it is set; exc_info would show it all again.
                record.exc_text, record.exc_info = cleaned, None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS:
                cleaned_value = _scrub(value)
                if cleaned_value is not value:
                    setattr(record, key, cleaned_value)
        return True


_FILTER = RedactingFilter()
_PROTECT_LOCK = threading.Lock()
_loggers_seen = -1


def _is_protected(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ("restyle", *HTTP_LOGGERS))


def protect_loggers() -> None:
    """Put the redacting filter on restyle's loggers and every logger of the
    :data:`HTTP_LOGGERS` families.

    Idempotent and cheap when no logger was created since the last call, so it
    runs each time a cloud component uses its client.
    """
    global _loggers_seen
    manager = logging.Logger.manager
    if len(manager.loggerDict) == _loggers_seen:
        return
    with _PROTECT_LOCK:
        for name in ("restyle", *HTTP_LOGGERS, *_EMITTERS):
            logging.getLogger(name).addFilter(_FILTER)
        for name, logger in list(manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and _is_protected(name):
                logger.addFilter(_FILTER)
        _loggers_seen = len(manager.loggerDict)
