"""The stages of one analysis: the budget and component calls, identify, query,
search, re-rank and price.
"""
