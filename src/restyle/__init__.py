"""restyle: from one photo of a secondhand item to what it is, its comps and a price.

```python
from restyle import Engine
analysis = Engine().analyze("jacket.jpg")
```
"""

import logging

from restyle import _openmp  # noqa: F401 - first: it must run before torch or faiss load
from restyle._engine import Engine
from restyle._errors import (
    CatalogError,
    ConfigurationError,
    DuplicateComponentError,
    EncoderError,
    ExpertError,
    FetchError,
    ImageError,
    MarketplaceAuthError,
    MarketplaceError,
    MarketplaceRateLimitError,
    MarketplaceResponseError,
    MarketplaceUnavailableError,
    PluginContractError,
    PluginError,
    RecordingError,
    RestyleError,
    SynthesizerError,
)
from restyle._evaluation.backtest import BacktestGroup, BacktestItem, BacktestReport, backtest
from restyle._indexes.flat import VectorIndex
from restyle._input.fetching import Fetcher, FetchLimits
from restyle._input.imaging import Photo, load_photo
from restyle._pipeline.pricing import MAXIMUM_PRICE, MINIMUM_COMPS, estimate_price
from restyle._pipeline.query import build_query, relaxed_queries
from restyle._pipeline.rerank import Reranker, RerankResult
from restyle._plugin.components import (
    CatalogView,
    Component,
    Context,
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
)
from restyle._plugin.hookspecs import (
    RegisterEncoder,
    RegisterExpert,
    RegisterMarketplace,
    RegisterSynthesizer,
    hookimpl,
)
from restyle._plugin.registry import PluginLoadWarning
from restyle._ray.executor import RayExecutor
from restyle._secrets import RedactingFilter
from restyle._store.catalog import (
    BuildReport,
    Catalog,
    CatalogCheck,
    CatalogStats,
    ListingLimits,
    Rejection,
    RepairReport,
)
from restyle._store.embedcache import EmbeddingCache, EmbeddingCacheStats
from restyle._types import (
    Analysis,
    Attribute,
    Box,
    Comp,
    CompFlag,
    Condition,
    Evidence,
    Exclusion,
    Identification,
    Listing,
    Money,
    Observation,
    Opinion,
    OpinionStatus,
    PhotoInfo,
    PriceBand,
    PriceBasis,
    PricedComp,
    PriceEstimate,
    PriceStatus,
    Query,
)
from restyle._version import __version__

# A library logs but never decides where logs go: that is the application's call.
logging.getLogger("restyle").addHandler(logging.NullHandler())

__all__ = [
    "MAXIMUM_PRICE",
    "MINIMUM_COMPS",
    "Analysis",
    "Attribute",
    "BacktestGroup",
    "BacktestItem",
    "BacktestReport",
    "Box",
    "BuildReport",
    "Catalog",
    "CatalogCheck",
    "CatalogError",
    "CatalogStats",
    "CatalogView",
    "Comp",
    "CompFlag",
    "Component",
    "Condition",
    "ConfigurationError",
    "Context",
    "DuplicateComponentError",
    "EmbeddingCache",
    "EmbeddingCacheStats",
    "Encoder",
    "EncoderError",
    "Engine",
    "Evidence",
    "Exclusion",
    "Expert",
    "ExpertError",
    "FetchError",
    "FetchLimits",
    "Fetcher",
    "Identification",
    "ImageError",
    "Listing",
    "ListingLimits",
    "Marketplace",
    "MarketplaceAuthError",
    "MarketplaceError",
    "MarketplaceRateLimitError",
    "MarketplaceResponseError",
    "MarketplaceUnavailableError",
    "Money",
    "Observation",
    "Opinion",
    "OpinionStatus",
    "Photo",
    "PhotoInfo",
    "PluginContractError",
    "PluginError",
    "PluginLoadWarning",
    "PriceBand",
    "PriceBasis",
    "PriceEstimate",
    "PriceStatus",
    "PricedComp",
    "Query",
    "RayExecutor",
    "RecordingError",
    "RedactingFilter",
    "RegisterEncoder",
    "RegisterExpert",
    "RegisterMarketplace",
    "RegisterSynthesizer",
    "Rejection",
    "RepairReport",
    "RerankResult",
    "Reranker",
    "RestyleError",
    "Synthesizer",
    "SynthesizerError",
    "VectorIndex",
    "__version__",
    "backtest",
    "build_query",
    "estimate_price",
    "hookimpl",
    "load_photo",
    "relaxed_queries",
]
