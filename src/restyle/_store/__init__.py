"""What lives on disk: the local catalog (SQLite + faiss), the cache of comp
image embeddings, and the held-out view backtests use.
"""
