"""Evaluation above the Engine: recorded analyses and their replay, backtests."""
