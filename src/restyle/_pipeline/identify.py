"""The identify stage: every expert examines the photo at once, then a
synthesizer merges their opinions, falling back to consensus if it fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from restyle._input.imaging import Photo
from restyle._pipeline import budget as _budget
from restyle._plugin.components import Expert, Synthesizer
from restyle._plugin.contracts import check_identification, check_opinion
from restyle._secrets import describe
from restyle._types import Identification, Opinion, OpinionStatus

__all__ = ["IdentifyResult", "examine", "synthesize"]

logger = logging.getLogger("restyle")

#: Time the fallback synthesizer may borrow from the next stage.
FALLBACK_SECONDS = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentifyResult:
    """The experts' opinions, in the experts' order, and what they add up to."""

    opinions: tuple[Opinion, ...]
    identification: Identification


def _start(expert: Expert, photo: Photo, deadline: float) -> _budget.Pending | Opinion:
    """The expert's call under way, or the Opinion saying why it was not made."""
    own_deadline = min(deadline, time.monotonic() + _budget.timeout_of(expert))
    try:
        return _budget.start(expert, f"expert {expert.name}", expert.examine, photo,
                             deadline=own_deadline, check=partial(check_opinion, expert))
    except _budget.ComponentBusy as exc:
        return _failed(expert, OpinionStatus.BUSY, str(exc), 0.0)
    except _budget.Overdue:
        return _failed(expert, OpinionStatus.TIMEOUT, "no time was left", 0.0)


def _finish(expert: Expert, pending: _budget.Pending) -> Opinion:
    try:
        opinion: Opinion = pending.result()  # checked and copied on the worker
        return replace(opinion, expert=expert.name,
                       latency=time.monotonic() - pending.started)
    except _budget.Overdue:
        limit = max(0.0, pending.deadline - pending.started)
        status, message = OpinionStatus.TIMEOUT, f"no answer within {limit:.2g} s"
    except Exception as exc:
        status, message = OpinionStatus.ERROR, describe(exc)
    return _failed(expert, status, message, time.monotonic() - pending.started)


def _failed(expert: Expert, status: OpinionStatus, message: str, waited: float) -> Opinion:
    logger.warning("expert %s failed (%s): %s", expert.name, status.value, message)
    return Opinion.failure(expert.name, message, status=status, latency=waited)


def examine(experts: Sequence[Expert], photo: Photo, *, deadline: float) -> tuple[Opinion, ...]:
    """Every expert's Opinion, each answered by ``deadline`` or its own
    ``timeout``, whichever comes first. One that fails, overruns, is busy or
    answers off its contract gives an Opinion saying so."""
    started = [_start(expert, photo, deadline) for expert in experts]  # all at once
    return tuple(
        call if isinstance(call, Opinion) else _finish(expert, call)
        for expert, call in zip(experts, started, strict=True)
    )


def synthesize(
    synthesizer: Synthesizer, opinions: Sequence[Opinion], photo: Photo, *,
    deadline: float, fallback: Callable[[], Synthesizer | None], borrow_until: float,
) -> Identification:
    """The synthesizer's Identification; if it raises, overruns, is busy or
    answers off its contract, ``fallback()``'s, with ``fallback_reason`` set.

    A synthesizer that used all its time leaves none for the fallback, so the
    fallback (consensus: milliseconds) may borrow up to
    :data:`FALLBACK_SECONDS` until ``borrow_until``, the next stage's deadline.
    When the fallback fails too, or there is none, the first failure is raised.
    """
    try:
        return _synthesize_with(synthesizer, opinions, photo, deadline)
    except Exception as exc:
        backup = fallback()
        if backup is None or backup is synthesizer:
            raise
        reason = f"{synthesizer.name} failed: {describe(exc)}"
        logger.warning("%s; falling back to %s", reason, backup.name)
        backup_deadline = max(deadline, min(time.monotonic() + FALLBACK_SECONDS, borrow_until))
        try:
            identification = _synthesize_with(backup, opinions, photo, backup_deadline)
        except Exception:
            raise exc from None
        return replace(identification, fallback_reason=reason)


def _synthesize_with(synthesizer: Synthesizer, opinions: Sequence[Opinion], photo: Photo,
                     deadline: float) -> Identification:
    identification: Identification = _budget.call(
        synthesizer, f"synthesizer {synthesizer.name}", synthesizer.synthesize, opinions,
        photo=photo, deadline=deadline, check=partial(check_identification, synthesizer))
    return identification
