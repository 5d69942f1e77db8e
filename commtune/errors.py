"""The one exception type for mistakes a user can fix (bad flag, bad file).

The CLI prints it as a single line and exits with status 2; everything else is
a programming error and keeps its traceback.
"""
from __future__ import annotations


class CommtuneError(Exception):
    """A user-facing error: the message names the bad value and what is accepted."""


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or ''."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=2, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
