"""The ``gemini`` synthesizer: Google Gemini merges the experts' opinions, with
structured output, validated here, through the ``google-genai`` SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from restyle import _settings
from restyle._plugin.hookspecs import hookimpl
from restyle._secrets import redact
from restyle._taxonomy import clean_text
from restyle.synthesizers._llm import (
    Completion,
    LLMSynthesizer,
    ModelOptions,
    Request,
    is_timeout,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_GEMINI_MODEL", "GeminiSynthesizer"]

#: A current Pro-class model; override with ``model=`` or ``RESTYLE_GEMINI_MODEL``.
DEFAULT_GEMINI_MODEL = "gemini-2.5-pro"
MODEL_VARIABLE = "RESTYLE_GEMINI_MODEL"

# Finish reasons that mean the model would not (or may not) answer: asking
# again with the same data would be refused again.
_BLOCKED = {
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
}


class GeminiSynthesizer(LLMSynthesizer):
    """Asks Gemini for an Identification as JSON matching a response schema.

    ``timeout`` (seconds) bounds each HTTP attempt; ``retries`` more attempts
    are made on 408, 429 and 5xx answers and on connection errors, waiting
    ``retry_delay`` seconds and then exponentially longer. ``base_url`` points
    the client at another endpoint (a proxy, or a fake server in tests).
    """

    name = "gemini"
    provider = "Gemini"
    extra = "gemini"
    key_variables = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        retry_delay: float = 1.0,
        max_output_tokens: int = 8192,
        **options: Unpack[ModelOptions],
    ) -> None:
        options.setdefault("timeout", 60.0)
        super().__init__(**options)
        self.retry_delay = retry_delay
        self._model = model
        self.base_url = base_url
        self.api_version = api_version
        self.max_output_tokens = max_output_tokens

    @property
    def model(self) -> str:
        return self._model or _settings.env_str(MODEL_VARIABLE) or DEFAULT_GEMINI_MODEL

    def _make_client(self) -> Any:
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:
            raise self._import_error(exc) from exc
        options: dict[str, Any] = {
            # The SDK takes milliseconds; its default is to wait forever.
            "timeout": max(1, round(self.timeout * 1000)),
            "retry_options": types.HttpRetryOptions(
                attempts=self.retries + 1,
                initial_delay=self.retry_delay,
                max_delay=max(self.retry_delay, 30.0),
                # The SDK's default jitter adds up to a whole second to every wait.
                jitter=self.retry_delay,
            ),
        }
        if self.base_url:
            options["base_url"] = self.base_url
        if self.api_version:
            options["api_version"] = self.api_version
        # api_key= makes the SDK send the key in the x-goog-api-key header, never in the URL.
        return genai.Client(api_key=self._key(), http_options=types.HttpOptions(**options))

    def _complete(self, request: Request) -> Completion:
        client = self.client()
        from google.genai import errors, types

        parts = []
        for image in request.images:
            parts.append(types.Part.from_bytes(data=image, mime_type=request.image_mime))
        parts.append(types.Part.from_text(text=request.prompt))
        contents = [types.Content(role="user", parts=parts)]
        if request.repair is not None:
            contents.append(
                types.Content(role="model", parts=[types.Part.from_text(text=request.repair[0])])
            )
            contents.append(types.Content(
                role="user", parts=[types.Part.from_text(text=request.repair_prompt() or "")]
            ))
        config = types.GenerateContentConfig(
            system_instruction=request.system,
            response_mime_type="application/json",
            response_schema=request.schema("openapi"),
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            candidate_count=1,
            # Nothing the model says may call a tool or fetch anything.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        # The error is raised after the except block so that the SDK's exception
        # (whose text may quote the key) is not kept as its __context__.
        failure = None
        try:
            response = client.models.generate_content(
                model=self.model, contents=contents, config=config
            )
        except errors.APIError as exc:
            message = redact(str(exc.message or ""))[:200]
            what = f"HTTP {exc.code} {exc.status or ''}".rstrip()
            failure = self._failure(what + (f": {message}" if message else ""), exc)
        except Exception as exc:
            if is_timeout(exc):
                failure = self._failure(f"no answer within {self.timeout:g} s", exc)
            else:
                failure = self._failure(f"request failed ({type(exc).__name__})", exc)
        if failure is not None:
            raise failure
        return _completion(response)


def _completion(response: Any) -> Completion:
    candidates = response.candidates or []
    if not candidates:
        # Prompt feedback comes only with a prompt that was blocked; some answers
        # name no reason, only a message: asking again would be blocked again.
        feedback = response.prompt_feedback
        if feedback is None:
            return Completion(text=None, finish="other", detail="no candidates")
        reason = feedback.block_reason
        message = clean_text(redact(feedback.block_reason_message or ""), limit=200)
        detail = f"block reason {_name(reason)}" if reason is not None else "prompt blocked"
        return Completion(text=None, finish="blocked",
                          detail=f"{detail}: {message}" if message else detail)
    candidate = candidates[0]
    finish = _name(candidate.finish_reason) if candidate.finish_reason else None
    content = candidate.content
    # Thought parts are the model's reasoning, not its answer.
    text = "".join(
        part.text for part in (content.parts or []) if part.text and not part.thought
    ) if content is not None else ""
    if finish in _BLOCKED:
        return Completion(text=text, finish="blocked", detail=f"finish reason {finish}")
    if finish == "MAX_TOKENS":
        return Completion(text=text, finish="max_tokens", detail="finish reason MAX_TOKENS")
    if finish not in (None, "STOP"):
        return Completion(text=text, finish="other", detail=f"finish reason {finish}")
    return Completion(text=text)


def _name(value: Any) -> str:
    return str(getattr(value, "name", None) or value)


@hookimpl
def register_synthesizers(register: Any) -> None:
    register(GeminiSynthesizer())
