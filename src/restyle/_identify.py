"""The identify stage: every expert examines the photo at once, then a
synthesizer merges their opinions, falling back to consensus if it fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from restyle import _budget
from restyle._components import Expert, Synthesizer
from restyle._contracts import check_identification, check_opinion
from restyle._imaging import Photo
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


def _examine_one(expert: Expert, photo: Photo, deadline: float) -> Opinion:
    start = time.monotonic()
    own_deadline = min(deadline, start + _budget.timeout_of(expert))
    try:
        value = _budget.call(expert, f"expert {expert.name}", expert.examine, photo,
                             deadline=own_deadline)
        opinion = check_opinion(expert, value)
        return replace(opinion, expert=expert.name, latency=time.monotonic() - start)
    except _budget.ComponentBusy as exc:
        status, message = OpinionStatus.BUSY, str(exc)
    except _budget.Overdue:
        status = OpinionStatus.TIMEOUT
        message = f"no answer within {max(0.0, own_deadline - start):.2g} s"
    except Exception as exc:
        status, message = OpinionStatus.ERROR, describe(exc)
    waited = time.monotonic() - start
    logger.warning("expert %s failed (%s): %s", expert.name, status.value, message)
    return Opinion.failure(expert.name, message, status=status, latency=waited)


def examine(experts: Sequence[Expert], photo: Photo, *, deadline: float) -> tuple[Opinion, ...]:
    """Every expert's Opinion, each answered by ``deadline`` or its own
    ``timeout``, whichever comes first. One that fails, overruns, is busy or
    answers off its contract gives an Opinion saying so."""
    opinions: list[Opinion | None] = [None] * len(experts)

    def run(index: int, expert: Expert) -> None:
        opinions[index] = _examine_one(expert, photo, deadline)

    # One waiting thread per expert; each returns by the deadline because the
    # call inside it does.
    threads = [_budget.spawn(partial(run, i, e), name=f"restyle examine {e.name}")
               for i, e in enumerate(experts)]
    for thread in threads:
        thread.join()
    return tuple(o for o in opinions if o is not None)


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
    value = _budget.call(synthesizer, f"synthesizer {synthesizer.name}", synthesizer.synthesize,
                         opinions, photo=photo, deadline=deadline)
    return check_identification(synthesizer, value)
