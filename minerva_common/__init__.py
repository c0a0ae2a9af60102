"""Contracts and helpers shared by every room of the data flow (data, recipes, cards, Space): no imports upward.

`atomic`: atomic file and folder writes. `results`: the evaluation-results contract (written by recipes, read by cards
and the Space).
"""
