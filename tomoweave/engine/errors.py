"""Errors that reach the user as one clear line."""


class TomoweaveError(Exception):
    """An error whose message is meant for the user as it is."""


class InputError(TomoweaveError, ValueError):
    """Bad input found before a run starts (file, field, what was expected); nothing is recorded."""


class ItemError(TomoweaveError):
    """One item cannot be processed; the run records it and goes on with the others."""
