"""Benchmark data access (RWKU, MUSE-Books): ``python -m data.download --help``.

This package sits above ``verl``: it may import ``verl``, and ``verl`` never imports it.
"""
