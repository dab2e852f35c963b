"""Defaults and the environment variables that override them.

Every variable is documented in docs/configuration.md; code reads them only here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from restyle._errors import ConfigurationError

DEFAULT_MODEL = "ViT-B-32/laion2b_s34b_b79k"
DEFAULT_EXPERTS: tuple[str, ...] = ("clip", "catalog")
DEFAULT_SYNTHESIZER = "consensus"
DEFAULT_MARKETPLACES: tuple[str, ...] = ("catalog",)
DEFAULT_ENCODER = "openclip"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be one of 1/0, true/false, yes/no; got {raw!r}")


def env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; unset gives ``default``, an empty string gives ()."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def env_str(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw.strip() if raw and raw.strip() else None


def home() -> Path:
    """Where restyle keeps its own data (``RESTYLE_HOME``, default ``~/.cache/restyle``)."""
    explicit = env_str("RESTYLE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env_str("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "restyle"


def catalog_dir() -> Path:
    """The default local catalog (``RESTYLE_CATALOG``, default ``$RESTYLE_HOME/catalog``)."""
    explicit = env_str("RESTYLE_CATALOG")
    return Path(explicit).expanduser() if explicit else home() / "catalog"


def offline() -> bool:
    """True when no download may be attempted (``RESTYLE_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return env_flag("RESTYLE_OFFLINE") or env_flag("HF_HUB_OFFLINE")


#: Variables by which a program has already chosen how OpenMP threads wait.
_OPENMP_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def wait_passively() -> bool:
    """Have OpenMP's idle threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``),
    unless the program already chose, or torch or faiss is already loaded (their
    OpenMP runtimes read the setting once, when they load). Returns whether it
    was set.

    torch and faiss each run their own OpenMP runtime, whose idle threads by
    default spin for milliseconds after every operation. While other processes
    want the same CPUs, spinning threads take their turns from the threads
    doing the work, and one photo's embedding takes several times longer
    (docs/performance.md has the measurements). On an otherwise idle machine
    passive waiting costs a little instead; set ``OMP_WAIT_POLICY=ACTIVE``
    before importing restyle to keep the spinning.
    """
    if any(name in os.environ for name in _OPENMP_WAIT_SETTINGS):
        return False
    if "torch" in sys.modules or "faiss" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
