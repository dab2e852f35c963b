"""Vector indexes: the flat index that plans itself on the data, and the
sharded IVF-PQ index for large catalogs.
"""
