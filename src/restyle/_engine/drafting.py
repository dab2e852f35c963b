"""What an Engine hands a listing draft: the marketplace's taxonomy (eBay's,
when this process has eBay keys), the synthesizer as the description's
writer, and the draft's deadline."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from restyle import _settings
from restyle._errors import ConfigurationError
from restyle._listing import DRAFT_DEADLINE, Taxonomy, Writer
from restyle._options import check_seconds
from restyle._plugin.components import Synthesizer

__all__ = ["DraftSettings", "DraftTaxonomies"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DraftSettings:
    """The marketplace, its currency, the taxonomy, the writer and the seconds
    of one draft."""

    marketplace_id: str
    currency: str
    taxonomy: Taxonomy | None
    writer: Writer | None
    seconds: float


@dataclass
class DraftTaxonomies:
    """An Engine's eBay taxonomy, made on first use and kept, so that its cache
    of categories serves every draft of the Engine."""

    _taxonomy: Taxonomy | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def settings(self, *, synthesizer: Synthesizer, engine_deadline: float,
                 marketplace_id: str | None, taxonomy: Taxonomy | None, offline: bool,
                 write: bool, deadline: float | None) -> DraftSettings:
        """The draft's settings from :meth:`Engine.draft`'s arguments."""
        from restyle.marketplaces.ebay import MARKETPLACE_CURRENCIES, EbayTaxonomy

        marketplace = (marketplace_id or _settings.env_str("EBAY_MARKETPLACE_ID")
                       or "EBAY_US")
        if marketplace not in MARKETPLACE_CURRENCIES:
            raise ConfigurationError(f"unknown eBay marketplace id {marketplace!r}; use one of "
                                     f"{', '.join(sorted(MARKETPLACE_CURRENCIES))}")
        seconds = (min(engine_deadline, DRAFT_DEADLINE) if deadline is None
                   else check_seconds("deadline", deadline))
        if offline:
            taxonomy = None
        elif taxonomy is None and _settings.env_str("EBAY_CLIENT_ID") \
                and _settings.env_str("EBAY_CLIENT_SECRET"):
            with self._lock:
                if self._taxonomy is None:
                    self._taxonomy = EbayTaxonomy()
                taxonomy = self._taxonomy
        return DraftSettings(marketplace_id=marketplace,
                             currency=MARKETPLACE_CURRENCIES[marketplace], taxonomy=taxonomy,
                             writer=_writer(synthesizer) if write else None, seconds=seconds)


def _writer(synthesizer: Synthesizer) -> Writer:
    """The synthesizer's ``write_description``, or a writer that says it has none."""
    writer = getattr(synthesizer, "write_description", None)
    if callable(writer):
        return writer  # type: ignore[no-any-return]
    name = synthesizer.name

    def refuse(facts: Any) -> Any:
        raise ConfigurationError(f"the {name} synthesizer writes no descriptions")

    return refuse
