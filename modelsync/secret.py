"""A string that does not show itself: repr/str/format give '***', only .reveal() gives the value.

Every secret value is registered in a process-wide set so that tools.py and the log formatter can mask it
wherever it turns up (a binary's stderr, an exception from a library).
"""

from __future__ import annotations

import threading

MASK = "***"
_known: set[str] = set()
_lock = threading.Lock()


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        if len(value) >= 4:  # masking 1-3 char strings would garble ordinary text
            with _lock:
                _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK


def register(value: str) -> None:
    """Mask a value that never became a Secret object (e.g. a token read by a library)."""
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)


def mask(text: str) -> str:
    """Replace every known secret in text; longest first so a secret containing another is fully hidden."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text
