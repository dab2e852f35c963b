"""What lives on disk: the local catalog (SQLite + faiss), the cache of comp
image embeddings, and the held-out view backtests use.

One job per module: ``catalog`` (the front door: the Catalog and its read
side; every name the other wings use is defined or re-exported there),
``database`` (the one module that opens the catalog's SQLite database and
knows its schema), ``build`` (a build's stages, the executor protocol, the one
write loop), ``check`` (stats, check, repair), ``search`` (rows as Listings,
query filters), ``files`` (the directory's file names, stale temporaries),
``embedcache`` (its own database file), ``holdout``.
"""
