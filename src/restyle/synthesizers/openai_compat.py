"""The ``openai-compatible`` synthesizer: any chat-completions server (OpenAI,
Ollama, vLLM, llama.cpp) merges the experts' opinions through the OpenAI SDK."""

from __future__ import annotations

import base64
import threading
from typing import TYPE_CHECKING, Any, Literal

from restyle import _settings
from restyle._errors import ConfigurationError
from restyle._plugin.hookspecs import hookimpl
from restyle._secrets import redact
from restyle.synthesizers import _llm
from restyle.synthesizers._llm import Completion, LLMSynthesizer, Request

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from restyle.synthesizers._llm import ModelOptions

__all__ = ["DEFAULT_OPENAI_MODEL", "OpenAICompatibleSynthesizer"]

#: Override with ``model=`` or ``RESTYLE_OPENAI_MODEL`` (for Ollama, e.g. "llama3.2-vision").
DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
MODEL_VARIABLE = "RESTYLE_OPENAI_MODEL"
BASE_URL_VARIABLE = "OPENAI_BASE_URL"
# Local servers ignore the key, but the SDK refuses to start without one.
_LOCAL_KEY = "not-needed"

ResponseFormat = Literal["auto", "json_schema", "json_object"]


class OpenAICompatibleSynthesizer(LLMSynthesizer):
    """Asks a chat-completions model for an Identification as JSON.

    ``response_format`` is ``json_schema`` (strict structured output),
    ``json_object`` (JSON mode, the schema given in the prompt only) or
    ``auto``: structured output first and, when the server answers 400 or 422
    to it, JSON mode from then on. ``base_url`` (or ``OPENAI_BASE_URL``)
    selects the server; without one the key (``OPENAI_API_KEY``) is required.
    """

    name = "openai-compatible"
    provider = "OpenAI-compatible server"
    extra = "openai"
    key_variables = ("OPENAI_API_KEY",)

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        response_format: ResponseFormat = "auto",
        max_tokens: int = 2048,
        **options: Unpack[ModelOptions],
    ) -> None:
        if response_format not in ("auto", "json_schema", "json_object"):
            raise ConfigurationError(
                f"{self.name}: response_format must be auto, json_schema or json_object, "
                f"got {response_format!r}"
            )
        options.setdefault("timeout", 60.0)
        super().__init__(**options)
        self._model = model
        self._base_url = base_url
        self.response_format: ResponseFormat = response_format
        self.max_tokens = max_tokens
        self._schema_unsupported = False
        self._format_lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._model or _settings.env_str(MODEL_VARIABLE) or DEFAULT_OPENAI_MODEL

    @property
    def base_url(self) -> str | None:
        return self._base_url or _settings.env_str(BASE_URL_VARIABLE)

    def _make_client(self) -> Any:
        try:
            import openai
        except ImportError as exc:
            raise self._import_error(exc) from exc
        base_url = self.base_url
        key = self._key(required=base_url is None) or _LOCAL_KEY
        # The SDK sends the key as "Authorization: Bearer", never in the URL.
        return openai.OpenAI(
            api_key=key, base_url=base_url, timeout=self.timeout, max_retries=self.retries
        )

    def _format(self, request: Request) -> dict[str, Any]:
        with self._format_lock:
            use_schema = self.response_format == "json_schema" or (
                self.response_format == "auto" and not self._schema_unsupported
            )
        if use_schema:
            return {
                "type": "json_schema",
                "json_schema": {
                    "name": request.answer,
                    "strict": True,
                    "schema": request.schema("json-schema"),
                },
            }
        return {"type": "json_object"}

    def _messages(self, request: Request) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        for image in request.images:
            data = base64.b64encode(image).decode("ascii")
            content.append({
                "type": "image_url",
                "image_url": {"url": f"data:{request.image_mime};base64,{data}"},
            })
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": request.system},
            {"role": "user", "content": content},
        ]
        if request.repair is not None:
            messages.append({"role": "assistant", "content": request.repair[0]})
            messages.append({"role": "user", "content": request.repair_prompt()})
        return messages

    def _complete(self, request: Request) -> Completion:
        client = self.client()
        import openai

        # Errors are raised after the except blocks so that the SDK's exception
        # (whose text may quote the key) is not kept as their __context__.
        while True:
            response_format = self._format(request)
            failure = None
            downgrade = False
            try:
                response = client.chat.completions.create(
                    model=self.model,
                    messages=self._messages(request),
                    response_format=response_format,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    n=1,
                )
            except openai.APIStatusError as exc:
                # A server that does not take a JSON schema gets JSON mode from now on.
                downgrade = (
                    self.response_format == "auto"
                    and response_format["type"] == "json_schema"
                    and exc.status_code in (400, 422)
                )
                message = redact(_status_message(exc))[:200]
                failure = self._failure(
                    f"HTTP {exc.status_code}" + (f": {message}" if message else ""), exc
                )
            except Exception as exc:
                if _llm.is_timeout(exc):
                    failure = self._failure(f"no answer within {self.timeout:g} s", exc)
                else:
                    failure = self._failure(f"request failed ({type(exc).__name__})", exc)
            if downgrade:
                with self._format_lock:
                    self._schema_unsupported = True
                continue
            if failure is not None:
                raise failure
            break
        return _completion(response)


def _status_message(exc: Any) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return ""


def _completion(response: Any) -> Completion:
    choices = getattr(response, "choices", None) or []
    if not choices:
        return Completion(text=None, finish="other", detail="no choices")
    choice = choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        return Completion(text=None, finish="blocked", detail="the model refused")
    text = message.content if isinstance(message.content, str) else None
    finish = choice.finish_reason
    if finish == "content_filter":
        return Completion(text=text, finish="blocked", detail="finish reason content_filter")
    if finish == "length":
        return Completion(text=text, finish="max_tokens", detail="finish reason length")
    return Completion(text=text)


@hookimpl
def register_synthesizers(register: Any) -> None:
    register(OpenAICompatibleSynthesizer())
