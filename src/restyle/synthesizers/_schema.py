"""The shapes of a model's answers: an identification and a listing
description, each as JSON Schema (OpenAI's strict structured output) or as
the OpenAPI subset Gemini's ``responseSchema`` takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from restyle._taxonomy import CATEGORIES, FACETS

__all__ = ["ANSWER_LIMITS", "ATTRIBUTE_NAMES", "MAX_ATTRIBUTES", "MAX_SUGGESTED_PHOTOS",
           "answer_schema", "description_schema"]

#: Longest string accepted in each field of the model's answer.
ANSWER_LIMITS = {
    "product_name": 120, "brand": 60, "category": 40, "summary": 300,
    "attribute": 60, "suggested_photo": 120,
}
MAX_ATTRIBUTES = 12
MAX_SUGGESTED_PHOTOS = 3
ATTRIBUTE_NAMES: tuple[str, ...] = (*FACETS, "size", "model_number")


class _Schema:
    """Schema pieces in one dialect: JSON Schema (OpenAI, strict mode) or the
    OpenAPI subset Gemini's ``responseSchema`` takes."""

    def __init__(self, dialect: Literal["json-schema", "openapi"]) -> None:
        self.openapi = dialect == "openapi"

    def string(self, limit: int, *, nullable: bool = False,
               enum: Sequence[str] = ()) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "STRING" if self.openapi else "string"}
        if enum:
            schema["enum"] = list(enum)
        elif self.openapi:
            schema["maxLength"] = limit
        if nullable:
            if self.openapi:
                schema["nullable"] = True
            else:
                schema["type"] = ["string", "null"]
                if enum:
                    schema["enum"] = [*enum, None]
        return schema

    def number(self) -> dict[str, Any]:
        if self.openapi:
            return {"type": "NUMBER", "minimum": 0.0, "maximum": 1.0}
        return {"type": "number"}

    def array(self, items: dict[str, Any], most: int) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "ARRAY" if self.openapi else "array", "items": items}
        if self.openapi:
            schema["maxItems"] = most
        return schema

    def obj(self, properties: dict[str, Any]) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "OBJECT" if self.openapi else "object",
            "properties": properties,
            "required": list(properties),
        }
        if self.openapi:
            schema["propertyOrdering"] = list(properties)
        else:
            schema["additionalProperties"] = False
        return schema


def answer_schema(dialect: Literal["json-schema", "openapi"]) -> dict[str, Any]:
    """The identification answer's schema, as JSON Schema (OpenAI, strict mode)
    or as the OpenAPI subset Gemini's ``responseSchema`` takes."""
    s = _Schema(dialect)
    attribute = s.obj({
        "name": s.string(20, enum=ATTRIBUTE_NAMES),
        "value": s.string(ANSWER_LIMITS["attribute"]),
        "confidence": s.number(),
    })
    return s.obj({
        "product_name": s.string(ANSWER_LIMITS["product_name"], nullable=True),
        "brand": s.string(ANSWER_LIMITS["brand"], nullable=True),
        "category": s.string(ANSWER_LIMITS["category"], nullable=True, enum=CATEGORIES),
        "attributes": s.array(attribute, MAX_ATTRIBUTES),
        "confidence": s.number(),
        "summary": s.string(ANSWER_LIMITS["summary"]),
        "suggested_photos": s.array(s.string(ANSWER_LIMITS["suggested_photo"]),
                                    MAX_SUGGESTED_PHOTOS),
    })


def description_schema(dialect: Literal["json-schema", "openapi"]) -> dict[str, Any]:
    """A listing description's schema (the listing drafts' ``DESCRIPTION_SCHEMA``:
    up to 4 paragraphs of 600 characters, up to 8 highlights of 120)."""
    s = _Schema(dialect)
    return s.obj({"paragraphs": s.array(s.string(600), 4),
                  "highlights": s.array(s.string(120), 8)})
