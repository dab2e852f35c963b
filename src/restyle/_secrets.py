"""Keeping keys and tokens out of reprs, messages and log lines: one place for it."""

from __future__ import annotations

__all__ = ["REDACTED", "Secret", "redact"]

#: What a secret becomes in a message.
REDACTED = "<redacted>"


class Secret:
    """A string that never shows itself in a repr, a str() or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__


def redact(text: str, *secrets: str | Secret | None) -> str:
    """``text`` with every secret replaced, for messages built from foreign errors.

    Secrets shorter than 4 characters are left alone: replacing them would
    mangle the message without protecting anything.
    """
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text
