"""User-facing errors.

Anything a user can cause (a wrong path, an unknown layout, an unreadable
manifest) raises a `DefaxError`; the CLI prints its one-line message and exits
with status 2 instead of showing a stack trace. Everything else is a bug and
keeps its traceback.
"""


class DefaxError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class DataError(DefaxError, ValueError):
    """The data on disk is not what the loader expects."""
