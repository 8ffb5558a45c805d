"""Wrappers of external programs, one sub-package per program family."""
