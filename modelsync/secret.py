"""A string that does not show itself: repr/str/format give '***', only .reveal() gives the value.

Every secret value is registered in a process-wide set so that tools.py and the log formatter can mask it
wherever it turns up (a binary's stderr, an exception from a library).
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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


def _url_secrets(url: str) -> list[str]:
    """The parts of a URL that can carry a credential: user-info and every query value (pre-signed URLs put
    their signature and credential there; some stores put tokens under names of their own)."""
    parts = urlsplit(url)
    found = [p for p in (parts.password, parts.username and f"{parts.username}:{parts.password or ''}") if p]
    if parts.query:
        found.append(parts.query)
        found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
        found += [raw.partition("=")[2] for raw in parts.query.split("&")]  # as written (still percent-encoded)
    return [value for value in found if value]


def register_url(url: str) -> None:
    """Mask a URL's credentials (user-info, query values) wherever they turn up: logs, errors, tool output."""
    for value in _url_secrets(url):
        register(value)


def redact_url(url: str) -> str:
    """The URL as it may be shown: user-info replaced by ***, every query value by *** (names kept)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    query = "&".join(f"{raw.partition('=')[0]}={MASK}" if "=" in raw else raw
                     for raw in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
