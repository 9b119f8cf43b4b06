"""Benchmarks of the platform (``make bench``, ``python -m bench [name ...]``).

Each benchmark module prints its figures and rewrites its own section of ``docs/benchmarks.md``.
"""
