"""restyle: from photos of a secondhand item to what it is, its comps and a price.

```python
from restyle import Engine, Item
analysis = Engine().analyze("jacket.jpg")
analysis = Engine().analyze(Item("front.jpg", "tag.jpg", "label.jpg"))
```

Where each stage lives (floors, lowest first; a module imports only from its
own floor or below, checked by the import-linter contracts in pyproject.toml;
see docs/architecture.md):

- ``_types _errors _serde _settings _secrets _progress _openmp _version
  _taxonomy``: the ground floor, flat.
- ``_input/``: the one gate for untrusted bytes (photos, an item's photos,
  comp images, files).
- ``_display _history``: HTML views of the values and reports; the command
  line's history of analyses.
- ``_plugin/``: the plugin contract (components and their context, hooks,
  the registry, the checks on what components return, the remote base).
- ``_indexes/``: the flat and sharded vector indexes.
- ``_ingestion/``: reading and validating listings files.
- ``_store/``: the local catalog on disk, the embedding cache, held-out views.
- ``_pipeline/``: one analysis's stages: budget, an item's photo roles,
  identify, query, search, re-rank, price, batching (many items), and the
  run trace.
- ``_ray/``: the stages run on Ray (builds, bulk analysis), handed to it.
- ``_listing/``: from an analysis to a listing draft (title, item specifics,
  condition, price, description, CSV), asking a marketplace's taxonomy.
- ``experts/ synthesizers/ marketplaces/ encoders/``: built-in plugins.
- ``_options``: the checks of the Engine's arguments and options.
- ``_engine``: the Engine, which composes the pipeline.
- ``_evaluation/``: recordings and their replay, backtests.
- ``serve/``: the HTTP service and its page, the public response schema,
  cross-request batching, Ray Serve (``restyle serve``).
- ``cli/`` (arguments, analyze and its outputs, catalog, model, logs,
  evaluate, plugins, serve), ``testing/``: the
  outermost floor.
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
from restyle._input.imaging import ImageInput, Photo, load_photo
from restyle._input.item import ITEM_MAX_PHOTOS, Item
from restyle._listing import ListingDraft, PriceStrategy, drafts_csv, make_draft
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
from restyle._plugin.remote import RemoteComponent
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
    PhotoRole,
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
    "ITEM_MAX_PHOTOS",
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
    "ImageInput",
    "Item",
    "Listing",
    "ListingDraft",
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
    "PhotoRole",
    "PluginContractError",
    "PluginError",
    "PluginLoadWarning",
    "PriceBand",
    "PriceBasis",
    "PriceEstimate",
    "PriceStatus",
    "PriceStrategy",
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
    "RemoteComponent",
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
    "drafts_csv",
    "estimate_price",
    "hookimpl",
    "load_photo",
    "make_draft",
    "relaxed_queries",
]
