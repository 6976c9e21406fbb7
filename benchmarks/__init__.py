"""Benchmarks against the peers and the reliability campaign.

Run them from the repository root: ``python -m benchmarks.bench --quick`` and
``python -m benchmarks.reliability --minutes 10``.
"""
