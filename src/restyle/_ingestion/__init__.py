"""Reading, validating and loading listings files (JSONL, CSV, Parquet) into a
catalog.
"""
