"""Realistic wire answers of the Gemini and OpenAI chat APIs, for the fake servers."""

from __future__ import annotations

import json
from typing import Any

from restyle.testing import Reply

_USAGE = {"promptTokenCount": 812, "candidatesTokenCount": 96, "totalTokenCount": 908}


def gemini_text(text: str, *, finish: str = "STOP") -> Reply:
    """A generateContent answer whose one candidate says ``text``."""
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "finishReason": finish,
        "index": 0,
    }
    if finish == "SAFETY":
        candidate["safetyRatings"] = [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
        ]
    return Reply(body={"candidates": [candidate], "usageMetadata": _USAGE,
                       "modelVersion": "gemini-2.5-pro", "responseId": "resp-1"})


def gemini_json(answer: dict[str, Any], *, finish: str = "STOP") -> Reply:
    return gemini_text(json.dumps(answer), finish=finish)


def gemini_blocked(reason: str = "SAFETY") -> Reply:
    """No candidates: the prompt itself was blocked."""
    return Reply(body={
        "promptFeedback": {
            "blockReason": reason,
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}],
        },
        "usageMetadata": {"promptTokenCount": 812, "totalTokenCount": 812},
        "modelVersion": "gemini-2.5-pro",
    })


def gemini_prompt_feedback(message: str) -> Reply:
    """No candidates and prompt feedback with only a message, no block reason, as
    Gemini answers some blocked prompts."""
    return Reply(body={
        "promptFeedback": {"blockReasonMessage": message},
        "usageMetadata": {"promptTokenCount": 812, "totalTokenCount": 812},
        "modelVersion": "gemini-2.5-pro",
        "responseId": "resp-2",
    })


def gemini_error(code: int, status: str, message: str) -> Reply:
    """An error in Google's JSON envelope."""
    return Reply(status=code, body={"error": {"code": code, "message": message, "status": status}})


def openai_text(text: str | None, *, finish: str = "stop", refusal: str | None = None) -> Reply:
    """A chat.completion whose one choice says ``text``."""
    return Reply(body={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1764000000,
        "model": "gpt-4.1-mini-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": refusal,
                        "annotations": []},
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": {"prompt_tokens": 812, "completion_tokens": 96, "total_tokens": 908},
        "system_fingerprint": "fp_1",
    })


def openai_json(answer: dict[str, Any], *, finish: str = "stop") -> Reply:
    return openai_text(json.dumps(answer), finish=finish)


def openai_error(code: int, message: str, *, kind: str = "invalid_request_error",
                 error_code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    """An error in OpenAI's JSON envelope."""
    return Reply(status=code, headers=dict(headers or {}),
                 body={"error": {"message": message, "type": kind, "param": param,
                                 "code": error_code}})
