"""The identify stage: every expert examines the photo at once, then a
synthesizer merges their opinions, falling back to consensus if it fails."""

from __future__ import annotations

import inspect
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

__all__ = ["IdentifyResult", "examine", "synthesize", "takes_photos"]

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


def examine(experts: Sequence[Expert], photos: Photo | Sequence[Photo], *,
            deadline: float) -> tuple[Opinion, ...]:
    """Every expert's Opinion of every photo it examines (its ``photo_roles``;
    photo by photo, each in the experts' order, each naming its photo), all
    asked at once and each answered
    by ``deadline`` or the expert's own ``timeout``, whichever comes first. One
    that fails, overruns, is busy or answers off its contract gives an Opinion
    saying so. The opinions come in the photos' order in the item."""
    item = [photos] if isinstance(photos, Photo) else sorted(photos, key=lambda p: p.index)
    asked = [(expert, photo) for photo in item for expert in experts
             if len(item) == 1 or expert.photo_roles is None or photo.role in expert.photo_roles]
    started = [_start(expert, photo, deadline) for expert, photo in asked]  # all at once
    return tuple(
        replace(call if isinstance(call, Opinion) else _finish(expert, call), photo=photo.index)
        for (expert, photo), call in zip(asked, started, strict=True)
    )


def synthesize(
    synthesizer: Synthesizer, opinions: Sequence[Opinion], photos: Photo | Sequence[Photo], *,
    deadline: float, fallback: Callable[[], Synthesizer | None], borrow_until: float,
) -> Identification:
    """The synthesizer's Identification; if it raises, overruns, is busy or
    answers off its contract, ``fallback()``'s, with ``fallback_reason`` set.

    ``photos`` are the item's photos, the first showing it whole: a
    synthesizer is handed that one as ``photo``, and all of them as ``photos``
    when its ``synthesize`` takes that keyword (see :func:`takes_photos`).

    A synthesizer that used all its time leaves none for the fallback, so the
    fallback (consensus: milliseconds) may borrow up to
    :data:`FALLBACK_SECONDS` until ``borrow_until``, the next stage's deadline.
    When the fallback fails too, or there is none, the first failure is raised.
    """
    item = (photos,) if isinstance(photos, Photo) else tuple(photos)
    try:
        return _synthesize_with(synthesizer, opinions, item, deadline)
    except Exception as exc:
        backup = fallback()
        if backup is None or backup is synthesizer:
            raise
        reason = f"{synthesizer.name} failed: {describe(exc)}"
        logger.warning("%s; falling back to %s", reason, backup.name)
        backup_deadline = max(deadline, min(time.monotonic() + FALLBACK_SECONDS, borrow_until))
        try:
            identification = _synthesize_with(backup, opinions, item, backup_deadline)
        except Exception:
            raise exc from None
        return replace(identification, fallback_reason=reason)


def takes_photos(synthesizer: Synthesizer) -> bool:
    """Whether ``synthesizer.synthesize`` takes the item's photos (a ``photos``
    keyword): a plugin written for one photo is never handed a keyword it
    does not know."""
    try:
        parameters = inspect.signature(synthesizer.synthesize).parameters
    except (TypeError, ValueError):
        return False
    return "photos" in parameters and parameters["photos"].kind in (
        inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _synthesize_with(synthesizer: Synthesizer, opinions: Sequence[Opinion],
                     photos: tuple[Photo, ...], deadline: float) -> Identification:
    extra = {"photos": photos} if takes_photos(synthesizer) else {}
    identification: Identification = _budget.call(
        synthesizer, f"synthesizer {synthesizer.name}", synthesizer.synthesize, opinions,
        photo=photos[0], deadline=deadline, check=partial(check_identification, synthesizer),
        **extra)
    return identification
