"""The Engine (:mod:`~restyle._engine.engine`), which composes the pipeline, and
what it hands a listing draft (:mod:`~restyle._engine.drafting`)."""

from restyle._engine.engine import BATCH_PHOTOS, DEFAULT_DEADLINE, Engine

__all__ = ["BATCH_PHOTOS", "DEFAULT_DEADLINE", "Engine"]
