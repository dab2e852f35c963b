"""Running restyle's stages on Ray: catalog builds and bulk analysis.

It imports neither the store nor the Engine: they hand it what it runs (the
store its lookup of stored images, taking back encoded rows for its one write
loop; the Engine a factory of Engines for the actors).

- ``executor``: :class:`RayExecutor` (where and how) and the two jobs' entry points
- ``build``: a catalog build's read, load, decode and embed stages, staged as shards
- ``analyze``: bulk analysis, one analyst per actor
- ``cluster``: the connection, the actor pool, what every job shares
"""
