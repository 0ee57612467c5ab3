"""Shared helpers below every other layer: atomic writes, the cache root, the git commit, number parsing.

Each module has one job and imports only the standard library (and :mod:`tpem_seg.errors`).
"""
