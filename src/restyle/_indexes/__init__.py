"""Vector indexes: the flat index that plans itself on the data, and the
sharded IVF-PQ index for large catalogs.

- ``flat``: :class:`VectorIndex`, exact, or IVF-Flat past its threshold
- ``sharded``: :class:`ShardedIndex`, shards of segments written once each
- ``training``: the sharded index's lists (dense clusters split), OPQ, PQ and encoding
- ``shardfiles``: segments, their files, search across them and exact re-ranking
- ``chooser``: which index a catalog keeps, loading and saving it, growing it
"""
