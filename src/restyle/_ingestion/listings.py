"""Catalog ingestion as small stages: read rows, validate them, load and decode
their images, embed them.

Each stage is a plain function or generator over rows that keeps no state
between calls beyond its arguments, so ``Catalog.build`` and a distributed
build can run the same stages. Every bound a stage enforces is in
:class:`ListingLimits`. A row that breaks one becomes a :class:`Rejection`
with a reason, never an exception, and the rows around it are kept; memory
stays bounded by the limits, whatever the size of the file.

This module is the package's front door; the stages live beside it:

- :mod:`~restyle._ingestion.rows`: the limits and the rows each stage hands on;
- :mod:`~restyle._ingestion.reading`: JSONL, CSV and Parquet files, and their slices;
- :mod:`~restyle._ingestion.validation`: a row checked and cleaned;
- :mod:`~restyle._input.confined`: a named file opened only inside its folder
  (recordings use it too);
- :mod:`~restyle._ingestion.images`: images loaded and decoded;
- :mod:`~restyle._ingestion.embedding`: decoded images embedded and checked;
- :mod:`~restyle._ingestion.rejections`: rejections and their previews.
"""

from __future__ import annotations

from restyle._ingestion.embedding import checked_embeddings, embed_listings
from restyle._ingestion.images import (
    DRAFT_SIDE,
    decode_listing_image,
    draft_side,
    load_images,
    load_unstored,
)
from restyle._ingestion.reading import (
    COLUMNS,
    FORMATS,
    count_rows,
    draw_rows,
    estimate_rows,
    listings_format,
    most_rows,
    read_listings,
    split_listings,
)
from restyle._ingestion.rejections import rejection_json
from restyle._ingestion.rows import (
    CurrentImages,
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Refused,
    Rejection,
    SourcePart,
    SourceRow,
    StoredAlready,
    batches,
)
from restyle._ingestion.validation import image_location, validate_listing

__all__ = [
    "COLUMNS",
    "DRAFT_SIDE",
    "FORMATS",
    "CurrentImages",
    "DecodedListing",
    "ListingLimits",
    "ListingRow",
    "LoadedImage",
    "Refused",
    "Rejection",
    "SourcePart",
    "SourceRow",
    "StoredAlready",
    "batches",
    "checked_embeddings",
    "count_rows",
    "decode_listing_image",
    "draft_side",
    "draw_rows",
    "embed_listings",
    "estimate_rows",
    "image_location",
    "listings_format",
    "load_images",
    "load_unstored",
    "most_rows",
    "read_listings",
    "rejection_json",
    "split_listings",
    "validate_listing",
]
