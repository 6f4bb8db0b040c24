"""Small named registries (datasets, models, patterns, quantization modes, targets).

An unknown key raises a ``KeyError``-free, typed error that lists the known keys and suggests the
closest one, so every registry reports typos the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice_message(what: str, value: object, choices: Iterable[str]) -> str:
    """One sentence naming a bad value, the allowed ones and the closest match."""
    known = sorted(str(c) for c in choices)
    return f"unknown {what} '{value}'{did_you_mean(str(value), known)}; known: {', '.join(known)}"


class Registry(Generic[T]):
    """A dict filled by a decorator; lookups of unknown names raise ``error`` with the known names.

    Args:
        what: What the entries are, for messages ("dataset", "pattern" ...).
        error: Exception class raised for unknown names.
    """

    def __init__(self, what: str, error: type[Exception]) -> None:
        self.what = what
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry named ``name``.

        Raises:
            self.error: ``name`` is unknown; the message lists the known names.
        """
        try:
            return self._items[name]
        except KeyError:
            raise self.error(unknown_choice_message(self.what, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        """Known names, in registration order."""
        return list(self._items)
