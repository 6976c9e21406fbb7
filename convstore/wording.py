"""How counts read in messages and reports: "1 message", "2 messages"."""

from __future__ import annotations


def plural(count: int, noun: str, shown: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is 1.

    ``shown`` is the count as it should be printed (``1,024``), when not as ``str(count)``.
    """
    return f"{count if shown is None else shown} {noun}{'' if count == 1 else 's'}"
